"""Pipeline configs: templates from ``pipelines/``, patched through the protobuf messages,
and checked before TensorFlow builds anything.

``pipeline.config`` (text protobuf) stays the single source of truth. Patching
uses the OD API's ``config_util`` (``merge_external_params_with_configs``) and
the proto messages directly; nothing is edited with regular expressions.
Repeated fields (input paths, augmentation options) are replaced, not appended.
:func:`check_pipeline` lists every problem it finds as a :class:`Finding`
(what, where, fix), cheap checks first.
"""

from __future__ import annotations

import difflib
import glob
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tfod.errors import ConfigError, TfodError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINES_DIR = Path(os.environ.get("TFOD_PIPELINES", REPO_ROOT / "pipelines"))
PLACEHOLDER = "PATH_TO_BE_CONFIGURED"
TFLITE_ARCHS = ("ssd", "center_net")  # what export_tflite_graph_lib_tf2 can convert
COUNT_RECORDS_MAX_BYTES = 64 * 2**20  # count train records with tf.data only below this


@dataclass(frozen=True)
class Finding:
    """One problem in a pipeline config: what is wrong, where (field or file), the fix."""

    what: str
    where: str
    fix: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}"


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


def config_text(configs: dict) -> str:
    """The text protobuf of a config dict, as :func:`save_configs` writes it."""
    from google.protobuf import text_format
    from object_detection.utils import config_util

    return text_format.MessageToString(config_util.create_pipeline_proto_from_configs(configs))


def save_configs(configs: dict, path: str | Path) -> Path:
    """Write a config dict as ``pipeline.config`` text, atomically."""
    from tfod.files import write_text_atomic

    return write_text_atomic(path, config_text(configs))


# ---------------------------------------------------------------------------------------------
# learning-rate schedule, steps, batch size, image size

def _schedule(train_config) -> tuple[str, str, Any]:
    """(optimizer name, schedule kind, schedule message) of a train_config."""
    optimizer_name = train_config.optimizer.WhichOneof("optimizer")
    if optimizer_name is None:
        return "", "", None
    schedule = getattr(train_config.optimizer, optimizer_name).learning_rate
    kind = schedule.WhichOneof("learning_rate") or ""
    return optimizer_name, kind, getattr(schedule, kind) if kind else None


def _set_steps(configs: dict, num_steps: int) -> None:
    """num_steps, keeping the learning-rate schedule's step counts consistent."""
    train_config = configs["train_config"]
    old_steps = train_config.num_steps
    train_config.num_steps = num_steps
    _, kind, lr = _schedule(train_config)
    if kind == "cosine_decay_learning_rate":
        old_total = lr.total_steps or old_steps or num_steps
        scale = num_steps / old_total
        lr.total_steps = num_steps
        if lr.warmup_steps:
            lr.warmup_steps = 0 if num_steps < 2 else max(1, min(
                num_steps // 2, round(lr.warmup_steps * scale)))
        if lr.hold_base_rate_steps:
            lr.hold_base_rate_steps = min(num_steps - lr.warmup_steps,
                                          round(lr.hold_base_rate_steps * scale))
    elif kind == "manual_step_learning_rate":
        scale = num_steps / max(1, old_steps or num_steps)
        for step in lr.schedule:
            step.step = max(1, min(num_steps, int(step.step * scale)))
    elif kind == "exponential_decay_learning_rate":
        scale = num_steps / max(1, old_steps or num_steps)
        lr.decay_steps = max(1, int(lr.decay_steps * scale))
        if lr.burnin_steps:
            lr.burnin_steps = max(1, min(num_steps // 2, int(lr.burnin_steps * scale)))


def _scale_learning_rate(configs: dict, factor: float) -> None:
    """Multiply every learning rate of the schedule (linear scaling with the batch size)."""
    _, kind, lr = _schedule(configs["train_config"])
    fields = {"cosine_decay_learning_rate": ("learning_rate_base", "warmup_learning_rate"),
              "manual_step_learning_rate": ("initial_learning_rate",),
              "exponential_decay_learning_rate": ("initial_learning_rate",
                                                  "burnin_learning_rate", "min_learning_rate"),
              "constant_learning_rate": ("learning_rate",)}.get(kind, ())
    for name in fields:
        setattr(lr, name, getattr(lr, name) * factor)
    if kind == "manual_step_learning_rate":
        for step in lr.schedule:
            step.learning_rate *= factor
    log.info("config: learning rates of the %s scaled by %.4g with the batch size", kind, factor)


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


# ---------------------------------------------------------------------------------------------
# values, augmentation, quantization

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


def _assign(message, name: str, value: Any, where: str) -> None:
    """Set one scalar field (appends to a repeated one) with the types protobuf 7 wants."""
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.message_type is not None:
        raise ConfigError(f"{name!r} is a message, not a value", where=where,
                          fix="set one of its fields, or edit this block in the config")
    value = _parse_value(value) if isinstance(value, str) else value
    try:
        if field.enum_type is not None and isinstance(value, str):
            if value not in field.enum_type.values_by_name:
                raise ConfigError(f"{name} has no value {value!r}", where=where,
                                  fix=f"use one of {', '.join(field.enum_type.values_by_name)}")
            value = field.enum_type.values_by_name[value].number
        elif field.type in (field.TYPE_INT32, field.TYPE_INT64, field.TYPE_UINT32,
                            field.TYPE_UINT64):
            value = int(value)  # protobuf 7 refuses bool/float for integer fields
        elif field.type in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
            value = float(value)
        elif field.type == field.TYPE_STRING:
            value = str(value)
        if field.is_repeated:
            getattr(message, name).append(value)
        else:
            setattr(message, name, value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value {value!r} for {name} ({exc})", where=where,
                          fix="give a value of the field's type") from None


def _unknown_field(message, name: str, where: str, what: str) -> ConfigError:
    fields = list(message.DESCRIPTOR.fields_by_name)
    close = difflib.get_close_matches(name, fields, n=3)
    return ConfigError(f"{what} {name!r}", where=where,
                       fix=f"did you mean {', '.join(close)}?" if close else
                       f"valid: {', '.join(sorted(fields)) or '(no options)'}")


def augmentation_names() -> list[str]:
    """Every preprocessing step the OD API knows (the PreprocessingStep oneof).

    Example:
        >>> "ssd_random_crop" in augmentation_names()
        True
    """
    from object_detection.protos import preprocessor_pb2

    oneof = preprocessor_pb2.PreprocessingStep.DESCRIPTOR.oneofs_by_name["preprocessing_step"]
    return sorted(field.name for field in oneof.fields)


def parse_augment(spec: str | Sequence[str]) -> list:
    """``PreprocessingStep`` messages from a named list.

    Steps are separated by commas; options follow the name after ``:`` as
    ``key=value`` pairs (several separated by ``:``; a repeated field takes one
    pair per value).

    Example:
        >>> parse_augment("random_horizontal_flip,random_adjust_brightness:max_delta=0.2")
    """
    from object_detection.protos import preprocessor_pb2

    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = augmentation_names()
    steps = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, *options = item.split(":")
        name = name.strip()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            raise ConfigError(f"unknown augmentation {name!r}", where="--augment",
                              fix=(f"did you mean {', '.join(close)}? " if close else "")
                              + "see `tfod.pipeline.augmentation_names()` for all of them")
        step = preprocessor_pb2.PreprocessingStep()
        options_message = getattr(step, name)
        options_message.SetInParent()
        for option in options:
            key, sep, value = option.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"option {option!r} of {name} has no value", where="--augment",
                                  fix=f"write {name}:KEY=VALUE")
            if key not in options_message.DESCRIPTOR.fields_by_name:
                raise _unknown_field(options_message, key, "--augment",
                                     f"{name} has no option")
            _assign(options_message, key, value.strip(), f"--augment {name}")
        steps.append(step)
    return steps


def parse_quantize(spec: str | dict | None) -> Any:
    """A ``GraphRewriter`` message with its quantization block from ``delay=..,weight_bits=..``.

    Example:
        >>> parse_quantize("delay=1800,weight_bits=8,activation_bits=8")
    """
    from object_detection.protos import graph_rewriter_pb2

    rewriter = graph_rewriter_pb2.GraphRewriter()
    quantization = rewriter.quantization
    quantization.SetInParent()
    if isinstance(spec, str):
        pairs = [p.partition("=") for p in spec.split(",") if p.strip()]
        bad = [k for k, sep, _ in pairs if not sep]
        if bad:
            raise ConfigError(f"quantization option {bad[0]!r} has no value", where="--quantize",
                              fix="write delay=1800,weight_bits=8,activation_bits=8")
        spec = {k.strip(): v.strip() for k, _, v in pairs}
    for key, value in (spec or {}).items():
        if key not in quantization.DESCRIPTOR.fields_by_name:
            raise _unknown_field(quantization, key, "--quantize", "quantization has no option")
        _assign(quantization, key, value, "--quantize")
    for key in ("delay", "weight_bits", "activation_bits"):  # write them out explicitly
        setattr(quantization, key, getattr(quantization, key))
    return rewriter


# ---------------------------------------------------------------------------------------------
# checkpoints

def resolve_checkpoint(path: str | Path) -> str:
    """The checkpoint prefix of a prefix, a checkpoint folder or a zoo model folder.

    Example:
        >>> resolve_checkpoint("pretrained/ssd_mobilenet_v2_320")  # .../checkpoint/ckpt-0
    """
    import tensorflow as tf

    path = Path(path)
    if Path(f"{path}.index").is_file():
        return str(path)
    for folder in (path / "checkpoint", path):
        if folder.is_dir():
            latest = tf.train.latest_checkpoint(str(folder))
            if latest:
                return latest
            index = sorted(folder.glob("*.index"))
            if index:
                return str(index[-1].with_suffix(""))
    raise ConfigError("no checkpoint found", where=str(path),
                      fix="give a checkpoint prefix such as pretrained/<model>/checkpoint/ckpt-0 "
                          "(the files <prefix>.index and <prefix>.data-*)")


def checkpoint_type(prefix: str | Path) -> str:
    """``detection`` or ``classification``, from the checkpoint's variable names.

    Detection checkpoints (the zoo's, or a tfod run's) hold the model under
    ``model/_feature_extractor...`` / ``model/_box_predictor...``; classification
    backbones do not.

    Example:
        >>> checkpoint_type("pretrained/ssd_mobilenet_v2_320/checkpoint/ckpt-0")
        'detection'
    """
    import tensorflow as tf

    try:
        names = [name for name, _ in tf.train.list_variables(str(prefix))]
    except (tf.errors.OpError, ValueError) as exc:
        raise ConfigError(f"cannot read the checkpoint ({type(exc).__name__})", where=str(prefix),
                          fix="give a checkpoint prefix such as .../checkpoint/ckpt-0") from None
    if any(n.startswith(("model/_feature_extractor", "model/_box_predictor")) for n in names):
        return "detection"
    return "classification"


# ---------------------------------------------------------------------------------------------
# patching

def patch_pipeline(template: str | Path, out_path: str | Path, *,
                   label_map: str | Path | None = None,
                   train_input: str | Sequence[str] | None = None,
                   eval_input: str | Sequence[str] | None = None,
                   num_classes: int | None = None, batch_size: int | None = None,
                   scale_lr: bool = False,
                   num_steps: int | None = None, image_size: int | None = None,
                   fine_tune_checkpoint: str | Path | None = None,
                   fine_tune_checkpoint_type: str | None = None,
                   augment: str | Sequence[str] | None = None,
                   quantize: str | dict | None = None,
                   freeze: str | None = None,
                   overrides: dict[str, Any] | None = None) -> Path:
    """Write a patched copy of a template or config, and ``<out>.diff`` against it.

    ``num_classes`` defaults to the number of classes in ``label_map``. Input
    paths and augmentation options replace the template's (repeated fields are
    replaced, not appended to). ``scale_lr`` multiplies every learning rate of
    the schedule by new/old batch size. The fine-tune checkpoint's type is read
    from its variables unless given. ``quantize`` writes a ``graph_rewriter``
    block (the TF2 training loop does not apply it; int8 comes from export).
    ``freeze="feature_extractor"`` trains only the box predictor (:func:`set_freeze`).

    Example:
        >>> patch_pipeline("ssd_mobilenet_v2_tiny", "runs/demo/pipeline.config",
        ...                label_map="data/demo/label_map.pbtxt",
        ...                train_input="data/demo/train-?????-of-00001.tfrecord",
        ...                eval_input="data/demo/val-?????-of-00001.tfrecord", num_steps=600,
        ...                augment="random_horizontal_flip,random_adjust_brightness:max_delta=0.2")
    """
    from object_detection.utils import config_util

    source = resolve_template(template)
    configs = load_configs(source)
    before = config_text(configs)
    train_config = configs["train_config"]
    old_batch = train_config.batch_size
    kwargs: dict[str, Any] = {}
    if label_map is not None:
        if not Path(label_map).is_file():
            raise ConfigError("label map not found", where=str(label_map),
                              fix="give the label_map.pbtxt written by `tfod prepare`")
        kwargs["label_map_path"] = str(Path(label_map).resolve())
        if num_classes is None:
            from tfod.data import read_label_map

            num_classes = len(read_label_map(label_map))
    if train_input is not None:
        kwargs["train_input_path"] = _paths(train_input)
    if eval_input is not None:
        kwargs["eval_input_path"] = _paths(eval_input)
    if batch_size is not None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch size {batch_size}", where="--batch-size",
                              fix="give a positive batch size")
        kwargs["batch_size"] = int(batch_size)
    configs = config_util.merge_external_params_with_configs(configs, kwargs_dict=kwargs)
    train_config = configs["train_config"]
    if num_classes is not None:
        set_num_classes(configs, int(num_classes))
    if scale_lr and batch_size is not None and old_batch and old_batch != int(batch_size):
        _scale_learning_rate(configs, int(batch_size) / old_batch)
    if num_steps is not None:
        _set_steps(configs, int(num_steps))
    if image_size is not None:
        _set_image_size(configs, image_size)
    if fine_tune_checkpoint is not None:
        prefix = resolve_checkpoint(fine_tune_checkpoint)
        train_config.fine_tune_checkpoint = str(Path(prefix).resolve())
        train_config.fine_tune_checkpoint_type = (fine_tune_checkpoint_type
                                                  or checkpoint_type(prefix))
        # the proto's default is V1, which model_lib_v2 refuses ("should be V2")
        train_config.fine_tune_checkpoint_version = 2
        log.info("config: fine-tune from %s (type %s)", prefix,
                 train_config.fine_tune_checkpoint_type)
    elif PLACEHOLDER in train_config.fine_tune_checkpoint:
        train_config.fine_tune_checkpoint = ""
        log.warning("config: no fine-tune checkpoint given: the model trains from scratch "
                    "(pass --checkpoint pretrained/<model>/checkpoint/ckpt-0 to fine-tune)")
    if fine_tune_checkpoint is None and fine_tune_checkpoint_type is not None:
        train_config.fine_tune_checkpoint_type = fine_tune_checkpoint_type
    if augment is not None:
        steps = parse_augment(augment)
        del train_config.data_augmentation_options[:]
        train_config.data_augmentation_options.extend(steps)
    if quantize is not None:
        configs["graph_rewriter_config"] = parse_quantize(quantize)
        log.warning("config: wrote graph_rewriter.quantization, but the TF2 training loop "
                    "does not apply it (it is TF1 quantization-aware training); an int8 model "
                    "comes from `tfod export --formats tflite_int8`")
    if freeze is not None:
        set_freeze(configs, freeze)
    for key, value in (overrides or {}).items():
        _set_dotted(configs, key, value)
    path = save_configs(configs, out_path)
    diff_path = write_diff(before, config_text(configs), path, source)
    log.info("config: wrote %s from %s; changes in %s", path, source, diff_path)
    return path


def set_num_classes(configs: dict, num_classes: int) -> None:
    """num_classes of any meta-architecture (config_util's own knows only ssd and faster_rcnn).

    Example:
        >>> set_num_classes(configs, 3)
    """
    model = configs["model"]
    arch = model.WhichOneof("model")
    message = getattr(model, arch)
    if "num_classes" not in message.DESCRIPTOR.fields_by_name:
        raise ConfigError(f"{arch} has no num_classes", where=f"model.{arch}",
                          fix="use a detection template")
    message.num_classes = int(num_classes)


def write_diff(before: str, after: str, out_path: str | Path, source: str | Path) -> Path:
    """``<out_path>.diff``: a unified diff of the template's text against the patched text."""
    diff = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                fromfile=str(source), tofile=str(out_path))
    diff_path = Path(f"{out_path}.diff")
    diff_path.write_text("".join(diff))
    return diff_path


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
        if i == len(parts) - 1:
            descriptor = fields[part]
            if descriptor.is_repeated:
                del getattr(message, part)[:]  # a --set replaces a repeated field
            _assign(message, part, value, f"--set {key}")
        else:
            message = getattr(message, part)


# ---------------------------------------------------------------------------------------------
# validation

def _placeholder_fields(message, prefix: str = "") -> list[str]:
    """Dotted names of the string fields holding PATH_TO_BE_CONFIGURED."""
    found = []
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        values = value if field.is_repeated else [value]
        for item in values:
            if field.message_type is not None:
                found += _placeholder_fields(item, f"{name}.")
            elif isinstance(item, str) and PLACEHOLDER in item and name not in found:
                found.append(name)
    return found


def _readers(configs: dict) -> list[tuple[str, Any]]:
    return [("train_input_reader", configs["train_input_config"])] + [
        ("eval_input_reader", r) for r in configs["eval_input_configs"]]


def _path_findings(configs: dict) -> list[Finding]:
    findings = []
    for name, reader in _readers(configs):
        for pattern in reader.tf_record_input_reader.input_path:
            if PLACEHOLDER not in pattern and not pattern.startswith(("gs://", "s3://")) \
                    and not glob.glob(pattern):
                findings.append(Finding(
                    f"{pattern} matches no file", f"{name}.tf_record_input_reader.input_path",
                    "point it at existing TFRecords (tfod config --data data/NAME, or "
                    "--train/--eval GLOB)"))
        if reader.label_map_path and PLACEHOLDER not in reader.label_map_path \
                and not Path(reader.label_map_path).is_file():
            findings.append(Finding(f"{reader.label_map_path} not found",
                                    f"{name}.label_map_path",
                                    "give an existing label map (tfod config --label-map FILE)"))
    ckpt = configs["train_config"].fine_tune_checkpoint
    if ckpt and PLACEHOLDER not in ckpt and not ckpt.startswith(("gs://", "s3://")):
        if Path(ckpt).is_dir():
            findings.append(Finding(
                f"{ckpt} is a folder, the OD API needs a checkpoint prefix",
                "train_config.fine_tune_checkpoint",
                "give the prefix, e.g. .../checkpoint/ckpt-0 (tfod config --checkpoint FOLDER "
                "finds it)"))
        elif not Path(f"{ckpt}.index").is_file():
            findings.append(Finding(
                f"{ckpt}.index not found", "train_config.fine_tune_checkpoint",
                "download the model (tfod zoo download NAME) or fix the prefix; "
                "clear it to train from scratch"))
    return findings


def _label_map_findings(configs: dict) -> list[Finding]:
    from object_detection.utils import config_util, label_map_util

    label_map = configs["train_input_config"].label_map_path
    if not label_map or PLACEHOLDER in label_map or not Path(label_map).is_file():
        return []
    try:
        ids = sorted(item.id for item in label_map_util.load_labelmap(label_map).item)
    except Exception as exc:  # the OD API raises ParseError or ValueError
        return [Finding(f"label map cannot be read ({exc})", label_map,
                        "write it with `tfod prepare` (items with id and name)")]
    findings = []
    if ids != list(range(1, len(ids) + 1)):
        findings.append(Finding(f"label ids are {ids}, not 1..{len(ids)}",
                                f"{label_map} item.id",
                                "number the items 1, 2, ... without gaps (0 is the background)"))
    model_classes = config_util.get_number_of_classes(configs["model"])
    if model_classes != len(ids):
        arch = configs["model"].WhichOneof("model")
        findings.append(Finding(
            f"num_classes is {model_classes} but the label map {label_map} has "
            f"{len(ids)} classes", f"model.{arch}.num_classes",
            f"set num_classes: {len(ids)} (tfod config --label-map sets it from the map)"))
    return findings


def required_multiple(configs: dict) -> tuple[int, str] | None:
    """(multiple the image side must be, reason) for feature extractors whose feature
    pyramid adds upsampled coarse maps to finer ones (sizes must halve exactly).

    Example:
        >>> required_multiple(load_configs(resolve_template("efficientdet_d0_512")))[0]
        128
    """
    model = configs["model"]
    arch = model.WhichOneof("model")
    extractor = getattr(model, arch).feature_extractor
    if arch == "ssd" and extractor.HasField("bifpn"):
        level = extractor.bifpn.max_level
        return 2 ** level, (f"model.ssd.feature_extractor.bifpn.max_level is {level}: the BiFPN "
                            f"upsamples its stride-2**{level} map back level by level")
    if arch == "ssd" and extractor.HasField("fpn") and not extractor.use_explicit_padding:
        # levels above 5 are stride-2 convolutions on top; only the backbone levels
        # (up to stride 32) go through the upsample-and-add top-down path
        level = min(extractor.fpn.max_level, 5)
        multiple = 2 ** level
        if extractor.pad_to_multiple and extractor.pad_to_multiple % multiple == 0:
            return None  # the extractor pads its input itself
        return multiple, (f"the FPN top-down path adds the stride-{multiple} map, upsampled "
                          "x2, to the next finer one")
    if arch == "center_net" and "fpn" in extractor.type:
        return 32, (f"{extractor.type} adds stride-32 features upsampled x2 to stride-16 ones")
    return None


def _nearest(size: int, multiple: int) -> str:
    low = (size // multiple) * multiple
    sizes = [s for s in (low, low + multiple) if s > 0]
    return " or ".join(str(s) for s in sizes)


def _size_findings(configs: dict) -> list[Finding]:
    need = required_multiple(configs)
    if need is None:
        return []
    multiple, why = need
    arch = configs["model"].WhichOneof("model")
    resizer = getattr(configs["model"], arch).image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    where = f"model.{arch}.image_resizer.{kind}"
    findings = []
    if kind == "fixed_shape_resizer":
        for side in ("height", "width"):
            size = getattr(resizer.fixed_shape_resizer, side)
            if size % multiple:
                findings.append(Finding(
                    f"{side} {size} is not a multiple of {multiple} ({why}); FPN feature maps "
                    "would not line up (\"Dimensions must be equal\")", f"{where}.{side}",
                    f"use {_nearest(size, multiple)} (tfod config --image-size "
                    f"{_nearest(size, multiple).split()[-1]})"))
    elif kind == "keep_aspect_ratio_resizer":
        keep = resizer.keep_aspect_ratio_resizer
        if not keep.pad_to_max_dimension:
            findings.append(Finding(
                "pad_to_max_dimension is false: images keep varying sizes that the FPN levels "
                f"cannot line up ({why})", f"{where}.pad_to_max_dimension",
                f"set pad_to_max_dimension: true with max_dimension a multiple of {multiple}, "
                "or use a fixed_shape_resizer"))
        elif keep.max_dimension % multiple:
            findings.append(Finding(
                f"max_dimension {keep.max_dimension} is not a multiple of {multiple} ({why})",
                f"{where}.max_dimension",
                f"use {_nearest(keep.max_dimension, multiple)} (tfod config --image-size N)"))
    return findings


def _schedule_findings(configs: dict) -> list[Finding]:
    train_config = configs["train_config"]
    steps = train_config.num_steps
    optimizer, kind, lr = _schedule(train_config)
    where = f"train_config.optimizer.{optimizer}.learning_rate.{kind}"
    fix = f"run `tfod config FILE --steps {steps or 'N'} --out FILE` to make them consistent"
    findings = []
    if kind == "cosine_decay_learning_rate":
        if steps and lr.total_steps != steps:
            findings.append(Finding(
                f"total_steps {lr.total_steps} differs from train_config.num_steps {steps} "
                "(the learning rate would " + ("reach 0 early" if lr.total_steps < steps
                                               else "never decay fully") + ")",
                f"{where}.total_steps", f"set total_steps: {steps}, or {fix}"))
        if lr.warmup_steps and lr.warmup_steps >= lr.total_steps:
            findings.append(Finding(
                f"warmup_steps {lr.warmup_steps} is not below total_steps {lr.total_steps}",
                f"{where}.warmup_steps",
                f"set warmup_steps to a small part of total_steps, e.g. "
                f"{max(1, lr.total_steps // 20)}"))
        if lr.warmup_steps and lr.warmup_learning_rate > lr.learning_rate_base:
            findings.append(Finding(
                f"warmup_learning_rate {lr.warmup_learning_rate:g} is above "
                f"learning_rate_base {lr.learning_rate_base:g}", f"{where}.warmup_learning_rate",
                "warm up from a smaller rate (the OD API refuses this schedule)"))
    elif kind == "manual_step_learning_rate" and steps:
        late = [s.step for s in lr.schedule if s.step > steps]
        if late:
            findings.append(Finding(
                f"schedule steps {late} lie beyond train_config.num_steps {steps} "
                "(those rates are never used)", f"{where}.schedule.step",
                f"keep every step below {steps}, or {fix}"))
    return findings


def _on_tpu() -> bool:
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")
                or os.environ.get("TPU_ACCELERATOR_TYPE") or glob.glob("/dev/accel[0-9]*"))


def count_records(patterns: Sequence[str]) -> tuple[int, str] | None:
    """(records, how counted) in TFRecord globs: from a ``manifest.json`` next to
    them (written by ``tfod prepare``), else with tf.data if the files are small;
    None when counting would be expensive.

    Example:
        >>> count_records(["data/pets/train-?????-of-00002.tfrecord"])
        (160, 'manifest.json')
    """
    files = sorted({f for p in patterns for f in glob.glob(p)})
    if not files:
        return None
    total, counted = 0, set()
    for folder in sorted({Path(f).parent for f in files}):
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            continue
        try:
            splits = json.loads(manifest.read_text())["splits"]
        except (ValueError, KeyError):
            continue
        names = {Path(f).name for f in files if Path(f).parent == folder}
        for split in splits.values():
            shards = set(split.get("shards", []))
            if shards and shards <= names:
                total += int(split["images"])
                counted |= {str(folder / s) for s in shards}
    if counted >= set(files):
        return total, "manifest.json"
    if sum(os.path.getsize(f) for f in files) > COUNT_RECORDS_MAX_BYTES:
        return None
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(files)
    return int(dataset.reduce(0, lambda n, _: n + 1).numpy()), "tf.data count"


def _slow_findings(configs: dict) -> list[Finding]:
    """Checks that read files with TensorFlow (checkpoint variables, record counts)."""
    findings = []
    train_config = configs["train_config"]
    ckpt = train_config.fine_tune_checkpoint
    if ckpt and Path(f"{ckpt}.index").is_file():
        wanted = train_config.fine_tune_checkpoint_type or (
            "detection" if train_config.from_detection_checkpoint else "classification")
        found = checkpoint_type(ckpt)
        if (found == "classification") != (wanted == "classification"):
            findings.append(Finding(
                f"fine_tune_checkpoint_type is {wanted!r} but {ckpt} is a {found} checkpoint "
                "(restoring would fail with \"... is not available in checkpoint\" or "
                "restore nothing)", "train_config.fine_tune_checkpoint_type",
                f"set fine_tune_checkpoint_type: \"{found}\" (tfod config --checkpoint "
                "detects it)"))
    patterns = [p for p in configs["train_input_config"].tf_record_input_reader.input_path
                if PLACEHOLDER not in p]
    counted = count_records(patterns) if patterns else None
    if counted is not None and counted[0] == 0:
        findings.append(Finding(
            f"the training TFRecords hold no records (by {counted[1]})",
            "train_input_reader.tf_record_input_reader.input_path",
            "prepare the dataset again (tfod prepare) or point at the right files"))
    elif counted is not None and train_config.batch_size > counted[0]:
        findings.append(Finding(
            f"batch_size {train_config.batch_size} is larger than the training set "
            f"({counted[0]} records, by {counted[1]})", "train_config.batch_size",
            f"use --batch-size {counted[0]} or less"))
    return findings


def find_problems(path: str | Path) -> list[Finding]:
    """Every problem :func:`check_pipeline` knows, cheap ones first; errors and warnings.

    File checks (paths, label map, sizes, schedule) come first; if they find an
    error, the checks that open checkpoints and TFRecords are skipped.

    Example:
        >>> [str(f) for f in find_problems("runs/demo/pipeline.config") if f.error]
    """
    from object_detection.utils import config_util

    path = Path(path)
    if not path.is_file():
        raise ConfigError("pipeline config not found", where=str(path),
                          fix="run `tfod config` first or give the right path")
    configs = load_configs(path)
    proto = config_util.create_pipeline_proto_from_configs(configs)
    findings = [Finding(f"{PLACEHOLDER} left in the config", name,
                        "set it with `tfod config` (--data or --label-map/--train/--eval; "
                        "--checkpoint for train_config.fine_tune_checkpoint)")
                for name in _placeholder_fields(proto)]
    findings += _path_findings(configs) + _label_map_findings(configs)
    findings += _size_findings(configs) + _schedule_findings(configs)
    train_config = configs["train_config"]
    if train_config.use_bfloat16 and not _on_tpu():
        findings.append(Finding("use_bfloat16 is true but this machine has no TPU (bfloat16 "
                                "training is slow or unsupported on CPU/GPU)",
                                "train_config.use_bfloat16", "set use_bfloat16: false"))
    if "graph_rewriter_config" in configs:
        findings.append(Finding(
            "graph_rewriter.quantization is not applied by the TF2 training loop",
            "graph_rewriter", "train in float; make int8 with `tfod export --formats "
            "tflite_int8`", error=False))
    if not any(f.error for f in findings):
        findings += _slow_findings(configs)
    return findings


def check_pipeline(path: str | Path) -> list[str]:
    """Check a config before TensorFlow builds anything: raise ConfigError listing every
    error (what, where, fix), return the warnings as text.

    Example:
        >>> check_pipeline("runs/demo/pipeline.config")
        []
    """
    findings = find_problems(path)
    errors = [f for f in findings if f.error]
    if len(errors) == 1:
        error = ConfigError(errors[0].what, where=f"{path}: {errors[0].where}",
                            fix=errors[0].fix)
    elif errors:
        error = ConfigError(f"{len(errors)} problems:\n  - "
                            + "\n  - ".join(str(f) for f in errors), where=str(path),
                            fix="fix them and check again with `tfod config --check FILE`")
    if errors:
        error.findings = errors
        raise error
    warnings = [str(f) for f in findings if not f.error]
    for warning in warnings:
        log.warning("config: %s", warning)
    return warnings


def check_exportable(configs: dict | str | Path, fmt: str) -> None:
    """Raise ConfigError when ``fmt`` cannot be exported from this meta-architecture.

    Example:
        >>> check_exportable("runs/demo/pipeline.config", "tflite")
    """
    where = "model"
    if not isinstance(configs, dict):
        where = f"{configs}: model"
        configs = load_configs(configs)
    arch = meta_architecture(configs)
    if fmt.startswith("tflite") and arch not in TFLITE_ARCHS:
        raise ConfigError(f"the OD API cannot export a {arch} model to {fmt} (TFLite needs "
                          f"one of {', '.join(TFLITE_ARCHS)})", where=f"{where}.{arch}",
                          fix="use an SSD or CenterNet template, or export saved_model only")


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
    Explicit ``label_map``/``train_input``/``eval_input`` win over the folder's.

    Example:
        >>> patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", "runs/demo/pipeline.config",
        ...                            data_dir="data/demo", num_steps=600)
    """
    if data_dir is None:
        return patch_pipeline(template, out_path, **kwargs)
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
    defaults = {"label_map": data_dir / "label_map.pbtxt",
                "train_input": split_pattern(data_dir, "train"),
                "eval_input": split_pattern(data_dir, eval_split)}
    for key, value in defaults.items():
        if kwargs.get(key) is None:
            kwargs[key] = value
    return patch_pipeline(template, out_path, **kwargs)


# -- freezing (tfod config --freeze) ------------------------------------------------------

FREEZE_CHOICES = ("feature_extractor", "none")
# Box predictor variables of an SSD model ("BoxPredictor/..." and
# "WeightSharedConvolutionalBoxPredictor/..."). The Keras backbones carry no common scope
# (MobileNetV2's are "block_1_expand/kernel", ...), so freezing the feature extractor is
# written as "train only these" (update_trainable_variables), not as a list to freeze.
SSD_BOX_PREDICTOR_VARIABLES = r"BoxPredictor/"


def set_freeze(configs: dict, what: str) -> None:
    """Which variables training updates: ``feature_extractor`` freezes the feature
    extractor (backbone and FPN) and trains the box predictor; ``none`` trains all.

    Writes ``train_config.update_trainable_variables`` / ``freeze_variables`` (regexes
    searched in variable names, as in the OD API; both replaced, not appended to).
    TF2's ``model_lib_v2`` ignores these fields (tensorflow/models#10167):
    :func:`freeze_model` applies them to the model that training builds.

    Example:
        >>> configs = load_configs("runs/pets/pipeline.config")
        >>> set_freeze(configs, "feature_extractor")
    """
    if what not in FREEZE_CHOICES:
        close = difflib.get_close_matches(str(what), FREEZE_CHOICES, n=1)
        raise ConfigError(f"unknown freeze choice {what!r}", where="--freeze",
                          fix=(f"did you mean {close[0]}? " if close else "")
                          + f"use one of: {', '.join(FREEZE_CHOICES)}")
    train_config = configs["train_config"]
    del train_config.update_trainable_variables[:]
    del train_config.freeze_variables[:]
    if what == "none":
        return
    arch = configs["model"].WhichOneof("model")
    if arch != "ssd":
        raise ConfigError(f"--freeze feature_extractor is defined for SSD models, not {arch}",
                          where="model", fix="list the variables to freeze yourself in "
                          "train_config.freeze_variables (regexes of variable names)")
    train_config.update_trainable_variables.append(SSD_BOX_PREDICTOR_VARIABLES)


def trainable_filter(variables: Sequence, train_config) -> list:
    """``variables`` minus those frozen by ``train_config``: kept if a name matches an
    ``update_trainable_variables`` regex (when any) and no ``freeze_variables`` regex
    (``re.search`` on the name without ``:0``, like the OD API's TF1 loop)."""
    import re

    include = [re.compile(p) for p in train_config.update_trainable_variables]
    exclude = [re.compile(p) for p in train_config.freeze_variables]

    def kept(variable) -> bool:
        name = variable.name.split(":")[0]
        return ((not include or any(p.search(name) for p in include))
                and not any(p.search(name) for p in exclude))

    return [v for v in variables if kept(v)]


def freeze_model(model, train_config):
    """Make ``model.trainable_variables`` (what ``model_lib_v2``'s train step
    differentiates and updates) honour the config's freeze fields. Returns the model.

    Batch-norm moving statistics of frozen layers still update in training mode; set
    ``model.ssd.freeze_batchnorm: true`` to keep them too.

    Example:
        >>> model = freeze_model(model_builder.build(configs["model"], is_training=True),
        ...                      configs["train_config"])
    """
    if not (train_config.update_trainable_variables or train_config.freeze_variables):
        return model
    base = type(model)
    logged = []

    def trainable_variables(self):
        everything = base.trainable_variables.fget(self)
        kept = trainable_filter(everything, train_config)
        if everything and not logged:
            logged.append(True)
            log.info("freeze: training %d of %d trainable variables", len(kept),
                     len(everything))
        return kept

    model.__class__ = type(base.__name__, (base,), {
        "trainable_variables": property(trainable_variables), "__module__": base.__module__})
    return model
