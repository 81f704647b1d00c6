"""Evaluation that ends: COCO metrics of one checkpoint with the OD API's eval loop.

Upstream ``model_main_tf2 --checkpoint_dir`` waits for new checkpoints until a
timeout (an hour by default). :func:`evaluate` builds the model and the eval
input the way ``model_lib_v2.eval_continuously`` does, restores one checkpoint,
runs ``model_lib_v2.eager_eval_loop`` once and returns.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from tfod.errors import TrainError

log = logging.getLogger(__name__)

#: COCO metric keys of the OD API, in the order of pycocotools' summary.
COCO_KEYS = [
    ("DetectionBoxes_Precision/mAP", "AP @[.50:.95] all"),
    ("DetectionBoxes_Precision/mAP@.50IOU", "AP @.50"),
    ("DetectionBoxes_Precision/mAP@.75IOU", "AP @.75"),
    ("DetectionBoxes_Precision/mAP (small)", "AP small"),
    ("DetectionBoxes_Precision/mAP (medium)", "AP medium"),
    ("DetectionBoxes_Precision/mAP (large)", "AP large"),
    ("DetectionBoxes_Recall/AR@1", "AR @1"),
    ("DetectionBoxes_Recall/AR@10", "AR @10"),
    ("DetectionBoxes_Recall/AR@100", "AR @100"),
]


def metrics_table(metrics: dict) -> str:
    """The COCO AP/AR summary as a text table."""
    rows = [f"{'metric':<22}{'value':>8}"]
    for key, label in COCO_KEYS:
        if key in metrics:
            rows.append(f"{label:<22}{float(metrics[key]):>8.3f}")
    losses = sorted(k for k in metrics if k.startswith("Loss/"))
    for key in losses:
        rows.append(f"{key:<22}{float(metrics[key]):>8.3f}")
    return "\n".join(rows)


def evaluate(run_or_config: str | Path, checkpoint: str | None = None,
             out_dir: str | Path | None = None) -> dict:
    """Evaluate one checkpoint (the latest by default) on the eval split, once.

    Writes ``eval/metrics.json`` (and TensorBoard events under ``eval/``) in the
    run folder and returns the metrics, with ``step`` and ``checkpoint``.

    Example:
        >>> metrics = evaluate("runs/demo")
        >>> round(metrics["DetectionBoxes_Precision/mAP"], 3)
    """
    from tfod import pipeline

    config_path, run_dir = pipeline.resolve_run(run_or_config, TrainError)
    pipeline.check_pipeline(config_path)
    import tensorflow as tf
    from object_detection import inputs, model_lib_v2
    from object_detection.builders import optimizer_builder

    checkpoint = checkpoint or tf.train.latest_checkpoint(str(run_dir))
    if not checkpoint:
        raise TrainError("no checkpoint to evaluate", where=str(run_dir),
                         fix="train first (`tfod train`) or pass --checkpoint PATH")
    out_dir = Path(out_dir) if out_dir else run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    configs = pipeline.load_configs(config_path)
    model_config = configs["model"]
    eval_config = configs["eval_config"]
    eval_input_config = configs["eval_input_configs"][0]
    eval_input_config.num_epochs = 1  # one pass, then the loop ends

    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"](
            model_config=model_config, is_training=True)
    eval_input = strategy.experimental_distribute_dataset(inputs.eval_input(
        eval_config=eval_config, eval_input_config=eval_input_config,
        model_config=model_config, model=model))
    global_step = tf.Variable(0, trainable=False, dtype=tf.int64)
    optimizer, _ = optimizer_builder.build(configs["train_config"].optimizer,
                                           global_step=global_step)
    ckpt = tf.train.Checkpoint(step=global_step, model=model, optimizer=optimizer)
    if eval_config.use_moving_averages:
        model_lib_v2._ensure_model_is_built(model, eval_input, eval_config.batch_size == 1)
        optimizer.shadow_copy(model)
    status = ckpt.restore(checkpoint)
    status.expect_partial()
    if eval_config.use_moving_averages:
        optimizer.swap_weights()
    log.info("eval: %s at step %d on %s", checkpoint, int(global_step.numpy()),
             ", ".join(eval_input_config.tf_record_input_reader.input_path))
    writer = tf.summary.create_file_writer(str(out_dir))
    with writer.as_default():
        metrics = model_lib_v2.eager_eval_loop(model, configs, eval_input,
                                               global_step=global_step)
    writer.flush()
    result = {k: float(v) for k, v in metrics.items()}
    result["step"] = int(global_step.numpy())
    result["checkpoint"] = checkpoint
    result["seconds"] = time.time() - t0
    tmp = out_dir / f".metrics.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_dir / "metrics.json")
    log.info("eval: step %d\n%s", result["step"], metrics_table(result))
    return result
