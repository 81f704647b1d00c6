"""Learning, in the default suite: the tiny SSD trained for real (tfod.train, the OD API's
model_lib_v2 loop) on easy synthetic shapes and evaluated for real (tfod.evaluate, the OD
API's COCO evaluator on pycocotools) reaches a mAP@.5 that only a learning model reaches,
its training loss falls, and the per-class AP `tfod eval` reports is pycocotools' own
per-category value for the same detections and ground truth.

Training happens once, in the module fixture ``learned``."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import pytest

from tfod import evaluation

# The run: easy data (two distinct filled shapes, one per image) and the tiny template as
# shipped (160 px, Adam with its cosine schedule), 400 steps of batch 8: it learned on every
# seed measured (see test_tiny_model_learns). CHECKPOINT_EVERY = NUM_STEPS / 10: training
# runs in calls of 40 steps, so the run's events hold Loss/total_loss every 40 steps.
# Cost: the module (import, synth, prepare, train, eval) took 172 s user + 23 s system CPU,
# 371 s wall, on 2026-12-01 with the 2 cores shared (load 7 falling to 3); not measured idle.
CLASSES = ("circle", "triangle")
NUM_TRAIN, NUM_VAL, MAX_OBJECTS = 96, 24, 1
NUM_STEPS, BATCH_SIZE, CHECKPOINT_EVERY = 400, 8, 40
DATA_SEED, TRAIN_SEED = 0, 0

MAP50_THRESHOLD = 0.2  # measured 0.354..0.481 over 4 seeds; see test_tiny_model_learns
LOSS_RATIO_THRESHOLD = 0.6  # measured 0.195..0.361 over 4 seeds; see test_training_loss_falls


@contextlib.contextmanager
def _record_coco_inputs():
    """Record (without changing anything) the ground truth and detections the OD API's
    COCO evaluator hands to pycocotools: [(groundtruth dataset, detection annotations)]."""
    from object_detection.metrics import coco_tools

    seen = []
    init = coco_tools.COCOEvalWrapper.__init__

    def recording_init(self, groundtruth=None, detections=None, *args, **kwargs):
        seen.append((copy.deepcopy(groundtruth.dataset),
                     copy.deepcopy(detections.dataset["annotations"])))
        init(self, groundtruth, detections, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(coco_tools.COCOEvalWrapper, "__init__", recording_init)
        yield seen


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """synth -> prepare -> config -> train -> eval, once, with tfod's public functions."""
    from tfod.data import prepare_dataset
    from tfod.evaluation import evaluate
    from tfod.config import patch_pipeline_for_dataset
    from tfod.data.synth import synthesize
    from tfod.training import train

    root = tmp_path_factory.mktemp("learning")
    synthesize(root / "raw", num_train=NUM_TRAIN, num_val=NUM_VAL, image_size=160,
               classes=CLASSES, max_objects=MAX_OBJECTS, seed=DATA_SEED)
    prepared = prepare_dataset(root / "raw", "shapes", out_root=root / "data",
                               label_map_dir=root / "label_maps", seed=DATA_SEED)
    config = patch_pipeline_for_dataset(
        "ssd_mobilenet_v2_tiny", root / "pipeline.config", data_dir=prepared["dir"],
        num_steps=NUM_STEPS, batch_size=BATCH_SIZE)
    run_dir = root / "run"
    trained = train(config, run_dir=run_dir, seed=TRAIN_SEED,
                    checkpoint_every=CHECKPOINT_EVERY)
    with _record_coco_inputs() as coco_inputs:
        metrics = evaluate(run_dir)
    return {"run_dir": run_dir, "train": trained, "metrics": metrics,
            "coco_inputs": coco_inputs}


def test_tiny_model_learns(learned):
    """mAP@.5 on the 24 held-out images >= MAP50_THRESHOLD (0.2).

    Measured on 2026-12-01 with this module's set-up (2 classes, 96 train / 24 val images
    of one shape each, 160 px, 400 steps of batch 8, the template's learning rate), varying
    the synth seed and the training seed together:

    ========================  ======  =====  ============================
    (data, train) seed        mAP@.5  mAP    per-class AP@.5 circle / tri
    ========================  ======  =====  ============================
    (0, 0), the test's        0.435   0.166  0.539 / 0.332
    (0, 0), again             0.362   0.136  0.530 / 0.194
    (1, 1)                    0.396   0.138  0.549 / 0.244
    (2, 2)                    0.481   0.214  0.479 / 0.482
    (3, 3)                    0.354   0.117  0.401 / 0.308
    (0, 0), learning rate 0   0.000   0.000  0.000 / 0.000
    ========================  ======  =====  ============================

    The same seeds do not give the same numbers twice (threads), hence two (0, 0) rows.
    Threshold = the minimum (0.354) minus a margin of 0.15 (about 40%), far above the 0.000
    of the same run with the learning rate of every OD API optimizer forced to 0 (steps,
    checkpoints and eval all run; nothing is learned): with it this test fails.
    The model is far from converged at 400 steps (the demo's 2000 reach 0.94): a model that
    learns much slower than today's fails too.
    """
    metrics = learned["metrics"]
    assert learned["train"]["step"] == NUM_STEPS and metrics["step"] == NUM_STEPS
    assert metrics[evaluation.MAP50] >= MAP50_THRESHOLD, evaluation.metrics_table(metrics)


def test_training_loss_falls(learned):
    """Mean Loss/total_loss of the last 20% of the steps < LOSS_RATIO_THRESHOLD (0.6) x that
    of the first 10%, from the run's own TensorBoard events (tfod.plots.read_scalars):
    the loss is logged at the end of every 40-step call, steps 40, 80, ..., 400.

    Measured ratios (same runs as test_tiny_model_learns): 0.195 and 0.232 (seed 0/0), 0.293
    (1/1), 0.244 (2/2), 0.361 (3/3); 0.988 with the learning rate forced to 0 (fails).
    Threshold = the largest (0.361) plus a margin of 0.24.
    """
    from tfod.plots import read_scalars

    loss = read_scalars(learned["run_dir"] / "train")["Loss/total_loss"]
    first = [value for step, value in loss if step <= 0.1 * NUM_STEPS]
    last = [value for step, value in loss if step >= 0.8 * NUM_STEPS]
    assert first and last, loss
    ratio = (sum(last) / len(last)) / (sum(first) / len(first))
    assert ratio < LOSS_RATIO_THRESHOLD, loss


def test_per_class_ap_is_pycocotools_per_category_value(learned):
    """The per-class AP of `tfod eval` (metrics.json, the returned metrics and the OD API's
    own per-category key) equals pycocotools' COCOeval run here with params.catIds=[c] on
    the ground truth and detections that the OD API's evaluator handed to pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    metrics = learned["metrics"]
    saved = json.loads((learned["run_dir"] / "eval" / "metrics.json").read_text())
    assert len(learned["coco_inputs"]) == 1  # one COCO evaluation: the class-aware one
    groundtruth, detections = learned["coco_inputs"][0]
    assert len(groundtruth["images"]) == NUM_VAL
    detections = [{k: d[k] for k in ("image_id", "category_id", "bbox", "score")}
                  for d in detections]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = groundtruth
        gt.createIndex()
        dt = gt.loadRes(detections)
    names = {c["id"]: c["name"] for c in groundtruth["categories"]}
    assert sorted(names.values()) == sorted(CLASSES)
    for cat_id, name in names.items():
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.params.catIds = [cat_id]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        ap, ap50, ar100 = coco_eval.stats[0], coco_eval.stats[1], coco_eval.stats[8]
        # compare learned, non-degenerate values (measured per-class AP@.5: 0.19..0.55)
        assert ap50 > 0.1, (name, coco_eval.stats)
        for reported in (metrics["per_class"][name], saved["per_class"][name]):
            assert reported["AP"] == pytest.approx(ap, abs=1e-12), name
            assert reported["AP@.5"] == pytest.approx(ap50, abs=1e-12), name
            assert reported["AR@100"] == pytest.approx(ar100, abs=1e-12), name
        assert metrics[f"{evaluation.PER_CLASS_PREFIX}{name}"] == pytest.approx(ap, abs=1e-12)
