"""tfod.runs: the table of runs read from run folders, and field-by-field config diffs."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import TINY_STEPS
from tfod import runs
from tfod.errors import ConfigError


@pytest.fixture()
def two_runs(tiny_run, tmp_path):
    root = tmp_path / "runs"
    a = root / "a"
    shutil.copytree(tiny_run["run_dir"], a, ignore=shutil.ignore_patterns("ckpt-*", "eval"))
    (a / "eval").mkdir()
    (a / "eval" / "metrics.json").write_text(json.dumps(
        {runs.MAP: 0.61, runs.MAP50: 0.93, "step": TINY_STEPS}))
    b = root / "b"
    b.mkdir()
    text = (a / "pipeline.config").read_text()
    assert "batch_size: 2" in text and "RELU_6" in text
    (b / "pipeline.config").write_text(text.replace("batch_size: 2", "batch_size: 8", 1)
                                       .replace("RELU_6", "RELU", 1))
    return root


def test_list_runs_reads_the_run_files(two_runs):
    rows = {row["name"]: row for row in runs.list_runs(two_runs)}
    a, b = rows["a"], rows["b"]
    assert a["model"] == "ssd/ssd_mobilenet_v2_keras"
    assert a["batch"] == 2 and a["steps"] == TINY_STEPS and a["status"] == "finished"
    assert a["mAP"] == 0.61 and a["mAP@.5"] == 0.93
    assert a["loss"] > 0 and a["duration"]
    assert b["batch"] == 8 and b["status"] == "not started" and b["mAP"] is None
    table = runs.runs_table(list(rows.values())).splitlines()
    assert table[0].split()[:3] == ["run", "model", "batch"]
    assert "0.930" in table[1] and table[2].split()[0] == "b" and " - " in table[2]


def test_diff_runs_field_by_field(two_runs):
    diffs = runs.diff_runs("a", "b", root=two_runs)
    assert ("train_config.batch_size", 2, 8) in diffs
    assert ("model.ssd.feature_extractor.conv_hyperparams.activation", "RELU_6", "RELU") in diffs
    assert len(diffs) == 2
    assert "train_config.batch_size: 2 -> 8" in runs.diff_text(diffs)
    assert runs.diff_runs("a", two_runs / "a" / "pipeline.config", root=two_runs) == []
    assert runs.diff_text([]) == "(no differences)"


def test_repeated_and_missing_fields():
    from object_detection.protos import pipeline_pb2

    x, y = pipeline_pb2.TrainEvalPipelineConfig(), pipeline_pb2.TrainEvalPipelineConfig()
    x.train_input_reader.tf_record_input_reader.input_path.append("a.record")
    y.train_input_reader.tf_record_input_reader.input_path.extend(["a.record", "b.record"])
    y.train_config.data_augmentation_options.add().random_horizontal_flip.SetInParent()
    fx, fy = runs._flatten(x), runs._flatten(y)
    assert fy["train_input_reader.tf_record_input_reader.input_path[1]"] == "b.record"
    assert "train_input_reader.tf_record_input_reader.input_path[1]" not in fx
    assert fy["train_config.data_augmentation_options[0].random_horizontal_flip"] == "{}"


def test_unknown_run_and_bad_config(two_runs):
    with pytest.raises(ConfigError, match="available: a, b"):
        runs.diff_runs("a", "zzz", root=two_runs)
    with pytest.raises(ConfigError, match="runs folder not found"):
        runs.list_runs(two_runs / "nope")
    bad = two_runs / "c"
    bad.mkdir()
    (bad / "pipeline.config").write_text("model { ssd { nonsense: 1 } }")
    assert [r["name"] for r in runs.list_runs(two_runs)] == ["a", "b"]  # skipped with a warning
    with pytest.raises(ConfigError, match="c/pipeline.config"):
        runs.diff_runs("a", "c", root=two_runs)
