"""The log of runs people otherwise keep by hand: one row per run folder, and config diffs.

Everything is read from what ``tfod train`` and ``tfod eval`` wrote:
``pipeline.config``, ``train_summary.json`` and ``eval/metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tfod.errors import ConfigError
from tfod.layout import CONFIG, MAP, MAP50, RunDir, read_json

log = logging.getLogger(__name__)

COLUMNS = [("name", "run", "{}"), ("model", "model", "{}"), ("batch", "batch", "{}"),
           ("steps", "steps", "{}"), ("loss", "final loss", "{:.3f}"), ("mAP", "mAP", "{:.3f}"),
           ("mAP@.5", "mAP@.5", "{:.3f}"), ("duration", "duration", "{}"),
           ("status", "status", "{}")]


def _read_pipeline(path: Path):
    import tfod  # noqa: F401  (compat hook before any OD API import)
    from google.protobuf import text_format
    from object_detection.protos import pipeline_pb2

    proto = pipeline_pb2.TrainEvalPipelineConfig()
    try:
        text_format.Merge(path.read_text(), proto)
    except (OSError, text_format.ParseError) as exc:
        raise ConfigError(f"cannot read the pipeline config ({exc})", where=str(path),
                          fix="fix the text protobuf at the line shown") from None
    return proto


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _final_loss(run: RunDir, summary: dict) -> float | None:
    if "loss" in summary:
        return summary["loss"]
    from tfod.plots import final_loss

    return final_loss(run.train_dir)


def run_row(run_dir: str | Path) -> dict:
    """One run's row: name, model, batch, steps, final loss, mAP, mAP@.5, duration."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    proto = _read_pipeline(run.config)
    arch = proto.model.WhichOneof("model")
    extractor = getattr(proto.model, arch).feature_extractor.type if arch else ""
    summary = read_json(run.summary) or {}
    metrics = read_json(run.metrics) or {}
    return {"name": run_dir.name, "path": str(run_dir),
            "model": f"{arch}/{extractor}" if extractor else arch,
            "batch": proto.train_config.batch_size,
            "steps": summary.get("step", f"0/{proto.train_config.num_steps}"),
            "loss": _final_loss(run, summary), "mAP": metrics.get(MAP),
            "mAP@.5": metrics.get(MAP50), "eval_step": metrics.get("step"),
            "duration": _duration(summary.get("seconds")),
            "status": summary.get("status", "running" if list(run_dir.glob("ckpt-*.index"))
                                  else "not started")}


def list_runs(root: str | Path = "runs") -> list[dict]:
    """A row per run folder (a folder with a ``pipeline.config``) under ``root``, by name.

    Example:
        >>> for row in list_runs("runs"):
        ...     print(row["name"], row["batch"], row["mAP@.5"])
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError("runs folder not found", where=str(root),
                          fix="train a run first (`tfod train`), or pass --root")
    rows = []
    for config in sorted(root.glob(f"*/{CONFIG}")):
        try:
            rows.append(run_row(config.parent))
        except ConfigError as exc:
            log.warning("runs: skipping %s", exc)
    return rows


def runs_table(rows: list[dict]) -> str:
    """Rows of :func:`list_runs` as an aligned text table (``-`` where a value is missing)."""
    cells = [[title for _, title, _ in COLUMNS]]
    for row in rows:
        cells.append(["-" if row.get(key) is None else fmt.format(row[key])
                      for key, _, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _scalar(field, value):
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    if field.type == field.TYPE_FLOAT:  # float32: show it as the config file does
        return float(f"{value:.7g}")
    return value


def _flatten(message, prefix: str = "", out: dict | None = None) -> dict:
    """Set fields of a message as ``dotted.path -> value`` (repeated: ``path[i]``)."""
    out = {} if out is None else out
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        is_message = field.message_type is not None
        repeated = getattr(field, "is_repeated", None)  # protobuf >= 5.28; else label
        if repeated is None:
            repeated = field.label == field.LABEL_REPEATED
        if repeated:
            for i, item in enumerate(value):
                if is_message:
                    _flatten(item, f"{path}[{i}].", out)
                else:
                    out[f"{path}[{i}]"] = _scalar(field, item)
        elif is_message:
            before = len(out)
            _flatten(value, f"{path}.", out)
            if len(out) == before:  # an empty message that is set (e.g. a oneof choice)
                out[path] = "{}"
        else:
            out[path] = _scalar(field, value)
    return out


def _run_config(run: str | Path, root: Path) -> Path:
    for candidate in (Path(run), root / str(run)):
        if candidate.is_file():
            return candidate
        if RunDir(candidate).config.is_file():
            return RunDir(candidate).config
    names = sorted(p.parent.name for p in root.glob(f"*/{CONFIG}")) if root.is_dir() else []
    raise ConfigError(f"run {str(run)!r} not found", where=str(root),
                      fix=f"available: {', '.join(names) or 'none'}")


def diff_runs(a: str | Path, b: str | Path, root: str | Path = "runs") -> list[tuple]:
    """Field-by-field differences of two runs' ``pipeline.config``: ``(path, a, b)``.

    ``a``/``b`` are run names under ``root``, run folders or config files; a
    field missing on one side is ``None`` there.

    Example:
        >>> diff_runs("pets_b8", "pets_b16")
        [('train_config.batch_size', 8, 16)]
    """
    root = Path(root)
    left = _flatten(_read_pipeline(_run_config(a, root)))
    right = _flatten(_read_pipeline(_run_config(b, root)))
    return [(key, left.get(key), right.get(key)) for key in sorted(set(left) | set(right))
            if left.get(key) != right.get(key)]


def diff_text(diffs: list[tuple]) -> str:
    """``path: a -> b`` lines (``(unset)`` for a missing side)."""
    def show(value):
        return "(unset)" if value is None else repr(value)

    return "\n".join(f"{key}: {show(x)} -> {show(y)}" for key, x, y in diffs) or "(no differences)"
