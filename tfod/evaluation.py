"""Evaluation that ends: COCO metrics of a run's checkpoints with the OD API's eval loop.

Upstream ``model_main_tf2 --checkpoint_dir`` waits for new checkpoints until a
timeout (an hour by default), and its per-class AP flag
(``include_metrics_per_category``) raises "Category stats do not exist" with
the released pycocotools, which lacks the ``category_stats`` of Google's fork.
:func:`evaluate` builds the model and the eval input the way
``model_lib_v2.eval_continuously`` does, and for each checkpoint restores it and
runs ``model_lib_v2.eager_eval_loop`` once. While the loop runs, the OD API's
``COCOEvalWrapper.summarize`` is extended to compute ``category_stats`` (so the
OD API's own per-category metrics come out) and to keep the finished COCOeval,
from which the PR curves and the confusion matrix are drawn
(:func:`tfod.compat.runtime.keep_coco_eval`).

Per checkpoint ``ckpt-N`` the run folder gets ``eval/ckpt-N/metrics.json``,
``pr_curves.png`` and ``confusion_matrix.png``; ``eval/metrics.json`` is the
newest checkpoint's, ``eval/best.json`` names the best by mAP, and the metrics
go to TensorBoard events in ``eval/`` at the checkpoint's step.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from tfod.compat import qat, runtime
from tfod.config import check_configs, load_configs
from tfod.errors import TrainError
from tfod.files import write_text_atomic
from tfod.layout import (MAP, MAP50, PER_CLASS_PREFIX, RunDir, best_checkpoint, printed_to_log,
                         read_json, stage_log)

__all__ = ["COCO_KEYS", "MAP", "MAP50", "PER_CLASS_PREFIX", "best_checkpoint", "checkpoints",
           "confusion_matrix", "evaluate", "metrics_table"]

log = logging.getLogger(__name__)

#: COCO metric keys of the OD API, in the order of pycocotools' summary.
COCO_KEYS = [
    (MAP, "AP @[.50:.95] all"),
    (MAP50, "AP @.50"),
    ("DetectionBoxes_Precision/mAP@.75IOU", "AP @.75"),
    ("DetectionBoxes_Precision/mAP (small)", "AP small"),
    ("DetectionBoxes_Precision/mAP (medium)", "AP medium"),
    ("DetectionBoxes_Precision/mAP (large)", "AP large"),
    ("DetectionBoxes_Recall/AR@1", "AR @1"),
    ("DetectionBoxes_Recall/AR@10", "AR @10"),
    ("DetectionBoxes_Recall/AR@100", "AR @100"),
]


def metrics_table(metrics: dict) -> str:
    """The COCO AP/AR summary (and per-class AP, when present) as a text table."""
    rows = [f"{'metric':<22}{'value':>8}"]
    for key, label in COCO_KEYS:
        if key in metrics:
            rows.append(f"{label:<22}{float(metrics[key]):>8.3f}")
    losses = sorted(k for k in metrics if k.startswith("Loss/"))
    for key in losses:
        rows.append(f"{key:<22}{float(metrics[key]):>8.3f}")
    per_class = metrics.get("per_class") or {}
    if per_class:
        width = max(12, *(len(n) + 2 for n in per_class))
        rows.append("")
        rows.append(f"{'class':<{width}}{'AP':>8}{'AP@.5':>8}{'AR@100':>8}")
        for name, row in per_class.items():
            rows.append(f"{name:<{width}}{row['AP']:>8.3f}{row['AP@.5']:>8.3f}"
                        f"{row['AR@100']:>8.3f}")
    return "\n".join(rows)


def _has_model_variables(prefix: str) -> bool:
    import tensorflow as tf

    return any(name.startswith("model/") for name, _ in tf.train.list_variables(prefix))


# --- per-class AP, PR curves and confusion matrix from the OD API's COCOeval ---------

def _iou(a, b):
    """IoU matrix of COCO ``[x, y, w, h]`` boxes a (N) vs b (M)."""
    import numpy as np

    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(ax2[:, None], bx2) - np.maximum(a[:, None, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(ay2[:, None], by2) - np.maximum(a[:, None, 1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def confusion_matrix(groundtruth: list[dict], detections: list[dict], category_ids: list[int],
                     iou: float = 0.5, score_threshold: float = 0.5):
    """Counts (K+1)x(K+1): rows ground truth, columns predictions, last = background.

    Detections at or above ``score_threshold`` are matched to ground truth
    boxes of any class, greedily by IoU (>= ``iou``), one to one. Unmatched
    ground truth counts as predicted background, unmatched detections as
    background ground truth. Inputs are COCO annotation dicts.
    """
    import numpy as np

    index = {cid: i for i, cid in enumerate(category_ids)}
    bg = len(category_ids)
    matrix = np.zeros((bg + 1, bg + 1), dtype=int)
    by_image: dict = {}
    for g in groundtruth:
        if not g.get("iscrowd", 0):
            by_image.setdefault(g["image_id"], ([], []))[0].append(g)
    for d in detections:
        if d["score"] >= score_threshold:
            by_image.setdefault(d["image_id"], ([], []))[1].append(d)
    for gts, dets in by_image.values():
        used_g, used_d = set(), set()
        if gts and dets:
            ious = _iou([g["bbox"] for g in gts], [d["bbox"] for d in dets])
            for flat in np.argsort(-ious, axis=None):
                i, j = divmod(int(flat), len(dets))
                if ious[i, j] < iou:
                    break
                if i in used_g or j in used_d:
                    continue
                used_g.add(i)
                used_d.add(j)
                matrix[index[gts[i]["category_id"]], index[dets[j]["category_id"]]] += 1
        for i, g in enumerate(gts):
            if i not in used_g:
                matrix[index[g["category_id"]], bg] += 1
        for j, d in enumerate(dets):
            if j not in used_d:
                matrix[bg, index[d["category_id"]]] += 1
    return matrix


def _class_report(coco_eval, out_dir: Path, score_threshold: float) -> dict:
    """Per-class AP, PR curves and the confusion matrix of a finished COCOeval."""
    import numpy as np

    from tfod import plots

    p = coco_eval.params
    names = [coco_eval.cocoGt.cats[c]["name"] for c in p.catIds]
    stats = coco_eval.category_stats
    per_class = {name: {"AP": float(stats[0][k]), "AP@.5": float(stats[1][k]),
                        "AR@100": float(stats[8][k])} for k, name in enumerate(names)}
    at50 = int(np.flatnonzero(np.isclose(p.iouThrs, 0.5))[0])
    curves = {name: coco_eval.eval["precision"][at50, :, k, 0, -1].tolist()
              for k, name in enumerate(names)}
    plots.plot_pr_curves(p.recThrs.tolist(), curves, out_dir / "pr_curves.png")
    matrix = confusion_matrix(coco_eval.cocoGt.dataset["annotations"],
                              coco_eval.cocoDt.dataset["annotations"], list(p.catIds),
                              score_threshold=score_threshold)
    plots.plot_confusion_matrix(matrix.tolist(), names, out_dir / "confusion_matrix.png",
                                title=f"confusion matrix\nIoU 0.5, score >= {score_threshold}")
    return {"per_class": per_class,
            "confusion_matrix": {"labels": [*names, "background"], "rows": "ground truth",
                                 "score_threshold": score_threshold,
                                 "counts": matrix.tolist()}}


# --- the evaluator: model and input built once, any number of checkpoints -------------

class _Evaluator:
    def __init__(self, configs: dict):
        import tensorflow as tf
        from object_detection import inputs, model_lib_v2
        from object_detection.builders import optimizer_builder

        self.configs = configs
        self.eval_config = eval_config = configs["eval_config"]
        eval_config.include_metrics_per_category = True  # works under runtime.keep_coco_eval
        eval_input_config = configs["eval_input_configs"][0]
        eval_input_config.num_epochs = 1  # one pass, then the loop ends
        self.inputs = ", ".join(eval_input_config.tf_record_input_reader.input_path)
        model_config = configs["model"]
        strategy = tf.distribute.get_strategy()
        with strategy.scope():
            self.model = model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"](
                model_config=model_config, is_training=True)
            qat.install_from(self.model, configs)  # a QAT run is evaluated quantized
        with runtime.odapi_without_autograph():
            self.eval_input = strategy.experimental_distribute_dataset(inputs.eval_input(
                eval_config=eval_config, eval_input_config=eval_input_config,
                model_config=model_config, model=self.model))
        self.global_step = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.optimizer, _ = optimizer_builder.build(configs["train_config"].optimizer,
                                                    global_step=self.global_step)
        self.ckpt = tf.train.Checkpoint(step=self.global_step, model=self.model,
                                        optimizer=self.optimizer)
        if eval_config.use_moving_averages:
            model_lib_v2._ensure_model_is_built(self.model, self.eval_input,
                                                eval_config.batch_size == 1)
            self.optimizer.shadow_copy(self.model)

    def __call__(self, checkpoint: str, writer, out_dir: Path,
                 score_threshold: float) -> dict:
        from object_detection import model_lib_v2

        t0 = time.time()
        self.ckpt.restore(checkpoint).expect_partial()
        if self.eval_config.use_moving_averages:
            self.optimizer.swap_weights()
        step = int(self.global_step.numpy())
        log.info("eval: %s at step %d on %s", checkpoint, step, self.inputs)
        with writer.as_default(), runtime.keep_coco_eval() as kept, \
                runtime.odapi_without_autograph(), printed_to_log(log, "eval: pycocotools"):
            metrics = model_lib_v2.eager_eval_loop(self.model, self.configs, self.eval_input,
                                                   global_step=self.global_step)
        writer.flush()
        result = {k: float(v) for k, v in metrics.items()}
        if kept:
            result.update(_class_report(kept[-1], out_dir, score_threshold))
        result["step"] = step
        result["checkpoint"] = checkpoint
        result["seconds"] = time.time() - t0
        return result


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2))


def checkpoints(run_dir: str | Path) -> list[str]:
    """Checkpoint prefixes (``.../ckpt-N``) of a run folder, oldest first."""
    return RunDir(run_dir).checkpoints()


def _training_finished(run_dir: Path) -> bool:
    """train_summary.json is newer than the newest checkpoint: training has ended."""
    run = RunDir(run_dir)
    prefixes = run.checkpoints()
    if not run.summary.is_file():
        return False
    if not prefixes:
        return True
    return run.summary.stat().st_mtime >= Path(prefixes[-1] + ".index").stat().st_mtime


def _pending(run: RunDir, out_dir: Path, seen: set[str]) -> list[str]:
    """Completed saves (listed in the ``checkpoint`` state file) not evaluated yet."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(run.root))
    done = {Path(p).name for p in (state.all_model_checkpoint_paths if state else [])}
    return [c for c in run.checkpoints() if c not in seen and Path(c).name in done
            and not (out_dir / Path(c).name / "metrics.json").is_file()]


def _first_checkpoints(run: RunDir, checkpoint: str | None, all_checkpoints: bool,
                       watch: bool) -> list[str]:
    """What to evaluate before any waiting: the given checkpoint, every one, or the
    latest; nothing yet under ``watch``."""
    if checkpoint and (all_checkpoints or watch):
        raise TrainError("--checkpoint evaluates one checkpoint", where="--checkpoint",
                         fix="drop --checkpoint, or drop --all/--watch")
    if checkpoint:
        if not Path(checkpoint + ".index").is_file():
            raise TrainError("checkpoint not found", where=checkpoint,
                             fix="pass a prefix like runs/<name>/ckpt-3 (without .index)")
        return [checkpoint]
    if watch:
        return []
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(run.root))
    if not latest:
        raise TrainError("no checkpoint to evaluate", where=str(run.root),
                         fix="train first (`tfod train`) or pass --checkpoint PATH")
    return run.checkpoints() if all_checkpoints else [latest]


class _Session:
    """One ``evaluate`` call: the evaluator (built on first use), the summary writer and
    what has been evaluated; :meth:`run` evaluates one checkpoint and writes its files."""

    def __init__(self, configs: dict, out_dir: Path, score_threshold: float):
        import tensorflow as tf

        self.configs, self.out_dir, self.score_threshold = configs, out_dir, score_threshold
        self.evaluator = None
        self.writer = tf.summary.create_file_writer(str(out_dir))
        self.evaluated: list[dict] = []
        self.seen: set[str] = set()

    def run(self, prefix: str) -> None:
        import tensorflow as tf

        self.seen.add(prefix)
        if not _has_model_variables(prefix):
            log.info("eval: skipping %s: it holds no model variables "
                     "(upstream's step-0 save)", prefix)
            return
        self.evaluator = self.evaluator or _Evaluator(self.configs)
        ckpt_dir = self.out_dir / Path(prefix).name
        try:
            result = self.evaluator(prefix, self.writer, ckpt_dir, self.score_threshold)
        except tf.errors.NotFoundError as exc:  # removed by max_to_keep meanwhile
            log.warning("eval: %s disappeared before it was read (%s); skipped", prefix,
                        exc.message[:200])
            return
        _write_json(ckpt_dir / "metrics.json", result)
        latest_json = read_json(self.out_dir / "metrics.json")
        if not latest_json or result["step"] >= latest_json.get("step", -1):
            _write_json(self.out_dir / "metrics.json", result)
        best = best_checkpoint(self.out_dir)
        if best:
            _write_json(self.out_dir / "best.json", best)
        log.info("eval: %s, step %d\n%s", Path(prefix).name, result["step"],
                 metrics_table(result))
        self.evaluated.append(result)


def _watch(session: _Session, run: RunDir, timeout: float | None,
           poll_seconds: float) -> None:
    """Evaluate new checkpoints as training saves them, until training has ended and its
    last checkpoint is evaluated, or ``timeout`` seconds pass."""
    deadline = time.time() + timeout if timeout else None
    while True:
        for prefix in _pending(run, session.out_dir, session.seen):
            session.run(prefix)
        if _training_finished(run.root) and not _pending(run, session.out_dir, session.seen):
            log.info("eval: training has ended and its last checkpoint is evaluated")
            return
        if deadline and time.time() >= deadline:
            log.warning("eval: --timeout reached after %d checkpoint(s)",
                        len(session.evaluated))
            return
        time.sleep(poll_seconds if not deadline else
                   max(0.0, min(poll_seconds, deadline - time.time())))


def _summary(session: _Session, run: RunDir, watch: bool) -> dict:
    """The newest evaluated checkpoint's metrics with ``best`` and ``evaluated``."""
    from tfod import plots

    out_dir = session.out_dir
    if not session.evaluated:
        previous = read_json(out_dir / "metrics.json")
        if watch and previous and _training_finished(run.root):
            log.info("eval: every checkpoint of the finished run was evaluated before")
            return {**previous, "best": best_checkpoint(out_dir), "evaluated": []}
        if watch:
            raise TrainError("no checkpoint was evaluated", where=str(run.root),
                             fix="start training first, or give --watch a longer --timeout")
        raise TrainError("no checkpoint with model variables to evaluate", where=str(run.root),
                         fix="train longer so a checkpoint is saved")
    plots.plot_run(run.root)
    result = max(session.evaluated, key=lambda m: m["step"])
    result = {**result, "best": best_checkpoint(out_dir),
              "evaluated": [Path(m["checkpoint"]).name for m in session.evaluated]}
    if len(session.evaluated) > 1 or watch:
        log.info("eval: %d checkpoint(s); best %s (mAP %.3f)", len(session.evaluated),
                 result["best"]["checkpoint"], result["best"]["mAP"])
    return result


def evaluate(run_or_config: str | Path, checkpoint: str | None = None,
             out_dir: str | Path | None = None, all_checkpoints: bool = False,
             watch: bool = False, timeout: float | None = None, poll_seconds: float = 10.0,
             score_threshold: float = 0.5) -> dict:
    """Evaluate a run's checkpoints on the eval split and return the newest one's metrics.

    By default the latest checkpoint, once. ``all_checkpoints`` evaluates every
    ``ckpt-N`` of the run (skipping upstream's step-0 save, which holds no model
    variables, and checkpoints already evaluated); ``watch`` keeps polling for
    new checkpoints until training has written ``train_summary.json`` and its
    last checkpoint is evaluated, or ``timeout`` seconds pass. Returns the
    metrics (with ``step``, ``checkpoint``, ``per_class``) of the newest
    checkpoint evaluated, plus ``best`` and ``evaluated``. The config gets the checks
    of evaluation only (a deleted fine-tune checkpoint does not matter here); the log
    goes to ``eval/eval.log``.

    Example:
        >>> metrics = evaluate("runs/demo")
        >>> round(metrics["DetectionBoxes_Precision/mAP"], 3)
        >>> evaluate("runs/demo", watch=True, timeout=3600)["best"]["checkpoint"]
    """
    config_path, run = RunDir.of(run_or_config, TrainError)
    configs = load_configs(config_path)  # parsed once, handed to every step
    check_configs(configs, config_path, scope="eval")
    todo = _first_checkpoints(run, checkpoint, all_checkpoints, watch)
    out_dir = Path(out_dir) if out_dir else run.eval_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with stage_log(out_dir, "eval"):
        session = _Session(configs, out_dir, score_threshold)
        try:
            for prefix in todo:
                session.run(prefix)
            if watch:
                _watch(session, run, timeout, poll_seconds)
        finally:
            session.writer.close()
        return _summary(session, run, watch)
