#!/usr/bin/env python
"""Train variants of the tiny template on the demo data and print mAP per variant.

Each variant is `NAME [template=PATH] [steps=N] [dotted.key=value ...]`, trained with
`tfod.train` and evaluated with `tfod.evaluate` on the demo's val split; the first variant
is the baseline the others are compared with (ratio column).

Usage (the runs behind the tuning table in BENCHMARKS.md):
    .venv/bin/python tools/bench/tune_tiny.py --data data/demo \\
        "B steps=600" "D steps=600 model.ssd.anchor_generator.ssd_anchor_generator.reduce_boxes_in_lowest_layer=false" \\
        "C steps=1500 model.ssd.anchor_generator.ssd_anchor_generator.reduce_boxes_in_lowest_layer=false"
`data/demo` is written by `tfod demo` (or `tfod synth` + `tfod prepare`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_variant(spec: str, data: Path, work: Path) -> dict:
    from tfod.evaluation import evaluate
    from tfod.config import patch_pipeline_for_dataset
    from tfod.training import train

    name, *items = spec.split()
    sets = dict(item.split("=", 1) for item in items)
    template = sets.pop("template", "ssd_mobilenet_v2_tiny")
    steps = int(sets.pop("steps", "2000"))
    run_dir = work / name
    config = patch_pipeline_for_dataset(template, run_dir / "pipeline.config", data_dir=data,
                                        num_steps=steps, batch_size=8, overrides=sets)
    result = train(config, run_dir=run_dir)
    metrics = evaluate(run_dir)
    return {"name": name, "steps": steps, "changes": sets, "train_s": result["seconds"],
            "mAP": metrics["DetectionBoxes_Precision/mAP"],
            "mAP@.5": metrics["DetectionBoxes_Precision/mAP@.50IOU"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--data", default="data/demo", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    import tfod  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="tfod-tune-") as tmp:
        rows = [run_variant(v, args.data, Path(tmp)) for v in args.variants]
    base = rows[0]["mAP"] or 1e-9
    print("| run | steps | changes | train s | mAP | mAP@.5 | mAP vs first |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        changes = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in r["changes"].items())
        print(f"| {r['name']} | {r['steps']} | {changes or '-'} | {r['train_s']:.0f} | "
              f"{r['mAP']:.3f} | {r['mAP@.5']:.3f} | {r['mAP'] / base:.2f} |")


if __name__ == "__main__":
    main()
