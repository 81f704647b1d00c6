"""tfod.runs: the table of runs read from run folders, and field-by-field config diffs."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import TINY_STEPS
from tfod import runs
from tfod.layout import read_json
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


# --- run folders written by hand (no training): every column and the diff formatting --------

TEMPLATE = runs.Path(__file__).resolve().parents[1] / "pipelines" / "ssd_mobilenet_v2_tiny.config"


def _hand_runs(tmp_path):
    """a: finished, evaluated; b: a checkpoint only (running), batch 16, lr 0.01, RELU;
    c: a config only (not started); d: no pipeline.config (not a run)."""
    root = tmp_path / "runs"
    text = TEMPLATE.read_text()
    for name in "abcd":
        (root / name).mkdir(parents=True)
    (root / "a" / "pipeline.config").write_text(text)
    (root / "a" / "train_summary.json").write_text(json.dumps(
        {"step": 40, "loss": 0.56789, "seconds": 3725.4, "status": "finished"}))
    (root / "a" / "eval").mkdir()
    (root / "a" / "eval" / "metrics.json").write_text(json.dumps(
        {runs.MAP: 0.4321, runs.MAP50: 0.8766, "step": 40}))
    assert "batch_size: 8" in text and "learning_rate_base: 0.007" in text
    (root / "b" / "pipeline.config").write_text(
        text.replace("batch_size: 8", "batch_size: 16", 1)
        .replace("learning_rate_base: 0.007", "learning_rate_base: 0.01", 1)
        .replace("RELU_6", "RELU", 1))
    (root / "b" / "ckpt-1.index").write_bytes(b"")
    (root / "b" / "train_summary.json").write_text("{not json")
    (root / "c" / "pipeline.config").write_text(text)
    (root / "d" / "notes.txt").write_text("not a run")
    return root


def test_rows_of_hand_made_run_folders(tmp_path):
    root = _hand_runs(tmp_path)
    rows = runs.list_runs(root)
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    a, b, c = rows
    assert a == {"name": "a", "path": str(root / "a"), "model": "ssd/ssd_mobilenet_v2_keras",
                 "batch": 8, "steps": 40, "loss": 0.56789, "mAP": 0.4321, "mAP@.5": 0.8766,
                 "eval_step": 40, "duration": "1h02m", "status": "finished"}
    assert (b["batch"], b["steps"], b["status"], b["loss"], b["duration"], b["mAP"]) == \
        (16, "0/2000", "running", None, None, None)
    assert (c["status"], c["steps"]) == ("not started", "0/2000")
    assert runs.runs_table(rows) == "\n".join([
        "run  model                       batch  steps   final loss  mAP    mAP@.5  duration  status",
        "a    ssd/ssd_mobilenet_v2_keras  8      40      0.568       0.432  0.877   1h02m     finished",
        "b    ssd/ssd_mobilenet_v2_keras  16     0/2000  -           -      -       -         running",
        "c    ssd/ssd_mobilenet_v2_keras  8      0/2000  -           -      -       -         not started"])


def test_durations_read_as_hours_or_minutes():
    assert [runs._duration(s) for s in (None, 0, 59.6, 61, 3599, 3600, 7140, 7385)] == \
        [None, "0m00s", "1m00s", "1m01s", "59m59s", "1h00m", "1h59m", "2h03m"]


def test_diff_of_hand_made_runs_by_name_folder_or_file(tmp_path):
    """float32 fields read as written (0.01, not 0.009999999776), enums by name."""
    root = _hand_runs(tmp_path)
    lr = ("train_config.optimizer.adam_optimizer.learning_rate."
          "cosine_decay_learning_rate.learning_rate_base")
    expected = [("model.ssd.feature_extractor.conv_hyperparams.activation", "RELU_6", "RELU"),
                ("train_config.batch_size", 8, 16), (lr, 0.007, 0.01)]
    assert runs.diff_runs("a", "b", root=root) == expected
    assert runs.diff_runs(root / "a", root / "b" / "pipeline.config", root=tmp_path) == expected
    assert runs.diff_runs("a", "c", root=root) == []
    assert runs.diff_text(expected[:2]) == (
        "model.ssd.feature_extractor.conv_hyperparams.activation: 'RELU_6' -> 'RELU'\n"
        "train_config.batch_size: 8 -> 16")
    assert runs.diff_text([("x.y", None, 3), ("z", "s", None)]) == \
        "x.y: (unset) -> 3\nz: 's' -> (unset)"
    with pytest.raises(ConfigError, match=r"run 'zz' not found.*available: a, b, c"):
        runs.diff_runs("a", "zz", root=root)
    with pytest.raises(ConfigError, match="available: none"):
        runs.diff_runs("a", "b", root=tmp_path / "nowhere")


def test_unreadable_config_is_skipped_in_the_list(tmp_path, caplog):
    root = _hand_runs(tmp_path)
    (root / "c" / "pipeline.config").write_text("model { ssd { nonsense: 1 } }")
    with caplog.at_level("WARNING", logger="tfod.runs"):
        assert [r["name"] for r in runs.list_runs(root)] == ["a", "b"]
    assert "skipping" in caplog.text and "c/pipeline.config" in caplog.text
    with pytest.raises(ConfigError, match="runs folder not found"):
        runs.list_runs(root / "a" / "pipeline.config")


def test_error_texts_in_full(tmp_path):
    def text(call, *args, **kwargs):
        with pytest.raises(ConfigError) as info:
            call(*args, **kwargs)
        return str(info.value)

    nowhere = tmp_path / "nowhere"
    assert text(runs.list_runs, nowhere) == (
        f"{nowhere}: runs folder not found; train a run first (`tfod train`), or pass --root")
    assert text(runs.diff_runs, "x", "y", root=nowhere) == \
        f"{nowhere}: run 'x' not found; available: none"
    root = _hand_runs(tmp_path)
    assert text(runs.diff_runs, "a", "zz", root=root) == \
        f"{root}: run 'zz' not found; available: a, b, c"
    bad = tmp_path / "bad.config"
    bad.write_text("model { ssd { nonsense: 1 } }")
    message = text(runs.diff_runs, "a", bad, root=root)
    assert message.startswith(f"{bad}: cannot read the pipeline config (1:15 : ")
    assert message.endswith("has no field named \"nonsense\".); fix the text protobuf at the "
                            "line shown")
    assert read_json(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{")
    assert read_json(tmp_path / "bad.json") is None
    (tmp_path / "list.json").write_text("[1]")
    assert read_json(tmp_path / "list.json") is None


def test_model_column_without_architecture_or_extractor_and_empty_diff(tmp_path):
    root = tmp_path / "runs"
    for name, text in (("bare", "train_config { batch_size: 3 }"),
                       ("noext", "model { ssd { num_classes: 1 } }")):
        (root / name).mkdir(parents=True)
        (root / name / "pipeline.config").write_text(text)
    bare, noext = runs.list_runs(root)
    assert (bare["model"], bare["batch"], bare["steps"]) == (None, 3, "0/0")
    assert noext["model"] == "ssd"
    assert runs.diff_text([]) == "(no differences)"
