#!/usr/bin/env python
"""Benchmark: `tfod prepare` against the OD API's own `create_pascal_tf_record.py`.

Both convert the same synthetic VOC dataset (made by `tfod synth`, laid out as
VOCdevkit/VOC2012 for the peer) in the same run, each as a fresh process, so
TensorFlow's start-up counts for both. tfod does all its checks (every image
hashed and decoded, boxes checked, duplicates found), the stratified split, the
statistics and the plots; the peer reads XML and copies JPEG bytes, nothing more.

Measured per dataset size: wall seconds, images/s, peak RSS of the largest
process (tfod's workers included: wait4 reports the maximum over the process
and the children it waited for), and the ratio tfod/peer in images/s.

Usage: .venv/bin/python tools/bench/prepare.py [--sizes 300,1000,10000] [--image-size 400]
       [--repeat 3] [--workdir /tmp/tfod-bench-prepare] [--keep]
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
sys.path.insert(0, str(ROOT))
from tfod.data.tfrecord import count_records  # noqa: E402  (reads the framing; no TensorFlow)

PEER = ("import tfod, runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_module('object_detection.dataset_tools.create_pascal_tf_record', "
        "run_name='__main__', alter_sys=True)")


def _run(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command and the children it waited for."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def _dataset(work: Path, n: int, image_size: int) -> Path:
    voc = work / f"voc-{n}"
    if not (voc / "Annotations").is_dir():
        subprocess.run([PYTHON, "-m", "tfod.cli", "synth", str(voc), "--train", str(n),
                        "--val", "0", "--size", str(image_size), "--seed", str(n)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return voc


def _devkit(voc: Path, work: Path) -> Path:
    """VOCdevkit/VOC2012 for the peer: the same JPEGs (linked), folder names it expects."""
    devkit = work / f"devkit-{voc.name}"
    year = devkit / "VOC2012"
    if year.is_dir():
        return devkit
    (year / "Annotations").mkdir(parents=True)
    (year / "ImageSets" / "Main").mkdir(parents=True)
    os.symlink(voc.resolve() / "JPEGImages", year / "JPEGImages")
    ids = []
    for xml in sorted((voc / "Annotations").glob("*.xml")):
        text = xml.read_text().replace("<folder>JPEGImages</folder>", "<folder>VOC2012</folder>")
        (year / "Annotations" / xml.name).write_text(text)
        ids.append(xml.stem)
    (year / "ImageSets" / "Main" / "aeroplane_train.txt").write_text(
        "".join(f"{i}  1\n" for i in ids))
    return devkit


def bench(n: int, image_size: int, work: Path, repeat: int) -> dict:
    voc = _dataset(work, n, image_size)
    devkit = _devkit(voc, work)
    label_map = work / "label_map.pbtxt"
    label_map.write_text("".join(f"item {{ id: {i} name: '{c}' }}\n"
                                 for i, c in enumerate(["circle", "square", "triangle"], 1)))
    out = work / f"out-{n}"
    peer, ours = [], []
    for _ in range(repeat):  # interleaved, so both see the same machine
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        peer.append(_run([PYTHON, "-c", PEER, "create_pascal_tf_record",
                          f"--data_dir={devkit}", "--year=VOC2012", "--set=train",
                          f"--label_map_path={label_map}",
                          f"--output_path={out / 'peer.record'}"], ROOT))
        ours.append(_run([PYTHON, "-m", "tfod.cli", "prepare", str(voc), "--name", "ours",
                          "--out-root", str(out), "--label-maps", str(out / "lm"),
                          "--split", "train=0.8,val=0.2"], ROOT))
        records = count_records(out / "peer.record")
        written = sum(count_records(f) for f in (out / "ours").glob("*.tfrecord"))
        if records != n or written != n:
            raise SystemExit(f"peer wrote {records} records, tfod {written}; expected {n}")
    peer_s, ours_s = statistics.median(p[0] for p in peer), statistics.median(o[0] for o in ours)
    return {"images": n, "peer_s": peer_s, "ours_s": ours_s,
            "peer_mb": max(p[1] for p in peer), "ours_mb": max(o[1] for o in ours),
            "peer_ips": n / peer_s, "ours_ips": n / ours_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300,1000,10000")
    parser.add_argument("--image-size", type=int, default=400)
    parser.add_argument("--workdir", default="/tmp/tfod-bench-prepare")
    parser.add_argument("--keep", action="store_true", help="keep the generated datasets")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians shown")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = [bench(int(n), args.image_size, work, args.repeat) for n in args.sizes.split(",")]
    cpus = len(os.sched_getaffinity(0))
    print(f"\n`tools/bench/prepare.py --sizes {args.sizes} --image-size {args.image_size}` "
          f"({cpus} CPUs, median of {args.repeat} interleaved runs, "
          f"{time.strftime('%Y-%m-%d')}):\n")
    print("| images | peer s | tfod s | peer img/s | tfod img/s | tfod/peer (img/s) "
          "| peer peak MiB | tfod peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['images']} | {r['peer_s']:.1f} | {r['ours_s']:.1f} | "
              f"{r['peer_ips']:.0f} | {r['ours_ips']:.0f} | "
              f"**{r['ours_ips'] / r['peer_ips']:.2f}x** | {r['peer_mb']:.0f} | "
              f"{r['ours_mb']:.0f} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
