"""tfod.layout: the names of every folder a stage writes, run and checkpoint resolution,
and the log file each stage leaves in its output folder."""

from __future__ import annotations

import json
import logging

import pytest

from tfod.errors import ConfigError, ExportError, TrainError
from tfod.layout import (MAP, MAP50, DatasetDir, ExportDir, RunDir, best_checkpoint, read_json,
                         stage_log)


def test_run_folder_names(tmp_path):
    run = RunDir(tmp_path / "r")
    names = {key: getattr(run, key).relative_to(tmp_path / "r").as_posix() for key in (
        "config", "label_map", "train_dir", "eval_dir", "summary", "command", "versions",
        "data", "metrics", "best")}
    assert names == {"config": "pipeline.config", "label_map": "label_map.pbtxt",
                     "train_dir": "train", "eval_dir": "eval",
                     "summary": "train_summary.json", "command": "command.txt",
                     "versions": "versions.json", "data": "data.json",
                     "metrics": "eval/metrics.json", "best": "eval/best.json"}
    assert run.checkpoint_metrics(tmp_path / "r" / "ckpt-7") == run.eval_dir / "ckpt-7" / \
        "metrics.json"
    assert RunDir(str(tmp_path)) == RunDir(tmp_path)


def test_dataset_and_export_folder_names(tmp_path):
    data = DatasetDir(tmp_path)
    assert [p.name for p in (data.manifest, data.label_map, data.stats, data.report)] == [
        "manifest.json", "label_map.pbtxt", "stats.json", "report.json"]
    assert data.shard("val", 1, 12).name == "val-00001-of-00012.tfrecord"
    assert data.pattern("train", 2) == str(tmp_path / "train-?????-of-00002.tfrecord")
    out = ExportDir(tmp_path)
    assert [p.name for p in (out.complete, out.report_md, out.report_json, out.saved_model,
                             out.frozen_graph, out.frozen_graph_meta, out.tflite_meta,
                             out.label_map, out.labels, out.config)] == [
        "export.json", "report.md", "report.json", "saved_model", "frozen_graph.pb",
        "frozen_graph.json", "tflite.json", "label_map.pbtxt", "labels.txt", "pipeline.config"]
    assert out.tflite("int8").name == "model_int8.tflite"
    assert sorted(ExportDir.TFLITE_FILES) == ["dynamic", "edgetpu", "float16", "float32",
                                               "int8", "int8_per_tensor"]
    assert out.tflite("edgetpu").name == "model_edgetpu.tflite"


def test_run_of_a_folder_or_a_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(TrainError, match="no pipeline.config in the run folder"):
        RunDir.of(run, TrainError)
    (run / "pipeline.config").write_text("")
    assert RunDir.of(run) == (run / "pipeline.config", RunDir(run))
    other = tmp_path / "elsewhere.config"
    other.write_text("")
    assert RunDir.of(other) == (other, RunDir(tmp_path))
    with pytest.raises(ExportError, match="run folder or config not found"):
        RunDir.of(tmp_path / "missing", ExportError)


def _checkpoint(folder, number):
    (folder / f"ckpt-{number}.index").write_text("")
    (folder / f"ckpt-{number}.data-00000-of-00001").write_text("")
    return str(folder / f"ckpt-{number}")


def test_checkpoints_in_numeric_order_and_resolution(tmp_path):
    run = RunDir(tmp_path)
    prefixes = [_checkpoint(tmp_path, n) for n in (10, 2, 1)]
    (tmp_path / "ckpt-x.index").write_text("")  # not a checkpoint of tfod's numbering
    assert run.checkpoints() == sorted(prefixes, key=lambda p: int(p.rsplit("-", 1)[1]))
    (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "{prefixes[0]}"\n')
    assert run.pick_checkpoint(None) == prefixes[0]
    assert run.pick_checkpoint("latest") == prefixes[0]
    assert run.pick_checkpoint(prefixes[1]) == prefixes[1]
    with pytest.raises(ExportError, match="checkpoint not found"):
        run.pick_checkpoint(str(tmp_path / "ckpt-99"), ExportError)
    with pytest.raises(ConfigError, match="no evaluated checkpoint to pick the best from"):
        run.pick_checkpoint("best")
    for prefix, value in zip(prefixes, (0.2, 0.5, 0.5)):  # ties: the earlier step wins
        metrics = run.checkpoint_metrics(prefix)
        metrics.parent.mkdir(parents=True)
        step = int(prefix.rsplit("-", 1)[1])
        metrics.write_text(json.dumps({"checkpoint": prefix, "step": step, MAP: value,
                                       MAP50: value + 0.1}))
    assert run.pick_checkpoint("best") == prefixes[2]
    best = best_checkpoint(run.eval_dir)
    assert best == {"checkpoint": prefixes[2], "step": 1, "mAP": 0.5, "mAP@.5": 0.6,
                    "metrics": str(run.checkpoint_metrics(prefixes[2]))}
    empty = RunDir(tmp_path / "empty")
    empty.root.mkdir()
    with pytest.raises(TrainError, match="no checkpoint found"):
        empty.pick_checkpoint(None, TrainError)


def test_read_json_only_objects(tmp_path):
    assert read_json(tmp_path / "missing.json") is None
    (tmp_path / "a.json").write_text('{"x": 1}')
    assert read_json(tmp_path / "a.json") == {"x": 1}
    for name, text in (("list.json", "[1]"), ("cut.json", '{"x": ')):
        (tmp_path / name).write_text(text)
        assert read_json(tmp_path / name) is None


def test_stage_log_keeps_the_stages_records_in_its_folder(tmp_path):
    log = logging.getLogger("tfod.something")
    log.setLevel(logging.INFO)
    log.info("before")
    with stage_log(tmp_path / "out", "stage") as stage:
        log.info("during %d", 1)
        logging.getLogger("other").warning("not tfod's")
    log.info("after")
    path = stage.path
    assert path == tmp_path / "out" / "stage.log"
    text = path.read_text()
    assert "INFO tfod.something: during 1" in text
    assert "before" not in text and "after" not in text and "not tfod's" not in text
    with stage_log(tmp_path / "out", "stage"):
        log.warning("again")
    assert path.read_text().startswith(text) and "again" in path.read_text()
    assert not any(getattr(h, "baseFilename", "") == str(path)
                   for h in logging.getLogger("tfod").handlers)


def test_stage_log_keeps_records_until_its_folder_exists(tmp_path):
    """prepare makes its output folder late: what was logged before is written first."""
    log = logging.getLogger("tfod.prepare_like")
    log.setLevel(logging.INFO)
    with stage_log(None, "prepare") as stage:
        log.info("read 3 files")
        assert stage.path is None and not any(tmp_path.iterdir())
        stage.attach(tmp_path / "late")
        log.warning("wrote")
    lines = (tmp_path / "late" / "prepare.log").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["read 3 files", "wrote"]
    with stage_log(None, "never"):
        log.info("nowhere")
    assert [p.name for p in tmp_path.iterdir()] == ["late"]
