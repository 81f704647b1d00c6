"""Steps and the learning-rate schedule: a new ``num_steps`` rescales every step count of
the schedule, a new batch size can scale every rate (linear scaling)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def lr_schedule(train_config) -> tuple[str, str, Any]:
    """(optimizer name, schedule kind, schedule message) of a train_config."""
    optimizer_name = train_config.optimizer.WhichOneof("optimizer")
    if optimizer_name is None:
        return "", "", None
    schedule = getattr(train_config.optimizer, optimizer_name).learning_rate
    kind = schedule.WhichOneof("learning_rate") or ""
    return optimizer_name, kind, getattr(schedule, kind) if kind else None


def set_steps(configs: dict, num_steps: int) -> None:
    """num_steps, keeping the learning-rate schedule's step counts consistent."""
    train_config = configs["train_config"]
    old_steps = train_config.num_steps
    train_config.num_steps = num_steps
    _, kind, lr = lr_schedule(train_config)
    if kind == "cosine_decay_learning_rate":
        # an unset total_steps reads as the proto's default (4,000,000), not as the
        # length the schedule was written for: then num_steps is that length
        old_total = (lr.total_steps if lr.HasField("total_steps") else 0) or old_steps \
            or num_steps
        scale = num_steps / old_total
        lr.total_steps = num_steps
        if lr.warmup_steps:
            lr.warmup_steps = 0 if num_steps < 2 else max(1, min(
                num_steps // 2, round(lr.warmup_steps * scale)))
        if lr.hold_base_rate_steps:
            lr.hold_base_rate_steps = min(num_steps - lr.warmup_steps,
                                          round(lr.hold_base_rate_steps * scale))
    elif kind == "manual_step_learning_rate":
        scale = num_steps / max(1, old_steps or num_steps)
        for step in lr.schedule:
            step.step = max(1, min(num_steps, int(step.step * scale)))
    elif kind == "exponential_decay_learning_rate":
        scale = num_steps / max(1, old_steps or num_steps)
        lr.decay_steps = max(1, int(lr.decay_steps * scale))
        if lr.burnin_steps:
            lr.burnin_steps = max(1, min(num_steps // 2, int(lr.burnin_steps * scale)))


def scale_learning_rate(configs: dict, factor: float) -> None:
    """Multiply every learning rate of the schedule (linear scaling with the batch size)."""
    _, kind, lr = lr_schedule(configs["train_config"])
    fields = {"cosine_decay_learning_rate": ("learning_rate_base", "warmup_learning_rate"),
              "manual_step_learning_rate": ("initial_learning_rate",),
              "exponential_decay_learning_rate": ("initial_learning_rate",
                                                  "burnin_learning_rate", "min_learning_rate"),
              "constant_learning_rate": ("learning_rate",)}.get(kind, ())
    for name in fields:
        setattr(lr, name, getattr(lr, name) * factor)
    if kind == "manual_step_learning_rate":
        for step in lr.schedule:
            step.learning_rate *= factor
    log.info("config: learning rates of the %s scaled by %.4g with the batch size", kind, factor)
