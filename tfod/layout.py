"""Where every stage reads and writes: the one home of tfod's file and folder names.

Data flows one way through three kinds of folder, each written by one stage and read
by the next (docs/ARCHITECTURE.md draws it):

- :class:`DatasetDir` ``data/<name>/``, written by ``tfod prepare``;
- :class:`RunDir` ``runs/<name>/``, written by ``tfod config`` (its ``pipeline.config``),
  ``tfod train`` (checkpoints, ``train/``) and ``tfod eval`` (``eval/``);
- :class:`ExportDir` ``exports/<name>/``, written by ``tfod export``.

Also here: the COCO metric keys every stage reports, and :func:`stage_log`, which gives
each stage its log file in the folder it writes (like detectron2's ``default_setup``).

Example:
    >>> run = RunDir("runs/pets")
    >>> run.checkpoint_metrics("ckpt-3")
    PosixPath('runs/pets/eval/ckpt-3/metrics.json')
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tfod.errors import ConfigError, TfodError

#: COCO metric keys of the OD API's evaluator (mAP @[.5:.95], mAP @.5)
MAP = "DetectionBoxes_Precision/mAP"
MAP50 = "DetectionBoxes_Precision/mAP@.50IOU"
PER_CLASS_PREFIX = "DetectionBoxes_PerformanceByCategory/mAP/"
#: image files the readers and ``tfod predict`` pick up from folders
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LABEL_MAP = "label_map.pbtxt"
CONFIG = "pipeline.config"


def read_json(path: str | Path) -> dict | None:
    """The JSON object in a file, or None when it is missing or not JSON."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class DatasetDir:
    """``data/<name>/`` as ``tfod prepare`` writes it."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def manifest(self) -> Path:
        """splits, shards, image counts, fingerprint: written last (the folder is complete)"""
        return self.root / "manifest.json"

    @property
    def label_map(self) -> Path:
        return self.root / LABEL_MAP

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def report(self) -> Path:
        """problems found and records kept or dropped"""
        return self.root / "report.json"

    def shard(self, split: str, index: int, count: int) -> Path:
        return self.root / f"{split}-{index:05d}-of-{count:05d}.tfrecord"

    def pattern(self, split: str, count: int) -> str:
        """The glob of a split's shards, as pipeline.config's ``input_path`` takes it."""
        return str(self.root / f"{split}-?????-of-{count:05d}.tfrecord")


@dataclass(frozen=True)
class RunDir:
    """``runs/<name>/``: the config and label map a run used, its checkpoints (``ckpt-N``),
    TensorBoard events (``train/``, ``eval/``) and what each stage wrote about it."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def label_map(self) -> Path:
        """the copy the run's config points at (train_input and eval_input readers)"""
        return self.root / LABEL_MAP

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def summary(self) -> Path:
        """written by ``tfod train`` at its end: step, loss, seconds, status"""
        return self.root / "train_summary.json"

    @property
    def command(self) -> Path:
        return self.root / "command.txt"

    @property
    def versions(self) -> Path:
        return self.root / "versions.json"

    @property
    def data(self) -> Path:
        """fingerprints of the datasets the run trained on"""
        return self.root / "data.json"

    @property
    def metrics(self) -> Path:
        """the newest evaluated checkpoint's metrics"""
        return self.eval_dir / "metrics.json"

    @property
    def best(self) -> Path:
        return self.eval_dir / "best.json"

    def checkpoint_eval_dir(self, checkpoint: str | Path) -> Path:
        """``eval/ckpt-N/``: metrics, PR curves and confusion matrix of one checkpoint."""
        return self.eval_dir / Path(checkpoint).name

    def checkpoint_metrics(self, checkpoint: str | Path) -> Path:
        return self.checkpoint_eval_dir(checkpoint) / "metrics.json"

    def checkpoints(self) -> list[str]:
        """Checkpoint prefixes (``.../ckpt-N``) of the run, oldest first."""
        found = []
        for index in self.root.glob("ckpt-*.index"):
            match = re.fullmatch(r"ckpt-(\d+)\.index", index.name)
            if match:
                found.append((int(match.group(1)), str(index.with_suffix(""))))
        return [prefix for _, prefix in sorted(found)]

    def pick_checkpoint(self, checkpoint: str | None,
                           error: type[TfodError] = ConfigError) -> str:
        """A checkpoint prefix of this run: ``checkpoint`` as given, ``best`` (highest mAP
        of ``tfod eval``), or the latest when None or ``latest``."""
        if checkpoint == "best":
            best = best_checkpoint(self.eval_dir)
            if not best:
                raise error("no evaluated checkpoint to pick the best from",
                            where=str(self.eval_dir),
                            fix="run `tfod eval RUN --all` first, or leave out --checkpoint")
            checkpoint = best["checkpoint"]
        if checkpoint in (None, "latest"):
            import tensorflow as tf

            checkpoint = tf.train.latest_checkpoint(str(self.root))
            if not checkpoint:
                raise error("no checkpoint found", where=str(self.root),
                            fix="train first, or pass --checkpoint PATH/ckpt-N")
        if not Path(f"{checkpoint}.index").is_file():
            raise error("checkpoint not found", where=checkpoint,
                        fix="give the prefix, e.g. runs/demo/ckpt-3 (without .index)")
        return checkpoint

    @classmethod
    def of(cls, run_or_config: str | Path,
           error: type[TfodError] = ConfigError) -> tuple[Path, RunDir]:
        """(pipeline.config, run folder) of a run folder, or of a config file (its folder
        is the run).

        Example:
            >>> RunDir.of("runs/pets")
            (PosixPath('runs/pets/pipeline.config'), RunDir(root=PosixPath('runs/pets')))
        """
        path = Path(run_or_config)
        if path.is_dir():
            if not (path / CONFIG).is_file():
                raise error("no pipeline.config in the run folder", where=str(path),
                            fix="pass a run folder made by `tfod train`, or a config file")
            return path / CONFIG, cls(path)
        if path.is_file():
            return path, cls(path.parent)
        raise error("run folder or config not found", where=str(path),
                    fix="pass runs/<name> or a pipeline.config")


def best_checkpoint(eval_dir: str | Path) -> dict | None:
    """The evaluated checkpoint with the highest mAP in ``eval/ckpt-*/metrics.json``
    (ties: the earlier step), or None."""
    rows = [m for m in (read_json(p) for p in Path(eval_dir).glob("ckpt-*/metrics.json"))
            if m and MAP in m]
    if not rows:
        return None
    best = max(rows, key=lambda m: (m[MAP], -m.get("step", 0)))
    return {"checkpoint": best["checkpoint"], "step": best["step"], "mAP": best[MAP],
            "mAP@.5": best.get(MAP50), "metrics": str(Path(eval_dir) / Path(
                best["checkpoint"]).name / "metrics.json")}


@dataclass(frozen=True)
class ExportDir:
    """``exports/<name>/``: every exported file, its side files and the report."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    #: TFLite variant -> file name
    TFLITE_FILES = {"float32": "model_float32.tflite", "float16": "model_float16.tflite",
                    "dynamic": "model_dynamic.tflite", "int8": "model_int8.tflite",
                    "int8_per_tensor": "model_int8_per_tensor.tflite",
                    "edgetpu": "model_edgetpu.tflite"}

    @property
    def complete(self) -> Path:
        """written last by ``tfod export``: an export folder without it was interrupted"""
        return self.root / "export.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def saved_model(self) -> Path:
        return self.root / "saved_model"

    @property
    def frozen_graph(self) -> Path:
        return self.root / "frozen_graph.pb"

    @property
    def frozen_graph_meta(self) -> Path:
        return self.root / "frozen_graph.json"

    @property
    def tflite_meta(self) -> Path:
        """input size and normalisation of each TFLite file"""
        return self.root / "tflite.json"

    def tflite(self, variant: str) -> Path:
        return self.root / self.TFLITE_FILES[variant]

    @property
    def log(self) -> Path:
        """the export's log (``stage_log(root, "export")``)"""
        return self.root / "export.log"

    @property
    def label_map(self) -> Path:
        return self.root / LABEL_MAP

    @property
    def labels(self) -> Path:
        return self.root / "labels.txt"

    @property
    def config(self) -> Path:
        return self.root / CONFIG


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in ("tensorflow", "tf-keras", "tf-models-official", "protobuf", "numpy",
                 "tf-models-research-object-detection", "pycocotools", "tfod"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


class StageLog(logging.Handler):
    """tfod's log records of one stage into ``<folder>/<stage>.log``; records made before
    the folder exists (:meth:`attach`) are kept in memory and written first."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage, self.path, self._stream, self._waiting = stage, None, None, []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def attach(self, folder: str | Path) -> Path:
        """Write to ``<folder>/<stage>.log`` (appended) from now on, earlier records first."""
        self.path = Path(folder) / f"{self.stage}.log"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(self.path, "a", encoding="utf-8")
        for record in self._waiting:
            self.emit(record)
        self._waiting = []
        return self.path

    def emit(self, record: logging.LogRecord) -> None:
        if self._stream is None:
            self._waiting.append(record)
            return
        try:
            self._stream.write(self.format(record) + "\n")
            self._stream.flush()
        except Exception:  # noqa: BLE001  (logging never raises into the stage)
            self.handleError(record)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        super().close()


#: ``extra=`` of a log record meant for the stage's log file only, not the terminal
#: (the command line's console handler drops these; see ``tfod.cli``)
FILE_ONLY = {"file_only": True}


@contextlib.contextmanager
def printed_to_log(logger: logging.Logger, what: str):
    """What third-party code prints on stdout meanwhile (pycocotools' 12-line summary and
    progress) goes to the stage's log file instead of the terminal."""
    import io

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().strip()
        if text:
            logger.info("%s:\n%s", what, text, extra=FILE_ONLY)


@contextlib.contextmanager
def native_output_to_log(logger: logging.Logger, what: str):
    """What C++ libraries write on the process's stderr meanwhile (the TFLite converter's
    absl lines ``I0000 ... mlir_graph_optimization``) goes to the stage's log file: file
    descriptor 2 points at a temporary file until the block ends."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace").strip()
            if text:
                logger.info("%s:\n%s", what, text, extra=FILE_ONLY)


@contextlib.contextmanager
def stage_log(folder: str | Path | None, stage: str):
    """While a stage runs, the records of tfod's loggers also go to ``<folder>/<stage>.log``
    (appended: a resumed or repeated stage adds to it), at the level the ``tfod`` logger
    has (INFO from the command line). With ``folder=None`` the records wait in memory
    until the stage calls ``attach(folder)`` on the :class:`StageLog` it is given (a stage
    whose output folder is made later, as ``prepare``'s); without it nothing is written.

    Example:
        >>> with stage_log("runs/pets", "train") as stage:
        ...     log.info("train: ...")           # in runs/pets/train.log (stage.path)
    """
    handler = StageLog(stage)
    if folder is not None:
        handler.attach(folder)
    logger = logging.getLogger("tfod")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        handler.close()
