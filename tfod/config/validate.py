"""Checks of a pipeline config before TensorFlow builds anything.

:func:`find_problems` lists every problem it finds as a :class:`Finding` (what, where,
fix), cheap checks first; :func:`check_pipeline` raises them together as one
ConfigError. The checks are scoped to the stage that reads the config: ``train`` checks
everything; ``eval`` and ``export`` skip what only training reads (the fine-tune
checkpoint, the training records, the schedule), so a finished run still evaluates and
exports after its pretrained checkpoint was deleted. For training, the boxes of the
prepared dataset are compared with the model's anchors last (:func:`check_data`,
warnings only).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tfod.config.patch import checkpoint_type
from tfod.config.schedule import lr_schedule
from tfod.config.templates import PLACEHOLDER, TFLITE_ARCHS, load_configs, meta_architecture
from tfod.errors import ConfigError
from tfod.layout import DatasetDir

log = logging.getLogger(__name__)


COUNT_RECORDS_MAX_BYTES = 64 * 2**20  # count train records with tf.data only below this
#: the stages whose checks differ: eval and export read no training input, no fine-tune
#: checkpoint and no schedule
SCOPES = ("train", "eval", "export")
#: fields only training reads (placeholders left in them do not matter to eval or export)
TRAINING_ONLY = ("train_config.fine_tune_checkpoint", "train_input_reader.")


@dataclass(frozen=True)
class Finding:
    """One problem in a pipeline config: what is wrong, where (field or file), the fix."""

    what: str
    where: str
    fix: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}"


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


def _readers(configs: dict, scope: str = "train") -> list[tuple[str, Any]]:
    train = [("train_input_reader", configs["train_input_config"])] if scope == "train" else []
    return train + [("eval_input_reader", r) for r in configs["eval_input_configs"]]


def _path_findings(configs: dict, scope: str = "train") -> list[Finding]:
    findings = []
    for name, reader in _readers(configs, scope):
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
    if scope != "train":
        return findings
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
    optimizer, kind, lr = lr_schedule(train_config)
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
        manifest = DatasetDir(folder).manifest
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


def find_problems(path: str | Path, scope: str = "train",
                  configs: dict | None = None) -> list[Finding]:
    """Every problem :func:`check_pipeline` knows, cheap ones first; errors and warnings.

    File checks (paths, label map, sizes, schedule) come first; if they find an
    error, the checks that open checkpoints and TFRecords are skipped. ``scope`` is the
    stage that will read the config (:data:`SCOPES`); ``configs`` the config already
    parsed from ``path`` (read from it when None).

    Example:
        >>> [str(f) for f in find_problems("runs/demo/pipeline.config") if f.error]
    """
    from object_detection.utils import config_util

    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {SCOPES}")
    if configs is None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("pipeline config not found", where=str(path),
                              fix="run `tfod config` first or give the right path")
        configs = load_configs(path)
    proto = config_util.create_pipeline_proto_from_configs(configs)
    findings = [Finding(f"{PLACEHOLDER} left in the config", name,
                        "set it with `tfod config` (--data or --label-map/--train/--eval; "
                        "--checkpoint for train_config.fine_tune_checkpoint)")
                for name in _placeholder_fields(proto)
                if scope == "train" or not name.startswith(TRAINING_ONLY)]
    findings += _path_findings(configs, scope) + _label_map_findings(configs)
    findings += _size_findings(configs)
    if scope != "train":
        return findings
    findings += _schedule_findings(configs)
    train_config = configs["train_config"]
    if train_config.use_bfloat16 and not _on_tpu():
        findings.append(Finding("use_bfloat16 is true but this machine has no TPU (bfloat16 "
                                "training is slow or unsupported on CPU/GPU)",
                                "train_config.use_bfloat16", "set use_bfloat16: false"))
    findings += _quantization_findings(configs)
    if not any(f.error for f in findings):
        findings += _slow_findings(configs)
    return findings + check_data(configs)


def _quantization_findings(configs: dict) -> list[Finding]:
    """A ``graph_rewriter.quantization`` block is quantization-aware training
    (:mod:`tfod.compat.qat`): refused for a model it does not support."""
    from tfod.compat import qat

    rewriter = configs.get("graph_rewriter_config")
    if rewriter is None or not rewriter.HasField("quantization"):
        return []
    why = qat.unsupported(configs["model"])
    if why is None:
        return []
    return [Finding(f"quantization-aware training does not support the {why}",
                    "graph_rewriter.quantization",
                    f"use an SSD with a feature extractor of {', '.join(qat.SUPPORTED)}, or "
                    "remove the block (int8 export then uses post-training quantization)")]


def check_data(configs: dict) -> list[Finding]:
    """:func:`tfod.config.anchors.data_findings`: warnings only, so a dataset whose
    statistics cannot be read costs a warning, never the check."""
    from tfod.config.anchors import data_findings

    try:
        return data_findings(configs)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return [Finding(f"the training boxes could not be compared with the anchors "
                        f"({type(exc).__name__}: {exc})", "train_input_reader",
                        "re-run `tfod prepare` to rewrite stats.json", error=False)]


def check_configs(configs: dict, path: str | Path, scope: str = "train") -> list[str]:
    """:func:`check_pipeline` of a config already parsed from ``path``, with the checks of
    the stage ``scope`` (``train``, ``eval`` or ``export``): each stage parses its config
    once and checks that.

    Example:
        >>> configs = load_configs("runs/demo/pipeline.config")
        >>> check_configs(configs, "runs/demo/pipeline.config", scope="eval")
        []
    """
    findings = find_problems(path, scope, configs)
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


def check_pipeline(path: str | Path, *, scope: str = "train") -> list[str]:
    """Check a config before TensorFlow builds anything: raise ConfigError listing every
    error (what, where, fix), return the warnings as text. ``scope`` is the stage that will
    read it (:data:`SCOPES`): ``train`` checks everything, ``eval`` and ``export`` skip what
    only training reads. (The stages parse once and call :func:`check_configs`.)

    Example:
        >>> check_pipeline("runs/demo/pipeline.config")
        []
        >>> check_pipeline("runs/demo/pipeline.config", scope="eval")
        []
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("pipeline config not found", where=str(path),
                          fix="run `tfod config` first or give the right path")
    return check_configs(load_configs(path), path, scope)


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
