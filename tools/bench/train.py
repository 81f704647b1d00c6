#!/usr/bin/env python
"""Benchmark: per-step training time of `tfod train` against the OD API's `model_main_tf2`,
and the input pipeline's throughput against what the training step consumes.

Peers, in one run, on the same pipeline.config (the tiny template on a synthetic dataset
prepared by tfod, batch 8) and the same number of steps, each a fresh process:
  * `scripts/model_main_tf2.py` (upstream's entry point, flags unchanged);
  * `tfod train`.
Per-step time excludes start-up and graph building: it is the wall time between the
`Loss/total_loss` summaries both loops write at steps 100 and N (their event files), divided
by N - 100. Runs alternate (upstream, tfod, upstream, ...) so both see the same machine.

Step count (``--odd-steps K``, e.g. 197, a prime): `tfod train --steps K` runs alternating with
`tfod train --steps N` in the same loop; per-step time over steps 100..K against 100..N. tfod
runs full chunks of 100 steps per `tf.function` call and one shorter chunk at the end, so the
ratio should be 1 (the divisor rule used before ran 197 calls of one step). ``--no-peer``
leaves out `model_main_tf2` (and the input measure) when only this comparison is wanted.

Input pipeline: the OD API's own `inputs.train_input` for the config (its augmentation
included) iterated alone in this process, images/s, against the images/s the tfod training
step consumes (batch / per-step time). A ratio above 1 means the input is not the bottleneck.

Same results (``--map-seeds 0,1,2``): the demo recipe (tiny template, batch 8,
``--map-steps`` steps, 2000 by default) trained by `tfod train` with ``--threads auto`` and
with ``--threads tf`` (TensorFlow's pools, what upstream runs with) for each seed, each
evaluated by `tfod eval` on the 60 val images: mAP per seed, the spread, and the per-step
time of both. (Upstream's own entry point cannot be seeded, so the seeded comparison is
between the two thread settings of the same loop; the per-step comparison with upstream
is the table above.)

Usage: .venv/bin/python tools/bench/train.py [--steps 300] [--repeat 2] [--odd-steps 197]
       [--no-peer] [--map-seeds 0,1,2 [--map-steps 2000]]
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TAG = "Loss/total_loss"


def _walls(train_dir: Path) -> dict[int, float]:
    """step -> wall time of the total-loss summaries in a run's train/ event files."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(train_dir), size_guidance={"scalars": 0,
                                                                           "tensors": 0})
    acc.Reload()
    events = acc.Tensors(TAG) if TAG in acc.Tags().get("tensors", []) else acc.Scalars(TAG)
    return {e.step: e.wall_time for e in events}


def _per_step(train_dir: Path, last: int) -> float:
    walls = _walls(train_dir)
    if 100 not in walls or last not in walls:
        raise SystemExit(f"{train_dir}: no loss summaries at steps 100 and {last}: {sorted(walls)}")
    return (walls[last] - walls[100]) / (last - 100)


def _run(cmd: list[str]) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def _input_images_per_second(config: Path, batches: int = 40) -> float:
    import tfod  # noqa: F401  (compat hook)
    from object_detection import inputs
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    configs = config_util.get_configs_from_pipeline_file(str(config))
    model = model_builder.build(configs["model"], is_training=True)
    dataset = inputs.train_input(configs["train_config"], configs["train_input_config"],
                                 configs["model"], model=model)
    batch = configs["train_config"].batch_size
    it = iter(dataset)
    for _ in range(5):  # warm-up: file opening, shuffle buffer
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - t0)


def _map_table(config: Path, work: Path, seeds: list[int], steps: int) -> None:
    from tfod.layout import MAP, MAP50, read_json

    rows = {"auto": [], "tf": []}
    for seed in seeds:
        for threads in rows:
            name = f"map-{threads}-{seed}"
            _run([sys.executable, "-m", "tfod.cli", "train", str(config), "--runs-root",
                  str(work / "runs"), "--run", name, "--steps", str(steps), "--seed",
                  str(seed), "--threads", threads])
            _run([sys.executable, "-m", "tfod.cli", "eval", str(work / "runs" / name)])
            metrics = read_json(work / "runs" / name / "eval" / "metrics.json")
            per_step = _per_step(work / "runs" / name / "train", steps)
            rows[threads].append((seed, metrics[MAP], metrics[MAP50], per_step))
    print(f"\n`tools/bench/train.py --map-seeds {','.join(map(str, seeds))} --map-steps "
          f"{steps}` ({len(os.sched_getaffinity(0))} CPUs, {time.strftime('%Y-%m-%d')}):\n")
    print("| --threads | seed | mAP | mAP@.5 | ms per step (100..N) |")
    print("|---|---:|---:|---:|---:|")
    for threads, runs in rows.items():
        for seed, m, m50, ms in runs:
            print(f"| {threads} | {seed} | {m:.3f} | {m50:.3f} | {ms * 1e3:.1f} |")
    for threads, runs in rows.items():
        maps = [r[1] for r in runs]
        print(f"{threads}: mAP {min(maps):.3f}-{max(maps):.3f} (spread {max(maps) - min(maps):.3f}),"
              f" median ms/step {statistics.median(r[3] for r in runs) * 1e3:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--odd-steps", type=int, help="also tfod train --steps K (K > 100)")
    parser.add_argument("--no-peer", action="store_true", help="skip model_main_tf2 and input")
    parser.add_argument("--map-seeds", help="e.g. 0,1,2: mAP of --threads auto vs tf per seed")
    parser.add_argument("--map-steps", type=int, default=2000)
    args = parser.parse_args()
    if args.steps and (args.steps % 100 or args.steps < 200):
        raise SystemExit("--steps must be a multiple of 100, at least 200 (0: only --map-seeds)")
    if args.odd_steps is not None and args.odd_steps <= 100:
        raise SystemExit("--odd-steps must be above 100 (per-step time from step 100)")
    sys.path.insert(0, str(ROOT))
    from tfod.data import prepare_dataset
    from tfod.config import patch_pipeline_for_dataset
    from tfod.data.synth import synthesize

    work = Path(tempfile.mkdtemp(prefix="tfod-bench-train-"))
    try:
        synthesize(work / "raw", num_train=300, num_val=60, seed=0)
        prepared = prepare_dataset(work / "raw", "bench", out_root=work / "data",
                                   label_map_dir=work / "label_maps", plots=False)
        config = patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", work / "bench.config",
                                            data_dir=prepared["dir"], num_steps=args.steps,
                                            batch_size=args.batch_size)
        upstream, ours, odd = [], [], []
        for i in range(args.repeat if args.steps else 0):
            if not args.no_peer:
                up_dir = work / f"upstream{i}"
                _run([sys.executable, str(ROOT / "scripts" / "model_main_tf2.py"),
                      f"--pipeline_config_path={config}", f"--model_dir={up_dir}",
                      f"--num_train_steps={args.steps}", f"--checkpoint_every_n={args.steps}",
                      "--alsologtostderr=false"])
                upstream.append(_per_step(up_dir / "train", args.steps))
            for steps, into in ((args.steps, ours), (args.odd_steps, odd)):
                if steps is None:
                    continue
                run_dir = work / "runs" / f"tfod{i}-{steps}"
                _run([sys.executable, "-m", "tfod.cli", "train", str(config), "--runs-root",
                      str(work / "runs"), "--run", run_dir.name, "--steps", str(steps),
                      "--checkpoint-every", str(steps)])
                into.append(_per_step(run_dir / "train", steps))
        if args.map_seeds:
            config_map = patch_pipeline_for_dataset(
                "ssd_mobilenet_v2_tiny", work / "map.config", data_dir=prepared["dir"],
                num_steps=args.map_steps, batch_size=args.batch_size)
            _map_table(config_map, work, [int(x) for x in args.map_seeds.split(",")],
                       args.map_steps)
        if args.steps == 0:
            return
        us = statistics.median(ours)
        if not args.no_peer:
            up = statistics.median(upstream)
            consumed = args.batch_size / us
            produced = _input_images_per_second(config)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    extra = (f" --odd-steps {args.odd_steps}" if odd else "") + (" --no-peer" if args.no_peer
                                                                  else "")
    print(f"\n`tools/bench/train.py --steps {args.steps} --repeat {args.repeat}{extra}` "
          f"({len(os.sched_getaffinity(0))} CPUs, batch {args.batch_size}, "
          f"{time.strftime('%Y-%m-%d')}):\n")
    print("| measure | tfod | peer | ratio |")
    print("|---|---:|---:|---:|")
    if not args.no_peer:
        print(f"| ms per step, steps 100..{args.steps} (median of {args.repeat}): tfod train "
              f"vs model_main_tf2 | {us * 1e3:.1f} | {up * 1e3:.1f} | **{us / up:.3f}** |")
        print(f"| images/s: input pipeline alone vs consumed by the tfod training step | "
              f"{produced:.0f} | {consumed:.0f} | **{produced / consumed:.1f}** |")
    if odd:
        od = statistics.median(odd)
        print(f"| ms per step (median of {args.repeat}): tfod train --steps {args.odd_steps} "
              f"(100..{args.odd_steps}) vs --steps {args.steps} (100..{args.steps}) | "
              f"{od * 1e3:.1f} | {us * 1e3:.1f} | **{od / us:.3f}** |")
    print(f"all runs, ms per step: upstream {[round(x * 1e3, 1) for x in upstream]}, "
          f"tfod {[round(x * 1e3, 1) for x in ours]}, "
          f"tfod --steps {args.odd_steps} {[round(x * 1e3, 1) for x in odd]}")


if __name__ == "__main__":
    main()
