"""Training on the OD API's own loop (``model_lib_v2.train_loop``) with the gaps filled.

Upstream ``model_main_tf2`` overshoots ``num_steps`` to a multiple of 100, saves
no checkpoint at the end (only every 1000 steps, and the step-0 one holds no
model variables), and dies without a checkpoint on Ctrl-C. tfod keeps the
upstream loop and:

* runs it in *chunks*: each ``tf.function`` call of the loop runs up to 100
  steps (upstream's ``NUM_STEPS_PER_ITERATION``), and a shorter chunk only where
  a checkpoint boundary (``--checkpoint-every N``) or ``num_steps`` comes first,
  so the loop stops at exactly ``num_steps``, saves at every multiple of N, and
  the time per step does not depend on the step count
  (:func:`tfod.compat.runtime.chunk_size`);
* records the model, optimizer and step variable the loop builds (through the
  OD API's own builder hooks) and saves them with the same object graph and
  numbering as upstream (``ckpt-N`` counts saves, so none is overwritten; the step
  is stored inside, see :func:`latest_step`) at every multiple of N, at the end,
  and when the loop is interrupted;
* writes a run folder with the resolved config, label map, command line,
  package versions and data fingerprint.

The chunking and the builder hooks are OD API runtime patches, in
:mod:`tfod.compat.runtime` (:class:`~tfod.compat.runtime.LoopPatch`,
:meth:`~tfod.compat.runtime.Captured.hooks`).

``--time`` (:class:`_TimedLoop`, on the same hook) plans the steps while the loop runs:
the first call (graph built) runs one step, the next :data:`PROBE_STEPS` give the first
measured step time; after every call, the total becomes the steps that fit in what is
left of the budget at the rate measured since the first call, and the learning-rate
schedule, built by the OD API once for ``num_steps`` steps, is stretched to end there
(:class:`_ScheduleClock`, :func:`_stretched_schedule`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from tfod.compat import runtime
from tfod.config import check_configs, load_configs, save_configs, scale_learning_rate
from tfod.distribute import (check_input_files, configure_threads, make_strategy, num_workers,
                             parse_threads)
from tfod.errors import TrainError
from tfod.files import check_name, mark_owned, write_text_atomic
from tfod.layout import MAP, RunDir, package_versions, stage_log

log = logging.getLogger(__name__)

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

    def __init__(self, captured: runtime.Captured, start: int, total, every: float = 5.0):
        super().__init__(daemon=True)
        # total: steps, or a function giving them (a --time run plans them as it goes)
        self.captured, self.start_step, self.every = captured, start, every
        self.total_of = total if callable(total) else (lambda: total)
        self.done = threading.Event()

    @property
    def total(self) -> int:
        return self.total_of()

    def run(self):
        from tqdm import tqdm

        bar = tqdm(total=self.total, initial=self.start_step, unit="step",
                   desc="train", dynamic_ncols=True, mininterval=1.0,
                   disable=not sys.stderr.isatty())
        last_log = time.time()
        t0, first = None, self.start_step  # the rate counts from the first step seen
        while not self.done.wait(1.0):
            step = self.captured.step()
            if bar.total != self.total:
                bar.total = self.total
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


def _oom_error(exc, step: int, config: Path, batch: int) -> TrainError:
    suggestion = (f"lower the batch size to {max(1, batch // 2)} (tfod config --batch-size "
                  f"{max(1, batch // 2)}), or run with --auto-batch to halve it and continue"
                  if batch > 1 else "the batch size is already 1: lower the image size or "
                  "use a smaller model")
    return TrainError(f"out of memory at step {step} with batch size {batch} "
                      f"({(exc.message or '')[:200]})",
                      where=f"{config} train_config.batch_size", fix=suggestion)


def halve_batch(config_path: str | Path) -> tuple[int, int]:
    """Halve ``train_config.batch_size`` in a config file, scaling the learning rates
    linearly with it; returns (old, new) batch size.

    Example:
        >>> halve_batch("runs/pets/pipeline.config")
        (16, 8)
    """
    configs = load_configs(config_path)
    old = int(configs["train_config"].batch_size)
    new = max(1, old // 2)
    configs["train_config"].batch_size = new
    scale_learning_rate(configs, new / old)
    save_configs(configs, config_path)
    return old, new


def _run_label_map(configs: dict, run: RunDir) -> None:
    """Copy the label map into the run folder and point both input readers at the copy:
    the run keeps the label map it trained with, whatever happens to the dataset's."""
    source = configs["train_input_config"].label_map_path
    if source and Path(source).is_file() and Path(source).resolve() != run.label_map.resolve():
        shutil.copy(source, run.label_map)
    if run.label_map.is_file():
        target = str(run.label_map.resolve())
        configs["train_input_config"].label_map_path = target
        for reader in configs["eval_input_configs"]:
            reader.label_map_path = target


def _write_run_files(run: RunDir, configs: dict, argv: list[str] | None) -> None:
    """The run's pipeline.config (pointing at its own label map), command line, package
    versions and the fingerprints of the datasets it reads."""
    _run_label_map(configs, run)
    save_configs(configs, run.config)
    run.command.write_text(" ".join(argv or sys.argv) + "\n")
    run.versions.write_text(json.dumps(package_versions(), indent=2))
    fingerprints = {}
    for pattern in configs["train_input_config"].tf_record_input_reader.input_path:
        manifest = Path(pattern).parent / "manifest.json"
        if manifest.is_file():
            fingerprints[str(manifest)] = json.loads(manifest.read_text()).get("fingerprint")
    run.data.write_text(json.dumps(fingerprints, indent=2))


def _run_folder(config: Path, run: str | None, runs_root: str | Path,
                run_dir: str | Path | None) -> RunDir:
    """``run_dir``, else ``<runs_root>/<run>`` (the config's folder name by default): the
    name is checked to be a plain name, never a path."""
    return RunDir(run_dir or Path(runs_root) / check_name(
        run or config.parent.name, "--run", TrainError))


def _claim_run(config: Path, run: str | None, runs_root: str | Path,
               run_dir: str | Path | None, resume: bool, chief: bool) -> RunDir:
    """The run folder, created and marked; one holding checkpoints only with ``resume``."""
    out = _run_folder(config, run, runs_root, run_dir)
    if chief and out.root.exists() and any(out.root.glob("ckpt-*")) and not resume:
        raise TrainError("run folder already holds checkpoints", where=str(out.root),
                         fix="pass --resume to continue it, or choose another --run name")
    out.root.mkdir(parents=True, exist_ok=True)
    mark_owned(out.root, "run")  # a run folder tfod writes: `tfod demo` may replace it
    return out


def _check_steps(total: int, checkpoint_every: int, config: Path) -> None:
    if total <= 0:
        raise TrainError("num_steps is 0", where=f"{config} train_config.num_steps",
                         fix="set --steps N")
    if checkpoint_every < 1:
        raise TrainError(f"--checkpoint-every {checkpoint_every}: must be at least 1",
                         where="--checkpoint-every", fix="e.g. --checkpoint-every 1000")


# --- --time: a time budget instead of a step count ------------------------------------------

#: ``--time``: steps of the first measured call (after the one that builds the graph)
PROBE_STEPS = 10
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(value: str | float | int) -> float:
    """Seconds of a duration: a number of seconds, or ``90s``, ``10m``, ``1h``, ``1h30m``.

    Example:
        >>> parse_duration("1h30m"), parse_duration("90s"), parse_duration(45)
        (5400.0, 90.0, 45.0)
    """
    import re

    text = str(value).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh]?)", text)
    if not text or not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smh]?)", "", text).strip():
        raise TrainError(f"cannot read the duration {value!r}", where="--time",
                         fix="give seconds or a duration like 90s, 10m, 1h, 1h30m")
    seconds = sum(float(n) * _UNITS[unit or "s"] for n, unit in parts)
    if seconds <= 0:
        raise TrainError(f"the duration {value!r} is not positive", where="--time",
                         fix="give a duration like 90s, 10m, 1h")
    return seconds


class _StretchedStep:
    """Stands in for the step variable in the OD API's learning-rate schedules: converts
    to the float tensor ``offset + scale * step`` of its :class:`_ScheduleClock`, and
    compares and subtracts like the step (``global_step > warmup_steps``,
    ``global_step - burnin_steps``, ``tf.cast(global_step, ...)``)."""

    def __init__(self, step, clock: _ScheduleClock):
        self.step, self.clock = step, clock

    def tensor(self, dtype=None):
        import tensorflow as tf

        value = self.clock.offset + self.clock.scale * tf.cast(self.step, tf.float32)
        return value if dtype in (None, tf.float32) else tf.cast(value, dtype)

    def __lt__(self, other):
        return self.tensor() < other

    def __le__(self, other):
        return self.tensor() <= other

    def __gt__(self, other):
        return self.tensor() > other

    def __ge__(self, other):
        return self.tensor() >= other

    def __sub__(self, other):
        return self.tensor() - other

    def __add__(self, other):
        return self.tensor() + other


class _ScheduleClock:
    """The step the learning-rate schedule reads, ``offset + scale * step`` (two
    variables read at every step inside the traced loop). It starts as the step itself;
    :meth:`stretch` maps what is left of the schedule onto the steps left, without a jump."""

    _registered = False

    def __init__(self):
        import tensorflow as tf

        if not _ScheduleClock._registered:
            tf.register_tensor_conversion_function(
                _StretchedStep, lambda value, dtype=None, name=None, as_ref=False:
                value.tensor(dtype))
            _ScheduleClock._registered = True
        self.offset = tf.Variable(0.0, trainable=False, name="tfod_schedule_offset")
        self.scale = tf.Variable(1.0, trainable=False, name="tfod_schedule_scale")

    def at(self, step: int) -> float:
        """The schedule's step at training step ``step``."""
        return float(self.offset.numpy() + self.scale.numpy() * step)

    def stretch(self, step: int, total: int, length: int) -> None:
        """From ``step`` on, run the rest of a schedule of ``length`` steps until ``total``.

        Example:
            >>> clock.stretch(20, 620, 2000)  # at step 20 of 2000: the rest in 600 steps
            >>> clock.at(620)
            2000.0
        """
        now = self.at(step)
        if total <= step or now >= length:
            return
        scale = (length - now) / (total - step)
        self.scale.assign(scale)
        self.offset.assign(now - scale * step)


@contextlib.contextmanager
def _stretched_schedule(clock: _ScheduleClock):
    """OD API runtime patch (``--time``): while active, ``optimizer_builder.build`` builds
    the learning-rate schedule on ``clock``'s step instead of the step variable (the
    optimizer and its step are otherwise the OD API's own). Entered before
    :meth:`runtime.Captured.hooks`, which then still records the real step variable."""
    from object_detection import model_lib_v2

    build = model_lib_v2.optimizer_builder.build

    def build_on_clock(config, global_step=None):
        if global_step is not None:
            global_step = _StretchedStep(global_step, clock)
        return build(config, global_step=global_step)

    model_lib_v2.optimizer_builder.build = build_on_clock
    try:
        yield
    finally:
        model_lib_v2.optimizer_builder.build = build


class _TimedLoop(runtime.LoopPatch):
    """:class:`runtime.LoopPatch` whose total follows a deadline (module docstring):
    the first call runs one step (it builds the graph), the next :data:`PROBE_STEPS`;
    after each later call the total is the step plus the steps that fit until the
    deadline at the rate measured since the first call, and the schedule of ``length``
    steps is stretched to end there. The loop's ``train_steps`` is :data:`LIMIT`."""

    LIMIT = 10 ** 9  # upstream's range(step, train_steps, 1) must outlast any total

    def __init__(self, t0: float, budget: float, length: int, every: int,
                 clock: _ScheduleClock):
        super().__init__(length, every)
        self.t0, self.deadline, self.length, self.clock = t0, t0 + budget, length, clock
        self.mark: tuple[int, float] | None = None  # (step, time) after the first call
        self.rate = 0.0
        self.plans: list[tuple[int, int]] = []  # (at step, total planned)

    def arguments(self, start: int, captured, save) -> dict:
        self.total, self.mark = start + 1, None  # one step: the call that builds the graph
        return super().arguments(start, captured, save)

    def after_call(self) -> None:
        step, now = self.captured.step(), time.time()
        if self.mark is None:  # graph built: measure from here
            self.mark = (step, now)
            self.total = step + (PROBE_STEPS if now < self.deadline else 0)
        else:
            self.rate = (step - self.mark[0]) / max(1e-9, now - self.mark[1])
            self.total = step + max(0, int((self.deadline - now) * self.rate))
            self.clock.stretch(step, self.total, self.length)
            if not self.plans:
                log.info("train: %.2f steps/s after the first %d steps: %d steps fit in the "
                         "time left, the schedule of %d steps stretched to end there",
                         self.rate, step - self.mark[0], self.total, self.length)
            self.plans.append((step, self.total))
        super().after_call()

    def summary(self, budget: float, seconds: float, step: int) -> dict:
        return {"seconds": budget, "trained_seconds": round(seconds, 1), "steps": step,
                "graph_seconds": round(self.mark[1] - self.t0, 1) if self.mark else None,
                "steps_per_sec": round(self.rate, 3), "schedule_length": self.length,
                "first_plan": self.plans[0][1] if self.plans else None}


def _one_pass(config: Path, run: RunDir, configs: dict, patch, start: int, total: int,
              strat, max_to_keep: int, clock: _ScheduleClock | None = None
              ) -> tuple[runtime.Captured, str, Exception | None]:
    """``model_lib_v2.train_loop`` from ``start`` to ``total`` (or an interruption);
    returns the captured loop objects, the status and an out-of-memory error, if any."""
    import tensorflow as tf

    captured = runtime.Captured(configs["train_config"], configs)
    loop_args = patch.arguments(start, captured, functools.partial(
        captured.save, run.root, strat, max_to_keep))
    progress = _Progress(captured, start, (lambda: patch.total) if clock else total)
    status, oom = "finished", None
    try:
        from object_detection import model_lib_v2  # loaded by _train_loop already

        stretched = _stretched_schedule(clock) if clock else contextlib.nullcontext()
        with stretched, captured.hooks(), runtime.odapi_without_autograph():
            progress.start()
            try:
                model_lib_v2.train_loop(
                    pipeline_config_path=str(config), model_dir=str(run.root),
                    train_steps=_TimedLoop.LIMIT if clock else total, use_tpu=False,
                    checkpoint_max_to_keep=max_to_keep,
                    record_summaries=True, **loop_args)
            except runtime.Finished as done:  # upstream's clean-up, skipped by the exception
                model_lib_v2.clean_temporary_directories(
                    strat, model_lib_v2.get_filepath(strat, str(run.train_dir)))
                _LOOP_LEFTOVERS.append(done)  # its frames hold the input iterator
    except KeyboardInterrupt:
        status = "interrupted"
        log.warning("train: interrupted at step %d; saving a checkpoint", captured.step())
    except tf.errors.ResourceExhaustedError as exc:
        oom = exc
    finally:
        progress.done.set()
        if progress.ident is not None:  # started
            progress.join()
    return captured, status, oom


def _train_loop(config: Path, run: RunDir, configs: dict, total: int, checkpoint_every: int,
                strat, max_to_keep: int, auto_batch: bool, budget: float | None = None) -> dict:
    """Training passes until ``total`` steps: more than one only when ``auto_batch`` halves
    the batch after running out of memory (from the last checkpoint). Returns what the
    run summary needs, the last checkpoint saved. With ``budget`` (seconds from here),
    until the budget ends instead; ``total`` is then the length of the schedule."""
    # imported whole before Ctrl-C is turned into KeyboardInterrupt: an import interrupted
    # half-way leaves half-loaded modules behind, and the final save needs them
    from object_detection import model_lib_v2  # noqa: F401

    t0 = time.time()
    clock = _ScheduleClock() if budget else None  # variables outside strat.scope(), too
    patch = (_TimedLoop(t0, budget, total, checkpoint_every, clock) if budget else
             runtime.LoopPatch(total, checkpoint_every))  # its variables outside strat.scope()
    start = first = latest_step(run.root)
    batch = int(configs["train_config"].batch_size)
    changes = []
    with _interrupt_as_keyboard_interrupt(), strat.scope():
        while True:
            try:  # (a Ctrl-C can land while this line is still being logged)
                log.info("train: %s -> %s, steps %d..%s (up to %d per call), checkpoint "
                         "every %d, batch %d, strategy %s, %d replica(s)", config, run.root,
                         start, f"the end of {budget:.0f}s" if budget else total,
                         runtime.CHUNK_CAP, checkpoint_every, batch,
                         type(strat).__name__, strat.num_replicas_in_sync)
                captured, status, oom = _one_pass(config, run, configs, patch, start, total,
                                                  strat, max_to_keep, clock)
            except KeyboardInterrupt:  # before _one_pass's own handler was reached
                log.warning("train: interrupted at step %d", start)
                captured, status, oom = runtime.Captured(), "interrupted", None
            if oom is None:
                break
            if not auto_batch or batch <= 1:
                raise _oom_error(oom, captured.step(), config, batch) from None
            old, batch = halve_batch(config)
            configs = {**load_configs(config),  # re-read only after the batch changed
                       **{k: v for k, v in configs.items() if k.startswith("tfod_")}}
            start = latest_step(run.root)
            changes.append({"step": start, "from": old, "to": batch})
            log.warning("train: out of memory at step %d with batch size %d; --auto-batch: "
                        "batch size %d (learning rates x%.3g) from the checkpoint of step %d",
                        captured.step(), old, batch, batch / old, start)
        trained = time.time() - t0  # to the last step
        checkpoint = _final_checkpoint(captured, run, strat, max_to_keep)
        _drop_loop_leftovers()
    seconds = time.time() - t0
    step = captured.step() or start  # 0 also when interrupted before the loop restored it
    result = {"run_dir": str(run.root), "step": step, "checkpoint": checkpoint,
              "seconds": seconds, "status": status, "batch_size": batch,
              "steps_per_sec": (step - first) / seconds if seconds else 0.0}
    if changes:
        result["batch_size_changes"] = changes
    if budget:
        result["time_budget"] = patch.summary(budget, trained, step)
    return result


#: what an ended ``train_loop`` leaves (the exception that ended it, whose frames hold the
#: loop's ``tf.data`` iterator), dropped by :func:`_drop_loop_leftovers`
_LOOP_LEFTOVERS: list = []


def _drop_loop_leftovers() -> None:
    """Free the ended loop's input iterator in a daemon thread. Destroying a ``tf.data``
    iterator waits for its autotuning thread, which sleeps between its rounds for up to a
    minute in a long run (measured: 7 to 60 s after the last step on a 640 px dataset);
    the run is done by then, so it need not wait."""
    leftovers = list(_LOOP_LEFTOVERS)
    _LOOP_LEFTOVERS.clear()
    if leftovers:
        threading.Thread(target=leftovers.clear, name="tfod-input-teardown",
                         daemon=True).start()


def _final_checkpoint(captured: runtime.Captured, run: RunDir, strat,
                      max_to_keep: int) -> str | None:
    """A checkpoint of the last step: saved now unless the newest one already is."""
    import tensorflow as tf

    checkpoint = tf.train.latest_checkpoint(str(run.root))
    if not strat.extended.should_checkpoint:  # like upstream, every worker saves
        log.info("train: not the chief: this worker's checkpoint went to %s (removed)",
                 captured.save(run.root, strat, max_to_keep))
    elif latest_step(run.root) != captured.step() or checkpoint is None:
        checkpoint = captured.save(run.root, strat, max_to_keep) or checkpoint
    return checkpoint


def _after_training(run: RunDir, result: dict) -> None:
    """Final loss and plots (a failure here only warns), then ``train_summary.json``."""
    from tfod import plots

    try:
        result["loss"] = plots.final_loss(run.train_dir)
        plots.plot_run(run.root)
    except Exception as exc:  # noqa: BLE001  (plots must never cost a finished run)
        log.warning("train: could not read the loss or draw plots: %s", exc)
    write_text_atomic(run.summary, json.dumps(result, indent=2))


def train(config: str | Path, run: str | None = None, runs_root: str | Path = "runs",
          run_dir: str | Path | None = None, num_steps: int | None = None,
          checkpoint_every: int = 1000, max_to_keep: int = 5, resume: bool = False,
          seed: int | None = 0, strategy: str = "auto", auto_batch: bool = False,
          early_stop: int | None = None, argv: list[str] | None = None, *,
          threads: str | None = "auto", time_budget: float | str | None = None,
          qat_per_tensor: bool = False) -> dict:
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
    ``threads``: TensorFlow's CPU thread pools, ``auto`` (one thread per op, one op per
    core: 1.5x faster steps for the small models on 2 cores), ``tf`` (TensorFlow's
    defaults) or ``INTRA,INTER``; see :func:`tfod.distribute.configure_threads`.
    ``time_budget`` (seconds, or ``"90s"``, ``"10m"``, ``"1h"``) trains until the budget
    ends instead, counted from the start of the loop (graph building included) to the
    last step: the steps are planned from the step time measured after the first call,
    the learning-rate schedule written for ``num_steps`` is stretched to them, and the
    run's ``pipeline.config`` gets the steps that ran (``train_summary.json``:
    ``time_budget``). Not with ``resume``, ``early_stop`` or ``multi-worker``.
    A config with a ``graph_rewriter.quantization`` block trains quantization-aware
    (:mod:`tfod.compat.qat`), weights per channel, or per tensor with ``qat_per_tensor``.
    The run folder gets the config and label map it trained with, ``train.log``,
    the command line, package versions and ``train_summary.json``.

    Example:
        >>> result = train("runs/demo/pipeline.config", run="demo", num_steps=600)
        >>> result["step"]
        600
        >>> train("runs/demo/pipeline.config", run="demo10m", time_budget="10m")["step"]
        4180
    """
    budget = _check_budget(time_budget, resume, early_stop, strategy)
    if early_stop:
        return _train_with_early_stop(
            config, early_stop, run=run, runs_root=runs_root, run_dir=run_dir,
            num_steps=num_steps, checkpoint_every=checkpoint_every, max_to_keep=max_to_keep,
            resume=resume, seed=seed, strategy=strategy, auto_batch=auto_batch, argv=argv,
            threads=threads)
    config = Path(config)
    parse_threads(threads)  # a bad value fails before anything else
    # thread pools and collective ops must be set before TensorFlow does anything else
    pools = configure_threads(threads)
    strat = make_strategy(strategy) if strategy == "multi-worker" else None
    configs = load_configs(config)  # parsed once, handed to every step
    configs["tfod_qat_per_channel"] = not qat_per_tensor  # read by compat.qat
    check_configs(configs, config, scope="train")
    chief = strat is None or strat.extended.should_checkpoint
    out = _claim_run(config, run, runs_root, run_dir, resume, chief)
    total = int(num_steps or configs["train_config"].num_steps)
    _check_steps(total, checkpoint_every, config)
    with stage_log(out.root, "train") if chief else contextlib.nullcontext():
        if chief:
            _write_run_files(out, configs, argv)
        log.info("train: TensorFlow threads %s", f"intra-op {pools[0]}, inter-op {pools[1]}"
                 if pools else "as TensorFlow sets them")
        resolved = out.config if chief else config
        import tensorflow as tf

        if seed is not None:
            tf.keras.utils.set_random_seed(seed)
        start = latest_step(out.root)
        if start >= total:
            log.info("train: %s is already at step %d of %d", out.root, start, total)
            return {"run_dir": str(out.root), "step": start, "checkpoint":
                    tf.train.latest_checkpoint(str(out.root)), "seconds": 0.0}
        if strat is not None:
            check_input_files(configs, num_workers(), resolved)
        strat = strat or make_strategy(strategy)
        result = _train_loop(resolved, out, configs, total, checkpoint_every, strat,
                             max_to_keep, auto_batch, budget)
        if budget:
            total = result["step"]
            if chief and result["step"] > start:
                _record_steps(out, result["step"])
        if chief:
            _after_training(out, result)
        log.info("train: %s at step %d/%d in %.0fs (%.2f steps/s); checkpoint %s",
                 result["status"], result["step"], total, result["seconds"],
                 result["steps_per_sec"], result["checkpoint"])
        if result["status"] == "interrupted":
            raise KeyboardInterrupt
        return result


def _check_budget(time_budget, resume: bool, early_stop, strategy: str) -> float | None:
    """Seconds of ``--time`` (None without one); refused with what it cannot follow."""
    if time_budget is None:
        return None
    seconds = parse_duration(time_budget)
    clash = ("--resume" if resume else "--early-stop" if early_stop else
             "--strategy multi-worker" if strategy == "multi-worker" else None)
    if clash:
        raise TrainError(f"--time cannot be combined with {clash}", where="--time",
                         fix="train to a time budget in a new run, on one worker, or give "
                             "--steps N (train_summary.json of a --time run has its steps)")
    return seconds


def _record_steps(run: RunDir, steps: int) -> None:
    """The run's ``pipeline.config`` with the steps a ``--time`` run ran, its schedule
    scaled to them (as the schedule was stretched while it ran)."""
    from tfod.config import set_steps

    configs = load_configs(run.config)
    set_steps(configs, steps)
    save_configs(configs, run.config)


def _train_with_early_stop(config: str | Path, patience: int, **kwargs) -> dict:
    """:func:`train` in segments of ``checkpoint_every`` steps, each followed by an eval."""
    from tfod import evaluation

    if patience < 1 or kwargs["strategy"] == "multi-worker":
        raise TrainError("--early-stop needs a patience >= 1 and one worker",
                         where="--early-stop", fix="e.g. --early-stop 3, without multi-worker")
    config = Path(config)
    run_dir = _run_folder(config, kwargs["run"], kwargs["runs_root"], kwargs.pop("run_dir")).root
    total = int(kwargs.pop("num_steps") or load_configs(config)["train_config"].num_steps)
    every = kwargs["checkpoint_every"]
    best, since_best, history = -1.0, 0, []
    step = latest_step(run_dir) if kwargs["resume"] else 0
    t0 = time.time()
    while step < total:
        result = train(config, run_dir=run_dir, num_steps=min(total, step + every), **kwargs)
        config, kwargs["resume"], step = RunDir(run_dir).config, True, result["step"]
        metrics = evaluation.evaluate(run_dir)
        value = metrics[MAP]
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
    write_text_atomic(RunDir(run_dir).summary, json.dumps(result, indent=2))
    return result
