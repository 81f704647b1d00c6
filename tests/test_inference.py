"""tfod.inference: every exported format behind one Detector; predict's outputs and batching."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from tfod.errors import ExportError
from tfod.inference import (_classes_and_scores, list_images, load_detector, predict,
                            tflite_input)


@pytest.mark.parametrize("model", ["saved_model", "frozen_graph.pb", "model_float32.tflite",
                                   "model_int8.tflite"])
def test_predict_writes_pngs_json_and_csv(tiny_export, tiny_run, tmp_path, model):
    _, out = tiny_export
    images = tiny_run["root"] / "raw" / "JPEGImages"
    result = predict(str(images / "*.jpg"), out / model, tmp_path / "pred",
                     threshold=0.0, max_detections=5)
    assert result["images"] == 22
    assert len(list((tmp_path / "pred").glob("*.png"))) == 22
    detections = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert len(detections) == result["detections"] == 22 * 5
    assert {d["category"] for d in detections} <= {"circle", "square", "triangle"}
    assert all(len(d["bbox"]) == 4 and 0 <= d["score"] <= 1 for d in detections)
    with open(tmp_path / "pred" / "detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["filename", "width", "height", "class", "score",
                             "xmin", "ymin", "xmax", "ymax"]
    assert len(rows) == len(detections)
    first, row = detections[0], rows[0]
    assert row["filename"] == first["image_id"] and row["class"] == first["category"]
    x, y, w, h = first["bbox"]
    assert float(row["xmax"]) == pytest.approx(x + w, abs=0.06)
    assert float(row["ymin"]) == pytest.approx(y, abs=0.06)
    assert int(row["width"]) == 160 and int(row["height"]) == 160


def test_threshold_and_max_detections(tiny_export, tiny_run, tmp_path):
    _, out = tiny_export
    image = sorted((tiny_run["root"] / "raw" / "JPEGImages").glob("*.jpg"))[0]
    scores = load_detector(out / "saved_model")(np.asarray(Image.open(image)))["scores"]
    cut = float(np.sort(scores)[-3])  # keeps the 3 best (ties aside)
    result = predict(image, out / "saved_model", tmp_path / "p", threshold=cut, draw=False)
    assert result["detections"] == int(np.sum(scores >= cut))
    assert not list((tmp_path / "p").glob("*.png"))
    result = predict(image, out / "saved_model", tmp_path / "q", threshold=0.0,
                     max_detections=2, csv_path=tmp_path / "elsewhere.csv")
    assert result["detections"] == 2
    assert len((tmp_path / "elsewhere.csv").read_text().splitlines()) == 3


def test_batched_predict_equals_one_by_one(tiny_run, tmp_path):
    """SavedModels with a batch dimension (float_image_tensor here) take several
    images per call; the detections are those of one image at a time."""
    from tfod.config import templates
    from tfod.exporter import export_saved_model
    from tfod.layout import RunDir

    config = tiny_run["run_dir"] / "pipeline.config"
    saved = export_saved_model(config, RunDir(config.parent).pick_checkpoint(None),
                               tmp_path / "float", input_type="float_image_tensor")
    detector = load_detector(saved)
    assert detector.max_batch is None
    assert templates.image_size(templates.load_configs(config)) == (160, 160)
    images = sorted((tiny_run["root"] / "raw" / "JPEGImages").glob("*.jpg"))[:8]
    one = predict(images, saved, tmp_path / "one", threshold=0.0, draw=False, batch=1)
    many = predict(images, saved, tmp_path / "many", threshold=0.0, draw=False, batch=8)
    assert one["detections"] == many["detections"] > 0
    a = json.loads((tmp_path / "one" / "detections.json").read_text())
    b = json.loads((tmp_path / "many" / "detections.json").read_text())
    assert [d["image_id"] for d in a] == [d["image_id"] for d in b]
    assert [d["category_id"] for d in a] == [d["category_id"] for d in b]
    np.testing.assert_allclose([d["score"] for d in a], [d["score"] for d in b], atol=1e-4)
    np.testing.assert_allclose([d["bbox"] for d in a], [d["bbox"] for d in b], atol=1e-2)
    # mixed sizes go in one batch per size
    rgb = np.asarray(Image.open(images[0]).convert("RGB"))
    small = np.asarray(Image.fromarray(rgb).resize((120, 90)))
    outs = detector.detect_batch([rgb, small, rgb])
    np.testing.assert_allclose(outs[0]["scores"], outs[2]["scores"], atol=1e-5)
    np.testing.assert_allclose(outs[1]["scores"], detector(small)["scores"], atol=1e-4)


def test_image_tensor_models_take_one_image_per_call(tiny_export, tiny_run):
    _, out = tiny_export
    for name in ("saved_model", "frozen_graph.pb", "model_float32.tflite"):
        assert load_detector(out / name).max_batch == 1, name
    rgb = np.asarray(Image.open(sorted((tiny_run["root"] / "raw" / "JPEGImages")
                                       .glob("*.jpg"))[0]).convert("RGB"))
    detector = load_detector(out / "saved_model")
    a, b = detector.detect_batch([rgb, rgb])
    np.testing.assert_array_equal(a["scores"], b["scores"])


def test_cli_predict(tiny_export, tiny_run, tmp_path):
    from tfod.cli import main

    _, out = tiny_export
    images = tiny_run["root"] / "raw" / "JPEGImages"
    code = main(["predict", str(images), "--model", str(out / "frozen_graph.pb"),
                 "--out", str(tmp_path / "cli"), "--threshold", "0", "--max-detections", "1",
                 "--batch", "4", "--csv", str(tmp_path / "d.csv"), "--no-draw"])
    assert code == 0
    assert len((tmp_path / "d.csv").read_text().splitlines()) == 1 + 22
    assert not list((tmp_path / "cli").glob("*.png"))


def test_tflite_input_normalisation():
    image = np.zeros((90, 120, 3), np.uint8)
    image[..., 0] = 255
    x = tflite_input(image, (160, 200), 2 / 255, -1.0)
    assert x.shape == (1, 160, 200, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, :, 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(x[0, :, :, 1], -1.0, atol=1e-5)


def test_classes_and_scores_told_apart():
    classes = np.array([2.0, 0.0, 1.0])
    scores = np.array([0.9, 0.5, 0.1])
    assert _classes_and_scores(scores, classes)[0] is classes
    assert _classes_and_scores(classes, scores)[1] is scores


def test_bad_inputs(tmp_path, tiny_export):
    _, out = tiny_export
    with pytest.raises(ExportError, match="not an exported model"):
        load_detector(tmp_path)
    (tmp_path / "graph.pb").write_bytes((out / "frozen_graph.pb").read_bytes())
    with pytest.raises(ExportError, match="no tensor names"):
        load_detector(tmp_path / "graph.pb")
    (tmp_path / "m.tflite").write_bytes((out / "model_float32.tflite").read_bytes())
    with pytest.raises(ExportError, match="no input normalisation"):
        load_detector(tmp_path / "m.tflite")
    with pytest.raises(ExportError, match="no images found"):
        list_images(tmp_path / "*.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ExportError, match="cannot read the image"):
        predict(tmp_path / "broken.jpg", out / "model_float32.tflite", tmp_path / "p")
    with pytest.raises(ExportError, match="batch"):
        predict(tmp_path / "broken.jpg", out / "model_float32.tflite", tmp_path / "p", batch=0)


def _model_boxes_saved_model(path, images: list[np.ndarray]) -> list[dict]:
    """The SavedModel's own outputs, read straight from its serving signature (no
    tfod code): boxes ``[ymin, xmin, ymax, xmax]`` normalised, classes 1-based."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    return [_one(signature(input_tensor=tf.constant(rgb[None]))) for rgb in images]


def _one(out) -> dict:
    n = int(out["num_detections"][0])
    return {"boxes": out["detection_boxes"].numpy()[0, :n],
            "classes": out["detection_classes"].numpy()[0, :n].astype(int),
            "scores": out["detection_scores"].numpy()[0, :n]}


def _model_boxes_tflite(path, images: list[np.ndarray]) -> list[dict]:
    """The .tflite file's own outputs, run with the LiteRT interpreter (no
    tfod code). The outputs are told apart by their place in the
    TFLite_Detection_PostProcess op (boxes, classes, scores, count); boxes are
    ``[ymin, xmin, ymax, xmax]`` normalised, classes 0-based; the op does not clip."""
    from ai_edge_litert.interpreter import Interpreter

    meta = json.loads((path.parent / "tflite.json").read_text())[path.name]
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    h, w = (int(v) for v in inp["shape"][1:3])
    (op,) = [o for o in interpreter._get_ops_details()
             if o["op_name"] == "TFLite_Detection_PostProcess"]
    results = []
    for rgb in images:
        x = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR), np.float32)
        interpreter.set_tensor(inp["index"],
                               (x * meta["input_scale"] + meta["input_offset"])[None])
        interpreter.invoke()
        boxes, classes, scores, count = (interpreter.get_tensor(i) for i in op["outputs"])
        n = int(count.reshape(-1)[0])
        results.append({"boxes": np.clip(boxes[0, :n], 0.0, 1.0),
                        "classes": classes[0, :n].astype(int) + 1, "scores": scores[0, :n]})
    return results


@pytest.mark.parametrize("model", ["saved_model", "model_float32.tflite"])
def test_predicted_pixel_boxes_are_the_models_boxes_on_non_square_images(
        tiny_export, tiny_run, tmp_path, model):
    """On a wide (320x160) and a tall (160x320) image, every box predict writes to
    detections.json ([x, y, w, h]) and detections.csv (corners) is the model's own
    normalised box times the image size, class and score included, in the model's
    order, cut by the threshold and max_detections. The reference runs the exported
    file directly, so an x/y or width/height swap in tfod.inference fails here."""
    _, out = tiny_export
    val = [np.asarray(Image.open(p).convert("RGB")) for p in
           sorted((tiny_run["root"] / "raw" / "JPEGImages").glob("*.jpg"))[:2]]
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.hstack(val)).save(images / "wide.png")  # lossless: the same pixels
    Image.fromarray(np.vstack(val)).save(images / "tall.png")
    labels = (out / "labels.txt").read_text().split()
    reference = _model_boxes_saved_model if model == "saved_model" else _model_boxes_tflite
    max_det = 7
    predict(images, out / model, tmp_path / "pred", threshold=0.0, max_detections=max_det,
            draw=False)
    detections = json.loads((tmp_path / "pred" / "detections.json").read_text())
    with open(tmp_path / "pred" / "detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    sizes = {"wide.png": (320, 160), "tall.png": (160, 320)}
    arrays = [np.asarray(Image.open(images / name).convert("RGB")) for name in sizes]
    for (name, (w, h)), rgb, ref in zip(sizes.items(), arrays, reference(out / model, arrays)):
        assert rgb.shape == (h, w, 3)
        keep = range(min(max_det, len(ref["scores"])))  # threshold 0: the first max_det
        assert len(keep) == max_det  # a non-empty comparison
        got = [d for d in detections if d["image_id"] == name]
        got_rows = [r for r in rows if r["filename"] == name]
        assert len(got) == len(got_rows) == len(keep)
        for i, d, row in zip(keep, got, got_rows):
            ymin, xmin, ymax, xmax = (float(v) for v in ref["boxes"][i])
            assert d["category_id"] == ref["classes"][i]
            assert d["category"] == row["class"] == labels[ref["classes"][i] - 1]
            assert d["score"] == pytest.approx(float(ref["scores"][i]), abs=1e-5)
            np.testing.assert_allclose(
                d["bbox"], [xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h],
                atol=1e-3)
            assert (int(row["width"]), int(row["height"])) == (w, h)
            np.testing.assert_allclose(
                [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")],
                [xmin * w, ymin * h, xmax * w, ymax * h], atol=0.05 + 1e-6)  # 1 decimal
            assert float(row["score"]) == pytest.approx(float(ref["scores"][i]), abs=5e-5)


def test_tflite_predict_imports_no_tensorflow(tiny_export, tiny_run, tmp_path):
    """`tfod predict --model model.tflite` in a fresh process: TensorFlow, the OD API and
    Keras are never imported, and the detections are those of the same prediction made
    where TensorFlow is loaded. Would have caught: the label map read with label_map_util
    (imports TensorFlow), boxes drawn with the OD API's visualization_utils, a module
    import of TensorFlow anywhere on predict's path."""
    import subprocess
    import sys
    import textwrap

    _, out = tiny_export
    images = tiny_run["root"] / "raw" / "JPEGImages"
    model = out / "model_int8.tflite"
    code = textwrap.dedent(f"""
        import json, sys
        from tfod.cli import main
        rc = main(["predict", {str(images)!r}, "--model", {str(model)!r},
                   "--out", {str(tmp_path / "lite")!r}, "--threshold", "0.1"])
        heavy = ("tensorflow", "object_detection", "tf_keras", "keras", "official")
        print(json.dumps({{"rc": rc, "loaded": sorted({{m.split(".")[0] for m in sys.modules
                                                       if m.split(".")[0] in heavy}})}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {"rc": 0, "loaded": []}
    assert len(list((tmp_path / "lite").glob("*.png"))) == 22
    lite = json.loads((tmp_path / "lite" / "detections.json").read_text())
    predict(images, model, tmp_path / "full", threshold=0.1)  # in this process: TF loaded
    full = json.loads((tmp_path / "full" / "detections.json").read_text())
    assert lite and lite == full
    assert {d["category"] for d in lite} <= {"circle", "square", "triangle"}


def test_labels_txt(tmp_path):
    from tfod.inference import _category_index

    (tmp_path / "labels.txt").write_text("cat\ndog\n\n")
    assert _category_index(tmp_path / "labels.txt") == {1: {"id": 1, "name": "cat"},
                                                       2: {"id": 2, "name": "dog"}}
    for bad in ("cat\n\ndog\n", "cat\ncat\n", "\n"):
        (tmp_path / "labels.txt").write_text(bad)
        with pytest.raises(ExportError, match="one distinct class name per line"):
            _category_index(tmp_path / "labels.txt")
