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

    def __init__(self, captured: runtime.Captured, start: int, total: int, every: float = 5.0):
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


def _one_pass(config: Path, run: RunDir, configs: dict, patch, start: int, total: int,
              strat, max_to_keep: int) -> tuple[runtime.Captured, str, Exception | None]:
    """``model_lib_v2.train_loop`` from ``start`` to ``total`` (or an interruption);
    returns the captured loop objects, the status and an out-of-memory error, if any."""
    import tensorflow as tf

    captured = runtime.Captured(configs["train_config"])
    loop_args = patch.arguments(start, captured, functools.partial(
        captured.save, run.root, strat, max_to_keep))
    progress = _Progress(captured, start, total)
    status, oom = "finished", None
    try:
        from object_detection import model_lib_v2  # loaded by _train_loop already

        with captured.hooks(), runtime.odapi_without_autograph():
            progress.start()
            try:
                model_lib_v2.train_loop(
                    pipeline_config_path=str(config), model_dir=str(run.root),
                    train_steps=total, use_tpu=False, checkpoint_max_to_keep=max_to_keep,
                    record_summaries=True, **loop_args)
            except runtime.Finished:  # upstream's own clean-up, skipped by the exception
                model_lib_v2.clean_temporary_directories(
                    strat, model_lib_v2.get_filepath(strat, str(run.train_dir)))
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
                strat, max_to_keep: int, auto_batch: bool) -> dict:
    """Training passes until ``total`` steps: more than one only when ``auto_batch`` halves
    the batch after running out of memory (from the last checkpoint). Returns what the
    run summary needs, the last checkpoint saved."""
    # imported whole before Ctrl-C is turned into KeyboardInterrupt: an import interrupted
    # half-way leaves half-loaded modules behind, and the final save needs them
    from object_detection import model_lib_v2  # noqa: F401

    patch = runtime.LoopPatch(total, checkpoint_every)  # its variables outside strat.scope()
    start = first = latest_step(run.root)
    batch = int(configs["train_config"].batch_size)
    changes = []
    t0 = time.time()
    with _interrupt_as_keyboard_interrupt(), strat.scope():
        while True:
            try:  # (a Ctrl-C can land while this line is still being logged)
                log.info("train: %s -> %s, steps %d..%d (up to %d per call), checkpoint "
                         "every %d, batch %d, strategy %s, %d replica(s)", config, run.root,
                         start, total, runtime.CHUNK_CAP, checkpoint_every, batch,
                         type(strat).__name__, strat.num_replicas_in_sync)
                captured, status, oom = _one_pass(config, run, configs, patch, start, total,
                                                  strat, max_to_keep)
            except KeyboardInterrupt:  # before _one_pass's own handler was reached
                log.warning("train: interrupted at step %d", start)
                captured, status, oom = runtime.Captured(), "interrupted", None
            if oom is None:
                break
            if not auto_batch or batch <= 1:
                raise _oom_error(oom, captured.step(), config, batch) from None
            old, batch = halve_batch(config)
            configs = load_configs(config)  # re-read only after the batch changed
            start = latest_step(run.root)
            changes.append({"step": start, "from": old, "to": batch})
            log.warning("train: out of memory at step %d with batch size %d; --auto-batch: "
                        "batch size %d (learning rates x%.3g) from the checkpoint of step %d",
                        captured.step(), old, batch, batch / old, start)
        checkpoint = _final_checkpoint(captured, run, strat, max_to_keep)
    seconds = time.time() - t0
    step = captured.step() or start  # 0 also when interrupted before the loop restored it
    result = {"run_dir": str(run.root), "step": step, "checkpoint": checkpoint,
              "seconds": seconds, "status": status, "batch_size": batch,
              "steps_per_sec": (step - first) / seconds if seconds else 0.0}
    if changes:
        result["batch_size_changes"] = changes
    return result


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
          threads: str | None = "auto") -> dict:
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
    The run folder gets the config and label map it trained with, ``train.log``,
    the command line, package versions and ``train_summary.json``.

    Example:
        >>> result = train("runs/demo/pipeline.config", run="demo", num_steps=600)
        >>> result["step"]
        600
    """
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
                             max_to_keep, auto_batch)
        if chief:
            _after_training(out, result)
        log.info("train: %s at step %d/%d in %.0fs (%.2f steps/s); checkpoint %s",
                 result["status"], result["step"], total, result["seconds"],
                 result["steps_per_sec"], result["checkpoint"])
        if result["status"] == "interrupted":
            raise KeyboardInterrupt
        return result


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
