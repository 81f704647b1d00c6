"""Pipeline configs: templates from ``pipelines/``, patched through the protobuf messages.

``pipeline.config`` (text protobuf) stays the single source of truth. Patching
uses the OD API's ``config_util`` (``merge_external_params_with_configs``) and
the proto messages directly; nothing is edited with regular expressions.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from tfod.errors import ConfigError, TfodError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINES_DIR = Path(os.environ.get("TFOD_PIPELINES", REPO_ROOT / "pipelines"))
PLACEHOLDER = "PATH_TO_BE_CONFIGURED"


def available_templates() -> list[str]:
    """Names of the templates in ``pipelines/`` (file names without ``.config``)."""
    return sorted(p.stem for p in PIPELINES_DIR.glob("*.config"))


def resolve_template(name_or_path: str | Path) -> Path:
    """A template name or a path to an existing ``pipeline.config``.

    Example:
        >>> resolve_template("ssd_mobilenet_v2_tiny")
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = PIPELINES_DIR / f"{name_or_path}.config"
    if candidate.is_file():
        return candidate
    names = available_templates()
    close = difflib.get_close_matches(str(name_or_path), names, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"unknown template {str(name_or_path)!r}", where=str(PIPELINES_DIR),
                      fix=f"{hint}available: {', '.join(names)}")


def resolve_run(run_or_config: str | Path,
                error: type[TfodError] = ConfigError) -> tuple[Path, Path]:
    """(pipeline.config, run folder) of a run folder or a config file path."""
    path = Path(run_or_config)
    if path.is_dir():
        config = path / "pipeline.config"
        if not config.is_file():
            raise error("no pipeline.config in the run folder", where=str(path),
                        fix="pass a run folder made by `tfod train`, or a config file")
        return config, path
    if path.is_file():
        return path, path.parent
    raise error("run folder or config not found", where=str(path),
                fix="pass runs/<name> or a pipeline.config")


def load_configs(path: str | Path) -> dict:
    """The OD API's config dict (``model``, ``train_config``, ...) of a file."""
    from google.protobuf import text_format
    from object_detection.utils import config_util

    try:
        return config_util.get_configs_from_pipeline_file(str(path))
    except text_format.ParseError as exc:
        raise ConfigError(f"not a valid pipeline config ({exc})", where=str(path),
                          fix="fix the text protobuf syntax at the line shown") from None


def save_configs(configs: dict, path: str | Path) -> Path:
    """Write a config dict as ``pipeline.config`` text, atomically."""
    from google.protobuf import text_format
    from object_detection.utils import config_util

    proto = config_util.create_pipeline_proto_from_configs(configs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text_format.MessageToString(proto))
    os.replace(tmp, path)
    return path


def _set_steps(configs: dict, num_steps: int) -> None:
    """num_steps, keeping the learning-rate schedule's step counts consistent."""
    train_config = configs["train_config"]
    train_config.num_steps = num_steps
    optimizer = getattr(train_config.optimizer, train_config.optimizer.WhichOneof("optimizer"))
    schedule = optimizer.learning_rate
    kind = schedule.WhichOneof("learning_rate")
    if kind == "cosine_decay_learning_rate":
        cosine = schedule.cosine_decay_learning_rate
        old_total = cosine.total_steps or num_steps
        cosine.total_steps = num_steps
        if cosine.warmup_steps:
            cosine.warmup_steps = max(1, min(num_steps // 2, round(
                cosine.warmup_steps * num_steps / old_total)))
    elif kind == "manual_step_learning_rate":
        manual = schedule.manual_step_learning_rate
        scale = num_steps / max(1, configs["train_config"].num_steps or num_steps)
        for step in manual.schedule:
            step.step = max(1, int(step.step * scale))


def _set_image_size(configs: dict, size: int | tuple[int, int]) -> None:
    height, width = (size, size) if isinstance(size, int) else size
    model = configs["model"]
    arch = getattr(model, model.WhichOneof("model"))
    resizer = arch.image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        resizer.fixed_shape_resizer.height = height
        resizer.fixed_shape_resizer.width = width
    elif kind == "keep_aspect_ratio_resizer":
        resizer.keep_aspect_ratio_resizer.min_dimension = min(height, width)
        resizer.keep_aspect_ratio_resizer.max_dimension = max(height, width)
    else:
        raise ConfigError(f"cannot set the image size of a {kind}", where="model.image_resizer",
                          fix="edit the resizer in the config by hand")


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def patch_pipeline(template: str | Path, out_path: str | Path, *,
                   label_map: str | Path | None = None,
                   train_input: str | Sequence[str] | None = None,
                   eval_input: str | Sequence[str] | None = None,
                   num_classes: int | None = None, batch_size: int | None = None,
                   num_steps: int | None = None, image_size: int | None = None,
                   fine_tune_checkpoint: str | None = None,
                   overrides: dict[str, Any] | None = None) -> Path:
    """Write a patched copy of a template or config.

    ``num_classes`` defaults to the number of classes in ``label_map``. Input
    paths replace the template's (repeated fields are replaced, not appended).

    Example:
        >>> patch_pipeline("ssd_mobilenet_v2_tiny", "runs/demo/pipeline.config",
        ...                label_map="data/demo/label_map.pbtxt",
        ...                train_input="data/demo/train-?????-of-00001.tfrecord",
        ...                eval_input="data/demo/val-?????-of-00001.tfrecord", num_steps=600)
    """
    from object_detection.utils import config_util

    source = resolve_template(template)
    configs = load_configs(source)
    kwargs: dict[str, Any] = {}
    if label_map is not None:
        kwargs["label_map_path"] = str(Path(label_map).resolve())
        if num_classes is None:
            from tfod.data import read_label_map

            num_classes = len(read_label_map(label_map))
    if train_input is not None:
        kwargs["train_input_path"] = _paths(train_input)
    if eval_input is not None:
        kwargs["eval_input_path"] = _paths(eval_input)
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    if batch_size is not None:
        kwargs["batch_size"] = int(batch_size)
    configs = config_util.merge_external_params_with_configs(configs, kwargs_dict=kwargs)
    if num_steps is not None:
        _set_steps(configs, int(num_steps))
    if image_size is not None:
        _set_image_size(configs, image_size)
    if fine_tune_checkpoint is not None:
        configs["train_config"].fine_tune_checkpoint = str(fine_tune_checkpoint)
    elif PLACEHOLDER in configs["train_config"].fine_tune_checkpoint:
        configs["train_config"].fine_tune_checkpoint = ""
    for key, value in (overrides or {}).items():
        _set_dotted(configs, key, value)
    path = save_configs(configs, out_path)
    log.info("config: wrote %s from %s", path, source)
    return path


def _paths(value: str | Sequence[str]) -> list[str]:
    items = [value] if isinstance(value, (str, Path)) else list(value)
    return [str(Path(v).resolve()) if not str(v).startswith(("gs://", "s3://")) else str(v)
            for v in items]


def _set_dotted(configs: dict, key: str, value: Any) -> None:
    """``train_config.batch_size=4`` style override on the proto messages."""
    parts = key.split(".")
    if parts[0] not in configs:
        close = difflib.get_close_matches(parts[0], list(configs), n=3)
        raise ConfigError(f"unknown key {key!r}", where="--set",
                          fix=f"start with one of {', '.join(configs)}"
                          + (f" (did you mean {', '.join(close)}?)" if close else ""))
    message = configs[parts[0]]
    for i, part in enumerate(parts[1:], 1):
        fields = message.DESCRIPTOR.fields_by_name
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=3)
            raise ConfigError(
                f"unknown key {key!r}: {'.'.join(parts[:i])} has no field {part!r}",
                where="--set", fix=f"did you mean {', '.join(close)}?" if close else
                f"fields: {', '.join(sorted(fields))}")
        descriptor = fields[part]
        if i == len(parts) - 1:
            if descriptor.message_type is not None:
                raise ConfigError(f"{key!r} is a message, not a value", where="--set",
                                  fix="set one of its fields")
            value = _parse_value(value) if isinstance(value, str) else value
            if descriptor.enum_type is not None and isinstance(value, str):
                value = descriptor.enum_type.values_by_name[value].number
            if descriptor.type in (descriptor.TYPE_INT32, descriptor.TYPE_INT64,
                                   descriptor.TYPE_UINT32, descriptor.TYPE_UINT64):
                value = int(value)  # protobuf 7 refuses bool/float for integer fields
            elif descriptor.type in (descriptor.TYPE_FLOAT, descriptor.TYPE_DOUBLE):
                value = float(value)
            elif descriptor.type == descriptor.TYPE_STRING:
                value = str(value)
            setattr(message, part, value)
        else:
            message = getattr(message, part)


def check_pipeline(path: str | Path) -> list[str]:
    """Cheap checks before TensorFlow builds anything; raises ConfigError on the first
    class of errors, returns warnings.

    Example:
        >>> check_pipeline("runs/demo/pipeline.config")
    """
    import glob

    from object_detection.utils import config_util

    path = Path(path)
    if not path.is_file():
        raise ConfigError("pipeline config not found", where=str(path),
                          fix="run `tfod config` first or give the right path")
    configs = load_configs(path)
    errors: list[str] = []
    text = path.read_text()
    if PLACEHOLDER in text:
        errors.append(f"{PLACEHOLDER} left in the config; set it with `tfod config`")
    for key in ("train_input_config", "eval_input_configs"):
        readers = configs[key] if key == "eval_input_configs" else [configs[key]]
        for reader in readers:
            for pattern in reader.tf_record_input_reader.input_path:
                if PLACEHOLDER not in pattern and not glob.glob(pattern):
                    errors.append(f"{key}.input_path {pattern} matches no file")
            if reader.label_map_path and PLACEHOLDER not in reader.label_map_path:
                if not Path(reader.label_map_path).is_file():
                    errors.append(f"{key}.label_map_path {reader.label_map_path} not found")
    label_map = configs["train_input_config"].label_map_path
    if label_map and Path(label_map).is_file():
        from tfod.data import read_label_map

        classes = read_label_map(label_map)
        model_classes = config_util.get_number_of_classes(configs["model"])
        if model_classes != len(classes):
            errors.append(f"model num_classes is {model_classes} but the label map "
                          f"{label_map} has {len(classes)} classes")
    if errors:
        raise ConfigError("; ".join(errors), where=str(path),
                          fix="fix these fields (tfod config --set KEY=VALUE) and check again")
    warnings = []
    if configs["train_config"].use_bfloat16:
        warnings.append("use_bfloat16 is only used on TPU; it is ignored here")
    return warnings


def num_steps(path: str | Path) -> int:
    return int(load_configs(path)["train_config"].num_steps)


def image_size(configs: dict) -> tuple[int, int]:
    """(height, width) the model resizes to."""
    from object_detection.utils import config_util

    h, w = config_util.get_spatial_image_size(config_util.get_image_resizer_config(
        configs["model"]))
    if h < 0 or w < 0:
        return (640, 640)
    return int(h), int(w)


def meta_architecture(configs: dict) -> str:
    return configs["model"].WhichOneof("model")



def patch_pipeline_for_dataset(template: str | Path, out_path: str | Path,
                               data_dir: str | Path | None = None, **kwargs) -> Path:
    """:func:`patch_pipeline` with inputs and label map taken from a folder
    written by ``tfod prepare`` (train split for training; val, else test, for eval).

    Example:
        >>> patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", "runs/demo/pipeline.config",
        ...                            data_dir="data/demo", num_steps=600)
    """
    if data_dir is None:
        return patch_pipeline(template, out_path, **kwargs)
    import json

    from tfod.data import split_pattern

    data_dir = Path(data_dir)
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError("not a prepared dataset (no manifest.json)", where=str(data_dir),
                          fix="run `tfod prepare` first, or pass the data/<name> folder")
    splits = json.loads(manifest_path.read_text())["splits"]
    eval_split = next((s for s in ("val", "test") if s in splits), None)
    if "train" not in splits or eval_split is None:
        raise ConfigError(f"dataset has splits {', '.join(splits)}", where=str(manifest_path),
                          fix="prepare it with a train and a val (or test) split")
    return patch_pipeline(template, out_path, label_map=data_dir / "label_map.pbtxt",
                          train_input=split_pattern(data_dir, "train"),
                          eval_input=split_pattern(data_dir, eval_split), **kwargs)
