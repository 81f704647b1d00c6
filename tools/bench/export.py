#!/usr/bin/env python
"""TFLite variants against float32 (size, latency, mAP) and `tfod predict` batched vs one by one.

Peers: every TFLite variant (fp16, dynamic, int8) is compared with the float32 TFLite of the
same checkpoint, exported in the same `tfod.export` call (latency: median per val image,
interpreter threads = CPU count); `tfod.predict` with `--batch B` is compared with `--batch 1`
on the same images and the same SavedModel (exported with input type float_image_tensor,
since an image_tensor SavedModel takes one image per call), drawing off, best of 2 runs each.

Usage (the rows in BENCHMARKS.md):
    .venv/bin/python tools/bench/export.py runs/demo --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ["tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8"]


def _val_images(run: Path, folder: Path, count: int) -> Path:
    """``count`` PNG files in ``folder``: the run's val images, repeated in turn when the
    split holds fewer (so one-off costs such as the first call's graph optimisation are
    spread over the same number of calls for every run)."""
    from PIL import Image

    from tfod.config import templates
    from tfod.exporter.records import _decoded_records, _record_files
    from tfod.layout import RunDir

    configs = templates.load_configs(RunDir.of(run)[0])
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for example in _decoded_records(_record_files(configs["eval_input_configs"][0], "eval")):
        if len(images) == count:
            break
        images.append(example["image"][..., :3])
    for k in range(count):
        Image.fromarray(images[k % len(images)]).save(folder / f"val_{k:04d}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder with a checkpoint")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=64, help="val images for predict")
    parser.add_argument("--calibration-images", type=int, default=100)
    parser.add_argument("--no-eval", action="store_true", help="skip mAP")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    import tfod  # noqa: F401
    from tfod.exporter import export, export_saved_model
    from tfod.inference import predict
    from tfod.layout import RunDir

    with tempfile.TemporaryDirectory(prefix="tfod-bench-export-") as tmp:
        work = Path(tmp)
        result = export(args.run, out_dir=work / "export", formats=VARIANTS,
                        calibration_images=args.calibration_images, evaluate=not args.no_eval)
        rows = result["artefacts"]
        config, run = RunDir.of(args.run)
        saved = export_saved_model(config, run.pick_checkpoint(None), work / "float",
                                   input_type="float_image_tensor")
        images = _val_images(args.run, work / "images", args.images)
        speed = {}
        for batch in (1, args.batch):
            runs = [predict(images, saved, work / f"pred{batch}", threshold=0.3, draw=False,
                            batch=batch)["images_per_second"] for _ in range(2)]
            speed[batch] = max(runs)
        distinct = min(args.images, len({p.read_bytes() for p in images.glob("*.png")}))

    base = rows["tflite"]
    print(f"run {args.run}, checkpoint {Path(result['checkpoint']).name}, "
          f"{os.cpu_count()} CPU cores, TFLite threads {base['threads']}")
    print("| TFLite variant | size (MB) | size vs float32 | latency (ms) | latency vs float32 "
          "| mAP | mAP vs float32 (points) |")
    print("|---|---|---|---|---|---|---|")
    for name in VARIANTS:
        r = rows[name]
        m = f"{r['mAP']:.3f} | {100 * (r['mAP'] - base['mAP']):+.1f}" if "mAP" in r else "- | -"
        print(f"| {name} | {r['bytes'] / 2**20:.2f} | {r['bytes'] / base['bytes']:.2f} | "
              f"{r['latency_ms']:.1f} | {r['latency_ms'] / base['latency_ms']:.2f} | {m} |")
    print()
    print(f"| tfod predict, SavedModel float_image_tensor, {args.images} images "
          f"({distinct} distinct) | images/s | ratio |")
    print("|---|---|---|")
    print(f"| one image per call (--batch 1) | {speed[1]:.1f} | 1.00 |")
    print(f"| --batch {args.batch} | {speed[args.batch]:.1f} | "
          f"{speed[args.batch] / speed[1]:.2f} |")
    print(json.dumps({"variants": {k: {kk: rows[k].get(kk) for kk in
                                       ("bytes", "latency_ms", "mAP", "mAP@.5")}
                                   for k in VARIANTS},
                      "predict_images_per_second": speed}, default=str))


if __name__ == "__main__":
    main()
