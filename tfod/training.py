"""Training on the OD API's own loop (``model_lib_v2.train_loop``) with the gaps filled.

Upstream ``model_main_tf2`` overshoots ``num_steps`` to a multiple of 100, saves
no checkpoint at the end (only every 1000 steps, and the step-0 one holds no
model variables), and dies without a checkpoint on Ctrl-C. tfod keeps the
upstream loop and:

* runs it in *chunks*: each ``tf.function`` call of the loop runs up to 100
  steps (upstream's ``NUM_STEPS_PER_ITERATION``), and a shorter chunk only where
  a checkpoint boundary (``--checkpoint-every N``) or ``num_steps`` comes first,
  so the loop stops at exactly ``num_steps``, saves at every multiple of N, and
  the time per step does not depend on the step count (see :func:`chunk_size`);
* records the model, optimizer and step variable the loop builds (through the
  OD API's own builder hooks) and saves them with the same object graph and
  numbering as upstream (``ckpt-N`` counts saves, so none is overwritten; the step
  is stored inside, see :func:`latest_step`) at every multiple of N, at the end,
  and when the loop is interrupted;
* writes a run folder with the resolved config, label map, command line,
  package versions and data fingerprint.

OD API runtime patch (:class:`_LoopPatch`; nothing under site-packages is
edited): upstream's loop takes a fixed ``num_steps_per_iteration`` and saves only
between calls, every ``checkpoint_every_n`` steps. tfod passes two small objects
in place of those integers. ``num_steps_per_iteration`` reads its chunk size
from a ``tf.Variable`` inside upstream's ``tf.function`` (``tf.range`` of a
tensor is a dynamic loop, so one trace serves every chunk size).
``checkpoint_every_n`` is compared once at the end of every call, after
upstream wrote that call's summaries; that comparison runs tfod's hook, which
saves a checkpoint at multiples of N, sets the next chunk size, ends the loop
at ``num_steps`` (a private exception) and answers "no" so upstream itself
never saves after step 0. (The loop also calls ``learning_rate_fn()`` once per
call, but before it writes the call's loss summaries: ending the loop there
would drop the last call's losses.)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from tfod.errors import TrainError
from tfod.files import check_name, mark_owned

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi-worker")


#: Most steps in one ``tf.function`` call: upstream's ``NUM_STEPS_PER_ITERATION``. Fewer
#: steps per call cost time per step (1.11x upstream's at 20, ``tools/bench/train.py``).
CHUNK_CAP = 100


def chunk_size(step: int, total: int, every: int, cap: int = CHUNK_CAP) -> int:
    """Steps of the next ``tf.function`` call from ``step``: ``cap``, or fewer where the
    next multiple of ``every`` (a checkpoint) or ``total`` (the end) comes first.

    Example:
        >>> [chunk_size(s, 197, 1000) for s in (0, 100)]
        [100, 97]
        >>> [chunk_size(s, 40, 10) for s in (0, 10, 20, 30)]
        [10, 10, 10, 10]
    """
    return max(1, min(cap, every - step % every, total - step))


class _Finished(Exception):
    """Raised by :class:`_LoopPatch` to end upstream's loop at exactly ``num_steps``."""


class _StepsPerCall:
    """Stands in for ``train_loop``'s ``num_steps_per_iteration`` (see :class:`_LoopPatch`).

    Upstream uses it as ``n > 1`` (true), ``tf.range(n - 1)`` inside its
    ``tf.function`` (here a tensor read from :attr:`steps`), ``range(start, total, n)``
    (step 1: enough iterations, :class:`_Finished` ends the loop),
    ``global_step % n == 0`` as the summary condition (true at the first step of a
    call and after it, as upstream's is with whole chunks), and ``n * 1.0`` /
    ``t / n`` for its steps/s summary and log (the chunk just run)."""

    def __init__(self, cap: int):
        import tensorflow as tf

        self.cap, self.size = cap, 1
        # created outside any strategy scope: plain variables, set from Python between calls
        self.steps = tf.Variable(1, dtype=tf.int64, trainable=False, name="tfod_chunk_size")
        self.first = tf.Variable(0, dtype=tf.int64, trainable=False, name="tfod_chunk_start")

    def plan(self, step: int, size: int) -> None:
        self.size = size
        self.steps.assign(size)
        self.first.assign(step)

    def __gt__(self, other):
        return self.cap > other

    def __sub__(self, other):
        return self.steps - other

    def __index__(self):
        return 1

    def __mul__(self, other):
        return self.size * other

    def __rtruediv__(self, other):
        return other / self.size

    def __rmod__(self, global_step):
        return (global_step - self.first) % self.steps


class _AfterEachCall:
    """Stands in for ``train_loop``'s ``checkpoint_every_n``: upstream tests
    ``steps_since_its_save >= checkpoint_every_n`` once after every call; Python asks
    this object (``__le__``), which runs the hook and answers False."""

    def __init__(self, hook):
        self.hook = hook

    def __le__(self, _steps_since_save):
        self.hook()
        return False


class _LoopPatch:
    """OD API runtime patch of ``model_lib_v2.train_loop``: chunked calls and
    checkpoints at every multiple of ``every``, through the loop's own arguments
    (:meth:`arguments`); after each call :meth:`after_call` saves at a multiple of
    ``every``, ends the loop at ``total`` and sets the next chunk size."""

    def __init__(self, total: int, every: int, cap: int = CHUNK_CAP):
        self.total, self.every = total, every
        self.chunks = _StepsPerCall(cap)
        self.captured = self.save = None

    def arguments(self, start: int, captured: _Captured, save) -> dict:
        """``train_loop`` keyword arguments for a pass from ``start``; ``save()`` writes
        a checkpoint of ``captured``."""
        self.captured, self.save = captured, save
        self.chunks.plan(start, chunk_size(start, self.total, self.every, self.chunks.cap))
        return {"num_steps_per_iteration": self.chunks,
                "checkpoint_every_n": _AfterEachCall(self.after_call)}

    def after_call(self) -> None:
        step = self.captured.step()
        if step >= self.total:
            raise _Finished  # train() saves the last step, on every worker alike
        if step % self.every == 0:
            self.save()
        self.chunks.plan(step, chunk_size(step, self.total, self.every, self.chunks.cap))


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in ("tensorflow", "tf-keras", "tf-models-official", "protobuf", "numpy",
                 "tf-models-research-object-detection", "pycocotools", "tfod"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


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


def check_input_files(config_path: str | Path, workers: int) -> None:
    """Each worker reads whole files (the OD API shards file names by worker): a worker
    without a file ends its input at once and the collective step fails. Fail early."""
    import tensorflow as tf

    from tfod import pipeline

    reader = pipeline.load_configs(config_path)["train_input_config"].tf_record_input_reader
    files = sorted({f for pattern in reader.input_path for f in tf.io.gfile.glob(pattern)})
    if len(files) < workers:
        raise TrainError(f"{len(files)} training file(s) for {workers} workers: the OD API "
                         "gives each worker whole files", where=f"{config_path} "
                         "train_input_reader.tf_record_input_reader.input_path",
                         fix=f"write at least {workers} shards (tfod prepare --shard-size-mb "
                         "with a smaller size)")


class _Captured:
    """The objects ``train_loop`` builds, recorded through its builder hooks."""

    def __init__(self, train_config=None):
        self.model = None
        self.optimizer = None
        self.global_step = None
        self.train_config = train_config

    @contextlib.contextmanager
    def hooks(self):
        """Record the model, optimizer and step; apply the config's freeze fields to the
        model (model_lib_v2 ignores them, tensorflow/models#10167); after upstream's
        detection fine-tune restore, also restore the box predictor's class-count
        independent parts (upstream restores only the feature extractor)."""
        from object_detection import model_lib_v2

        from tfod import finetuning, pipeline

        build_model = model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"]
        build_optimizer = model_lib_v2.optimizer_builder.build
        load_fine_tune = model_lib_v2.load_fine_tune_checkpoint

        def model_fn(*args, **kwargs):
            self.model = build_model(*args, **kwargs)
            if self.train_config is not None:
                self.model = pipeline.freeze_model(self.model, self.train_config)
            return self.model

        def fine_tune_fn(model, checkpoint_path, checkpoint_type, *args, **kwargs):
            load_fine_tune(model, checkpoint_path, checkpoint_type, *args, **kwargs)
            if checkpoint_type == "detection":
                restored = finetuning.restore_box_predictor(model, checkpoint_path)
                if restored:
                    log.info("train: restored box predictor %s from %s",
                             ", ".join(restored), checkpoint_path)

        def optimizer_fn(config, global_step=None):
            self.global_step = global_step
            self.optimizer, extra = build_optimizer(config, global_step=global_step)
            return self.optimizer, extra

        model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"] = model_fn
        model_lib_v2.optimizer_builder.build = optimizer_fn
        model_lib_v2.load_fine_tune_checkpoint = fine_tune_fn
        try:
            yield self
        finally:
            model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"] = build_model
            model_lib_v2.optimizer_builder.build = build_optimizer
            model_lib_v2.load_fine_tune_checkpoint = load_fine_tune

    def step(self) -> int:
        return int(self.global_step.numpy()) if self.global_step is not None else 0

    def save(self, model_dir: Path, strategy, max_to_keep: int) -> str | None:
        """Save like the upstream loop does: same object graph, next ckpt-N."""
        import tensorflow as tf
        from object_detection import model_lib_v2

        if self.model is None or not self.model.variables:
            return None
        ckpt = tf.train.Checkpoint(step=self.global_step, model=self.model,
                                   optimizer=self.optimizer)
        directory = model_lib_v2.get_filepath(strategy, str(model_dir))
        manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep)
        # Upstream numbers checkpoints by save, not by step (ckpt-1 is its step-0 save);
        # continue that numbering so no earlier checkpoint is overwritten.
        taken = [int(p.rsplit("-", 1)[-1]) for p in manager.checkpoints]
        path = manager.save(checkpoint_number=max(taken, default=0) + 1)
        model_lib_v2.clean_temporary_directories(strategy, directory)
        return path


def latest_step(model_dir: str | Path) -> int:
    """The step stored in the newest checkpoint of a folder (0 if none)."""
    import tensorflow as tf

    path = tf.train.latest_checkpoint(str(model_dir))
    if not path:
        return 0
    reader = tf.train.load_checkpoint(path)
    for key in reader.get_variable_to_shape_map():
        if key.startswith("step/"):
            return int(reader.get_tensor(key))
    return int(path.rsplit("-", 1)[-1])


class _Progress(threading.Thread):
    """Prints step/total, steps/s and ETA from the live step variable."""

    def __init__(self, captured: _Captured, start: int, total: int, every: float = 5.0):
        super().__init__(daemon=True)
        self.captured, self.start_step, self.total, self.every = captured, start, total, every
        self.done = threading.Event()

    def run(self):
        from tqdm import tqdm

        bar = tqdm(total=self.total, initial=self.start_step, unit="step",
                   desc="train", dynamic_ncols=True, mininterval=1.0,
                   disable=not sys.stderr.isatty())
        last_log = time.time()
        t0, first = None, self.start_step  # the rate counts from the first step seen
        while not self.done.wait(1.0):
            step = self.captured.step()
            if step > bar.n:
                bar.update(step - bar.n)
            if t0 is None and step > self.start_step:
                t0, first = time.time(), step
                log.info("train: first steps done (graph built); training")
            if t0 is not None and time.time() - last_log >= self.every and step > first:
                rate = (step - first) / (time.time() - t0)
                eta = (self.total - step) / rate if rate > 0 else float("inf")
                log.info("train: step %d/%d  %.2f steps/s  ETA %.0fs", step, self.total,
                         rate, eta)
                last_log = time.time()
        bar.update(max(0, self.captured.step() - bar.n))
        bar.close()


def _write_run_files(run_dir: Path, config_path: Path, argv: list[str] | None) -> None:
    from tfod import pipeline

    configs = pipeline.load_configs(config_path)
    label_map = configs["train_input_config"].label_map_path
    if label_map and Path(label_map).is_file():
        shutil.copy(label_map, run_dir / "label_map.pbtxt")
    (run_dir / "command.txt").write_text(" ".join(argv or sys.argv) + "\n")
    (run_dir / "versions.json").write_text(json.dumps(package_versions(), indent=2))
    fingerprints = {}
    for pattern in configs["train_input_config"].tf_record_input_reader.input_path:
        manifest = Path(pattern).parent / "manifest.json"
        if manifest.is_file():
            fingerprints[str(manifest)] = json.loads(manifest.read_text()).get("fingerprint")
    (run_dir / "data.json").write_text(json.dumps(fingerprints, indent=2))


@contextlib.contextmanager
def _interrupt_as_keyboard_interrupt():
    """SIGTERM behaves like Ctrl-C, so both end with a checkpoint."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _log_to_file(run_dir: Path):
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("tfod").addHandler(handler)
    return handler


def _scale_learning_rate(configs: dict, factor: float) -> None:
    from tfod import pipeline

    scale = getattr(pipeline, "scale_learning_rate", None) or pipeline._scale_learning_rate
    scale(configs, factor)


def halve_batch(config_path: str | Path) -> tuple[int, int]:
    """Halve ``train_config.batch_size`` in a config file, scaling the learning rates
    linearly with it; returns (old, new) batch size.

    Example:
        >>> halve_batch("runs/pets/pipeline.config")
        (16, 8)
    """
    from tfod import pipeline

    configs = pipeline.load_configs(config_path)
    old = int(configs["train_config"].batch_size)
    new = max(1, old // 2)
    configs["train_config"].batch_size = new
    _scale_learning_rate(configs, new / old)
    pipeline.save_configs(configs, config_path)
    return old, new


def _oom_error(exc, step: int, config: Path, batch: int) -> TrainError:
    suggestion = (f"lower the batch size to {max(1, batch // 2)} (tfod config --batch-size "
                  f"{max(1, batch // 2)}), or run with --auto-batch to halve it and continue"
                  if batch > 1 else "the batch size is already 1: lower the image size or "
                  "use a smaller model")
    return TrainError(f"out of memory at step {step} with batch size {batch} "
                      f"({(exc.message or '')[:200]})",
                      where=f"{config} train_config.batch_size", fix=suggestion)


def _final_loss(run_dir: Path) -> float | None:
    from tfod.plots import read_scalars

    points = read_scalars(run_dir / "train").get("Loss/total_loss")
    return points[-1][1] if points else None


def _after_training(run_dir: Path, result: dict) -> None:
    """Final loss into the summary, and the run's plots (a failure here only warns)."""
    from tfod import plots

    try:
        result["loss"] = _final_loss(run_dir)
        plots.plot_run(run_dir)
    except Exception as exc:  # noqa: BLE001  (plots must never cost a finished run)
        log.warning("train: could not read the loss or draw plots: %s", exc)


def train(config: str | Path, run: str | None = None, runs_root: str | Path = "runs",
          run_dir: str | Path | None = None, num_steps: int | None = None,
          checkpoint_every: int = 1000, max_to_keep: int = 5, resume: bool = False,
          seed: int | None = 0, strategy: str = "auto", auto_batch: bool = False,
          early_stop: int | None = None, argv: list[str] | None = None) -> dict:
    """Train a model from a pipeline config into a run folder.

    Stops at exactly ``num_steps`` (from the config unless given) and always
    leaves a checkpoint of the last step, also on Ctrl-C or SIGTERM. Out of
    memory raises a :class:`TrainError` with a batch size to try; with
    ``auto_batch`` the batch is halved instead (learning rates scaled with it,
    written to the run's ``pipeline.config``) and training continues from the
    last checkpoint. Under ``multi-worker`` only the chief writes the run's
    files; the other workers' checkpoints and summaries go to temporary folders.
    ``early_stop=PATIENCE`` evaluates every ``checkpoint_every`` steps
    (:func:`tfod.evaluation.evaluate`) and stops once mAP has not improved for
    PATIENCE evaluations in a row (``eval/best.json`` names the best checkpoint).

    Example:
        >>> result = train("runs/demo/pipeline.config", run="demo", num_steps=600)
        >>> result["step"]
        600
    """
    if early_stop:
        return _train_with_early_stop(
            config, early_stop, run=run, runs_root=runs_root, run_dir=run_dir,
            num_steps=num_steps, checkpoint_every=checkpoint_every, max_to_keep=max_to_keep,
            resume=resume, seed=seed, strategy=strategy, auto_batch=auto_batch, argv=argv)
    from tfod import pipeline

    config = Path(config)
    # collective ops must be configured before TensorFlow does anything else
    strat = make_strategy(strategy) if strategy == "multi-worker" else None
    pipeline.check_pipeline(config)
    run_dir = Path(run_dir) if run_dir else Path(runs_root) / check_name(
        run or config.parent.name, "--run", TrainError)  # a plain name, not a path
    resolved = run_dir / "pipeline.config"
    chief = strat is None or strat.extended.should_checkpoint
    if chief and run_dir.exists() and any(run_dir.glob("ckpt-*")) and not resume:
        raise TrainError("run folder already holds checkpoints", where=str(run_dir),
                         fix="pass --resume to continue it, or choose another --run name")
    run_dir.mkdir(parents=True, exist_ok=True)
    mark_owned(run_dir, "run")  # a run folder tfod writes: `tfod demo` may replace it
    if chief and config.resolve() != resolved.resolve():
        shutil.copy(config, resolved)
    if not chief:
        resolved = config
    total = int(num_steps or pipeline.num_steps(resolved))
    if total <= 0:
        raise TrainError("num_steps is 0", where=f"{resolved} train_config.num_steps",
                         fix="set --steps N")
    if checkpoint_every < 1:
        raise TrainError(f"--checkpoint-every {checkpoint_every}: must be at least 1",
                         where="--checkpoint-every", fix="e.g. --checkpoint-every 1000")
    handler = _log_to_file(run_dir) if chief else None
    try:
        if chief:
            _write_run_files(run_dir, resolved, argv)
        import tensorflow as tf
        from object_detection import model_lib_v2

        if seed is not None:
            tf.keras.utils.set_random_seed(seed)
        start = first = latest_step(run_dir)
        if start >= total:
            log.info("train: %s is already at step %d of %d", run_dir, start, total)
            return {"run_dir": str(run_dir), "step": start, "checkpoint":
                    tf.train.latest_checkpoint(str(run_dir)), "seconds": 0.0}
        if strat is not None:
            check_input_files(resolved, num_workers())
        strat = strat or make_strategy(strategy)
        patch = _LoopPatch(total, checkpoint_every)  # its variables outside strat.scope()
        batch = int(pipeline.load_configs(resolved)["train_config"].batch_size)
        batch_changes = []
        t0 = time.time()
        status = "finished"
        with _interrupt_as_keyboard_interrupt(), strat.scope():
            while True:  # more than one pass only when --auto-batch halves the batch
                log.info("train: %s -> %s, steps %d..%d (up to %d per call), checkpoint "
                         "every %d, batch %d, strategy %s, %d replica(s)", resolved, run_dir,
                         start, total, CHUNK_CAP, checkpoint_every, batch,
                         type(strat).__name__, strat.num_replicas_in_sync)
                captured = _Captured(pipeline.load_configs(resolved)["train_config"])
                loop_args = patch.arguments(start, captured, functools.partial(
                    captured.save, run_dir, strat, max_to_keep))
                progress = _Progress(captured, start, total)
                oom = None
                with captured.hooks():
                    progress.start()
                    try:
                        model_lib_v2.train_loop(
                            pipeline_config_path=str(resolved), model_dir=str(run_dir),
                            train_steps=total, use_tpu=False,
                            checkpoint_max_to_keep=max_to_keep, record_summaries=True,
                            **loop_args)
                    except _Finished:  # upstream's own clean-up, skipped by the exception
                        model_lib_v2.clean_temporary_directories(
                            strat, model_lib_v2.get_filepath(strat, str(run_dir / "train")))
                    except KeyboardInterrupt:
                        status = "interrupted"
                        log.warning("train: interrupted at step %d; saving a checkpoint",
                                    captured.step())
                    except tf.errors.ResourceExhaustedError as exc:
                        oom = exc
                    finally:
                        progress.done.set()
                        progress.join()
                if oom is None:
                    break
                if not auto_batch or batch <= 1:
                    raise _oom_error(oom, captured.step(), resolved, batch) from None
                old, batch = halve_batch(resolved)
                start = latest_step(run_dir)
                batch_changes.append({"step": start, "from": old, "to": batch})
                log.warning("train: out of memory at step %d with batch size %d; --auto-batch: "
                            "batch size %d (learning rates x%.3g) from the checkpoint of step "
                            "%d", captured.step(), old, batch, batch / old, start)
            checkpoint = tf.train.latest_checkpoint(str(run_dir))
            if not chief:  # like upstream, every worker saves; the others to a temp folder
                log.info("train: not the chief: this worker's checkpoint went to %s (removed)",
                         captured.save(run_dir, strat, max_to_keep))
            elif latest_step(run_dir) != captured.step() or checkpoint is None:
                checkpoint = captured.save(run_dir, strat, max_to_keep) or checkpoint
        seconds = time.time() - t0
        step = captured.step()
        result = {"run_dir": str(run_dir), "step": step, "checkpoint": checkpoint,
                  "seconds": seconds, "status": status, "batch_size": batch,
                  "steps_per_sec": (step - first) / seconds if seconds else 0.0}
        if batch_changes:
            result["batch_size_changes"] = batch_changes
        if chief:
            _after_training(run_dir, result)
            (run_dir / "train_summary.json").write_text(json.dumps(result, indent=2))
        log.info("train: %s at step %d/%d in %.0fs (%.2f steps/s); checkpoint %s", status,
                 step, total, seconds, result["steps_per_sec"], checkpoint)
        if status == "interrupted":
            raise KeyboardInterrupt
        return result
    finally:
        if handler is not None:
            logging.getLogger("tfod").removeHandler(handler)
            handler.close()


def _train_with_early_stop(config: str | Path, patience: int, **kwargs) -> dict:
    """:func:`train` in segments of ``checkpoint_every`` steps, each followed by an eval."""
    from tfod import evaluation, pipeline

    if patience < 1 or kwargs["strategy"] == "multi-worker":
        raise TrainError("--early-stop needs a patience >= 1 and one worker",
                         where="--early-stop", fix="e.g. --early-stop 3, without multi-worker")
    config = Path(config)
    run_dir = Path(kwargs.pop("run_dir") or Path(kwargs["runs_root"]) / (
        check_name(kwargs["run"] or config.parent.name, "--run", TrainError)))
    total = int(kwargs.pop("num_steps") or pipeline.num_steps(config))
    every = kwargs["checkpoint_every"]
    best, since_best, history = -1.0, 0, []
    step = latest_step(run_dir) if kwargs["resume"] else 0
    t0 = time.time()
    while step < total:
        result = train(config, run_dir=run_dir, num_steps=min(total, step + every), **kwargs)
        config, kwargs["resume"], step = run_dir / "pipeline.config", True, result["step"]
        metrics = evaluation.evaluate(run_dir)
        value = metrics[evaluation.MAP]
        history.append({"step": step, "mAP": value})
        if value > best:
            best, since_best = value, 0
        else:
            since_best += 1
        log.info("train: early stop: step %d mAP %.4f (best %.4f, %d/%d without gain)",
                 step, value, best, since_best, patience)
        if since_best >= patience and step < total:
            log.warning("train: early stop at step %d of %d: mAP did not improve in %d "
                        "evaluations; best %s", step, total, patience,
                        evaluation.best_checkpoint(run_dir / "eval")["checkpoint"])
            result["status"] = "early-stopped"
            break
    result.update(early_stop={"patience": patience, "history": history,
                              "best": evaluation.best_checkpoint(run_dir / "eval")},
                  seconds=time.time() - t0)
    (run_dir / "train_summary.json").write_text(json.dumps(result, indent=2))
    return result
