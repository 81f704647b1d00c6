#!/usr/bin/env python
"""Benchmark: the tiny template as it ships against the same template fitted to the data
(`tfod config --fit-data`), on a small-object dataset, each trained for the same time.

Dataset: `tfod.data.synth` shapes (circle, square, triangle) of 20-40 px in 640x640 images
(synth's MIN_SIZE/MAX_SIZE set to 20/640 and 40/640 for this run), up to 14 per image,
``--train`` / ``--val`` images (300 / 60), seed 0, prepared by `tfod prepare`.

Peers, in one run, each `tfod train --time T` (from scratch, seed 0, batch 8, the
template's schedule stretched to the steps that fit), run one after the other in fresh
processes, then evaluated by `tfod.evaluate` on the val split:
  * plain:  `tfod config ssd_mobilenet_v2_tiny --data D` (160 px input)
  * fitted-M: the same with `--fit-data --max-size M`, for each M of ``--max-size``
    (a comma list; 640 by default): the input size is the compute knob
  * size-N (``--size-only N,...``): the template at input N (`--image-size N`) with its own
    anchors, to tell what the input size alone gives from what the fitted anchors add
For each: what `tfod config --check` says, the input size, steps run, wall and CPU
seconds of training, mAP, mAP@.5, and AP / AP@.5 of the smallest class (the smallest
median box side in the val split). The time budget is wall time: on a shared machine the
CPU seconds column says how much each peer really got.

Usage: .venv/bin/python tools/bench/fit_data.py [--time 10m] [--train 300] [--val 60]
       [--max-size 320,640] [--size-only 320] [--work DIR]
Prints a Markdown table for BENCHMARKS.md (and writes DIR/fit_data.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIDE, LOW, HIGH = 640, 20, 40  # image side, smallest and largest shape (pixels)


def _tfod(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tfod.cli", *args], cwd=ROOT, text=True,
                          capture_output=True)


def make_dataset(work: Path, num_train: int, num_val: int) -> Path:
    """synth's shapes at 20-40 px in 640 px images, prepared as data/small."""
    from tfod.data import prepare_dataset, synth

    synth.MIN_SIZE, synth.MAX_SIZE = LOW / SIDE, HIGH / SIDE
    synth.synthesize(work / "raw", num_train=num_train, num_val=num_val, image_size=SIDE,
                     max_objects=14, seed=0)
    return Path(prepare_dataset(work / "raw", "small", out_root=work / "data",
                                label_map_dir=work / "label_maps", plots=False)["dir"])


def smallest_class(data: Path) -> tuple[str, float]:
    """The class with the smallest median box side in the val split (pixels)."""
    from tfod.data.stats import box_shape_table

    table = box_shape_table(json.loads((data / "stats.json").read_text()), "val")
    sides = {}
    for name, cells in table.items():
        values = [((w * SIDE) * (h * SIDE)) ** 0.5 for w, h, _, n in cells for _ in range(n)]
        sides[name] = statistics.median(values)
    name = min(sides, key=sides.get)
    return name, sides[name]


def run_peer(name: str, work: Path, data: Path, budget: str, extra: list[str]) -> dict:
    from tfod.config import image_size, load_configs
    from tfod.evaluation import evaluate

    config = work / "configs" / name / "pipeline.config"
    done = _tfod("config", "ssd_mobilenet_v2_tiny", "--data", str(data), "--out", str(config),
                 *extra)
    if done.returncode:
        raise SystemExit(done.stderr)
    fit_log = [line for line in done.stderr.splitlines() if line.startswith("fit-data:")]
    check = _tfod("config", "--check", str(config), "--json")
    warnings = json.loads(check.stdout)["warnings"] if check.returncode == 0 else [check.stderr]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    done = _tfod("train", str(config), "--run", name, "--runs-root", str(work / "runs"),
                 "--time", budget, "--json")
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads(done.stdout)
    metrics = evaluate(work / "runs" / name)
    return {"name": name, "input": image_size(load_configs(config))[0], "fit": fit_log,
            "warnings": warnings, "steps": result["step"], "train_wall": round(wall, 1),
            "train_cpu": round(after.ru_utime + after.ru_stime
                               - before.ru_utime - before.ru_stime, 1),
            "time_budget": result["time_budget"],
            "mAP": metrics["DetectionBoxes_Precision/mAP"],
            "mAP@.5": metrics["DetectionBoxes_Precision/mAP@.50IOU"],
            "per_class": metrics.get("per_class", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", default="10m", help="training budget of each peer")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--max-size", default="640", help="comma list: one fitted peer each")
    parser.add_argument("--size-only", default="",
                        help="comma list: the template at these input sizes, anchors kept")
    parser.add_argument("--work", type=Path, help="keep everything here (default: a temp dir)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    import tfod  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="tfod-fit-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        data = make_dataset(work, args.train, args.val)
        small, side = smallest_class(data)
        print(f"dataset: {args.train} + {args.val} images in {time.time() - t0:.0f}s; "
              f"smallest class {small} (median side {side:.1f} px)", flush=True)
        rows = [run_peer("plain", work, data, args.time, [])]
        for size in args.max_size.split(","):
            rows.append(run_peer(f"fitted-{size}", work, data, args.time,
                                 ["--fit-data", "--max-size", size]))
        for size in filter(None, args.size_only.split(",")):
            rows.append(run_peer(f"size-{size}", work, data, args.time, ["--image-size", size]))
        (work / "fit_data.json").write_text(json.dumps({"smallest": small, "rows": rows},
                                                       indent=2))
    for row in rows:
        print(f"\n{row['name']}: input {row['input']}, `tfod config --check`:")
        for line in row["fit"] + (row["warnings"] or ["(no warnings)"]):
            print(f"  {line}")
    print(f"\n| config | input | steps in {args.time} | train wall s | train CPU s | mAP | "
          f"mAP@.5 | {small} AP | {small} AP@.5 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        cls = row["per_class"].get(small, {})
        print(f"| {row['name']} | {row['input']} | {row['steps']} | {row['train_wall']:.0f} | "
              f"{row['train_cpu']:.0f} | {row['mAP']:.3f} | {row['mAP@.5']:.3f} | "
              f"{cls.get('AP', float('nan')):.3f} | {cls.get('AP@.5', float('nan')):.3f} |")
    for row in rows[1:]:
        gain = row["mAP@.5"] - rows[0]["mAP@.5"]
        print(f"\n{row['name']} - plain mAP@.5: {gain:+.3f} (goal >= +0.100)")


if __name__ == "__main__":
    main()
