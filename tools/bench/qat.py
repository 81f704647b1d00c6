#!/usr/bin/env python
"""Benchmark: float checkpoint vs post-training int8 (PTQ) vs quantization-aware int8 (QAT),
with weights per channel and per tensor, side by side in one run.

For each setting a float model is trained ``--float-steps`` steps (the demo recipe: tiny
SSD MobileNet V2, batch 8, from scratch), then continued ``--qat-steps`` more steps in three
branches from that same checkpoint, each a fresh `tfod train --resume` process:
  * float: the config as it was (steps extended);
  * QAT per channel: the config with `--quantize delay=<float steps>` (fake quantization
    from the first continued step);
  * QAT per tensor: the same with `tfod train --qat-per-tensor`.
Every branch is exported by `tfod export --eval-checkpoint` and each file scored on the val
split by the export's own report (OD API COCO evaluator): the float branch gives the float
checkpoint's mAP, its float32 TFLite (the same post-processing as the int8 files: TFLite's
detection op, here with per-class NMS as the OD API's, `--regular-nms`) and PTQ int8 per
channel (`tflite_int8`) and per tensor (`tflite_int8_per_tensor`); the QAT branches give their int8 files (learned ranges) and
their checkpoints' mAP evaluated with fake quantization on.
Goals (issue 17): QAT int8 within 1 mAP point of the float checkpoint; where PTQ loses
>= 3 points, QAT recovers at least half of the loss.

Settings: ``demo`` (the demo's data: 3 shapes, up to 3 per image) and ``hard`` (5 shapes,
star and cross among them, up to 6 per image; same model and size).

Usage: .venv/bin/python tools/bench/qat.py [--settings demo,hard] [--float-steps 2000]
       [--qat-steps 500] [--val-images 60] [--work DIR] [--exports-only]
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tfod.layout import MAP  # noqa: E402
SETTINGS = {"demo": {"classes": ("circle", "square", "triangle"), "max_objects": 3},
            "hard": {"classes": ("circle", "square", "triangle", "star", "cross"),
                     "max_objects": 6}}


def _tfod(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tfod.cli", *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def _dataset(work: Path, setting: dict, val_images: int) -> Path:
    from tfod.data import prepare_dataset
    from tfod.data.synth import synthesize

    synthesize(work / "raw", num_train=300, num_val=val_images, image_size=160,
               classes=setting["classes"], max_objects=setting["max_objects"], seed=0)
    return Path(prepare_dataset(work / "raw", "data", out_root=work / "data",
                                label_map_dir=work / "maps", plots=False)["dir"])


def _export(run: Path, out: Path, formats: str) -> dict:
    # as many detections as the checkpoint's own eval keeps (the config's 20; the export's
    # default is 10), and per-class NMS as its post-processing (not TFLite's fast NMS), so
    # the TFLite files and the checkpoint differ by quantization alone
    _tfod("export", str(run), "--out", str(out), "--formats", formats, "--eval-checkpoint",
          "--max-detections", "20", "--regular-nms")
    report = json.loads((out / "report.json").read_text())
    rows = {name: row["mAP"] for name, row in report["artefacts"].items()}
    reference = report.get("reference") or {}
    rows["checkpoint"] = reference.get(MAP) if reference.get("name") == "checkpoint" else None
    return rows


def bench(name: str, work: Path, float_steps: int, qat_steps: int,
          exports_only: bool = False, val_images: int = 60) -> dict:
    if exports_only:  # the runs of an earlier invocation, exported and scored again
        return _scores(name, work, {})
    work.mkdir(parents=True, exist_ok=True)
    data = _dataset(work, SETTINGS[name], val_images)
    total = float_steps + qat_steps
    base, longer, qat = (work / f"{n}.config" for n in ("base", "longer", "qat"))
    _tfod("config", "ssd_mobilenet_v2_tiny", "--data", str(data), "--out", str(base),
          "--steps", str(float_steps), "--batch-size", "8")
    _tfod("config", str(base), "--out", str(longer), "--steps", str(total))
    _tfod("config", str(base), "--out", str(qat), "--steps", str(total),
          "--quantize", f"delay={float_steps}")
    runs = work / "runs"
    t0 = time.time()
    _tfod("train", str(base), "--runs-root", str(runs), "--run", "float0")
    seconds = {"float": time.time() - t0}
    for branch, config, extra in (("float", longer, []), ("qat_pc", qat, []),
                                  ("qat_pt", qat, ["--qat-per-tensor"])):
        shutil.copytree(runs / "float0", runs / branch)
        t0 = time.time()
        _tfod("train", str(config), "--runs-root", str(runs), "--run", branch, "--resume",
              *extra)
        seconds[branch] = time.time() - t0
    return _scores(name, work, seconds)


def _scores(name: str, work: Path, seconds: dict) -> dict:
    runs, exports = work / "runs", work / "exports"
    shutil.rmtree(exports, ignore_errors=True)
    floats = _export(runs / "float", exports / "float",
                     "tflite,tflite_int8,tflite_int8_per_tensor")
    per_channel = _export(runs / "qat_pc", exports / "qat_pc", "tflite_int8")
    per_tensor = _export(runs / "qat_pt", exports / "qat_pt", "tflite_int8")
    return {"setting": name, "float": floats["checkpoint"], "float_tflite": floats["tflite"],
            "seconds": seconds,
            "per-channel": {"ptq": floats["tflite_int8"], "qat": per_channel["tflite_int8"],
                            "qat_checkpoint": per_channel["checkpoint"]},
            "per-tensor": {"ptq": floats["tflite_int8_per_tensor"],
                           "qat": per_tensor["tflite_int8"],
                           "qat_checkpoint": per_tensor["checkpoint"]}}


def _row(result: dict, weights: str) -> str:
    points = lambda v: 100 * v  # noqa: E731
    fl, r = result["float"], result[weights]
    ptq_loss, qat_loss = points(fl - r["ptq"]), points(fl - r["qat"])
    recovered = (f"{100 * (ptq_loss - qat_loss) / ptq_loss:.0f}%" if ptq_loss >= 3
                 else "(PTQ loses < 3)")
    return (f"| {result['setting']} | {weights} | {points(fl):.1f} | "
            f"{points(result['float_tflite']):.1f} | {points(r['ptq']):.1f} | "
            f"{points(r['qat']):.1f} | {points(r['qat_checkpoint']):.1f} | {ptq_loss:+.1f} | "
            f"{qat_loss:+.1f} | {recovered} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default="demo,hard")
    parser.add_argument("--float-steps", type=int, default=2000)
    parser.add_argument("--qat-steps", type=int, default=500)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--val-images", type=int, default=60,
                        help="held-out images each file is scored on (more: less noise)")
    parser.add_argument("--exports-only", action="store_true",
                        help="re-export and score the runs already in --work")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tfod-bench-qat-"))
    results = [bench(name, work / name, args.float_steps, args.qat_steps, args.exports_only,
                     args.val_images) for name in args.settings.split(",")]
    print(f"\nfloat {args.float_steps} steps, then {args.qat_steps} more per branch, "
          f"{args.val_images} val images "
          f"(work: {work})\n")
    print("| setting | weights | float ckpt mAP | float32 TFLite | PTQ int8 | QAT int8 | "
          "QAT ckpt (fake-quant) | PTQ loss | QAT loss | loss recovered |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        for weights in ("per-channel", "per-tensor"):
            print(_row(result, weights))
    for result in results:
        print(f"\n{result['setting']}: train seconds " + ", ".join(
            f"{k} {v:.0f}" for k, v in result["seconds"].items()))
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
