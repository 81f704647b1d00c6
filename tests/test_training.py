"""tfod.training on the OD API's loop: exact steps, final checkpoint, run folder, resume."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_STEPS
from tfod import training as train_mod
from tfod.errors import TrainError


def test_steps_per_iteration_divides():
    for remaining in (1, 6, 7, 97, 100, 600, 1000):
        k = train_mod.steps_per_iteration(remaining)
        assert remaining % k == 0 and 1 <= k <= 20
    assert train_mod.steps_per_iteration(600) == 20
    assert train_mod.steps_per_iteration(97) == 1


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
    assert versions["tensorflow"].startswith("2.20")
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


def test_unknown_strategy_and_multiworker_needs_tf_config(monkeypatch):
    with pytest.raises(TrainError, match="use one of"):
        train_mod.make_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(TrainError, match="TF_CONFIG"):
        train_mod.make_strategy("multi-worker")


def test_sigterm_leaves_a_checkpoint_of_the_last_step(tiny_run, tmp_path):
    """SIGTERM (handled like Ctrl-C) in the middle of training: a checkpoint of the step reached."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "pipeline.config"
    config.write_text(tiny_run["config"].read_text())
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfod.cli", "train", str(config), "--runs-root",
         str(tmp_path / "runs"), "--run", "sig", "--steps", "100000"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    deadline = time.time() + 600
    for line in proc.stderr:  # wait until real training steps run
        lines.append(line)
        if "graph built" in line or time.time() > deadline:
            break
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(lines) + rest
    run_dir = tmp_path / "runs" / "sig"
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert 0 < summary["step"] < 100000
    assert train_mod.latest_step(run_dir) == summary["step"]
