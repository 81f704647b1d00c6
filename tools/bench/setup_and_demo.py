#!/usr/bin/env python
"""Benchmark: set-up time, demo time and demo mAP, each against a peer in the same run.

Peers:
  * set-up: a fresh `make setup` in a temporary clone (pip cache warm, as on CI's machine)
    against a second `make setup` there (the no-op re-run);
  * training: `tfod train` against the upstream loop (`scripts/model_main_tf2.py`, the OD
    API's own entry point) on the same pipeline.config, same steps, same data;
  * accuracy: the demo's mAP against the mAP of the upstream-trained checkpoint, both
    measured by `tfod.evaluate` on the same val split.

Usage: .venv/bin/python tools/bench/setup_and_demo.py [--skip-setup] [--steps 2000] [--no-peer]
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _timed(cmd: list[str], cwd: Path, env=None) -> float:
    t0 = time.time()
    subprocess.run(cmd, cwd=cwd, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.time() - t0


#: not copied into a benchmark's clone: git, venvs (.venv*) and outputs
CLONE_SKIP = {".git", "data", "runs", "exports", "label_maps", "build", "mutants", "pretrained"}


def clone_working_tree(where: Path, rev: str | None = None) -> Path:
    """A clone of this repository in ``where``: at ``rev``, or (``rev=None``) with the
    working tree's uncommitted work copied over, without venvs and outputs."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    if rev:
        subprocess.run(["git", "-C", str(where), "checkout", "-q", rev], check=True)
        return where
    for path in ROOT.iterdir():
        if path.name in CLONE_SKIP or path.name.startswith(".venv"):
            continue
        if path.is_dir():
            shutil.copytree(path, where / path.name, dirs_exist_ok=True)
        else:
            shutil.copy2(path, where / path.name)
    return where


def bench_setup() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        clone = clone_working_tree(Path(tmp) / "tfod")
        fresh = _timed(["make", "setup"], clone)
        again = _timed(["make", "setup"], clone)
    return {"fresh_setup_s": fresh, "second_setup_s": again}


def bench_demo(steps: int, peer: bool = True) -> dict:
    sys.path.insert(0, str(ROOT))
    import tfod  # noqa: F401
    from tfod.demonstration import demo
    from tfod.evaluation import evaluate

    work = Path(tempfile.mkdtemp(prefix="tfod-bench-"))
    try:
        t0 = time.time()
        summary = demo(work, num_steps=steps)
        demo_s = time.time() - t0
        tfod_train_s = summary["timings"]["train"]
        if not peer:
            return {"demo_s": demo_s, "mAP": summary["mAP"], "mAP@.5": summary["mAP@.5"],
                    "timings": summary["timings"], "tfod_train_s": tfod_train_s}
        # peer: the upstream loop on the same config
        upstream_dir = work / "runs" / "upstream"
        config = work / "runs" / "demo" / "pipeline.config"
        t0 = time.time()
        subprocess.run([sys.executable, str(ROOT / "scripts" / "model_main_tf2.py"),
                        f"--pipeline_config_path={config}", f"--model_dir={upstream_dir}",
                        f"--num_train_steps={steps}", f"--checkpoint_every_n={steps}",
                        "--alsologtostderr=false"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        upstream_train_s = time.time() - t0
        shutil.copy(config, upstream_dir / "pipeline.config")
        upstream = evaluate(upstream_dir)
        return {"demo_s": demo_s, "mAP": summary["mAP"], "mAP@.5": summary["mAP@.5"],
                "timings": summary["timings"], "tfod_train_s": tfod_train_s,
                "upstream_train_s": upstream_train_s,
                "upstream_step": upstream["step"],
                "upstream_mAP": upstream["DetectionBoxes_Precision/mAP"],
                "upstream_mAP@.5": upstream["DetectionBoxes_Precision/mAP@.50IOU"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _print_peer_rows(result: dict, steps: int) -> None:
    print(f"| train {steps} steps (s): tfod train vs upstream model_main_tf2 | "
          f"{result['tfod_train_s']:.1f} | {result['upstream_train_s']:.1f} | "
          f"{result['tfod_train_s'] / result['upstream_train_s']:.2f} |")
    print(f"| mAP: tfod demo vs upstream-trained (step {result['upstream_step']}) | "
          f"{result['mAP']:.3f} | {result['upstream_mAP']:.3f} | "
          f"{result['mAP'] / max(result['upstream_mAP'], 1e-9):.2f} |")
    print(f"| mAP@.5: tfod demo vs upstream-trained | {result['mAP@.5']:.3f} | "
          f"{result['upstream_mAP@.5']:.3f} | "
          f"{result['mAP@.5'] / max(result['upstream_mAP@.5'], 1e-9):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-setup", action="store_true")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-peer", action="store_true",
                        help="the demo alone (no upstream training to compare with)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    if not args.skip_setup:
        result.update(bench_setup())
    result.update(bench_demo(args.steps, peer=not args.no_peer))
    print("| measure | tfod | peer | ratio |")
    print("|---|---|---|---|")
    if "fresh_setup_s" in result:
        print(f"| `make setup` (s): second run vs fresh | {result['second_setup_s']:.1f} | "
              f"{result['fresh_setup_s']:.1f} | "
              f"{result['second_setup_s'] / result['fresh_setup_s']:.3f} |")
    if args.no_peer:
        print(f"| mAP / mAP@.5 of the demo | {result['mAP']:.3f} / {result['mAP@.5']:.3f} | | |")
    else:
        _print_peer_rows(result, args.steps)
    print(f"| whole demo (s) | {result['demo_s']:.1f} | | |")
    print(f"load average (1 min) before: {result['load_before']:.2f}, after: "
          f"{os.getloadavg()[0]:.2f} on {result['cpus']} CPUs")
    print("stage timings:", json.dumps(result["timings"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
