"""tfod.training on the OD API's loop: exact steps, final checkpoint, run folder, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY_STEPS
from tfod import distribute
from tfod import training as train_mod
from tfod.compat import runtime
from tfod.errors import TrainError


def _calls(start, total, every):
    """The steps reached after each call, planned by chunk_size from `start`."""
    reached, step = [], start
    while step < total:
        step += runtime.chunk_size(step, total, every)
        reached.append(step)
    return reached


def test_chunk_size_full_chunks_then_checkpoint_or_end():
    assert _calls(0, 197, 1000) == [100, 197]  # a prime: one full chunk and the rest
    assert _calls(0, 1997, 1000) == [100 * k for k in range(1, 11)] + [
        1000 + 100 * k for k in range(1, 10)] + [1997]
    assert _calls(0, 40, 10) == [10, 20, 30, 40]
    assert _calls(13, 40, 10) == [20, 30, 40]  # resumed between checkpoints
    assert _calls(0, 250, 1) == list(range(1, 251))
    assert _calls(0, 350, 150) == [100, 150, 250, 300, 350]
    assert _calls(0, 6, 1000) == [6]
    assert runtime.chunk_size(0, 10_000, 10_000) == runtime.CHUNK_CAP == 100


class _Record:
    """Observe the OD API runtime patch: the step reached after each call of upstream's
    tf.function (the real loop runs; nothing is replaced)."""

    def __init__(self, mp):
        self.steps = []
        real = runtime.LoopPatch.after_call

        def after_call(patch):
            self.steps.append(patch.captured.step())
            return real(patch)

        mp.setattr(runtime.LoopPatch, "after_call", after_call)


def _checkpoint_steps(run_dir):
    """The `step` variable stored in every checkpoint of a run, oldest first."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(run_dir))
    return [int(tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
            for path in state.all_model_checkpoint_paths]


def _scalars(run_dir):
    from tfod.plots import read_scalars

    return read_scalars(run_dir / "train")


def _loss_steps(run_dir):
    return [step for step, _ in _scalars(run_dir)["Loss/total_loss"]]


@pytest.fixture(scope="module")
def cadence_run(tiny_run, tmp_path_factory):
    """`--steps 40 --checkpoint-every 10` on the tiny model, from scratch, with the step
    reached after each tf.function call recorded."""
    run_dir = tmp_path_factory.mktemp("cadence") / "run"
    with pytest.MonkeyPatch.context() as mp:
        record = _Record(mp)
        result = train_mod.train(tiny_run["config"], run_dir=run_dir, num_steps=40,
                                 checkpoint_every=10, max_to_keep=20, seed=0)
    return {"run_dir": run_dir, "result": result, "calls": record.steps}


def test_checkpoint_every_n_saves_every_multiple(cadence_run):
    """A checkpoint at each multiple of N, none overwritten (ckpt-N numbered by save);
    upstream saved only at 0 and 40 here (it saves between calls of up to 100 steps)."""
    run_dir = cadence_run["run_dir"]
    assert cadence_run["result"]["step"] == 40
    assert cadence_run["calls"] == [10, 20, 30, 40]
    assert _checkpoint_steps(run_dir) == [0, 10, 20, 30, 40]  # 0: upstream's own save
    assert sorted(p.name for p in run_dir.glob("ckpt-*.index")) == [
        f"ckpt-{k}.index" for k in range(1, 6)]
    assert _loss_steps(run_dir) == [10, 20, 30, 40]  # every call's summaries, the last too


def test_prime_step_count_runs_full_chunks(cadence_run, tmp_path, monkeypatch):
    """103 more steps (a prime, no divisor <= 100 but 1) with N=1000: one call of 100 and
    one of 3; the divisor rule before ran 103 calls of one step."""
    import shutil

    run_dir = tmp_path / "prime"
    shutil.copytree(cadence_run["run_dir"], run_dir)
    record = _Record(monkeypatch)
    result = train_mod.train(run_dir / "pipeline.config", run_dir=run_dir, resume=True,
                             num_steps=40 + 103, checkpoint_every=1000, max_to_keep=20)
    assert record.steps == [140, 143]
    assert result["step"] == 143
    assert _checkpoint_steps(run_dir) == [0, 10, 20, 30, 40, 143]
    assert _loss_steps(run_dir)[-2:] == [140, 143]


def test_exact_steps_and_final_checkpoint(tiny_run):
    import tensorflow as tf

    run_dir = tiny_run["run_dir"]
    assert tiny_run["train"]["step"] == TINY_STEPS
    latest = tf.train.latest_checkpoint(str(run_dir))
    assert train_mod.latest_step(run_dir) == TINY_STEPS
    # numbered by save like upstream: its step-0 save is ckpt-1, the final one ckpt-2
    assert latest.endswith("ckpt-2")
    # the final checkpoint holds the model's variables (upstream's step-0 one does not)
    names = [n for n, _ in tf.train.list_variables(latest)]
    assert sum(n.startswith("model/") for n in names) > 100
    for name in ("pipeline.config", "label_map.pbtxt", "command.txt", "versions.json",
                 "data.json", "train.log", "train_summary.json"):
        assert (run_dir / name).is_file(), name
    versions = json.loads((run_dir / "versions.json").read_text())
    assert versions["tensorflow"] == tf.__version__
    assert list(json.loads((run_dir / "data.json").read_text()).values())[0]
    assert list((run_dir / "train").glob("events.out.tfevents.*"))


def test_existing_run_needs_resume(tiny_run):
    with pytest.raises(TrainError, match="--resume"):
        train_mod.train(tiny_run["config"], run_dir=tiny_run["run_dir"])


def test_resume_continues_to_new_total(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "resumed"
    shutil.copytree(tiny_run["run_dir"], run_dir)
    result = train_mod.train(run_dir / "pipeline.config", run_dir=run_dir, resume=True,
                             num_steps=TINY_STEPS + 2)
    assert result["step"] == TINY_STEPS + 2
    assert train_mod.latest_step(run_dir) == TINY_STEPS + 2


def test_multi_worker_needs_a_training_file_per_worker(tiny_run, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["h:1"],
                                                            "worker": ["h:2", "h:3"]}}))
    assert distribute.num_workers() == 3
    with pytest.raises(TrainError, match=r"1 training file\(s\) for 3 workers.*--shard-size-mb"):
        distribute.check_input_files(tiny_run["config"], 3)
    distribute.check_input_files(tiny_run["config"], 1)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(TrainError, match="TF_CONFIG"):
        distribute.num_workers()


def test_unknown_strategy_and_multiworker_needs_tf_config(monkeypatch):
    with pytest.raises(TrainError, match="use one of"):
        distribute.make_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(TrainError, match="TF_CONFIG"):
        distribute.make_strategy("multi-worker")


def _train_and_sigterm(tiny_run, tmp_path, run: str, steps: int, marker: str,
                       delay: float) -> tuple[int, str]:
    """`tfod train` of tiny_run's config in a subprocess, SIGTERM ``delay`` seconds after
    the first stderr line containing ``marker``; returns (exit code, its stderr)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "pipeline.config"
    config.write_text(tiny_run["config"].read_text())
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfod.cli", "train", str(config), "--runs-root",
         str(tmp_path / "runs"), "--run", run, "--steps", str(steps)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    deadline = time.time() + 600
    for line in proc.stderr:
        lines.append(line)
        if marker in line or time.time() > deadline:
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + rest


def test_sigterm_leaves_a_checkpoint_of_the_last_step(tiny_run, tmp_path):
    """SIGTERM (handled like Ctrl-C) in the middle of training: a checkpoint of the step reached."""
    # real training steps run once the graph is built
    code, output = _train_and_sigterm(tiny_run, tmp_path, "sig", 100000, "graph built", 3)
    assert code == 130, output
    run_dir = tmp_path / "runs" / "sig"
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert 0 < summary["step"] < 100000
    assert train_mod.latest_step(run_dir) == summary["step"]


@pytest.mark.parametrize("delay", [0.0, 0.0, 2.0])
def test_sigterm_while_the_graph_is_built_ends_cleanly(tiny_run, tmp_path, delay):
    """SIGTERM before the first step (the model's weights not built yet): exit 130 with
    the run summary "interrupted at step 0", no traceback. It raised Keras' "Weights for
    model ... have not yet been created" while saving the final checkpoint; and a signal
    right after the loop's first log line (delay 0) landed while the OD API's loop module
    was still being imported: no summary, or a traceback from the half-imported modules."""
    # "per call" ends the loop's first line: the train step is traced after it
    code, output = _train_and_sigterm(tiny_run, tmp_path, "early", 1000, "per call", delay)
    assert code == 130, output
    assert "Traceback" not in output and "graph built" not in output, output
    summary = json.loads((tmp_path / "runs" / "early" / "train_summary.json").read_text())
    assert (summary["status"], summary["step"]) == ("interrupted", 0)


@pytest.mark.slow
def test_sigkill_then_resume_loses_no_step_beyond_the_last_checkpoint(tiny_run, tmp_path,
                                                                      caplog):
    """SIGKILL (no handler runs) after a periodic checkpoint: --resume starts from that
    checkpoint's step and finishes at exactly num_steps."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "pipeline.config"
    config.write_text(tiny_run["config"].read_text())
    cmd = [sys.executable, "-m", "tfod.cli", "train", str(config), "--runs-root",
           str(tmp_path / "runs"), "--run", "kill", "--steps", "40", "--checkpoint-every", "10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    run_dir = tmp_path / "runs" / "kill"
    deadline = time.time() + 900
    while train_mod.latest_step(run_dir) < 10 and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = train_mod.latest_step(run_dir)
    assert 10 <= saved < 40 and not (run_dir / "train_summary.json").exists()
    import logging

    caplog.set_level(logging.INFO, logger="tfod")
    result = train_mod.train(config, run_dir=run_dir, resume=True, num_steps=40, seed=0)
    assert result["step"] == 40 and train_mod.latest_step(run_dir) == 40
    assert f"steps {saved}..40" in caplog.text  # resumed from the checkpoint, not from 0


def _oom():
    import tensorflow as tf

    return tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor [2,160,160,3]")


def test_out_of_memory_says_which_batch_to_try(tiny_run, tmp_path, monkeypatch):
    import shutil

    from object_detection import model_lib_v2

    run_dir = tmp_path / "oom"
    shutil.copytree(tiny_run["run_dir"], run_dir)

    def train_loop(**kwargs):
        raise _oom()

    monkeypatch.setattr(model_lib_v2, "train_loop", train_loop)
    with pytest.raises(TrainError, match=r"batch size 2.*lower the batch size to 1.*--auto-batch"):
        train_mod.train(run_dir / "pipeline.config", run_dir=run_dir, resume=True,
                        num_steps=TINY_STEPS + 2)


def _oom_in_graph(monkeypatch, from_step, batch=None):
    """A real out-of-memory error inside upstream's tf.function: from step `from_step` on
    (and only while the batch size is `batch`, if given), the train step's total loss also
    sums 2**40 float32 zeros, which TensorFlow's allocator refuses (ResourceExhaustedError,
    "OOM when allocating tensor"). Only the loss of a call's last step is used, so the
    error surfaces at the end of the first call that reaches `from_step`, with that call's
    steps lost. The OD API's loop and train step run unchanged."""
    import tensorflow as tf
    from object_detection import model_lib_v2
    from object_detection.core import standard_fields as fields

    real = model_lib_v2.eager_train_step

    def eager_train_step(model, features, labels, *args, **kwargs):
        losses = real(model, features, labels, *args, **kwargs)
        if batch is not None and features[fields.InputDataFields.image].shape[0] != batch:
            return losses
        step = kwargs["training_step"]
        size = tf.where(step >= from_step, tf.constant(2**40, tf.int64),
                        tf.constant(1, tf.int64))
        waste = tf.reduce_sum(tf.zeros(tf.reshape(size, [1])))
        losses["Loss/total_loss"] = losses["Loss/total_loss"] + 0.0 * waste
        return losses

    monkeypatch.setattr(model_lib_v2, "eager_train_step", eager_train_step)


def test_auto_batch_after_a_checkpoint_continues_from_it(cadence_run, tmp_path, monkeypatch):
    """Out of memory at batch 2 in the call of steps 50..60, after the checkpoint of step 50
    (N=10): training continues from step 50 with batch 1 (learning rates halved, config
    rewritten), losing at most N steps, and finishes at exactly num_steps."""
    import shutil

    from tfod.config import templates

    run_dir = tmp_path / "auto"
    shutil.copytree(cadence_run["run_dir"], run_dir)
    before = templates.load_configs(run_dir / "pipeline.config")["train_config"]
    _oom_in_graph(monkeypatch, from_step=55, batch=2)
    record = _Record(monkeypatch)
    result = train_mod.train(run_dir / "pipeline.config", run_dir=run_dir, resume=True,
                             num_steps=60, checkpoint_every=10, max_to_keep=20,
                             auto_batch=True)
    assert record.steps == [50, 60]  # the call of steps 50..60 at batch 2 failed
    assert result["step"] == 60 and result["batch_size"] == 1
    assert result["batch_size_changes"] == [{"step": 50, "from": 2, "to": 1}]
    assert _checkpoint_steps(run_dir) == [0, 10, 20, 30, 40, 50, 60]
    after = templates.load_configs(run_dir / "pipeline.config")["train_config"]
    assert after.batch_size == 1
    lr_before = before.optimizer.adam_optimizer.learning_rate.cosine_decay_learning_rate
    lr_after = after.optimizer.adam_optimizer.learning_rate.cosine_decay_learning_rate
    assert lr_after.learning_rate_base == pytest.approx(lr_before.learning_rate_base / 2)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["batch_size"] == 1 and summary["loss"] > 0
    assert (run_dir / "plots" / "loss.png").is_file()


def test_out_of_memory_at_batch_1_is_a_clear_error(tiny_run, tmp_path, monkeypatch, capsys):
    """`tfod train --auto-batch` at batch size 1 cannot halve: exit 1 with a one-paragraph
    error (step, batch, what to do), no traceback."""
    import shutil

    from object_detection import model_lib_v2

    from tfod import cli
    from tfod.config import templates

    run_dir = tmp_path / "runs" / "b1"
    shutil.copytree(tiny_run["run_dir"], run_dir)
    configs = templates.load_configs(run_dir / "pipeline.config")
    configs["train_config"].batch_size = 1
    templates.save_configs(configs, run_dir / "pipeline.config")

    def train_loop(**kwargs):
        raise _oom()

    monkeypatch.setattr(model_lib_v2, "train_loop", train_loop)
    code = cli.main(["train", str(run_dir / "pipeline.config"), "--runs-root",
                     str(tmp_path / "runs"), "--run", "b1", "--resume", "--steps",
                     str(TINY_STEPS + 2), "--auto-batch"])
    err = capsys.readouterr().err
    assert code == 1
    assert "out of memory" in err and "batch size is already 1" in err, err
    assert "Traceback" not in err
    assert train_mod.latest_step(run_dir) == TINY_STEPS  # nothing lost, nothing faked saved


@pytest.mark.slow
def test_multi_worker_two_local_processes(tiny_run, tmp_path):
    """Two workers on 127.0.0.1 (TF_CONFIG each, --strategy multi-worker) train a few steps:
    the chief's checkpoint of the last step is in the run folder; the other worker's
    checkpoints went to a temporary folder that is gone afterwards."""
    import os
    import subprocess
    import sys

    from tfod.dashboard import free_port

    from tfod.data import prepare_dataset
    from tfod.config import patch_pipeline_for_dataset

    # the OD API gives each worker whole files: write the training split as several shards
    prepared = prepare_dataset(tiny_run["root"] / "raw", "mw", out_root=tmp_path / "data",
                               label_map_dir=tmp_path / "label_maps", shard_size_mb=0.01)
    assert len(json.loads((Path(prepared["dir"]) / "manifest.json").read_text())["splits"]["train"]
               ["shards"]) >= 2
    config = patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", tmp_path / "pipeline.config",
                                        data_dir=prepared["dir"], num_steps=4, batch_size=2)
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tfod.cli", "train", str(config), "--runs-root",
             str(tmp_path / "runs"), "--run", "mw", "--steps", "4", "--strategy",
             "multi-worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    outputs = [p.communicate(timeout=1200)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    run_dir = tmp_path / "runs" / "mw"
    assert train_mod.latest_step(run_dir) == 4
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["step"] == 4 and summary["status"] == "finished"
    assert "2 replica(s)" in outputs[0] and "CollectiveAllReduce" in outputs[0]
    assert not list(run_dir.rglob("temp_worker_*"))  # the non-chief's writes, cleaned up
    assert "temp_worker_001" in outputs[1] and "temp_worker" not in outputs[0]


def test_plots_of_a_run_from_its_event_files(tmp_path):
    """tfod.plots reads TF2 scalar summaries (tensors) and draws loss, LR and mAP PNGs."""
    import tensorflow as tf

    from tfod import plots

    run_dir = tmp_path / "run"
    writer = tf.summary.create_file_writer(str(run_dir / "train"))
    with writer.as_default():
        for step in (10, 20, 30):
            tf.summary.scalar("Loss/total_loss", 3.0 / step, step=step)
            tf.summary.scalar("learning_rate", 0.01 * step, step=step)
    writer.close()
    scalars = plots.read_scalars(run_dir / "train")
    assert [s for s, _ in scalars["Loss/total_loss"]] == [10, 20, 30]
    assert scalars["learning_rate"][-1][1] == pytest.approx(0.3)
    assert [p.name for p in plots.plot_run(run_dir)] == ["loss.png", "learning_rate.png"]
    for step, value in ((10, 0.2), (30, 0.5)):
        (run_dir / "eval" / f"ckpt-{step}").mkdir(parents=True)
        (run_dir / "eval" / f"ckpt-{step}" / "metrics.json").write_text(json.dumps(
            {"step": step, "DetectionBoxes_Precision/mAP": value,
             "DetectionBoxes_Precision/mAP@.50IOU": value + 0.3,
             "Loss/total_loss": 1.0 + value}))
    assert [m["step"] for m in plots.eval_history(run_dir)] == [10, 30]
    # the loss plot: training losses from the events, the val loss of each checkpoint
    series = plots.loss_series(plots.read_scalars(run_dir / "train"),
                               plots.eval_history(run_dir))
    assert series[plots.VAL_LABEL] == [(10, 1.2), (30, 1.5)]
    assert [s for s, _ in series["total_loss"]] == [10, 20, 30]
    written = plots.plot_run(run_dir)
    assert [p.name for p in written] == ["loss.png", "learning_rate.png", "map.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    assert plots.plot_run(tmp_path / "empty") == []


@pytest.mark.slow
def test_early_stop_after_patience_evaluations(tiny_run, tmp_path, monkeypatch):
    """Train in segments of checkpoint_every steps with an eval after each (scripted mAPs):
    stops once mAP has not improved `patience` times, before num_steps."""
    import shutil

    from tfod import evaluation

    run_dir = tmp_path / "early"
    shutil.copytree(tiny_run["run_dir"], run_dir, ignore=shutil.ignore_patterns("eval"))
    scripted = iter([0.10, 0.20, 0.15, 0.12, 0.9])
    evaluated = []

    def fake_evaluate(run):
        step = train_mod.latest_step(run)
        value = next(scripted)
        folder = run_dir / "eval" / f"ckpt-at-{step}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(
            {"checkpoint": str(run_dir / f"ckpt-at-{step}"), "step": step,
             evaluation.MAP: value}))
        evaluated.append(step)
        return {evaluation.MAP: value, "step": step}

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    result = train_mod.train(run_dir / "pipeline.config", run_dir=run_dir, resume=True,
                             num_steps=TINY_STEPS + 10, checkpoint_every=2, early_stop=2)
    assert evaluated == [TINY_STEPS + 2, TINY_STEPS + 4, TINY_STEPS + 6, TINY_STEPS + 8]
    assert result["status"] == "early-stopped" and result["step"] == TINY_STEPS + 8
    assert result["early_stop"]["best"]["step"] == TINY_STEPS + 4
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["status"] == "early-stopped"
    assert train_mod.latest_step(run_dir) == TINY_STEPS + 8


def _count_parses(mp):
    """Every parse of a pipeline.config by tfod (tfod.config.load_configs goes through the
    OD API's config_util.get_configs_from_pipeline_file), recorded by path. The OD API's
    own train_loop, which takes a path, holds its own reference and is not counted."""
    from object_detection.utils import config_util

    parses = []
    real = config_util.get_configs_from_pipeline_file

    def counted(path, *args, **kwargs):
        parses.append(str(path))
        return real(path, *args, **kwargs)

    mp.setattr(config_util, "get_configs_from_pipeline_file", counted)
    return parses


def test_finished_run_evaluates_and_exports_without_its_pretrained_checkpoint(
        tiny_run, tmp_path, caplog):
    """A run fine-tuned from a checkpoint that is deleted afterwards, with its dataset's
    label map deleted too: `train` parsed its config once and wrote the label map it used
    into the run folder, pointed at by the run's config; eval and export (one parse) check
    only what they read, so both still work, while the training checks name the missing
    checkpoint. Each stage left its log file in its output folder."""
    import logging
    import shutil

    from tfod.config import check_pipeline, load_configs, patch_pipeline_for_dataset
    from tfod.evaluation import evaluate
    from tfod.exporter import export
    from tfod.layout import MAP, RunDir

    caplog.set_level(logging.INFO, logger="tfod")  # as the command line sets it
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    source = Path(tiny_run["train"]["checkpoint"])
    for part in source.parent.glob(source.name + ".*"):
        shutil.copy(part, pretrained / part.name.replace(source.name, "ckpt-1"))
    data = tmp_path / "data"
    shutil.copytree(tiny_run["data"], data)
    config = patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", tmp_path / "ft.config",
                                        data_dir=data, num_steps=2, batch_size=2,
                                        fine_tune_checkpoint=pretrained / "ckpt-1")
    run = RunDir(tmp_path / "runs" / "ft")
    with pytest.MonkeyPatch.context() as mp:
        parses = _count_parses(mp)
        train_mod.train(config, run_dir=run.root, seed=0)
    assert parses == [str(config)]
    configs = load_configs(run.config)
    readers = [configs["train_input_config"], *configs["eval_input_configs"]]
    assert [r.label_map_path for r in readers] == [str(run.label_map.resolve())] * 2
    assert run.label_map.read_text() == (data / "label_map.pbtxt").read_text()
    assert configs["train_config"].fine_tune_checkpoint == str(pretrained / "ckpt-1")

    shutil.rmtree(pretrained)
    (data / "label_map.pbtxt").unlink()
    with pytest.raises(Exception, match="train_config.fine_tune_checkpoint"):
        check_pipeline(run.config)
    metrics = evaluate(run.root)
    assert metrics["step"] == 2 and MAP in metrics
    assert set(metrics["per_class"]) == {"circle", "square", "triangle"}
    with pytest.MonkeyPatch.context() as mp:
        parses = _count_parses(mp)
        result = export(run.root, out_dir=tmp_path / "export", formats=["saved_model"],
                        evaluate=False)
    assert parses == [str(run.config)]
    assert (tmp_path / "export" / "labels.txt").read_text().split() == [
        "circle", "square", "triangle"]
    assert Path(result["artefacts"]["saved_model"]["path"]).is_dir()
    for log_file, needle in ((run.root / "train.log", "train: finished at step 2/2"),
                             (run.eval_dir / "eval.log", "eval: ckpt-"),
                             (tmp_path / "export" / "export.log", "export: 1 artefacts")):
        assert needle in log_file.read_text(), log_file


def test_threads_auto_tf_and_explicit():
    """--threads: auto = one thread per op and one op per core (on up to AUTO_MAX_CORES
    cores), set before TensorFlow's runtime starts and read back from TensorFlow; tf keeps
    TensorFlow's defaults; once the runtime runs nothing changes; bad values name the flag.
    Run in a fresh interpreter (this one's runtime has started)."""
    import subprocess
    import sys

    from tfod import distribute

    code = ("import tfod.distribute as d, tensorflow as tf\n"
            "t = tf.config.threading\n"
            "print(d.configure_threads('auto'), t.get_intra_op_parallelism_threads(), "
            "t.get_inter_op_parallelism_threads())\n"
            "tf.constant(1.0) + 1\n"
            "print(d.configure_threads('3,3'), t.get_intra_op_parallelism_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    cores = distribute._cores()
    if cores <= distribute.AUTO_MAX_CORES:
        assert out[0] == f"(1, {cores}) 1 {cores}"
    else:
        assert out[0].startswith("None")
    assert out[1].startswith("None")  # the runtime had started: unchanged
    assert distribute.parse_threads("tf") is None
    assert distribute.parse_threads("2,0") == (2, 0)
    for bad in ("fast", "1", "-1,2", "a,b"):
        with pytest.raises(TrainError, match="--threads"):
            distribute.parse_threads(bad)


# --- --time ------------------------------------------------------------------------------------

def test_parse_duration_and_what_time_budgets_refuse():
    assert [train_mod.parse_duration(t) for t in ("90s", "10m", "1h", "1h30m", "45", 2.5,
                                                   " 2m 30s ")] == [
        90.0, 600.0, 3600.0, 5400.0, 45.0, 2.5, 150.0]
    for bad in ("", "ten minutes", "10x", "0s", "-5"):
        with pytest.raises(TrainError, match="--time"):
            train_mod.parse_duration(bad)
    for clash, kwargs in (("--resume", {"resume": True}), ("--early-stop", {"early_stop": 2}),
                          ("multi-worker", {"strategy": "multi-worker"})):
        with pytest.raises(TrainError, match=f"--time cannot be combined with .*{clash}"):
            train_mod.train("missing.config", time_budget="1m", **kwargs)


def test_stretched_schedule_is_the_od_apis_own_schedule_at_the_mapped_step():
    """The OD API's schedules (cosine with warm-up, manual steps, exponential with
    burn-in) built on the stretched step give, at step k, their own rate at the step the
    clock maps k to; stretching again continues from where the schedule is, no jump."""
    import tensorflow as tf
    from object_detection.builders import optimizer_builder

    from tfod.config.templates import load_configs, resolve_template

    clock = train_mod._ScheduleClock()
    step = tf.Variable(0, dtype=tf.int64)
    for kind, fields in (
            ("cosine_decay_learning_rate", {"learning_rate_base": 0.01, "total_steps": 1000,
                                            "warmup_learning_rate": 0.001,
                                            "warmup_steps": 100}),
            ("manual_step_learning_rate", {"initial_learning_rate": 0.01}),
            ("exponential_decay_learning_rate", {"initial_learning_rate": 0.01,
                                                 "decay_steps": 200, "burnin_steps": 50,
                                                 "burnin_learning_rate": 0.001})):
        config = load_configs(resolve_template("ssd_mobilenet_v2_tiny"))["train_config"]
        rate = config.optimizer.adam_optimizer.learning_rate
        message = getattr(rate, kind)
        for key, value in fields.items():
            setattr(message, key, value)
        if kind == "manual_step_learning_rate":
            message.schedule.add(step=300, learning_rate=0.005)
            message.schedule.add(step=700, learning_rate=0.001)
        _, (plain,) = optimizer_builder.build(config.optimizer, global_step=step)
        _, (stretched,) = optimizer_builder.build(
            config.optimizer, global_step=train_mod._StretchedStep(step, clock))
        clock.scale.assign(1.0), clock.offset.assign(0.0)
        for at, total, mapping in (
                (0, 250, ((0, 0), (60, 240), (100, 400))),  # 1000 schedule steps in 250
                (100, 300, ((100, 400), (200, 700), (300, 1000)))):  # re-planned at 100
            clock.stretch(at, total, 1000)
            for k, mapped in mapping:
                assert clock.at(k) == pytest.approx(mapped)
                step.assign(k)
                stretched_rate = float(stretched())
                step.assign(mapped)
                assert stretched_rate == pytest.approx(float(plain()), rel=1e-5), (kind, k)


class _FakeCaptured:
    def __init__(self):
        self.steps = 0

    def step(self):
        return self.steps


def test_timed_loop_plans_steps_from_the_measured_rate(monkeypatch):
    """With a clock of 1 s for the graph and 0.5 s per step, a 31 s budget: a call of one
    step, one of PROBE_STEPS (5 s), then the steps that fit in the 25 s left (50), ending
    at the deadline; the schedule of 2000 steps ends at that step."""
    now = [1000.0]
    monkeypatch.setattr(train_mod.time, "time", lambda: now[0])
    clock = train_mod._ScheduleClock()
    patch = train_mod._TimedLoop(1000.0, 31.0, 2000, 1000, clock)
    captured, calls = _FakeCaptured(), []
    patch.arguments(0, captured, lambda: None)
    while True:
        size = patch.chunks.size
        calls.append(size)
        captured.steps += size
        now[0] += 1.0 if len(calls) == 1 else 0.5 * size
        try:
            patch.after_call()
        except runtime.Finished:
            break
    assert calls == [1, train_mod.PROBE_STEPS, 50]
    assert captured.steps == 61 and now[0] == pytest.approx(1031.0)
    assert clock.at(61) == pytest.approx(2000)
    summary = patch.summary(31.0, now[0] - 1000.0, captured.steps)
    assert (summary["graph_seconds"], summary["steps_per_sec"], summary["first_plan"]) == (
        1.0, 2.0, 61)


def test_time_budget_ends_on_time_with_a_final_checkpoint(tiny_run, tmp_path):
    """`tfod train --time 40s` on the tiny model: the last step ends within a few steps'
    time of the budget (counted from the loop's start, graph building included), the final
    checkpoint holds that step, and the run's config records the steps that ran."""
    from tfod.config.templates import load_configs

    budget = 40.0
    result = train_mod.train(tiny_run["config"], run_dir=tmp_path / "timed", seed=0,
                             time_budget=f"{budget:g}s")
    timed = result["time_budget"]
    step_time = 1 / timed["steps_per_sec"]
    # the graph may take the whole budget on a busy machine: then one call more
    end = max(budget, timed["graph_seconds"] + train_mod.PROBE_STEPS * step_time)
    assert budget - 3 * step_time - 1.0 <= timed["trained_seconds"] <= end + 3 * step_time + 1.0
    assert result["status"] == "finished" and result["step"] == timed["steps"] > 1
    assert train_mod.latest_step(tmp_path / "timed") == result["step"]
    configs = load_configs(tmp_path / "timed" / "pipeline.config")
    assert configs["train_config"].num_steps == result["step"]
    summary = json.loads((tmp_path / "timed" / "train_summary.json").read_text())
    assert summary["time_budget"]["steps"] == result["step"]
    # the schedule (2000 steps in the config) was stretched to end at the last step
    rates = _scalars(tmp_path / "timed")["learning_rate"]
    assert rates[-1][0] == result["step"] and rates[-1][1] < 0.02 * max(r for _, r in rates)
