"""Export a trained checkpoint: SavedModel (``exporter_lib_v2``) and TFLite
(``export_tflite_graph_lib_tf2`` + the TFLite converter), each loaded and run
once after writing, next to the label map and the pipeline config.

Layout of ``exports/<run>/``::

    saved_model/            serving SavedModel (input: uint8 image_tensor [1,H,W,3])
    model_float32.tflite    TFLite, float input already normalised (see tflite.json)
    tflite.json             input size, normalisation (scale, offset), output names
    label_map.pbtxt  labels.txt  pipeline.config
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

from tfod.errors import ExportError

log = logging.getLogger(__name__)

FORMATS = ("saved_model", "tflite")
TFLITE_ARCHS = ("ssd", "center_net")


def _resolve(run_or_config: str | Path, checkpoint: str | None) -> tuple[Path, str]:
    import tensorflow as tf
    from tfod import pipeline

    config, _ = pipeline.resolve_run(run_or_config, ExportError)
    checkpoint = checkpoint or tf.train.latest_checkpoint(str(config.parent))
    if not checkpoint:
        raise ExportError("no checkpoint found", where=str(config.parent),
                          fix="train first, or pass --checkpoint PATH/ckpt-N")
    if not Path(checkpoint + ".index").is_file():
        raise ExportError("checkpoint not found", where=checkpoint,
                          fix="give the prefix, e.g. runs/demo/ckpt-3")
    return config, checkpoint


def _checkpoint_dir(checkpoint: str, workdir: Path) -> str:
    """A folder whose latest checkpoint is ``checkpoint`` (the OD API exporters take a dir)."""
    import tensorflow as tf

    ckpt_dir = workdir / "checkpoint_ref"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tf.compat.v1.train.update_checkpoint_state(str(ckpt_dir), str(Path(checkpoint).resolve()))
    return str(ckpt_dir)


def export_saved_model(config: str | Path, checkpoint: str, out_dir: str | Path,
                       input_type: str = "image_tensor") -> Path:
    """SavedModel with the OD API's ``exporter_lib_v2``; returns ``out_dir/saved_model``.

    Example:
        >>> export_saved_model("runs/demo/pipeline.config", "runs/demo/ckpt-3", "exports/demo")
    """
    from object_detection import exporter_lib_v2
    from tfod import pipeline

    out_dir = Path(out_dir)
    configs = pipeline.load_configs(config)
    from object_detection.utils import config_util

    proto = config_util.create_pipeline_proto_from_configs(configs)
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as t:
        work = Path(t)
        exporter_lib_v2.export_inference_graph(input_type, proto,
                                               _checkpoint_dir(checkpoint, work),
                                               str(work / "out"))
        final = out_dir / "saved_model"
        out_dir.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(work / "out" / "saved_model", final)
    return final


def _input_normalisation(configs: dict) -> tuple[float, float]:
    """(scale, offset) such that model input = pixel * scale + offset, measured by
    running the model's own ``preprocess`` on two flat images."""
    import tensorflow as tf
    from object_detection.builders import model_builder
    from tfod import pipeline

    model = model_builder.build(configs["model"], is_training=False)
    h, w = pipeline.image_size(configs)
    probe = tf.stack([tf.zeros([h, w, 3]), tf.fill([h, w, 3], 255.0)])
    processed, _ = model.preprocess(probe)
    low = float(tf.reduce_mean(processed[0]))
    high = float(tf.reduce_mean(processed[1]))
    return (high - low) / 255.0, low


def export_tflite(config: str | Path, checkpoint: str, out_dir: str | Path,
                  max_detections: int = 10) -> Path:
    """Float32 TFLite through ``export_tflite_graph_lib_tf2`` and the converter.

    The model takes a float32 [1,H,W,3] image already normalised as written in
    ``tflite.json``; its post-processing is the TFLite detection op.

    Example:
        >>> export_tflite("runs/demo/pipeline.config", "runs/demo/ckpt-3", "exports/demo")
    """
    import tensorflow as tf
    from object_detection import export_tflite_graph_lib_tf2
    from object_detection.utils import config_util
    from tfod import pipeline

    configs = pipeline.load_configs(config)
    arch = pipeline.meta_architecture(configs)
    if arch not in TFLITE_ARCHS:
        raise ExportError(f"the OD API cannot export a {arch} model to TFLite",
                          where=f"{config} model.{arch}",
                          fix="use an SSD or CenterNet template, or export saved_model only")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    proto = config_util.create_pipeline_proto_from_configs(configs)
    with tempfile.TemporaryDirectory(dir=out_dir) as t:
        work = Path(t)
        export_tflite_graph_lib_tf2.export_tflite_model(
            proto, _checkpoint_dir(checkpoint, work), str(work / "tflite_graph"),
            max_detections, use_regular_nms=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(work / "tflite_graph" / "saved_model"))
        model_bytes = converter.convert()
        final = out_dir / "model_float32.tflite"
        tmp = work / final.name
        tmp.write_bytes(model_bytes)
        os.replace(tmp, final)
    scale, offset = _input_normalisation(configs)
    h, w = pipeline.image_size(configs)
    meta = {"model_float32.tflite": {"input_size": [h, w], "input_scale": scale,
                                     "input_offset": offset, "input_dtype": "float32"}}
    meta_path = out_dir / "tflite.json"
    if meta_path.is_file():
        meta = {**json.loads(meta_path.read_text()), **meta}
    meta_path.write_text(json.dumps(meta, indent=2))
    return final


def _write_side_files(config: Path, out_dir: Path) -> None:
    from tfod import pipeline
    from tfod.data import read_label_map

    configs = pipeline.load_configs(config)
    shutil.copy(config, out_dir / "pipeline.config")
    label_map = configs["train_input_config"].label_map_path
    if not label_map or not Path(label_map).is_file():
        label_map = str(config.parent / "label_map.pbtxt")
    if Path(label_map).is_file():
        shutil.copy(label_map, out_dir / "label_map.pbtxt")
        (out_dir / "labels.txt").write_text("\n".join(read_label_map(label_map)) + "\n")


def export(run_or_config: str | Path, out_dir: str | Path | None = None,
           formats: Sequence[str] = FORMATS, checkpoint: str | None = None,
           max_detections: int = 10) -> dict:
    """Export a run's latest (or given) checkpoint into ``exports/<run>/``.

    Each artefact is loaded and run on one image after writing.

    Example:
        >>> export("runs/demo", formats=["saved_model", "tflite"])
    """
    from tfod import inference

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown format(s) {', '.join(unknown)}", where="--formats",
                          fix=f"use some of: {', '.join(FORMATS)}")
    config, checkpoint = _resolve(run_or_config, checkpoint)
    out_dir = Path(out_dir) if out_dir else Path("exports") / config.parent.name
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("export: %s -> %s (%s)", checkpoint, out_dir, ", ".join(formats))
    t0 = time.time()
    artefacts = {}
    if "saved_model" in formats:
        artefacts["saved_model"] = export_saved_model(config, checkpoint, out_dir)
    if "tflite" in formats:
        artefacts["tflite"] = export_tflite(config, checkpoint, out_dir, max_detections)
    _write_side_files(config, out_dir)
    result = {"dir": str(out_dir), "checkpoint": checkpoint, "artefacts": {}}
    for name, path in artefacts.items():
        detector = inference.load_detector(path)
        h, w = detector.input_size or (320, 320)
        import numpy as np

        out = detector(np.zeros((h, w, 3), np.uint8))
        size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) \
            if Path(path).is_dir() else Path(path).stat().st_size
        result["artefacts"][name] = {"path": str(path), "bytes": size,
                                     "detections_on_blank": int(len(out["scores"]))}
        log.info("export: %s %s (%.1f MB), loads and runs", name, path, size / 2**20)
    result["seconds"] = time.time() - t0
    (out_dir / "export.json").write_text(json.dumps(result, indent=2))
    return result
