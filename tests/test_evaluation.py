"""tfod.evaluation: COCO metrics per checkpoint, per-class AP that works, PR/confusion PNGs,
best checkpoint, --all and --watch that end."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

from conftest import TINY_STEPS
from tfod import evaluation
from tfod.compat import runtime
from tfod.errors import TrainError
from tfod.evaluation import evaluate, metrics_table

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def _coco(groundtruth, detections):
    from object_detection.metrics import coco_tools

    gt = coco_tools.COCOWrapper({"annotations": groundtruth, "categories": CATEGORIES,
                                 "images": [{"id": i} for i in {g["image_id"] for g in
                                                                groundtruth}]})
    return gt, gt.LoadAnnotations(detections)


def _box(image_id, cat, bbox, score=None, ann_id=None):
    out = {"image_id": image_id, "category_id": cat, "bbox": list(bbox),
           "area": bbox[2] * bbox[3], "iscrowd": 0}
    if score is not None:
        out["score"] = score
    if ann_id is not None:
        out["id"] = ann_id
    return out


GT = [_box(1, 1, (10, 10, 40, 40), ann_id=1), _box(1, 2, (60, 60, 30, 30), ann_id=2),
      _box(2, 1, (5, 5, 50, 50), ann_id=3), _box(2, 2, (70, 10, 20, 40), ann_id=4)]
DETS = [_box(1, 1, (10, 10, 40, 40), 0.9),      # cat found
        _box(1, 1, (60, 60, 30, 30), 0.8),      # the dog called a cat
        _box(2, 1, (5, 5, 50, 50), 0.7),        # cat found
        _box(2, 2, (0, 80, 10, 10), 0.6)]       # a dog where there is nothing; the dog missed


def test_category_stats_match_cocoeval_per_category():
    from object_detection.metrics import coco_tools
    from pycocotools.cocoeval import COCOeval

    gt, dt = _coco(GT, DETS)
    wrapper = coco_tools.COCOEvalWrapper(gt, dt)
    wrapper.evaluate()
    wrapper.accumulate()
    stats = runtime.category_stats(wrapper)
    assert stats.shape == (12, 2)
    for k, cat_id in enumerate((1, 2)):  # pycocotools alone, one category at a time
        alone = COCOeval(gt, dt, "bbox")
        alone.params.catIds = [cat_id]
        alone.evaluate()
        alone.accumulate()
        alone.summarize()
        np.testing.assert_allclose(stats[:, k], alone.stats, atol=1e-9)
    assert stats[0, 0] > 0.8 and stats[0, 1] == 0.0  # cats found (one false cat), the dog never


def test_od_api_per_category_metrics_work_under_the_fix():
    from object_detection.core import standard_fields as fields
    from object_detection.metrics import coco_evaluation

    def fill(evaluator):
        for image_id in (1, 2):
            gts = [g for g in GT if g["image_id"] == image_id]
            dets = [d for d in DETS if d["image_id"] == image_id]
            yx = lambda b: [b[1], b[0], b[1] + b[3], b[0] + b[2]]  # noqa: E731
            evaluator.add_single_ground_truth_image_info(image_id, {
                fields.InputDataFields.groundtruth_boxes: np.array([yx(g["bbox"]) for g in gts],
                                                                   float),
                fields.InputDataFields.groundtruth_classes: np.array([g["category_id"]
                                                                      for g in gts])})
            evaluator.add_single_detected_image_info(image_id, {
                fields.DetectionResultFields.detection_boxes: np.array([yx(d["bbox"])
                                                                        for d in dets], float),
                fields.DetectionResultFields.detection_scores: np.array([d["score"]
                                                                         for d in dets]),
                fields.DetectionResultFields.detection_classes: np.array([d["category_id"]
                                                                          for d in dets])})

    upstream = coco_evaluation.CocoDetectionEvaluator(CATEGORIES,
                                                      include_metrics_per_category=True)
    fill(upstream)
    with pytest.raises(ValueError, match="Category stats"):  # the reported upstream bug
        upstream.evaluate()
    fixed = coco_evaluation.CocoDetectionEvaluator(CATEGORIES, include_metrics_per_category=True,
                                                   all_metrics_per_category=True)
    fill(fixed)
    with runtime.keep_coco_eval() as kept:
        metrics = fixed.evaluate()
    assert metrics["DetectionBoxes_PerformanceByCategory/mAP/cat"] > 0.8
    assert metrics["DetectionBoxes_PerformanceByCategory/mAP/dog"] == 0.0
    assert "DetectionBoxes_Precision/mAP@.50IOU ByCategory/cat" in metrics
    assert len(kept) == 1 and kept[0].eval["precision"].shape[2] == 2
    from object_detection.metrics import coco_tools
    assert "summarize" not in coco_tools.COCOEvalWrapper.__dict__  # restored


def test_confusion_matrix_counts():
    matrix = evaluation.confusion_matrix(GT, DETS, [1, 2])
    # rows ground truth cat, dog, background; columns predicted cat, dog, background
    assert matrix.tolist() == [[2, 0, 0],
                               [1, 0, 1],
                               [0, 1, 0]]
    # a higher score threshold drops the 0.6 dog: it no longer counts as a false positive
    assert evaluation.confusion_matrix(GT, DETS, [1, 2], score_threshold=0.65)[2].tolist() == \
        [0, 0, 0]


def test_best_checkpoint_and_training_finished(tmp_path):
    for n, step, value in ((2, 100, 0.3), (3, 200, 0.5), (4, 300, 0.4)):
        (tmp_path / "eval" / f"ckpt-{n}").mkdir(parents=True)
        (tmp_path / "eval" / f"ckpt-{n}" / "metrics.json").write_text(json.dumps(
            {"checkpoint": str(tmp_path / f"ckpt-{n}"), "step": step,
             evaluation.MAP: value, evaluation.MAP50: value + 0.3}))
    best = evaluation.best_checkpoint(tmp_path / "eval")
    assert best["step"] == 200 and best["mAP"] == 0.5
    assert evaluation.best_checkpoint(tmp_path / "nothing") is None
    for n in (1, 10, 2):
        (tmp_path / f"ckpt-{n}.index").write_text("")
    assert [p.rsplit("-", 1)[1] for p in evaluation.checkpoints(tmp_path)] == ["1", "2", "10"]
    assert not evaluation._training_finished(tmp_path)
    (tmp_path / "train_summary.json").write_text("{}")
    assert evaluation._training_finished(tmp_path)


def test_evaluate_all_writes_reports(tiny_run):
    run_dir = tiny_run["run_dir"]
    metrics = evaluate(run_dir, all_checkpoints=True)
    # ckpt-1 is upstream's step-0 save without model variables: skipped, not evaluated
    assert metrics["evaluated"] == ["ckpt-2"]
    assert metrics["step"] == TINY_STEPS
    # COCO's mAP is the mean of the per-class APs over the classes with ground truth
    per_class = [row for row in metrics["per_class"].values() if row["AP"] > -1]
    assert per_class and metrics[evaluation.MAP] == pytest.approx(
        np.mean([row["AP"] for row in per_class]), abs=1e-9)
    assert metrics[evaluation.MAP50] == pytest.approx(
        np.mean([row["AP@.5"] for row in per_class]), abs=1e-9)
    eval_dir = run_dir / "eval"
    saved = json.loads((eval_dir / "metrics.json").read_text())
    assert saved[evaluation.MAP50] == metrics[evaluation.MAP50]
    assert json.loads((eval_dir / "ckpt-2" / "metrics.json").read_text())["step"] == TINY_STEPS
    assert json.loads((eval_dir / "best.json").read_text())["checkpoint"].endswith("ckpt-2")
    from object_detection.utils import label_map_util

    names = sorted(label_map_util.get_label_map_dict(str(run_dir / "label_map.pbtxt")))
    assert sorted(metrics["per_class"]) == sorted(names)
    for name in names:  # the OD API's own per-category keys come out too
        assert f"{evaluation.PER_CLASS_PREFIX}{name}" in metrics
    counts = metrics["confusion_matrix"]["counts"]
    assert len(counts) == len(names) + 1
    for png in ("ckpt-2/pr_curves.png", "ckpt-2/confusion_matrix.png"):
        assert (eval_dir / png).read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "plots" / "map.png").is_file()
    from tfod.plots import read_scalars

    scalars = read_scalars(eval_dir)
    assert scalars[evaluation.MAP][-1][0] == TINY_STEPS
    assert f"{evaluation.PER_CLASS_PREFIX}{names[0]}" in scalars
    table = metrics_table(metrics)
    assert "AP @.50" in table and names[0] in table


def test_watch_follows_training_until_it_ends(tiny_run, tmp_path):
    """--watch sees a checkpoint appear, evaluates it, and ends once train_summary.json exists."""
    src = tiny_run["run_dir"]
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir, ignore=shutil.ignore_patterns(
        "ckpt-2*", "checkpoint", "eval", "plots", "train_summary.json"))

    def finish_training():
        time.sleep(2)
        for path in src.glob("ckpt-2*"):  # a save: the files, then the state file
            shutil.copy(path, run_dir / path.name)
        time.sleep(1)  # the half-written save is not picked up before the state file lists it
        shutil.copy(src / "checkpoint", run_dir / "checkpoint")
        time.sleep(1)
        shutil.copy(src / "train_summary.json", run_dir / "train_summary.json")

    trainer = threading.Thread(target=finish_training)
    trainer.start()
    metrics = evaluate(run_dir, watch=True, poll_seconds=0.5, timeout=600)
    trainer.join()
    assert metrics["evaluated"] == ["ckpt-2"]
    assert metrics["best"]["step"] == TINY_STEPS
    assert (run_dir / "eval" / "ckpt-2" / "metrics.json").is_file()


def test_watch_timeout_and_bad_input(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run["run_dir"], run_dir, ignore=shutil.ignore_patterns(
        "ckpt-2*", "eval", "plots", "train_summary.json"))
    with pytest.raises(TrainError, match="no checkpoint was evaluated"):
        evaluate(run_dir, watch=True, timeout=1, poll_seconds=0.2)
    with pytest.raises(TrainError, match="checkpoint not found"):
        evaluate(run_dir, checkpoint=str(run_dir / "ckpt-99"))
    with pytest.raises(TrainError, match="--checkpoint"):
        evaluate(run_dir, checkpoint=str(run_dir / "ckpt-1"), all_checkpoints=True)
    empty = tmp_path / "empty"
    shutil.copytree(run_dir, empty, ignore=shutil.ignore_patterns("ckpt-*", "checkpoint"))
    with pytest.raises(TrainError, match="no checkpoint to evaluate"):
        evaluate(empty)


def test_evaluate_without_checkpoint(tmp_path):
    with pytest.raises(TrainError, match="not found"):
        evaluate(tmp_path / "missing")


# --- the eval path on hand-made detections ------------------------------------------------
# Boxes here are pixels (x0, y0, x1, y1) on non-square images; classes are label ids 1..K.

def _evaluate_detections(images, names, out_dir):
    """Metrics of hand-made detections through the code tfod.evaluate runs after the model.

    That is, per image (eval batch 1): the model's normalised boxes and 0-based classes
    go through ``model_lib_v2.prepare_eval_dict`` (pixel boxes, label ids), into the OD
    API's COCO evaluator built by ``eval_util.get_evaluators`` from the tiny template's
    eval_config with per-category metrics on (as tfod's _Evaluator sets it); then
    ``evaluate()`` under ``runtime.keep_coco_eval`` and ``evaluation._class_report``
    (the per-class AP written to metrics.json). ``images``: ``[((height, width),
    groundtruth [(class_id, x0, y0, x1, y1)], detections [(class_id, x0, y0, x1, y1,
    score)])]``.
    """
    import tensorflow as tf
    from object_detection import eval_util, inputs, model_lib_v2
    from object_detection.core import standard_fields as fields

    from tfod.config import templates

    configs = templates.load_configs(templates.resolve_template("ssd_mobilenet_v2_tiny"))
    eval_config = configs["eval_config"]
    eval_config.include_metrics_per_category = True
    resized = templates.image_size(configs)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    evaluators = eval_util.get_evaluators(
        eval_config, categories, eval_util.evaluator_options_from_eval_config(eval_config))

    def normalised(boxes, height, width):  # (x0, y0, x1, y1) px -> [[ymin, xmin, ymax, xmax]]
        return tf.constant([[[b[2] / height, b[1] / width, b[4] / height, b[3] / width]
                             for b in boxes]], tf.float32, shape=[1, len(boxes), 4])

    for key, ((height, width), groundtruth, detections) in enumerate(images):
        prediction = {
            fields.DetectionResultFields.detection_boxes: normalised(detections, height, width),
            fields.DetectionResultFields.detection_scores:
                tf.constant([[d[5] for d in detections]], tf.float32, shape=[1, len(detections)]),
            fields.DetectionResultFields.detection_classes:  # the model's classes are 0-based
                tf.constant([[d[0] - 1 for d in detections]], tf.float32,
                            shape=[1, len(detections)]),
            fields.DetectionResultFields.num_detections: tf.constant([len(detections)],
                                                                     tf.float32)}
        labels = {
            fields.InputDataFields.groundtruth_boxes: normalised(groundtruth, height, width),
            fields.InputDataFields.groundtruth_classes:
                tf.one_hot([[g[0] - 1 for g in groundtruth]], len(names)),
            fields.InputDataFields.num_groundtruth_boxes: tf.constant([len(groundtruth)])}
        features = {  # as inputs.eval_input gives them: the resized image, the original size
            fields.InputDataFields.image: tf.zeros([1, *resized, 3]),
            fields.InputDataFields.original_image: tf.zeros([1, *resized, 3], tf.uint8),
            fields.InputDataFields.original_image_spatial_shape: tf.constant([[height, width]]),
            fields.InputDataFields.true_image_shape: tf.constant([[*resized, 3]]),
            inputs.HASH_KEY: tf.constant([str(key)])}
        eval_dict, class_agnostic = model_lib_v2.prepare_eval_dict(prediction, labels, features)
        assert not class_agnostic
        for evaluator in evaluators:
            evaluator.add_eval_dict(eval_dict)
    metrics = {}
    with runtime.keep_coco_eval() as kept:
        for evaluator in evaluators:
            metrics.update(evaluator.evaluate())
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics.update(evaluation._class_report(kept[-1], out_dir, score_threshold=0.5))
    return metrics


def _pycocotools_reference(images, names, category_ids=None):
    """pycocotools' own COCOeval on the same boxes, built here without the OD API:
    the 12 summary numbers (all categories, or only ``category_ids``)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [b[1], b[2], b[3] - b[1], b[4] - b[2]]

    gt_annotations, detections = [], []
    for image_id, (_, groundtruth, dets) in enumerate(images):
        for g in groundtruth:
            gt_annotations.append({"id": len(gt_annotations) + 1, "image_id": image_id,
                                   "category_id": g[0], "bbox": xywh(g), "iscrowd": 0,
                                   "area": (g[3] - g[1]) * (g[4] - g[2])})
        detections += [{"image_id": image_id, "category_id": d[0], "bbox": xywh(d),
                        "score": d[5]} for d in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(len(images))],
                      "annotations": gt_annotations,
                      "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(detections), "bbox")
        if category_ids is not None:
            coco_eval.params.catIds = list(category_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


SIZES = [(120, 200), (200, 120), (90, 160)]  # (height, width): non-square both ways
PERFECT = [
    (SIZES[0], [(1, 10, 20, 60, 80), (2, 100, 10, 190, 50), (2, 120, 60, 170, 115)],
     [(2, 120, 60, 170, 115, 0.3), (1, 10, 20, 60, 80, 0.9), (2, 100, 10, 190, 50, 0.6)]),
    (SIZES[1], [(1, 5, 5, 110, 90)], [(1, 5, 5, 110, 90, 0.8)]),
    (SIZES[2], [(2, 30, 10, 90, 70), (1, 100, 30, 150, 85)],
     [(1, 100, 30, 150, 85, 0.5), (2, 30, 10, 90, 70, 0.7)]),
]


def test_perfect_detections_score_ap_1_through_the_eval_path(tmp_path):
    metrics = _evaluate_detections(PERFECT, ["circle", "square"], tmp_path)
    for key in (evaluation.MAP, evaluation.MAP50, "DetectionBoxes_Precision/mAP@.75IOU",
                "DetectionBoxes_Recall/AR@100"):
        assert metrics[key] == pytest.approx(1.0, abs=1e-9), key
    for name in ("circle", "square"):
        assert metrics[f"{evaluation.PER_CLASS_PREFIX}{name}"] == pytest.approx(1.0, abs=1e-9)
        for key in ("AP", "AP@.5", "AR@100"):
            assert metrics["per_class"][name][key] == pytest.approx(1.0, abs=1e-9), (name, key)
    # at scores >= 0.5 every box is on the diagonal, but for the square scored 0.3
    assert metrics["confusion_matrix"]["counts"] == [[3, 0, 0], [0, 2, 1], [0, 0, 0]]


# A known mix, 2 classes on 3 images. circle: 3 boxes; detections by score: a false
# positive (0.95, nothing there), a hit (0.9), a hit (0.8); the third circle is missed.
# At IoU .5 that is precision 0, 1/2, 2/3 at recall 0, 1/3, 2/3: pycocotools' 101-point
# interpolated AP is 67 * (2/3) / 101. square: a loose box (IoU 0.83 with its square),
# a square called a circle, a duplicate of a found square, and a low-scored hit.
MIX = [
    (SIZES[0], [(1, 10, 20, 60, 80), (2, 100, 10, 190, 50)],
     [(1, 130, 70, 180, 110, 0.95),   # circle where there is nothing: the top score
      (1, 10, 20, 60, 80, 0.9),       # circle found
      (2, 100, 10, 190, 50, 0.85),    # square found
      (2, 102, 12, 188, 48, 0.4)]),   # the same square again: a false positive
    (SIZES[1], [(1, 5, 5, 110, 90), (2, 20, 120, 70, 180)],
     [(1, 7, 4, 110, 93, 0.8),        # circle found (IoU 0.94)
      (2, 20, 120, 70, 192, 0.7)]),   # loose square: IoU 0.83 (60x50 box vs 72x50)
    (SIZES[2], [(1, 100, 30, 150, 85), (2, 30, 10, 90, 70)],
     [(1, 30, 10, 90, 70, 0.6),       # the square called a circle; the circle is missed
      (2, 30, 10, 90, 70, 0.2)]),     # the square, low score
]


def test_known_mix_gives_pycocotools_own_values(tmp_path):
    names = ["circle", "square"]
    metrics = _evaluate_detections(MIX, names, tmp_path)
    reference = _pycocotools_reference(MIX, names)
    assert metrics[evaluation.MAP] == pytest.approx(reference[0], abs=1e-9)
    assert metrics[evaluation.MAP50] == pytest.approx(reference[1], abs=1e-9)
    assert metrics["DetectionBoxes_Precision/mAP@.75IOU"] == pytest.approx(reference[2], abs=1e-9)
    assert metrics["DetectionBoxes_Recall/AR@1"] == pytest.approx(reference[6], abs=1e-9)
    assert metrics["DetectionBoxes_Recall/AR@100"] == pytest.approx(reference[8], abs=1e-9)
    for cat_id, name in enumerate(names, start=1):
        alone = _pycocotools_reference(MIX, names, category_ids=[cat_id])
        row = metrics["per_class"][name]
        assert row["AP"] == pytest.approx(alone[0], abs=1e-9), name
        assert row["AP@.5"] == pytest.approx(alone[1], abs=1e-9), name
        assert row["AR@100"] == pytest.approx(alone[8], abs=1e-9), name
        assert metrics[f"{evaluation.PER_CLASS_PREFIX}{name}"] == pytest.approx(alone[0],
                                                                                abs=1e-9)
    # the reference is not a degenerate number: worked out by hand for the circles at .5
    assert metrics["per_class"]["circle"]["AP@.5"] == pytest.approx(67 * (2 / 3) / 101,
                                                                    abs=1e-9)
    assert 0.2 < metrics[evaluation.MAP] < 0.8


def test_odapi_without_autograph_gives_the_same_metrics(tiny_run, tmp_path, monkeypatch):
    """runtime.odapi_without_autograph (the OD API's functions called as written, not
    converted by AutoGraph: eval 13 s instead of 37 s on the demo) gives exactly the
    metrics and losses of upstream's conversion (TFOD_ODAPI_AUTOGRAPH=1), and while it is
    active AutoGraph really leaves the OD API alone."""
    from object_detection.core import box_list_ops
    from tensorflow.python.autograph.impl import conversion

    assert not conversion.is_allowlisted(box_list_ops.area)
    with runtime.odapi_without_autograph():
        assert conversion.is_allowlisted(box_list_ops.area)
    assert not conversion.is_allowlisted(box_list_ops.area)
    results = []
    for setting in ("1", "0"):
        run = tmp_path / f"run{setting}"
        shutil.copytree(tiny_run["run_dir"], run)
        shutil.rmtree(run / "eval", ignore_errors=True)
        monkeypatch.setenv("TFOD_ODAPI_AUTOGRAPH", setting)
        metrics = evaluate(run)
        results.append({k: v for k, v in metrics.items() if isinstance(v, float)
                        and k != "seconds"})
    assert "Loss/total_loss" in results[0] and results[0] == results[1]
