"""tfod.exporter and tfod.inference: every artefact loads, runs and agrees with the others."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tfod.errors import ExportError
from tfod.exporter import export
from tfod.inference import _classes_and_scores, load_detector, predict


@pytest.fixture(scope="module")
def exported(tiny_run):
    out = tiny_run["root"] / "exports" / "tiny"
    return export(tiny_run["run_dir"], out_dir=out), out


def test_export_writes_everything(exported):
    result, out = exported
    for name in ("saved_model/saved_model.pb", "model_float32.tflite", "tflite.json",
                 "label_map.pbtxt", "labels.txt", "pipeline.config", "export.json"):
        assert (out / name).is_file(), name
    assert (out / "labels.txt").read_text().split() == ["circle", "square", "triangle"]
    meta = json.loads((out / "tflite.json").read_text())["model_float32.tflite"]
    # SSD MobileNet V2 preprocessing maps [0, 255] to [-1, 1]
    assert meta["input_scale"] == pytest.approx(2 / 255, rel=1e-4)
    assert meta["input_offset"] == pytest.approx(-1.0, abs=1e-4)
    assert not list(out.glob("tmp*"))


def test_tflite_matches_saved_model(exported, tiny_run):
    _, out = exported
    image = np.asarray(Image.open(sorted((tiny_run["root"] / "raw" / "JPEGImages")
                                         .glob("*.jpg"))[0]).convert("RGB"))
    sm = load_detector(out / "saved_model")(image)
    tfl = load_detector(out / "model_float32.tflite")(image)
    # same model, same image: the best detection agrees
    assert int(sm["classes"][0]) == int(tfl["classes"][0])
    assert abs(float(sm["scores"][0]) - float(tfl["scores"][0])) < 0.02
    np.testing.assert_allclose(sm["boxes"][0], tfl["boxes"][0], atol=0.02)


def test_predict_writes_pngs_and_coco_json(exported, tiny_run, tmp_path):
    _, out = exported
    images = tiny_run["root"] / "raw" / "JPEGImages"
    result = predict(str(images / "*.jpg"), out / "saved_model", tmp_path / "pred",
                     threshold=0.0, max_detections=5)
    assert result["images"] == 22
    assert len(list((tmp_path / "pred").glob("*.png"))) == 22
    detections = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert len(detections) == result["detections"] == 22 * 5
    assert {d["category"] for d in detections} <= {"circle", "square", "triangle"}
    assert all(len(d["bbox"]) == 4 and 0 <= d["score"] <= 1 for d in detections)


def test_classes_and_scores_told_apart():
    classes = np.array([2.0, 0.0, 1.0])
    scores = np.array([0.9, 0.5, 0.1])
    assert _classes_and_scores(scores, classes)[0] is classes
    assert _classes_and_scores(classes, scores)[1] is scores


def test_bad_model_path(tmp_path):
    with pytest.raises(ExportError, match="not an exported model"):
        load_detector(tmp_path)
    with pytest.raises(ExportError, match="unknown format"):
        export(tmp_path, formats=["onnx"])
