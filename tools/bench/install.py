#!/usr/bin/env python
"""Benchmark: fresh set-up time and venv size of each install, against the install of an
older commit (the peer) in the same run; and the time to first detection of a TFLite
prediction in each environment.

Each install is a `make` target in a fresh clone (pip cache warm, as on CI's machine):
  * peer: `make setup` of --base (default adb3fed, before the lean install of issue 14);
  * `make setup` (tf2.20), `make setup STACK=tf2.21` and `make lite` of the working tree.
Time to first detection: `tfod predict ONE_IMAGE --model MODEL.tflite` as a new process in
each environment (median of --repeat), wall time from start to exit.

Usage: .venv/bin/python tools/bench/install.py --model exports/demo/model_int8.tflite \
           --image data/demo_raw/JPEGImages/synth_000000.jpg [--base REV] [--repeat 3]
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from setup_and_demo import clone_working_tree  # tools/bench is sys.path[0]


def _size_mb(folder: Path) -> int:
    out = subprocess.run(["du", "-sm", str(folder)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def _install(clone: Path, args: list[str], venv: str) -> dict:
    t0 = time.time()
    subprocess.run(["make", *args], cwd=clone, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return {"seconds": time.time() - t0, "mb": _size_mb(clone / venv), "venv": clone / venv}


def _first_detection(venv: Path, model: Path, image: Path, repeat: int) -> float:
    times = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeat):
            t0 = time.time()
            subprocess.run([str(venv / "bin" / "tfod"), "predict", str(image), "--model",
                            str(model), "--out", out], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.time() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="adb3fed")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model, image = args.model.resolve(), args.image.resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = clone_working_tree(Path(tmp) / "base", args.base)
        head = clone_working_tree(Path(tmp) / "head")
        for label, clone, make, venv in (
                (f"peer: make setup at {args.base}", base, ["setup"], ".venv"),
                ("make setup (tf2.20)", head, ["setup"], ".venv"),
                ("make setup STACK=tf2.21", head, ["setup", "STACK=tf2.21"], ".venv-tf2.21"),
                ("make lite (no TensorFlow)", head, ["lite"], ".venv-lite")):
            result = _install(clone, make, venv)
            result["first"] = _first_detection(result["venv"], model, image, args.repeat)
            rows.append((label, result))
            print(f"{label}: {result['seconds']:.0f} s, {result['mb']} MB, first detection "
                  f"{result['first']:.2f} s", flush=True)
    peer = rows[0][1]
    print("\n| install | fresh set-up | vs peer | venv | vs peer | TFLite: first detection |")
    print("|---|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {r['seconds']:.0f} s | {r['seconds'] / peer['seconds']:.2f} | "
              f"{r['mb']:,} MB | {r['mb'] / peer['mb'] - 1:+.0%} | {r['first']:.2f} s |")


if __name__ == "__main__":
    main()
