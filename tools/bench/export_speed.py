#!/usr/bin/env python
"""Benchmark: wall time of `tfod export RUN --formats all` (scoring included) against the
same command of an earlier tfod (a git ref, by default the commit before issue 13's export
work) on the same run, alternating, each a fresh process; plus the breakdown of the new one
from its export.log.

The peer runs from a `git worktree` of the ref with the same `.venv` (PYTHONPATH puts the
worktree's `tfod` first), so both see the same machine and packages.

Usage: .venv/bin/python tools/bench/export_speed.py RUN_DIR [--peer-ref 91a7102] [--repeat 1]
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _export(run: Path, out: Path, pythonpath: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "tfod.cli", "export", str(run), "--out", str(out),
                    "--formats", "all"], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=pythonpath)
    return time.time() - t0


def _breakdown(log: Path) -> list[str]:
    """The export's own timing lines (trace, conversions, per-artefact scoring)."""
    keep = re.compile(r"traced in|\.tflite \(.* in \d+s|ms/image|artefacts in")
    return [line.split(": ", 1)[-1] for line in log.read_text().splitlines()
            if keep.search(line) and " INFO " in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--peer-ref", default="91a7102")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    run = args.run.resolve()
    work = Path(tempfile.mkdtemp(prefix="tfod-bench-export-"))
    peer = work / "peer"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(peer),
                    args.peer_ref], check=True)
    try:
        ours, theirs = [], []
        for i in range(args.repeat):
            theirs.append(_export(run, work / f"peer{i}", peer))
            ours.append(_export(run, work / f"ours{i}", ROOT))
        lines = _breakdown(work / f"ours{args.repeat - 1}" / "export.log")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(peer)],
                       check=False)
        shutil.rmtree(work, ignore_errors=True)
    us, them = statistics.median(ours), statistics.median(theirs)
    print(f"\n`tools/bench/export_speed.py {args.run} --peer-ref {args.peer_ref} --repeat "
          f"{args.repeat}` ({len(os.sched_getaffinity(0))} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}):\n")
    print("| measure | tfod | peer | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| `tfod export --formats all` wall time (s), scoring included: now vs "
          f"{args.peer_ref} | {us:.1f} | {them:.1f} | **{us / them:.2f}** |")
    print(f"\nall runs (s): now {[round(x, 1) for x in ours]}, "
          f"{args.peer_ref} {[round(x, 1) for x in theirs]}\n\nbreakdown of the last run "
          "(export.log; the TFLite lane's lines come from the second process):\n")
    for line in lines:
        print(f"- {line}")


if __name__ == "__main__":
    main()
