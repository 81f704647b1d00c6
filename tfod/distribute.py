"""Where training runs: a ``tf.distribute`` strategy by name (one CPU or GPU, Mirrored over
the GPUs of one machine, MultiWorkerMirrored across machines from ``TF_CONFIG``), set up
as the TensorFlow documentation describes (memory growth on every GPU)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from tfod.errors import TrainError


STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi-worker")


def make_strategy(name: str = "auto"):
    """A ``tf.distribute`` strategy by name (``auto``: mirrored on 2+ GPUs)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise TrainError(f"unknown strategy {name!r}", where="--strategy",
                         fix=f"use one of: {', '.join(STRATEGIES)}")
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:  # allocate as needed, so eval or TensorBoard can share the GPU
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else ("gpu" if gpus else "cpu")
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "gpu":
        if not gpus:
            raise TrainError("--strategy gpu but TensorFlow sees no GPU", where="--strategy",
                             fix="check `tfod doctor`, or use --strategy cpu")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if not os.environ.get("TF_CONFIG"):
        raise TrainError("--strategy multi-worker needs TF_CONFIG", where="environment",
                         fix='set TF_CONFIG={"cluster": {"worker": [...]}, '
                         '"task": {"type": "worker", "index": N}} on every worker')
    return tf.distribute.MultiWorkerMirroredStrategy()


def num_workers() -> int:
    """Workers (chief included) in ``TF_CONFIG``'s cluster; 1 without it."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except ValueError:
        raise TrainError("TF_CONFIG is not valid JSON", where="environment TF_CONFIG",
                         fix='e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                         '"task": {"type": "worker", "index": 0}}') from None
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def check_input_files(config: str | Path | dict, workers: int, where: str | Path = "") -> None:
    """Each worker reads whole files (the OD API shards file names by worker): a worker
    without a file ends its input at once and the collective step fails. Fail early.
    ``config`` is a pipeline.config path or its parsed config dict (``where`` names it)."""
    import tensorflow as tf

    from tfod.config import load_configs

    config_path = where or (config if not isinstance(config, dict) else "pipeline.config")
    configs = config if isinstance(config, dict) else load_configs(config)
    reader = configs["train_input_config"].tf_record_input_reader
    files = sorted({f for pattern in reader.input_path for f in tf.io.gfile.glob(pattern)})
    if len(files) < workers:
        raise TrainError(f"{len(files)} training file(s) for {workers} workers: the OD API "
                         "gives each worker whole files", where=f"{config_path} "
                         "train_input_reader.tf_record_input_reader.input_path",
                         fix=f"write at least {workers} shards (tfod prepare --shard-size-mb "
                         "with a smaller size)")
