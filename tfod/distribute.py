"""Where training runs: a ``tf.distribute`` strategy by name (one CPU or GPU, Mirrored over
the GPUs of one machine, MultiWorkerMirrored across machines from ``TF_CONFIG``), set up
as the TensorFlow documentation describes (memory growth on every GPU)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from tfod.errors import TrainError


STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi-worker")

log = logging.getLogger(__name__)


#: ``--threads auto`` sets the pools on machines with at most this many cores (measured on
#: 2: 1.5x for the tiny template, equal for ssd_mobilenet_v2_320; larger machines keep
#: TensorFlow's defaults until measured there).
AUTO_MAX_CORES = 4


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_threads(spec: str | None) -> tuple[int, int] | None:
    """``auto`` -> (1, cores) on up to :data:`AUTO_MAX_CORES` cores; ``tf`` (or None) -> None (TensorFlow's own defaults);
    ``INTRA,INTER`` -> (INTRA, INTER), 0 meaning TensorFlow's default for that pool."""
    if spec in (None, "", "tf"):
        return None
    if spec == "auto":  # measured on 2 cores; more cores keep TensorFlow's defaults
        cores = _cores()
        return (1, cores) if cores <= AUTO_MAX_CORES else None
    try:
        intra, inter = (int(x) for x in spec.split(","))
        if intra < 0 or inter < 0:
            raise ValueError
    except ValueError:
        raise TrainError(f"--threads {spec!r}: not auto, tf or INTRA,INTER",
                         where="--threads", fix="e.g. --threads auto, --threads tf or "
                         "--threads 1,2 (0 keeps TensorFlow's default for that pool)") from None
    return intra, inter


def configure_threads(spec: str | None = "auto") -> tuple[int, int] | None:
    """Set TensorFlow's CPU thread pools before its runtime starts; returns what was set.

    ``auto`` on a machine without a GPU and at most :data:`AUTO_MAX_CORES` cores: one thread per op (intra-op 1) and one op per
    core at a time (inter-op = cores). The OD API's small models are made of many small
    ops (a tiny SSD's training step has about 3,000): splitting each op over the cores
    costs more than it gains, and running independent ops side by side uses the cores
    instead (tools/bench/profile_step.py; BENCHMARKS.md). It changes how the work is
    scheduled, not what is computed. With a GPU, ``auto`` keeps TensorFlow's defaults.
    Once the runtime has started (another TensorFlow call came first in this process)
    the pools can no longer change: logged, and training goes on with what is set.
    """
    threads = _auto_pools() if spec == "auto" else parse_threads(spec)
    if threads is None:
        return None
    import tensorflow as tf

    intra, inter = threads
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as exc:  # the runtime already runs
        current = (tf.config.threading.get_intra_op_parallelism_threads(),
                   tf.config.threading.get_inter_op_parallelism_threads())
        if current != (intra or current[0], inter or current[1]):
            log.info("threads: TensorFlow already started (%s); keeping intra-op %d, "
                     "inter-op %d", exc, *current)
        return None
    return threads


def session_config():
    """A ``ConfigProto`` for a TF1 session run before training in the same process, with
    the pools ``--threads auto`` will ask for. The first TensorFlow device a process makes
    fixes the intra-op pool of every later one, eager included (TensorFlow's process-wide
    Eigen pool), so a session made with TensorFlow's defaults before ``train`` would keep
    training on those whatever ``configure_threads`` sets afterwards (measured: the demo
    trained at 20 instead of 31 steps/s)."""
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto()
    threads = _auto_pools()
    if threads is not None:
        config.intra_op_parallelism_threads, config.inter_op_parallelism_threads = threads
    return config


def _auto_pools() -> tuple[int, int] | None:
    """The pools ``auto`` sets here: :func:`parse_threads`'s, or None (TensorFlow's
    defaults) with a GPU."""
    threads = parse_threads("auto")
    if threads is None:
        return None
    import tensorflow as tf

    return None if tf.config.list_physical_devices("GPU") else threads


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
