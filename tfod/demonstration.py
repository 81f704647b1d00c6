"""The whole path, offline, on a synthetic dataset: what ``make demo`` runs.

synth -> prepare -> config -> train -> eval -> export -> predict, each through
the same library function the CLI uses, in the project layout::

    data/demo_raw/  data/demo/  label_maps/demo.pbtxt  runs/demo/  exports/demo/
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from tfod.layout import MAP, MAP50, RunDir

log = logging.getLogger(__name__)

NAME = "demo"
TEMPLATE = "ssd_mobilenet_v2_tiny"


def _fresh_folders(root: Path) -> tuple[Path, Path]:
    """The demo's run and export folders, the previous ones removed (only what tfod
    wrote); the run folder created and marked."""
    from tfod.errors import TfodError
    from tfod.files import mark_owned, remove_owned

    run_dir, export_dir = root / "runs" / NAME, root / "exports" / NAME
    for old, kind in ((run_dir, "run"), (export_dir, "export")):  # only what tfod wrote
        if remove_owned(old, kind, TfodError, fix=f"move {old} away, or run the demo "
                        "in another folder (tfod demo --root DIR)"):
            log.info("demo: removed the previous %s", old)
    run_dir.mkdir(parents=True)
    mark_owned(run_dir, "run")  # before the config stage writes into it
    return run_dir, export_dir


def demo(root: str | Path = ".", num_steps: int = 2000, num_train: int = 300,
         num_val: int = 60, seed: int = 0, batch_size: int = 8) -> dict:
    """Run every stage on a seeded synthetic dataset; print one summary line.

    Starts fresh each time: the previous demo's run and export folders are replaced (only
    when tfod wrote them: a folder without its ``.tfod-run`` / ``.tfod-export`` mark is
    refused with a :class:`~tfod.errors.TfodError` and left as it is).

    Example:
        >>> result = demo(".", num_steps=2000)
        >>> result["mAP@.5"] > 0.9
    """
    from tfod.config import patch_pipeline_for_dataset
    from tfod.data.prepare import prepare_dataset
    from tfod.data.synth import synthesize
    from tfod.evaluation import evaluate
    from tfod.exporter import export
    from tfod.inference import list_images, predict
    from tfod.training import train

    t0 = time.time()
    root = Path(root)
    raw = root / "data" / f"{NAME}_raw"
    run_dir, export_dir = _fresh_folders(root)
    timings = {}

    def stage(label, fn, *args, **kwargs):
        start = time.time()
        log.info("demo: --- %s ---", label)
        value = fn(*args, **kwargs)
        timings[label] = round(time.time() - start, 1)
        return value

    stage("synth", synthesize, raw, num_train=num_train, num_val=num_val, image_size=160,
          seed=seed, overwrite=True)
    prepared = stage("prepare", prepare_dataset, raw, name=NAME, fmt="voc",
                     out_root=root / "data", label_map_dir=root / "label_maps", seed=seed)
    config = stage("config", patch_pipeline_for_dataset, TEMPLATE, RunDir(run_dir).config,
                   data_dir=prepared["dir"], num_steps=num_steps, batch_size=batch_size)
    stage("train", train, config, run_dir=run_dir, resume=True, seed=seed)
    metrics = stage("eval", evaluate, run_dir)
    exported = stage("export", export, run_dir, out_dir=export_dir, formats=["all"])
    val_ids = (raw / "ImageSets" / "Main" / "val.txt").read_text().split()[:6]
    images = [p for p in list_images(raw / "JPEGImages") if p.stem in set(val_ids)]
    predictions = stage("predict", predict, images, export_dir / "model_float32.tflite",
                        out_dir=export_dir / "predictions", threshold=0.5)
    seconds = time.time() - t0
    summary = {
        "mAP": metrics[MAP],
        "mAP@.5": metrics[MAP50],
        "seconds": round(seconds, 1), "timings": timings,
        "dataset": prepared["dir"], "run": str(run_dir), "exports": str(export_dir),
        "artefacts": {k: v["path"] for k, v in exported["artefacts"].items()},
        "predictions": predictions["out_dir"],
    }
    (export_dir / "demo.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary, prepared, exported, predictions, run_dir, export_dir)
    return summary


def _print_summary(summary: dict, prepared: dict, exported: dict, predictions: dict,
                   run_dir: Path, export_dir: Path) -> None:
    """Where each stage wrote, and the one line with mAP and the time."""
    timings, seconds = summary["timings"], summary["seconds"]
    print(f"dataset:     {prepared['dir']} (label map {prepared['label_map']})")
    print(f"run:         {run_dir} (metrics {RunDir(run_dir).metrics})")
    for name, row in exported["artefacts"].items():
        print(f"export:      {row['path']} ({row['bytes'] / 2**20:.1f} MB, "
              f"mAP {row.get('mAP', float('nan')):.3f})")
    print(f"report:      {exported['report']}")
    print(f"predictions: {predictions['out_dir']} ({predictions['detections']} detections "
          f"on {predictions['images']} val images)")
    print("stages:      " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    print(f"demo: mAP={summary['mAP']:.3f} mAP@.5={summary['mAP@.5']:.3f} "
          f"time={seconds:.0f}s exports={export_dir}")
