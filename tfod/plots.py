"""PNG plots people would rather look at than read: loss, learning rate, mAP, PR, confusion.

Every function draws with matplotlib's Agg backend (no display needed) and
returns the path it wrote. :func:`plot_run` draws the curves of a run folder
from its TensorBoard events and ``eval/ckpt-*/metrics.json`` into ``plots/``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tfod.layout import MAP, MAP50, RunDir

log = logging.getLogger(__name__)

LOSS_TAGS = ("Loss/total_loss", "Loss/classification_loss", "Loss/localization_loss",
             "Loss/regularization_loss")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write as PNG (creating the folder) and close a figure."""
    plt = _pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def read_scalars(event_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TensorBoard event files in one folder: tag -> [(step, value)].

    TF2 writes scalars as tensor summaries; both kinds are read.

    Example:
        >>> read_scalars("runs/demo/train")["Loss/total_loss"][-1]
        (2000, 0.41)
    """
    import tensorflow as tf

    out: dict[str, dict[int, float]] = {}
    for path in sorted(Path(event_dir).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = float(value.simple_value)
                elif value.HasField("tensor") and not value.tensor.string_val:
                    array = tf.make_ndarray(value.tensor)
                    if array.size != 1:
                        continue
                    number = float(array.reshape(()))
                else:
                    continue
                out.setdefault(value.tag, {})[int(event.step)] = number  # later wins
    return {tag: sorted(points.items()) for tag, points in out.items()}


def final_loss(train_dir: str | Path) -> float | None:
    """The last ``Loss/total_loss`` in a run's ``train/`` events; None without events."""
    if not list(Path(train_dir).glob("events.out.tfevents.*")):
        return None
    points = read_scalars(train_dir).get("Loss/total_loss")
    return points[-1][1] if points else None


def _line_plot(series: dict[str, list[tuple[int, float]]], path: Path, title: str,
               ylabel: str, log_y: bool = False) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for label, points in series.items():
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_y and all(v > 0 for pts in series.values() for _, v in pts):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_pr_curves(recall, precision_by_class: dict[str, list[float]], path: str | Path,
                   title: str = "precision-recall at IoU 0.5") -> Path:
    """One PR curve per class (precision ``-1`` entries, i.e. no data, are dropped)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for name, precision in precision_by_class.items():
        pts = [(r, p) for r, p in zip(recall, precision) if p >= 0]
        if pts:
            r, p = zip(*pts)
            ap = sum(p) / len(recall)
            ax.plot(r, p, label=f"{name} (AP {ap:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return save_figure(fig, path)


def plot_confusion_matrix(matrix, names: list[str], path: str | Path,
                          title: str = "confusion matrix\nIoU 0.5") -> Path:
    """Counts with ground truth as rows and predictions as columns (last: background)."""
    plt = _pyplot()
    labels = [*names, "background"]
    n = len(labels)
    fig, ax = plt.subplots(figsize=(2.5 + 0.7 * n, 2.0 + 0.6 * n), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    top = max(1, max(max(row) for row in matrix))
    for i in range(n):
        for j in range(n):
            value = int(matrix[i][j])
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > top / 2 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    return save_figure(fig, path)


def eval_history(run_dir: str | Path) -> list[dict]:
    """The ``metrics.json`` of every evaluated checkpoint of a run, by step."""
    rows = []
    for path in RunDir(run_dir).eval_dir.glob("ckpt-*/metrics.json"):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            log.warning("plots: skipping unreadable %s", path)
    return sorted(rows, key=lambda m: m.get("step", 0))


#: the eval's total loss on the val split (the OD API's eval loop computes it)
VAL_LOSS = "Loss/total_loss"


#: the loss plot's series of the val loss
VAL_LABEL = "val total_loss (evaluated checkpoints)"


def loss_series(scalars: dict, history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """The loss plot's curves: the training losses (from ``scalars``, the train events)
    and, when checkpoints were evaluated (``history``: :func:`eval_history`), the val
    total loss of each, so over-fitting shows where people look for it."""
    losses = {tag.split("/", 1)[-1]: scalars[tag] for tag in LOSS_TAGS if tag in scalars}
    val = [(m["step"], m[VAL_LOSS]) for m in history if VAL_LOSS in m and "step" in m]
    if losses and val:
        losses[VAL_LABEL] = val
    return losses


def plot_run(run_dir: str | Path) -> list[Path]:
    """Loss, learning-rate and mAP-per-checkpoint PNGs in ``<run>/plots/``.

    Missing inputs (no events yet, no eval yet) skip their plot.

    Example:
        >>> [p.name for p in plot_run("runs/demo")]
        ['loss.png', 'learning_rate.png', 'map.png']
    """
    run_dir = Path(run_dir)
    out = run_dir / "plots"
    written = []
    scalars = read_scalars(run_dir / "train") if (run_dir / "train").is_dir() else {}
    history = eval_history(run_dir)
    losses = loss_series(scalars, history)
    if losses:
        title = f"{run_dir.name}: training loss" + (" and val loss" if VAL_LABEL in losses
                                                    else "")
        written.append(_line_plot(losses, out / "loss.png", title, "loss"))
    if "learning_rate" in scalars:
        written.append(_line_plot({"learning rate": scalars["learning_rate"]},
                                  out / "learning_rate.png",
                                  f"{run_dir.name}: learning rate", "learning rate"))
    if history:
        series = {}
        for key, label in ((MAP, "mAP"), (MAP50, "mAP@.5")):
            series[label] = [(m["step"], m[key]) for m in history if key in m]
        written.append(_line_plot(series, out / "map.png", f"{run_dir.name}: mAP per checkpoint",
                                  "mAP"))
    if written:
        log.info("plots: %s", ", ".join(str(p) for p in written))
    return written
