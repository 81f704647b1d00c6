"""Patching: a template (or config) plus a dataset and options -> ``pipeline.config`` and
``pipeline.config.diff``.

Patching uses the OD API's ``config_util`` (``merge_external_params_with_configs``) and
the proto messages directly; nothing is edited with regular expressions. Repeated fields
(input paths, augmentation options) are replaced, not appended.
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from tfod.config.options import parse_augment, parse_quantize, set_dotted, set_freeze
from tfod.config.schedule import scale_learning_rate, set_steps
from tfod.config.templates import (PLACEHOLDER, config_text, load_configs, resolve_template,
                                   save_configs)
from tfod.errors import ConfigError
from tfod.layout import DatasetDir, stage_log

log = logging.getLogger(__name__)


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
                   overrides: dict[str, Any] | None = None,
                   fit_data: bool = False, max_size: int | None = None) -> Path:
    """Write a patched copy of a template or config, and ``<out>.diff`` against it.

    ``num_classes`` defaults to the number of classes in ``label_map``. Input
    paths and augmentation options replace the template's (repeated fields are
    replaced, not appended to). ``scale_lr`` multiplies every learning rate of
    the schedule by new/old batch size. The fine-tune checkpoint's type is read
    from its variables unless given. ``quantize`` writes a ``graph_rewriter``
    block: quantization-aware training from its ``delay`` (:mod:`tfod.compat.qat`).
    ``freeze="feature_extractor"`` trains only the box predictor (:func:`set_freeze`).
    ``fit_data`` chooses the input size (up to ``max_size``, 640 by default; an
    ``image_size`` given is kept) and the anchors from the training boxes
    (:func:`tfod.config.fitting.fit_data`; ``overrides`` still win). The training boxes
    are compared with the anchors of the written config, and what does not fit is logged
    as warnings (as ``tfod config --check`` reports it).

    Example:
        >>> patch_pipeline("ssd_mobilenet_v2_tiny", "runs/demo/pipeline.config",
        ...                label_map="data/demo/label_map.pbtxt",
        ...                train_input="data/demo/train-?????-of-00001.tfrecord",
        ...                eval_input="data/demo/val-?????-of-00001.tfrecord", num_steps=600,
        ...                augment="random_horizontal_flip,random_adjust_brightness:max_delta=0.2")
    """
    source = resolve_template(template)
    with stage_log(Path(out_path).parent, "config"):
        configs = load_configs(source)
        before = config_text(configs)
        configs = _merge_inputs(configs, label_map, train_input, eval_input, num_classes,
                                batch_size, scale_lr)
        if num_steps is not None:
            set_steps(configs, int(num_steps))
        if image_size is not None:
            _set_image_size(configs, image_size)
        _set_fine_tune(configs["train_config"], fine_tune_checkpoint, fine_tune_checkpoint_type)
        if augment is not None:
            steps = parse_augment(augment)
            del configs["train_config"].data_augmentation_options[:]
            configs["train_config"].data_augmentation_options.extend(steps)
        if quantize is not None:
            configs["graph_rewriter_config"] = parse_quantize(quantize)
            quantization = configs["graph_rewriter_config"].quantization
            log.info("config: quantization-aware training from step %d (%d-bit weights, "
                     "%d-bit activations); `tfod export --formats tflite_int8` then uses "
                     "its learned ranges", quantization.delay, quantization.weight_bits or 8,
                     quantization.activation_bits or 8)
        if freeze is not None:
            set_freeze(configs, freeze)
        if fit_data:
            from tfod.config import fitting

            fitting.fit_data(configs, max_size or fitting.DEFAULT_MAX_SIZE,
                             keep_size=image_size is not None)
        for key, value in (overrides or {}).items():
            set_dotted(configs, key, value)
        path = save_configs(configs, out_path)
        diff_path = write_diff(before, config_text(configs), path, source)
        log.info("config: wrote %s from %s; changes in %s", path, source, diff_path)
        from tfod.config.validate import check_data  # validate imports this module

        for finding in check_data(configs):
            log.warning("config: %s", finding)
    return path


def _merge_inputs(configs: dict, label_map, train_input, eval_input, num_classes,
                  batch_size, scale_lr: bool) -> dict:
    """Label map, input paths and batch size through the OD API's own
    ``merge_external_params_with_configs``; num_classes (from the label map unless given);
    learning rates scaled with the batch when ``scale_lr``."""
    from object_detection.utils import config_util

    old_batch = configs["train_config"].batch_size
    kwargs: dict[str, Any] = {}
    if label_map is not None:
        if not Path(label_map).is_file():
            raise ConfigError("label map not found", where=str(label_map),
                              fix="give the label_map.pbtxt written by `tfod prepare`")
        kwargs["label_map_path"] = str(Path(label_map).resolve())
        if num_classes is None:
            from tfod.data.labelmap import read_label_map

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
    if num_classes is not None:
        set_num_classes(configs, int(num_classes))
    if scale_lr and batch_size is not None and old_batch and old_batch != int(batch_size):
        scale_learning_rate(configs, int(batch_size) / old_batch)
    return configs


def _set_fine_tune(train_config, checkpoint, kind: str | None) -> None:
    """The fine-tune checkpoint prefix (of a prefix or a folder) and its type (read from
    its variables unless given); without one, the template's placeholder is cleared."""
    if checkpoint is not None:
        prefix = resolve_checkpoint(checkpoint)
        train_config.fine_tune_checkpoint = str(Path(prefix).resolve())
        train_config.fine_tune_checkpoint_type = kind or checkpoint_type(prefix)
        # the proto's default is V1, which model_lib_v2 refuses ("should be V2")
        train_config.fine_tune_checkpoint_version = 2
        log.info("config: fine-tune from %s (type %s)", prefix,
                 train_config.fine_tune_checkpoint_type)
        return
    if PLACEHOLDER in train_config.fine_tune_checkpoint:
        train_config.fine_tune_checkpoint = ""
        log.warning("config: no fine-tune checkpoint given: the model trains from scratch "
                    "(pass --checkpoint pretrained/<model>/checkpoint/ckpt-0 to fine-tune)")
    if kind is not None:
        train_config.fine_tune_checkpoint_type = kind


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
    from tfod.data.prepare import split_pattern

    data_dir = Path(data_dir)
    manifest_path = DatasetDir(data_dir).manifest
    if not manifest_path.is_file():
        raise ConfigError("not a prepared dataset (no manifest.json)", where=str(data_dir),
                          fix="run `tfod prepare` first, or pass the data/<name> folder")
    splits = json.loads(manifest_path.read_text())["splits"]
    eval_split = next((s for s in ("val", "test") if s in splits), None)
    if "train" not in splits or eval_split is None:
        raise ConfigError(f"dataset has splits {', '.join(splits)}", where=str(manifest_path),
                          fix="prepare it with a train and a val (or test) split")
    defaults = {"label_map": DatasetDir(data_dir).label_map,
                "train_input": split_pattern(data_dir, "train"),
                "eval_input": split_pattern(data_dir, eval_split)}
    for key, value in defaults.items():
        if kwargs.get(key) is None:
            kwargs[key] = value
    return patch_pipeline(template, out_path, **kwargs)


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
