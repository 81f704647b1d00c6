"""Export a trained checkpoint into every deployable format and measure each file.

Formats (``export(..., formats=[...])``):

- ``saved_model``: the OD API's ``exporter_lib_v2`` (input ``image_tensor`` by default);
- ``frozen_graph``: the SavedModel's serving function with its variables folded
  into constants (``convert_variables_to_constants_v2``), importable with
  ``tf.compat.v1.import_graph_def``; tensor names in ``frozen_graph.json``;
- ``tflite`` (float32), ``tflite_fp16``, ``tflite_dynamic`` (dynamic-range) and
  ``tflite_int8`` (full integer, uint8 input, calibrated on real training
  images): one ``export_tflite_graph_lib_tf2`` trace, one converter run each.
  SSD and CenterNet only, as in the OD API.

Each file is then run over the val split and scored with the OD API's COCO
evaluator; ``report.md`` / ``report.json`` give size, latency and mAP of each.

Layout of ``exports/<run>/``::

    saved_model/  frozen_graph.pb  frozen_graph.json
    model_float32.tflite  model_float16.tflite  model_dynamic.tflite  model_int8.tflite
    tflite.json             input size, normalisation (scale, offset) per TFLite file
    label_map.pbtxt  labels.txt  pipeline.config  export.json  report.md  report.json
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from tfod.errors import ExportError
from tfod.files import check_name, check_owned, mark_owned, write_text_atomic

log = logging.getLogger(__name__)

#: format name -> TFLite variant (None: not a TFLite file)
FORMATS = {"saved_model": None, "frozen_graph": None, "tflite": "float32",
           "tflite_fp16": "float16", "tflite_dynamic": "dynamic", "tflite_int8": "int8"}
ALIASES = {"tflite_float32": "tflite", "tflite_float16": "tflite_fp16"}
TFLITE_FILES = {"float32": "model_float32.tflite", "float16": "model_float16.tflite",
                "dynamic": "model_dynamic.tflite", "int8": "model_int8.tflite"}
TFLITE_ARCHS = ("ssd", "center_net")
#: written last by export(): its presence marks a complete export folder
COMPLETE = "export.json"

INPUT_TYPES = ("image_tensor", "float_image_tensor", "encoded_image_string_tensor",
               "tf_example")
#: int8 may lose at most this much mAP (0..1 scale, i.e. 2 points) before the report warns
INT8_TOLERANCE = 0.02
MAP = "DetectionBoxes_Precision/mAP"
MAP50 = "DetectionBoxes_Precision/mAP@.50IOU"


def _configs(config: str | Path | dict) -> dict:
    from tfod import pipeline

    return config if isinstance(config, dict) else pipeline.load_configs(config)


def _resolve(config: Path, checkpoint: str | None) -> str:
    """The checkpoint prefix to export: given, ``best``, or the run's latest."""
    import tensorflow as tf

    if checkpoint == "best":
        from tfod.evaluation import best_checkpoint

        best = best_checkpoint(config.parent / "eval")
        if not best:
            raise ExportError("no evaluated checkpoint to pick the best from",
                              where=str(config.parent / "eval"),
                              fix="run `tfod eval RUN --all` first, or leave out --checkpoint")
        checkpoint = best["checkpoint"]
    if checkpoint == "latest":
        checkpoint = None
    checkpoint = checkpoint or tf.train.latest_checkpoint(str(config.parent))
    if not checkpoint:
        raise ExportError("no checkpoint found", where=str(config.parent),
                          fix="train first, or pass --checkpoint PATH/ckpt-N")
    if not Path(checkpoint + ".index").is_file():
        raise ExportError("checkpoint not found", where=checkpoint,
                          fix="give the prefix, e.g. runs/demo/ckpt-3")
    return checkpoint


def _checkpoint_dir(checkpoint: str, workdir: Path) -> str:
    """A folder whose latest checkpoint is ``checkpoint`` (the OD API exporters take a dir)."""
    import tensorflow as tf

    ckpt_dir = workdir / "checkpoint_ref"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tf.compat.v1.train.update_checkpoint_state(str(ckpt_dir), str(Path(checkpoint).resolve()))
    return str(ckpt_dir)


def _check_tflite_arch(configs: dict, where: str) -> None:
    from tfod import pipeline

    arch = pipeline.meta_architecture(configs)
    if arch not in TFLITE_ARCHS:
        raise ExportError(f"the OD API cannot export a {arch} model to TFLite "
                          f"(only {' and '.join(TFLITE_ARCHS)})", where=f"{where} model.{arch}",
                          fix="use an SSD or CenterNet template, or export "
                              "saved_model,frozen_graph only")


def export_saved_model(config: str | Path | dict, checkpoint: str, out_dir: str | Path,
                       input_type: str = "image_tensor") -> Path:
    """SavedModel with the OD API's ``exporter_lib_v2``; returns ``out_dir/saved_model``.

    ``config`` is a pipeline.config path or an already parsed config dict.

    Example:
        >>> export_saved_model("runs/demo/pipeline.config", "runs/demo/ckpt-3", "exports/demo")
    """
    from object_detection import exporter_lib_v2
    from object_detection.utils import config_util

    if input_type not in INPUT_TYPES:
        raise ExportError(f"unknown input type {input_type!r}", where="--input-type",
                          fix=f"use one of: {', '.join(INPUT_TYPES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    proto = config_util.create_pipeline_proto_from_configs(_configs(config))
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".partial-") as t:
        work = Path(t)
        exporter_lib_v2.export_inference_graph(input_type, proto,
                                               _checkpoint_dir(checkpoint, work),
                                               str(work / "out"))
        final = out_dir / "saved_model"
        if final.exists():
            shutil.rmtree(final)
        os.replace(work / "out" / "saved_model", final)
    return final


def export_frozen_graph(saved_model: str | Path, out_dir: str | Path) -> Path:
    """``frozen_graph.pb``: the SavedModel's ``serving_default`` function with its
    variables folded into constants, plus ``frozen_graph.json`` naming the input
    and output tensors. Load it with ``tf.compat.v1.import_graph_def`` (or
    :func:`tfod.inference.load_detector`).

    Example:
        >>> export_frozen_graph("exports/demo/saved_model", "exports/demo")
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    out_dir = Path(out_dir)
    loaded = tf.saved_model.load(str(saved_model))  # keeps the variables alive
    fn = loaded.signatures["serving_default"]
    frozen = convert_variables_to_constants_v2(fn)
    specs = fn.structured_input_signature[1]
    placeholders = [t for t in frozen.inputs if t.dtype != tf.resource]
    if len(specs) != 1 or len(placeholders) != 1:
        raise ExportError(f"expected one image input, found {sorted(specs)}",
                          where=str(saved_model), fix="export without side inputs")
    (key, spec), = specs.items()
    meta = {"inputs": {key: {"name": placeholders[0].name, "dtype": spec.dtype.name,
                             "shape": [-1 if d is None else int(d) for d in spec.shape]}},
            "outputs": {k: v.name for k, v in sorted(tf.nest.pack_sequence_as(
                fn.structured_outputs, frozen.outputs).items())}}
    final = out_dir / "frozen_graph.pb"
    tmp = out_dir / f".frozen_graph.pb.tmp-{os.getpid()}"
    tmp.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    os.replace(tmp, final)
    (out_dir / "frozen_graph.json").write_text(json.dumps(meta, indent=2))
    return final


def _input_normalisation(configs: dict) -> tuple[float, float]:
    """(scale, offset) such that TFLite input = pixel * scale + offset.

    The SSD graph of ``export_tflite_graph_lib_tf2`` calls ``model.predict``
    only, so its input must already be normalised: measured by running the
    model's own ``preprocess`` on two flat images. The CenterNet graph calls
    ``preprocess`` itself and takes raw pixels (scale 1, offset 0).
    """
    import tensorflow as tf
    from object_detection.builders import model_builder
    from tfod import pipeline

    if pipeline.meta_architecture(configs) == "center_net":
        return 1.0, 0.0
    model = model_builder.build(configs["model"], is_training=False)
    h, w = pipeline.image_size(configs)
    probe = tf.stack([tf.zeros([h, w, 3]), tf.fill([h, w, 3], 255.0)])
    processed, _ = model.preprocess(probe)
    low = float(tf.reduce_mean(processed[0]))
    high = float(tf.reduce_mean(processed[1]))
    return (high - low) / 255.0, low


def _record_files(input_config, what: str) -> list[str]:
    import tensorflow as tf

    patterns = list(input_config.tf_record_input_reader.input_path)
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise ExportError(f"no {what} TFRecords found", where=", ".join(patterns) or "(empty)",
                          fix="check the input_path in pipeline.config (tfod prepare writes "
                              "data/<name>/<split>-*.tfrecord)")
    return files


def _decoded_records(files: Sequence[str], label_map: str | None = None):
    """Decoded examples (numpy dicts) via the OD API's ``TfExampleDecoder``,
    interleaved over the shards."""
    import tensorflow as tf
    from object_detection.data_decoders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder(
        label_map_proto_file=label_map if label_map and Path(label_map).is_file() else None)
    ds = tf.data.Dataset.from_tensor_slices(list(files)).interleave(
        tf.data.TFRecordDataset, cycle_length=max(1, len(files)), num_parallel_calls=1,
        deterministic=True)
    return ds.map(decoder.decode).as_numpy_iterator()


def calibration_images(configs: dict, count: int = 100) -> list[np.ndarray]:
    """Up to ``count`` RGB uint8 images from the training TFRecords, decoded by the
    OD API's ``TfExampleDecoder`` (for int8 calibration).

    Example:
        >>> images = calibration_images(pipeline.load_configs("runs/demo/pipeline.config"))
    """
    files = _record_files(configs["train_input_config"], "training")
    images = []
    for example in _decoded_records(files):
        images.append(example["image"][..., :3])
        if len(images) >= count:
            break
    if len(images) < count:
        log.warning("export: only %d training images for int8 calibration (asked for %d)",
                    len(images), count)
    return images


def _convert(graph_dir: Path, variant: str, representative=None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(graph_dir))
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        # integer kernels everywhere they exist; the detection post-processing stays float
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.inference_input_type = tf.uint8
    return converter.convert()


def export_tflite(config: str | Path | dict, checkpoint: str, out_dir: str | Path,
                  max_detections: int = 10, variants: Sequence[str] = ("float32",),
                  calibration_images_count: int = 100) -> dict[str, Path]:
    """TFLite files through ``export_tflite_graph_lib_tf2`` (traced once) and the
    converter (once per variant: ``float32``, ``float16``, ``dynamic``, ``int8``).

    The SSD models take a [1,H,W,3] image normalised as written in
    ``tflite.json`` (float32) or its uint8 quantisation (int8: raw pixels); the
    post-processing is the TFLite detection op. int8 is calibrated with
    ``calibration_images_count`` training images resized and normalised exactly
    as :class:`tfod.inference.TFLiteDetector` feeds them.

    Example:
        >>> export_tflite("runs/demo/pipeline.config", "runs/demo/ckpt-3", "exports/demo",
        ...               variants=["float32", "int8"])
    """
    from object_detection import export_tflite_graph_lib_tf2
    from object_detection.utils import config_util
    from tfod import pipeline
    from tfod.inference import tflite_input

    configs = _configs(config)
    _check_tflite_arch(configs, str(config) if not isinstance(config, dict) else "config")
    unknown = [v for v in variants if v not in TFLITE_FILES]
    if unknown:
        raise ExportError(f"unknown TFLite variant(s) {', '.join(unknown)}", where="variants",
                          fix=f"use some of: {', '.join(TFLITE_FILES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scale, offset = _input_normalisation(configs)
    size = pipeline.image_size(configs)
    calibration = calibration_images(configs, calibration_images_count) \
        if "int8" in variants else []
    proto = config_util.create_pipeline_proto_from_configs(configs)
    written, meta = {}, {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".partial-") as t:
        work = Path(t)
        t0 = time.time()
        export_tflite_graph_lib_tf2.export_tflite_model(
            proto, _checkpoint_dir(checkpoint, work), str(work / "tflite_graph"),
            max_detections, use_regular_nms=False)
        log.info("export: TFLite graph traced in %.0fs", time.time() - t0)

        def representative():
            for image in calibration:
                yield [tflite_input(image, size, scale, offset)]

        for variant in variants:
            t0 = time.time()
            model_bytes = _convert(work / "tflite_graph" / "saved_model", variant,
                                   representative)
            final = out_dir / TFLITE_FILES[variant]
            tmp = work / final.name
            tmp.write_bytes(model_bytes)
            os.replace(tmp, final)
            written[variant] = final
            meta[final.name] = {"input_size": list(size), "input_scale": scale,
                                "input_offset": offset,
                                "input_dtype": "uint8" if variant == "int8" else "float32",
                                "variant": variant, "max_detections": max_detections}
            if variant == "int8":
                meta[final.name]["calibration_images"] = len(calibration)
            log.info("export: %s (%.2f MB) in %.0fs", final.name, len(model_bytes) / 2**20,
                     time.time() - t0)
    meta_path = out_dir / "tflite.json"
    if meta_path.is_file():
        meta = {**json.loads(meta_path.read_text()), **meta}
    meta_path.write_text(json.dumps(meta, indent=2))
    return written


def _label_map_path(configs: dict, config: Path) -> str | None:
    label_map = configs["train_input_config"].label_map_path
    if not label_map or not Path(label_map).is_file():
        label_map = str(config.parent / "label_map.pbtxt")
    return label_map if Path(label_map).is_file() else None


def _write_side_files(configs: dict, config: Path, out_dir: Path) -> None:
    from tfod.data import read_label_map

    shutil.copy(config, out_dir / "pipeline.config")
    label_map = _label_map_path(configs, config)
    if label_map:
        shutil.copy(label_map, out_dir / "label_map.pbtxt")
        (out_dir / "labels.txt").write_text("\n".join(read_label_map(label_map)) + "\n")


def evaluate_detector(detector, configs: dict, label_map: str | None = None,
                      max_images: int | None = None) -> dict:
    """COCO metrics of an exported model (any :class:`tfod.inference.Detector`)
    over the eval split of ``configs``: records decoded with the OD API's
    ``TfExampleDecoder``, scored by its ``CocoDetectionEvaluator``. Also returns
    ``latency_ms`` (median seconds per image, first call left out) and ``images``.

    Example:
        >>> detector = load_detector("exports/demo/model_int8.tflite")
        >>> evaluate_detector(detector, pipeline.load_configs("runs/demo/pipeline.config"))
    """
    from object_detection.core import standard_fields as fields
    from object_detection.metrics import coco_evaluation
    from object_detection.utils import label_map_util

    files = _record_files(configs["eval_input_configs"][0], "eval")
    label_map = label_map or configs["eval_input_configs"][0].label_map_path
    if label_map and Path(label_map).is_file():
        categories = label_map_util.create_categories_from_labelmap(label_map)
    else:
        model = configs["model"]
        n = getattr(model, model.WhichOneof("model")).num_classes or 1
        categories = [{"id": i, "name": str(i)} for i in range(1, n + 1)]
    evaluator = coco_evaluation.CocoDetectionEvaluator(categories)
    times = []
    count = 0
    for count, example in enumerate(_decoded_records(files, label_map), start=1):
        image = example[fields.InputDataFields.image][..., :3]
        h, w = image.shape[:2]
        scale = np.array([h, w, h, w], np.float32)
        gt = {fields.InputDataFields.groundtruth_boxes:
              example[fields.InputDataFields.groundtruth_boxes] * scale,
              fields.InputDataFields.groundtruth_classes:
              example[fields.InputDataFields.groundtruth_classes]}
        if fields.InputDataFields.groundtruth_is_crowd in example:
            gt[fields.InputDataFields.groundtruth_is_crowd] = \
                example[fields.InputDataFields.groundtruth_is_crowd]
        evaluator.add_single_ground_truth_image_info(count, gt)
        t0 = time.perf_counter()
        out = detector(image)
        times.append(time.perf_counter() - t0)
        evaluator.add_single_detected_image_info(count, {
            fields.DetectionResultFields.detection_boxes: out["boxes"] * scale,
            fields.DetectionResultFields.detection_scores: out["scores"],
            fields.DetectionResultFields.detection_classes: out["classes"]})
        if max_images and count >= max_images:
            break
    if not count:
        raise ExportError("the eval TFRecords hold no examples", where=", ".join(files),
                          fix="re-run `tfod prepare` with a val split")
    with contextlib.redirect_stdout(io.StringIO()) as summary:  # pycocotools prints
        metrics = evaluator.evaluate()
    log.debug("%s", summary.getvalue())
    result = {k: float(v) for k, v in metrics.items()}
    result["images"] = count
    result["latency_ms"] = 1000 * float(np.median(times[1:] if len(times) > 1 else times))
    return result


def _latency_ms(detector, size: tuple[int, int], runs: int = 10) -> float:
    image = np.full((*size, 3), 128, np.uint8)
    detector(image)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        detector(image)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _checkpoint_map(run_dir: Path, checkpoint: str, evaluate_checkpoint: bool) -> dict | None:
    """The checkpoint's own mAP: ``eval/ckpt-N/metrics.json`` or
    ``eval/metrics.json`` when of this checkpoint, else ``tfod.evaluation.evaluate``
    when asked, else None."""
    name = Path(checkpoint).name
    for metrics_path in (run_dir / "eval" / name / "metrics.json",
                         run_dir / "eval" / "metrics.json"):
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        if Path(str(metrics.get("checkpoint", ""))).name == name and MAP in metrics:
            return {"source": str(metrics_path), MAP: metrics[MAP], MAP50: metrics.get(MAP50)}
        log.info("export: %s is of %s, not %s; not used", metrics_path,
                 metrics.get("checkpoint"), checkpoint)
    if evaluate_checkpoint:
        from tfod.evaluation import evaluate

        metrics = evaluate(run_dir, checkpoint=checkpoint)
        return {"source": "tfod.evaluation.evaluate", MAP: metrics[MAP],
                MAP50: metrics.get(MAP50)}
    return None


def _normalise_formats(formats: Sequence[str] | str, configs: dict, config: Path) -> list[str]:
    from tfod import pipeline

    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    wanted = []
    for name in (f.strip() for f in formats):
        if name == "all":
            tflite_ok = pipeline.meta_architecture(configs) in TFLITE_ARCHS
            wanted += [f for f, v in FORMATS.items() if v is None or tflite_ok]
            continue
        name = ALIASES.get(name, name)
        if name not in FORMATS:
            raise ExportError(f"unknown format {name!r}", where="--formats",
                              fix=f"use some of: all, {', '.join(FORMATS)}")
        wanted.append(name)
    if any(FORMATS[f] for f in wanted):
        _check_tflite_arch(configs, str(config))
    if not wanted:
        raise ExportError("no format given", where="--formats",
                          fix=f"use some of: all, {', '.join(FORMATS)}")
    return list(dict.fromkeys(wanted))


def _claim_export_dir(out_dir: Path) -> None:
    """Create ``out_dir`` (or take an empty one) and mark it as an export folder; an
    existing non-empty folder without the mark is refused before anything in it is
    touched (export deletes its stale reports and work folders)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError("exists and is not a folder", where=str(out_dir),
                          fix="pass another --out DIR")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        check_owned(out_dir.resolve(), "export", ExportError,
                    fix="pass another --out DIR (a new or empty folder), or move that one away")
    out_dir.mkdir(parents=True, exist_ok=True)
    mark_owned(out_dir, "export")


def export(run_or_config: str | Path, out_dir: str | Path | None = None,
           formats: Sequence[str] | str = ("all",), checkpoint: str | None = None,
           max_detections: int = 10, input_type: str = "image_tensor",
           calibration_images: int = 100, evaluate: bool = True,
           evaluate_checkpoint: bool = False, threads: int | None = None) -> dict:
    """Export a run's latest (or given) checkpoint into ``exports/<run>/`` and
    measure every artefact (size, latency; with ``evaluate`` its COCO mAP on the
    val split) into ``report.md`` / ``report.json``.

    ``formats``: any of ``all``, ``saved_model``, ``frozen_graph``, ``tflite``
    (float32), ``tflite_fp16``, ``tflite_dynamic``, ``tflite_int8``. The
    checkpoint's mAP comes from the run's ``eval/metrics.json`` when that is of
    the same checkpoint, or is computed when ``evaluate_checkpoint``; otherwise
    differences are against the SavedModel.

    Every artefact appears under its final name only when complete, and
    ``export.json`` is written last: an export folder without it was interrupted
    (a new export first removes the old one, with the old report).

    Example:
        >>> export("runs/demo", formats=["saved_model", "tflite", "tflite_int8"])
    """
    from tfod import inference, pipeline

    if isinstance(formats, str):
        formats = formats.split(",")
    bad = [f for f in formats if ALIASES.get(f, f) not in FORMATS and f != "all"]
    if bad:  # before touching the run: cheap checks first
        raise ExportError(f"unknown format(s) {', '.join(bad)}", where="--formats",
                          fix=f"use some of: all, {', '.join(FORMATS)}")
    if input_type not in INPUT_TYPES:
        raise ExportError(f"unknown input type {input_type!r}", where="--input-type",
                          fix=f"use one of: {', '.join(INPUT_TYPES)}")
    if calibration_images < 1:
        raise ExportError("need at least one calibration image", where="--calibration-images",
                          fix="use e.g. --calibration-images 100")
    config, _ = pipeline.resolve_run(run_or_config, ExportError)
    configs = pipeline.load_configs(config)  # parsed once, handed to every stage
    formats = _normalise_formats(formats, configs, config)
    if input_type == "tf_example" and evaluate:
        raise ExportError("the report cannot feed tf_example inputs to the SavedModel",
                          where="--input-type",
                          fix="add --no-eval, or use an image input type")
    checkpoint = _resolve(config, checkpoint)
    out_dir = Path(out_dir) if out_dir else Path("exports") / check_name(
        config.parent.name, "the run name", ExportError, fix="pass --out DIR")
    _claim_export_dir(out_dir)
    for marker in (COMPLETE, "report.md", "report.json"):  # stale until this export ends
        (out_dir / marker).unlink(missing_ok=True)
    for stale in out_dir.glob(".partial-*"):  # work folders of an interrupted export
        shutil.rmtree(stale, ignore_errors=True)
    log.info("export: %s -> %s (%s)", checkpoint, out_dir, ", ".join(formats))
    t0 = time.time()
    artefacts: dict[str, Path] = {}
    if "saved_model" in formats or "frozen_graph" in formats:
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".partial-") as t:
            target = out_dir if "saved_model" in formats else Path(t)
            saved = export_saved_model(configs, checkpoint, target, input_type)
            if "saved_model" in formats:
                artefacts["saved_model"] = saved
            if "frozen_graph" in formats:
                artefacts["frozen_graph"] = export_frozen_graph(saved, out_dir)
    variants = [FORMATS[f] for f in formats if FORMATS[f]]
    if variants:
        written = export_tflite(configs, checkpoint, out_dir, max_detections, variants,
                                calibration_images)
        for name in formats:
            if FORMATS[name]:
                artefacts[name] = written[FORMATS[name]]
    _write_side_files(configs, config, out_dir)
    export_seconds = time.time() - t0

    threads = threads or os.cpu_count() or 1
    label_map = _label_map_path(configs, config)
    rows = {}
    for name, path in artefacts.items():
        detector = inference.load_detector(path, threads=threads)
        row = {"path": str(path), "file": path.name, "bytes": _size(path),
               "threads": threads if detector.kind == "tflite" else _tf_threads(),
               "max_detections": max_detections if FORMATS[name]
               else _max_total_detections(configs)}
        if name == "tflite_int8":
            row["calibration_images"] = detector.meta.get("calibration_images")
        if evaluate:
            metrics = evaluate_detector(detector, configs, label_map)
            row.update({"mAP": metrics[MAP], "mAP@.5": metrics[MAP50],
                        "latency_ms": metrics["latency_ms"], "eval_images": metrics["images"],
                        "metrics": metrics})
        elif input_type != "tf_example" or FORMATS[name]:
            row["latency_ms"] = _latency_ms(detector, detector.input_size
                                            or pipeline.image_size(configs))
        else:  # serialized tf.Examples: nothing to time it on here
            row["latency_ms"] = None
        rows[name] = row
        log.info("export: %s %s (%.2f MB, %s ms/image%s)", name, path, row["bytes"] / 2**20,
                 _fmt(row["latency_ms"], ".1f"), f", mAP {row['mAP']:.3f}" if evaluate else "")
    report = _report(rows, configs, config.parent, checkpoint, evaluate, evaluate_checkpoint,
                     calibration_images)
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=2, default=str))
    write_text_atomic(out_dir / "report.md", _report_markdown(report))
    for warning in report["warnings"]:
        log.warning("export: %s", warning)
    result = {"dir": str(out_dir), "checkpoint": checkpoint, "formats": formats,
              "artefacts": {k: {kk: vv for kk, vv in v.items() if kk != "metrics"}
                            for k, v in rows.items()},
              "report": str(out_dir / "report.md"), "warnings": report["warnings"],
              "seconds": time.time() - t0, "export_seconds": export_seconds}
    write_text_atomic(out_dir / COMPLETE, json.dumps(result, indent=2))  # written last
    log.info("export: %d artefacts in %.0fs -> %s", len(rows), result["seconds"],
             out_dir / "report.md")
    return result


def _tf_threads() -> int:
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


def _max_total_detections(configs: dict) -> int | None:
    model = configs["model"]
    arch = getattr(model, model.WhichOneof("model"))
    if hasattr(arch, "post_processing"):
        return int(arch.post_processing.batch_non_max_suppression.max_total_detections)
    return int(getattr(arch, "max_box_predictions", 0)) or None


def _report(rows: dict, configs: dict, run_dir: Path, checkpoint: str, evaluated: bool,
            evaluate_checkpoint: bool, calibration_images: int) -> dict:
    reference = None
    warnings = []
    if evaluated:
        ckpt = _checkpoint_map(run_dir, checkpoint, evaluate_checkpoint)
        if ckpt:
            reference = {"name": "checkpoint", **ckpt}
        elif "saved_model" in rows:
            reference = {"name": "saved_model", "source": rows["saved_model"]["path"],
                         MAP: rows["saved_model"]["mAP"], MAP50: rows["saved_model"]["mAP@.5"]}
        elif rows:
            first = next(iter(rows))
            reference = {"name": first, "source": rows[first]["path"],
                         MAP: rows[first]["mAP"], MAP50: rows[first]["mAP@.5"]}
    float_bytes = rows.get("tflite", {}).get("bytes")
    float_latency = rows.get("tflite", {}).get("latency_ms")
    for row in rows.values():
        if reference:
            row["mAP_diff"] = row["mAP"] - reference[MAP]
            row["mAP@.5_diff"] = row["mAP@.5"] - (reference[MAP50] or 0.0)
        if float_bytes and float_latency and row["file"].endswith(".tflite"):
            row["size_vs_float32"] = row["bytes"] / float_bytes
            row["latency_vs_float32"] = row["latency_ms"] / float_latency
    if evaluated and "tflite_int8" in rows:
        base_name = "tflite" if "tflite" in rows else None
        base = rows[base_name]["mAP"] if base_name else (reference or {}).get(MAP)
        loss = base - rows["tflite_int8"]["mAP"] if base is not None else 0.0
        if loss > INT8_TOLERANCE:
            used = rows["tflite_int8"].get("calibration_images")
            warnings.append(
                f"int8 loses {100 * loss:.1f} mAP points against "
                f"{'the float32 TFLite' if base_name else reference['name']} "
                f"(more than {100 * INT8_TOLERANCE:.0f}). Likely causes: calibration images "
                f"normalised differently from inference (check input_scale/input_offset in "
                f"tflite.json against the model's preprocessing); too few or unrepresentative "
                f"calibration images ({used} used, try --calibration-images 300); per-tensor "
                f"activation ranges in the box predictor (wide class/box logits; try "
                f"tflite_dynamic or quantisation-aware training); an under-trained model whose "
                f"scores sit near the threshold")
    return {"checkpoint": checkpoint, "run": str(run_dir), "evaluated": evaluated,
            "eval_split": list(configs["eval_input_configs"][0].tf_record_input_reader
                               .input_path),
            "calibration_images": calibration_images, "cpu_count": os.cpu_count(),
            "reference": reference, "artefacts": rows, "warnings": warnings,
            "int8_tolerance": INT8_TOLERANCE}


def _fmt(value, spec: str = ".3f", signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+{spec}}" if signed else f"{value:{spec}}"


def _report_markdown(report: dict) -> str:
    ref = report["reference"]
    lines = ["# Export report", "",
             f"- checkpoint: `{report['checkpoint']}`",
             f"- latency: median per image on this CPU ({report['cpu_count']} cores), "
             "threads as listed; TensorFlow formats use its intra-op pool"]
    if report["evaluated"]:
        lines.append(f"- mAP: each file run over the val split "
                     f"({', '.join(report['eval_split'])}), OD API COCO evaluator")
        if ref:
            lines.append(f"- reference mAP: {ref['name']} ({ref['source']}): "
                         f"{ref[MAP]:.3f} / mAP@.5 {(ref[MAP50] or 0):.3f}")
    else:
        lines.append("- mAP: not evaluated (--no-eval); latency on a flat grey image")
    lines += ["", "| artefact | file | size (MB) | size vs float32 | latency (ms) | "
              "latency vs float32 | threads | max det. | mAP | mAP@.5 | mAP diff |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]

    fmt = _fmt
    for name, row in report["artefacts"].items():
        lines.append(
            f"| {name} | `{row['file']}` | {row['bytes'] / 2**20:.2f} | "
            f"{fmt(row.get('size_vs_float32'), '.2f')} | {fmt(row['latency_ms'], '.1f')} | "
            f"{fmt(row.get('latency_vs_float32'), '.2f')} | {row['threads']} | "
            f"{row['max_detections']} | {fmt(row.get('mAP'))} | {fmt(row.get('mAP@.5'))} | "
            f"{fmt(row.get('mAP_diff'), signed=True)} |")
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- **{w}**" for w in report["warnings"]]
    return "\n".join(lines) + "\n"
