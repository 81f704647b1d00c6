"""Fine-tuning from a detection checkpoint trained with another class count.

For ``fine_tune_checkpoint_type: "detection"`` the OD API restores only the
feature extractor of an SSD model (``SSDMetaArch.restore_from_objects``): the
box predictor's tower and box-encoding head, which do not depend on the class
count, start from random values although the checkpoint holds them. tfod
restores those too, after the OD API's own restore (the same map the OD API's
few-shot colab builds by hand); only the class head starts fresh.
"""

from __future__ import annotations

import logging

from tfod.errors import TrainError

log = logging.getLogger(__name__)


def box_predictor_restore_map(model) -> dict:
    """The parts of an SSD box predictor that do not depend on ``num_classes``
    (attribute name -> trackable), empty for other models."""
    predictor = getattr(model, "_box_predictor", None)
    parts: dict = {}
    if hasattr(predictor, "_base_tower_layers_for_heads"):  # weight-shared (FPN models)
        parts["_base_tower_layers_for_heads"] = predictor._base_tower_layers_for_heads
        parts["_box_prediction_head"] = predictor._box_prediction_head
        if any(predictor._additional_projection_layers):
            parts["_additional_projection_layers"] = predictor._additional_projection_layers
    elif hasattr(predictor, "_shared_nets"):  # convolutional (SSD MobileNet V2 320)
        import tensorflow as tf

        if any(predictor._shared_nets):
            parts["_shared_nets"] = predictor._shared_nets
        parts["_prediction_heads"] = tf.train.Checkpoint(
            box_encodings=predictor._prediction_heads["box_encodings"])
    return parts


def restore_box_predictor(model, checkpoint: str) -> list[str]:
    """Restore an SSD model's box-predictor tower and box head from a detection
    checkpoint (model variables must exist). Returns the restored attribute names.

    Example:
        >>> model_lib_v2.load_fine_tune_checkpoint(model, ckpt, "detection", ...)
        >>> restore_box_predictor(model, ckpt)
        ['_prediction_heads']
    """
    import tensorflow as tf

    parts = box_predictor_restore_map(model)
    if not parts:
        return []
    root = tf.train.Checkpoint(model=tf.train.Checkpoint(
        _box_predictor=tf.train.Checkpoint(**parts)))
    try:
        root.restore(checkpoint).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as exc:
        raise TrainError(f"the checkpoint's box predictor does not fit this model ({exc})"[:600],
                         where=checkpoint, fix="use the checkpoint of the zoo model the "
                         "template was made for, or fine_tune_checkpoint_type "
                         "\"classification\"") from None
    log.info("fine-tune: restored box predictor %s from %s", ", ".join(parts), checkpoint)
    return list(parts)
