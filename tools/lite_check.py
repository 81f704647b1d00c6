"""Predict with a ``.tflite`` model where TensorFlow is not installed (issue 14).

Usage (``make lite-check`` runs it in ``.venv-lite``)::

    .venv-lite/bin/python tools/lite_check.py MODEL.tflite IMAGES_DIR [--out DIR]

Fails (exit 1, one line saying why) unless: TensorFlow, the OD API and Keras are not
installed in this environment; ``tfod predict`` exits 0 on every image of IMAGES_DIR
with a PNG, ``detections.json`` and ``detections.csv``; the classes come from the export's
``labels.txt``; and none of those packages was imported. The last line is
``lite check: ok (...)`` with the time to first detection.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("tensorflow", "object_detection", "tf_keras", "keras", "official")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    installed = [name for name in HEAVY if importlib.util.find_spec(name) is not None]
    if installed:
        print(f"lite check: FAILED: {', '.join(installed)} installed in {sys.prefix}; "
              "this check needs the TFLite-only environment (make lite)")
        return 1
    from tfod.cli import main as tfod

    out = args.out or Path(tempfile.mkdtemp(prefix="tfod-lite-"))
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    t0 = time.perf_counter()
    rc = tfod(["predict", str(images[0]), "--model", str(args.model),
               "--out", str(out / "first")])
    first = time.perf_counter() - t0
    rc = rc or tfod(["predict", str(args.images), "--model", str(args.model),
                     "--out", str(out / "all"), "--threshold", "0.3"])
    loaded = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in HEAVY})
    detections = json.loads((out / "all" / "detections.json").read_text()) if rc == 0 else []
    from tfod.inference import _category_index  # the reader predict itself used

    labels = [c["name"] for c in _category_index(args.model.parent / "labels.txt").values()]
    pngs = len(list((out / "all").glob("*.png")))
    problems = [text for bad, text in (
        (rc != 0, f"tfod predict exited {rc}"),
        (bool(loaded), f"imported {loaded}"),
        (pngs != len(images), f"{pngs} PNGs for {len(images)} images"),
        (not detections, "no detection above 0.3"),
        (any(d["category"] not in labels for d in detections),
         f"class names not from labels.txt {labels}"),
        (not (out / "all" / "detections.csv").is_file(), "no detections.csv"),
    ) if bad]
    if problems:
        print("lite check: FAILED: " + "; ".join(problems))
        return 1
    print(f"lite check: ok ({len(images)} images, {len(detections)} detections >= 0.3, "
          f"no TensorFlow installed or imported; first image predicted {first:.2f}s after "
          f"import of tfod, in {sys.prefix})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
