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

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from tfod.config import check_configs, image_size, load_configs, meta_architecture
from tfod.config.templates import TFLITE_ARCHS
from tfod.errors import ExportError
from tfod.exporter.formats import (INPUT_TYPES, INT8_VARIANTS, calibration_images,
                                   check_input_type, check_tflite_arch, export_frozen_graph,
                                   export_saved_model, export_tflite, quantization_of,
                                   trace_groups, write_tf_formats)
from tfod.exporter import lanes
from tfod.exporter.scoring import (INT8_TOLERANCE, _fmt, _latency_ms, _max_total_detections,
                                   _report, _report_markdown, _size, _tf_threads,
                                   evaluate_detector)
from tfod.files import check_name, check_owned, mark_owned, write_text_atomic
from tfod.layout import MAP, MAP50, ExportDir, RunDir, stage_log

__all__ = ["ALIASES", "FORMATS", "INPUT_TYPES", "INT8_TOLERANCE", "calibration_images",
           "evaluate_detector", "export", "export_frozen_graph", "export_saved_model",
           "export_tflite"]

log = logging.getLogger(__name__)

#: format name -> TFLite variant (None: not a TFLite file)
FORMATS = {"saved_model": None, "frozen_graph": None, "tflite": "float32",
           "tflite_fp16": "float16", "tflite_dynamic": "dynamic", "tflite_int8": "int8",
           "tflite_int8_per_tensor": "int8_per_tensor", "tflite_edgetpu": "edgetpu"}
#: formats ``all`` leaves out: int8 variants for particular hardware, asked for by name
ON_REQUEST = ("tflite_int8_per_tensor", "tflite_edgetpu")
ALIASES = {"tflite_float32": "tflite", "tflite_float16": "tflite_fp16"}


def _check_arguments(formats: Sequence[str] | str, input_type: str, evaluate: bool,
                     calibration_images: int) -> list[str]:
    """The format names, checked with the other arguments before the run is touched."""
    if isinstance(formats, str):
        formats = formats.split(",")
    names = [ALIASES.get(f.strip(), f.strip()) for f in formats if f.strip()]
    bad = [f for f in names if f not in FORMATS and f != "all"]
    if bad or not names:
        raise ExportError(f"unknown format(s) {', '.join(bad)}" if bad else "no format given",
                          where="--formats", fix=f"use some of: all, {', '.join(FORMATS)}")
    check_input_type(input_type)
    if input_type == "tf_example" and evaluate:
        raise ExportError("the report cannot feed tf_example inputs to the SavedModel",
                          where="--input-type",
                          fix="add --no-eval, or use an image input type")
    if calibration_images < 1:
        raise ExportError("need at least one calibration image", where="--calibration-images",
                          fix="use e.g. --calibration-images 100")
    return names


def _expand_formats(names: list[str], configs: dict, config: Path) -> list[str]:
    """``all`` -> every format this meta-architecture can export; TFLite checked."""
    tflite_ok = meta_architecture(configs) in TFLITE_ARCHS
    wanted = []
    for name in names:
        wanted += ([f for f, v in FORMATS.items()
                    if (v is None or tflite_ok) and f not in ON_REQUEST]
                   if name == "all" else [name])
    if any(FORMATS[f] for f in wanted):
        check_tflite_arch(configs, str(config))
    return list(dict.fromkeys(wanted))


def _label_map_path(configs: dict, run: RunDir) -> str | None:
    label_map = configs["train_input_config"].label_map_path
    if not label_map or not Path(label_map).is_file():
        label_map = str(run.label_map)
    return label_map if Path(label_map).is_file() else None


def _write_side_files(config: Path, label_map: str | None, out: ExportDir) -> None:
    from tfod.data.labelmap import read_label_map

    shutil.copy(config, out.config)
    if label_map:
        shutil.copy(label_map, out.label_map)
        out.labels.write_text("\n".join(read_label_map(label_map)) + "\n")


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


def _prepare_export_dir(out: ExportDir) -> None:
    """Claim the folder, then drop what an earlier export left that is stale until this
    one ends (its report, the completion mark, interrupted work folders)."""
    _claim_export_dir(out.root)
    for stale in (out.complete, out.report_md, out.report_json):
        stale.unlink(missing_ok=True)
    for partial in out.root.glob(".partial-*"):
        shutil.rmtree(partial, ignore_errors=True)
    for leftover in [*out.root.glob(".*.tmp-*"), out.root / ".tflite-worker.out"]:
        leftover.unlink(missing_ok=True)


def _write_artefacts(configs: dict, checkpoint: str, out: ExportDir, formats: list[str],
                     input_type: str, max_detections: int,
                     calibration_count: int, regular_nms: bool = False) -> dict[str, Path]:
    """Every asked format into the export folder: format name -> file (or folder)."""
    artefacts: dict[str, Path] = {}
    if "saved_model" in formats or "frozen_graph" in formats:
        with tempfile.TemporaryDirectory(dir=out.root, prefix=".partial-") as t:
            artefacts.update(write_tf_formats(configs, checkpoint, out.root, formats,
                                              input_type, Path(t)))
    variants = [FORMATS[f] for f in formats if FORMATS[f]]
    if variants:
        written = export_tflite(configs, checkpoint, out.root, max_detections, variants,
                                calibration_count, regular_nms=regular_nms)
        artefacts.update({name: written[FORMATS[name]] for name in formats if FORMATS[name]})
    return artefacts


def _measure(name: str, path: Path, configs: dict, label_map: str | None, evaluate: bool,
             input_type: str, max_detections: int, threads: int) -> dict:
    """One artefact's report row: size, threads, latency and (with ``evaluate``) mAP."""
    from tfod import inference

    detector = inference.load_detector(path, threads=threads)
    row = {"path": str(path), "file": path.name, "bytes": _size(path),
           "threads": detector.threads if detector.kind == "tflite" else _tf_threads(),
           "max_detections": max_detections if FORMATS[name]
           else _max_total_detections(configs)}
    if detector.kind == "tflite":  # the detection op's NMS
        row["nms"] = detector.meta.get("nms", "fast")
    if FORMATS[name] in INT8_VARIANTS:
        row["calibration_images"] = detector.meta.get("calibration_images")
        row["quantization"] = detector.meta.get("quantization")
    if evaluate:
        metrics = evaluate_detector(detector, configs, label_map)
        row.update({"mAP": metrics[MAP], "mAP@.5": metrics[MAP50],
                    "latency_ms": metrics["latency_ms"], "eval_images": metrics["images"],
                    "metrics": metrics})
    elif input_type != "tf_example" or FORMATS[name]:
        row["latency_ms"] = _latency_ms(detector, detector.input_size or image_size(configs))
    else:  # serialized tf.Examples: nothing to time it on here
        row["latency_ms"] = None
    log.info("export: %s %s (%.2f MB, %s ms/image%s)", name, path, row["bytes"] / 2**20,
             _fmt(row["latency_ms"], ".1f"), f", mAP {row['mAP']:.3f}" if evaluate else "")
    return row


def export(run_or_config: str | Path, out_dir: str | Path | None = None,
           formats: Sequence[str] | str = ("all",), checkpoint: str | None = None,
           max_detections: int = 10, input_type: str = "image_tensor",
           calibration_images: int = 100, evaluate: bool = True,
           evaluate_checkpoint: bool = False, threads: int | None = None, *,
           regular_nms: bool = False) -> dict:
    """Export a run's latest (or given) checkpoint into ``exports/<run>/`` and
    measure every artefact (size, latency; with ``evaluate`` its COCO mAP on the
    val split) into ``report.md`` / ``report.json``.

    ``formats``: any of ``all``, ``saved_model``, ``frozen_graph``, ``tflite``
    (float32), ``tflite_fp16``, ``tflite_dynamic``, ``tflite_int8``. The
    checkpoint's mAP comes from the run's ``eval/metrics.json`` when that is of
    the same checkpoint, or is computed when ``evaluate_checkpoint``; otherwise
    differences are against the SavedModel.

    The TFLite files end in TFLite's detection op with at most ``max_detections``
    boxes, by its fast NMS (each box keeps its best class; the phone default) or, with
    ``regular_nms``, per-class NMS as the OD API's own post-processing does (slower).

    Every artefact appears under its final name only when complete, and
    ``export.json`` is written last: an export folder without it was interrupted
    (a new export first removes the old one, with the old report). The export's log
    goes to ``export.log`` in the folder.

    Example:
        >>> export("runs/demo", formats=["saved_model", "tflite", "tflite_int8"])
    """
    names = _check_arguments(formats, input_type, evaluate, calibration_images)
    config, run = RunDir.of(run_or_config, ExportError)
    configs = load_configs(config)  # parsed once, handed to every step
    check_configs(configs, config, scope="export")
    formats = _expand_formats(names, configs, config)
    checkpoint = run.pick_checkpoint(checkpoint, ExportError)
    out = ExportDir(out_dir or Path("exports") / check_name(
        run.root.name, "the run name", ExportError, fix="pass --out DIR"))
    _prepare_export_dir(out)
    with stage_log(out.root, "export"):
        log.info("export: %s -> %s (%s)", checkpoint, out.root, ", ".join(formats))
        t0 = time.time()
        label_map = _label_map_path(configs, run)
        threads = threads or os.cpu_count() or 1
        rows = {}

        def ready(name: str, path: Path) -> None:  # scored as soon as it is written
            rows[name] = _measure(name, path, configs, label_map, evaluate, input_type,
                                  max_detections, threads)

        variants = [FORMATS[f] for f in formats if FORMATS[f]]
        one_trace = len(trace_groups(variants, quantization_of(checkpoint))) == 1
        if one_trace and lanes.use_lanes(variants, any(not FORMATS[f] for f in formats)):
            artefacts = lanes.write_artefacts(configs, config, checkpoint, out, formats,
                                              FORMATS, input_type, max_detections,
                                              calibration_images, ready, regular_nms)
        else:
            artefacts = _write_artefacts(configs, checkpoint, out, formats, input_type,
                                         max_detections, calibration_images, regular_nms)
            for name, path in artefacts.items():
                ready(name, path)
        _write_side_files(config, label_map, out)
        export_seconds = time.time() - t0
        rows = {name: rows[name] for name in artefacts}
        report = _report(rows, configs, run, checkpoint, evaluate, evaluate_checkpoint,
                         calibration_images)
        write_text_atomic(out.report_json, json.dumps(report, indent=2, default=str))
        write_text_atomic(out.report_md, _report_markdown(report))
        for warning in report["warnings"]:
            log.warning("export: %s", warning)
        result = {"dir": str(out.root), "checkpoint": checkpoint, "formats": formats,
                  "artefacts": {k: {kk: vv for kk, vv in v.items() if kk != "metrics"}
                                for k, v in rows.items()},
                  "report": str(out.report_md), "warnings": report["warnings"],
                  "seconds": time.time() - t0, "export_seconds": export_seconds}
        write_text_atomic(out.complete, json.dumps(result, indent=2))  # written last
        log.info("export: %d artefacts in %.0fs -> %s", len(rows), result["seconds"],
                 out.report_md)
    return result
