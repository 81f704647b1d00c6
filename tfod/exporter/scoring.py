"""Every exported file measured: its COCO mAP on the eval split (run through
:class:`tfod.inference.Detector`, scored by the OD API's ``CocoDetectionEvaluator``),
size and latency, compared in ``report.md`` / ``report.json`` against the checkpoint's
own mAP (or the SavedModel's), with a warning when int8 loses too much."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from tfod.errors import ExportError
from tfod.exporter.records import _decoded_records, _record_files
from tfod.layout import MAP, MAP50, RunDir, printed_to_log

log = logging.getLogger(__name__)


#: int8 may lose at most this much mAP (0..1 scale, i.e. 2 points) before the report warns
INT8_TOLERANCE = 0.02


def evaluate_detector(detector, configs: dict, label_map: str | None = None,
                      max_images: int | None = None) -> dict:
    """COCO metrics of an exported model (any :class:`tfod.inference.Detector`)
    over the eval split of ``configs``: records decoded with the OD API's
    ``TfExampleDecoder``, scored by its ``CocoDetectionEvaluator``. Also returns
    ``latency_ms`` (median seconds per image, first call left out) and ``images``.

    Example:
        >>> detector = load_detector("exports/demo/model_int8.tflite")
        >>> evaluate_detector(detector, load_configs("runs/demo/pipeline.config"))
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
    with printed_to_log(log, "export: pycocotools"):
        metrics = evaluator.evaluate()
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


def _checkpoint_map(run: RunDir, checkpoint: str, evaluate_checkpoint: bool) -> dict | None:
    """The checkpoint's own mAP: ``eval/ckpt-N/metrics.json`` or
    ``eval/metrics.json`` when of this checkpoint, else ``tfod.evaluation.evaluate``
    when asked, else None."""
    name = Path(checkpoint).name
    for metrics_path in (run.checkpoint_metrics(name), run.metrics):
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        if Path(str(metrics.get("checkpoint", ""))).name == name and MAP in metrics:
            return {"source": str(metrics_path), MAP: metrics[MAP], MAP50: metrics.get(MAP50)}
        log.info("export: %s is of %s, not %s; not used", metrics_path,
                 metrics.get("checkpoint"), checkpoint)
    if evaluate_checkpoint:
        from tfod.evaluation import evaluate

        metrics = evaluate(run.root, checkpoint=checkpoint)
        return {"source": "tfod.evaluation.evaluate", MAP: metrics[MAP],
                MAP50: metrics.get(MAP50)}
    return None


def _tf_threads() -> int:
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


def _max_total_detections(configs: dict) -> int | None:
    model = configs["model"]
    arch = getattr(model, model.WhichOneof("model"))
    if hasattr(arch, "post_processing"):
        return int(arch.post_processing.batch_non_max_suppression.max_total_detections)
    return int(getattr(arch, "max_box_predictions", 0)) or None


def _report(rows: dict, configs: dict, run: RunDir, checkpoint: str, evaluated: bool,
            evaluate_checkpoint: bool, calibration_images: int) -> dict:
    reference = None
    warnings = []
    if evaluated:
        ckpt = _checkpoint_map(run, checkpoint, evaluate_checkpoint)
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
    return {"checkpoint": checkpoint, "run": str(run.root), "evaluated": evaluated,
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
            f"{row['max_detections']}{' (' + row['nms'] + ' NMS)' if row.get('nms') else ''} | "
            f"{fmt(row.get('mAP'))} | {fmt(row.get('mAP@.5'))} | "
            f"{fmt(row.get('mAP_diff'), signed=True)} |")
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- **{w}**" for w in report["warnings"]]
    return "\n".join(lines) + "\n"
