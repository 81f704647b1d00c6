#!/usr/bin/env python
"""Benchmark: where the time of one OD API training step goes (the tiny template, batch 8).

The step is taken apart cumulatively, each part a ``tf.function`` that runs it ``--inner``
times in one call on one fixed batch (so input and call overhead are out), timed after a
warm-up call:

  forward          preprocess + ``model.predict``
  forward+loss     + ``provide_groundtruth`` + ``model.loss`` (target assignment, losses)
  +gradient        + the gradient tape (backward pass)
  train step       the OD API's own ``model_lib_v2.eager_train_step`` (adds the
                   regularization loss, summaries and the optimizer update)

and, beside them, target assignment alone and the same batch's input pipeline (the OD
API's ``inputs.train_input`` iterated alone). The differences between rows are the cost of
each part. ``--ops N`` also prints the N most expensive op types of one train-step call,
from TensorFlow's run metadata (the executor's per-op step stats).

``--threads intra,inter`` sets TensorFlow's thread pools before anything runs (0 = default).

Usage: .venv/bin/python tools/bench/profile_step.py [--inner 20] [--ops 25] [--threads 0,0]
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import traceback
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _timed(fn, *args, calls: int = 3) -> float:
    fn(*args)  # trace + warm-up
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        out = fn(*args)
        _ = [getattr(o, "numpy", lambda: None)() for o in (out if isinstance(out, (list, tuple))
                                                          else [out])]
        best = min(best, time.perf_counter() - t0)
    return best


_NOT_OPS = {"Process", "Run", "Start", "Done", "EagerKernelExecute"}  # executor events


def _op_table(fn, args, top: int, logdir: Path) -> list[tuple[str, float, int]]:
    """(op type, ms, count) of one call, from a TensorFlow profiler trace (XPlane): the
    host's TF op events, named ``name:type``; nested events are not double counted because
    only op events (not the function or executor events around them) are summed."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(str(logdir))
    try:
        fn(*args)
    finally:
        tf.profiler.experimental.stop()
    per_type = collections.defaultdict(lambda: [0.0, 0])
    for path in logdir.rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            names = {k: v.name for k, v in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    if ":" not in name or name.startswith(("tf_", "Iterator")):
                        continue
                    op = name.rsplit(":", 1)[1]
                    if not op or op in _NOT_OPS or not (op[0].isupper() or op[0] == "_"):
                        continue
                    per_type[op][0] += event.duration_ps / 1e9
                    per_type[op][1] += 1
    rows = sorted(((k, v[0], v[1]) for k, v in per_type.items()), key=lambda r: -r[1])
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inner", type=int, default=20, help="steps per tf.function call")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ops", type=int, default=0, help="print the N costliest op types")
    parser.add_argument("--ops-only", action="store_true", help="only the op table")
    parser.add_argument("--threads", default="0,0", help="intra,inter op threads (0 = TF's)")
    parser.add_argument("--template", default="ssd_mobilenet_v2_tiny",
                        help="template trained on the synthetic data (default: the tiny one)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    _set_threads(args.threads)  # before anything (dataset preparation too) starts TensorFlow
    work = Path(tempfile.mkdtemp(prefix="tfod-bench-profile-"))
    try:
        config = _config(work, args.template, args.batch_size)
        _profile(config, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _config(work: Path, template: str, batch: int) -> str:
    from tfod.config import patch_pipeline_for_dataset
    from tfod.data import prepare_dataset
    from tfod.data.synth import synthesize

    synthesize(work / "raw", num_train=300, num_val=60, seed=0)
    prepared = prepare_dataset(work / "raw", "bench", out_root=work / "data",
                               label_map_dir=work / "label_maps", plots=False)
    return str(patch_pipeline_for_dataset(template, work / "bench.config",
                                          data_dir=prepared["dir"], num_steps=1000,
                                          batch_size=batch))


def _set_threads(threads: str) -> None:
    import tfod  # noqa: F401  (compat hook)
    import tensorflow as tf

    intra, inter = (int(x) for x in threads.split(","))
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def _profile(config: str, args) -> None:
    import tensorflow as tf
    tf.debugging.disable_traceback_filtering()

    from object_detection import inputs, model_lib, model_lib_v2
    from object_detection.builders import model_builder, optimizer_builder
    from object_detection.core import standard_fields as fields
    from object_detection.utils import config_util

    configs = config_util.get_configs_from_pipeline_file(config)
    train_config = configs["train_config"]
    model = model_builder.build(configs["model"], is_training=True)
    dataset = inputs.train_input(train_config, configs["train_input_config"], configs["model"],
                                 model=model)
    it = iter(dataset)
    features, labels = next(it)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    optimizer, _ = optimizer_builder.build(train_config.optimizer, global_step=step)
    n = args.inner
    unpad = train_config.unpad_groundtruth_tensors

    def forward_loss(grad: bool, loss: bool):
        model._is_training = True  # noqa: SLF001  (as eager_train_step does)
        unstacked = model_lib.unstack_batch(labels, unpad_groundtruth_tensors=unpad)
        with tf.GradientTape() as tape:
            images, shapes = features[fields.InputDataFields.image], \
                features[fields.InputDataFields.true_image_shape]
            prediction = model.predict(images, shapes)
            if not loss:
                return tf.reduce_sum(prediction["box_encodings"])
            model.provide_groundtruth(
                groundtruth_boxes_list=unstacked[fields.InputDataFields.groundtruth_boxes],
                groundtruth_classes_list=unstacked[fields.InputDataFields.groundtruth_classes],
                groundtruth_weights_list=unstacked[fields.InputDataFields.groundtruth_weights])
            total = tf.add_n(list(model.loss(prediction, shapes).values()))
        if grad:
            return tf.add_n([tf.reduce_sum(g) for g in
                             tape.gradient(total, model.trainable_variables) if g is not None])
        return total

    def _dbg(body):
        try:
            return tf.cast(body(), tf.float32)
        except TypeError:
            traceback.print_exc()
            raise

    def looped(body):
        @tf.function(autograph=False)  # the OD API code runs as written, like in its loop
        def run():
            return tf.while_loop(lambda i, acc: i < n,
                                 lambda i, acc: (i + 1, acc + _dbg(body)),
                                 (tf.constant(0), tf.constant(0.0)))[1]
        return run

    def assign_only():  # forward, then the targets (the anchors come from predict)
        model._is_training = True  # noqa: SLF001
        unstacked = model_lib.unstack_batch(labels, unpad_groundtruth_tensors=unpad)
        prediction = model.predict(features[fields.InputDataFields.image],
                                   features[fields.InputDataFields.true_image_shape])
        model.provide_groundtruth(
            groundtruth_boxes_list=unstacked[fields.InputDataFields.groundtruth_boxes],
            groundtruth_classes_list=unstacked[fields.InputDataFields.groundtruth_classes],
            groundtruth_weights_list=unstacked[fields.InputDataFields.groundtruth_weights])
        out = model._assign_targets(  # noqa: SLF001
            model.groundtruth_lists(fields.BoxListFields.boxes),
            model.groundtruth_lists(fields.BoxListFields.classes),
            groundtruth_weights_list=model.groundtruth_lists(fields.BoxListFields.weights))
        return tf.reduce_sum(out[0]) + tf.reduce_sum(prediction["box_encodings"])

    def train_step():
        return model_lib_v2.eager_train_step(
            model, features, labels, unpad, optimizer, training_step=step,
            add_regularization_loss=True, clip_gradients_value=None,
            num_replicas=1)["Loss/total_loss"]

    rows = []
    parts = [] if args.ops_only else [("forward (the batch comes preprocessed)", lambda: forward_loss(False, False)),
             ("forward + loss (target assignment, losses)", lambda: forward_loss(False, True)),
             ("forward + loss + gradient", lambda: forward_loss(True, True)),
             ("forward + target assignment (no loss)", assign_only),
             ("train step (model_lib_v2.eager_train_step: + regularization, optimizer)",
              train_step)]
    for label, body in parts:
        fn = looped(body)
        rows.append((label, _timed(fn) / n * 1e3))
    t0 = time.perf_counter()
    for _ in range(20):
        next(it)
    input_ms = (time.perf_counter() - t0) / 20 * 1e3
    print(f"\n`tools/bench/profile_step.py --template {args.template} --inner {n} "
          f"--threads {args.threads}` "
          f"({len(os.sched_getaffinity(0))} CPUs, batch {args.batch_size}, "
          f"{time.strftime('%Y-%m-%d')}), ms per step:\n")
    print("| part (cumulative) | ms per step |")
    print("|---|---:|")
    for label, ms in rows:
        print(f"| {label} | {ms:.1f} |")
    print(f"| input pipeline alone: one batch | {input_ms:.1f} |")
    if args.ops:
        fn = looped(train_step)
        print(f"\nCostliest op types of one train-step call ({n} steps), ms per step:\n")
        print("| op type | ms per step | ops per step |")
        print("|---|---:|---:|")
        for op, ms, count in _op_table(fn, (), args.ops, Path(tempfile.mkdtemp(prefix="tfod-prof-"))):
            print(f"| {op} | {ms / n:.2f} | {count / n:.0f} |")


if __name__ == "__main__":
    main()
