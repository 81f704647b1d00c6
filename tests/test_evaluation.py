"""tfod.evaluation: one pass over the eval split, COCO metrics written, then it returns."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_STEPS
from tfod.errors import TrainError
from tfod.evaluation import evaluate, metrics_table


def test_evaluate_once(tiny_run):
    metrics = evaluate(tiny_run["run_dir"])
    assert metrics["step"] == TINY_STEPS
    assert 0.0 <= metrics["DetectionBoxes_Precision/mAP"] <= 1.0
    saved = json.loads((tiny_run["run_dir"] / "eval" / "metrics.json").read_text())
    assert saved["DetectionBoxes_Precision/mAP@.50IOU"] == \
        metrics["DetectionBoxes_Precision/mAP@.50IOU"]
    assert list((tiny_run["run_dir"] / "eval").glob("events.out.tfevents.*"))
    assert "AP @.50" in metrics_table(metrics)


def test_evaluate_without_checkpoint(tmp_path):
    (tmp_path / "pipeline.config").write_text("")
    with pytest.raises(Exception):
        evaluate(tmp_path)
    with pytest.raises(TrainError, match="not found"):
        evaluate(tmp_path / "missing")
