"""Export on two cores: the TFLite lane in a second process beside the TensorFlow lane.

Most of an export is single-threaded Python and converter work (tracing the model, saving
SavedModels, one TFLite conversion per variant), so one process uses one core. With two
or more cores and TFLite variants asked for, :func:`write_artefacts` runs:

- a worker process (``spawn``): traces the TFLite graph once
  (:func:`~tfod.exporter.formats.trace_tflite_graph`), then converts its share of the
  variants;
- this process: the SavedModel and frozen graph (each handed to ``ready`` as soon as it
  exists, so it is scored while the worker converts), then, once the worker's trace is
  complete, the last variant (int8 when asked: the longest conversion) from that trace.

Nothing is traced twice and the two lanes write different files, each atomically. The
worker's log records come back with its result and are logged here (so they reach
``export.log``); what its C++ libraries print (the converter's absl lines) goes to a file
that is appended to ``export.log``, not to the terminal. Ctrl-C stops both.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import json
import logging
import multiprocessing
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Callable

from tfod.distribute import _cores
from tfod.errors import ExportError
from tfod.exporter.formats import (TRACED, _input_normalisation, convert_tflite,
                                   quantization_of, trace_tflite_graph, write_tf_formats,
                                   write_tflite_meta)

#: the worker writes the model's input normalisation here (in its work folder) before it
#: traces, so this process reads it instead of building the model a second time
NORMALISATION = "normalisation.json"
from tfod.layout import ExportDir

log = logging.getLogger(__name__)

#: called with (format name, path) for each artefact once it is complete
Ready = Callable[[str, Path], None]


class _Records(logging.Handler):
    """Keeps a worker's log records to send back with its result."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[dict] = []

    def emit(self, record):
        record.msg, record.args = record.getMessage(), None
        record.exc_info = record.exc_text = None
        self.records.append(record.__dict__.copy())


def _worker_init(output: str) -> None:
    """The worker's stdout and stderr (C++ lines included) go to ``output``; on Linux it
    is killed when the export process dies (a SIGKILLed export leaves no worker writing
    into its folder)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _tflite_lane(config: str, checkpoint: str, work: str, out_dir: str, variants: list[str],
                 max_detections: int, calibration_count: int,
                 regular_nms: bool = False) -> tuple[dict, list[dict]]:
    """In the worker: trace, then convert ``variants``; returns {variant: (path, meta)}
    and the log records."""
    import tfod  # noqa: F401  (the compat hook, before the OD API)
    from tfod.config import load_configs

    handler = _Records()
    logger = logging.getLogger("tfod")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # sent back, not printed here
    try:
        configs = load_configs(config)
        normalisation = _input_normalisation(configs)
        Path(work).mkdir(parents=True, exist_ok=True)
        (Path(work) / NORMALISATION).write_text(json.dumps(normalisation))
        graph = trace_tflite_graph(configs, checkpoint, Path(work), max_detections,
                                   regular_nms=regular_nms)
        quantization = quantization_of(checkpoint)
        done = {v: convert_tflite(configs, graph, Path(out_dir), v, max_detections,
                                  calibration_count, normalisation, quantization)
                for v in variants}
    except Exception as exc:  # noqa: BLE001  (sent back as text: any error pickles)
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
    return {v: (str(p), m) for v, (p, m) in done.items()}, handler.records


def _split(variants: list[str], tf_formats: bool) -> tuple[list[str], list[str]]:
    """(the worker's variants, this process's): this process takes the last one when it
    also writes the TensorFlow formats, else half."""
    if tf_formats:
        return variants[:-1], variants[-1:]
    half = (len(variants) + 1) // 2
    return variants[:half], variants[half:]


def use_lanes(variants: list[str], tf_formats: bool) -> bool:
    """Two lanes pay (a second process costs a TensorFlow import) with 2+ cores and at
    least two pieces of work beside the trace."""
    return _cores() >= 2 and bool(variants) and (tf_formats or len(variants) >= 2)


def _wait_for_trace(graph_dir: Path, future) -> None:
    while not (graph_dir / TRACED).exists():
        if future.done():  # failed (or converted nothing of ours): its error comes below
            future.result()
            if not (graph_dir / TRACED).exists():
                raise ExportError("the TFLite worker ended without a traced graph",
                                  where=str(graph_dir), fix="see export.log")
        time.sleep(0.2)


def write_artefacts(configs: dict, config: Path, checkpoint: str, out: ExportDir,
                    formats: list[str], variants_of: dict, input_type: str,
                    max_detections: int, calibration_count: int,
                    ready: Ready, regular_nms: bool = False) -> dict[str, Path]:
    """Every asked format into ``out`` in two processes; ``ready(name, path)`` is called
    for each artefact as soon as it is complete. Returns format name -> path."""
    names = {variants_of[f]: f for f in formats if variants_of[f]}
    variants = list(names)
    tf_formats = [f for f in formats if not variants_of[f]]
    theirs, ours = _split(variants, bool(tf_formats))
    artefacts: dict[str, Path] = {}
    output = out.root / ".tflite-worker.out"
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=out.root, prefix=".partial-") as t, \
            concurrent.futures.ProcessPoolExecutor(
                1, mp_context=context, initializer=_worker_init,
                initargs=(str(output),)) as pool:
        work = Path(t)
        future = pool.submit(_tflite_lane, str(config), checkpoint, str(work / "lane"),
                             str(out.root), theirs, max_detections, calibration_count,
                             regular_nms)
        try:
            if tf_formats:
                artefacts.update(write_tf_formats(configs, checkpoint, out.root, formats,
                                                  input_type, work, ready))
            meta = {}
            if ours:
                graph = work / "lane" / "tflite_graph"
                _wait_for_trace(graph, future)
                scale, offset = json.loads((work / "lane" / NORMALISATION).read_text())
                normalisation = (scale, offset)
                quantization = quantization_of(checkpoint)
                for variant in ours:
                    path, meta[path.name] = convert_tflite(
                        configs, graph / "saved_model", out.root, variant, max_detections,
                        calibration_count, normalisation, quantization)
                    artefacts[names[variant]] = path
            done, records = future.result()
        except RuntimeError as exc:
            raise ExportError(f"TFLite export failed: {exc}", where="the TFLite worker",
                              fix=f"see {out.log}") from None
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            raise
        finally:
            _append_output(output, out)
    for record in records:  # as if logged here (so only at the levels enabled here)
        logger = logging.getLogger(record["name"])
        if logger.isEnabledFor(record["levelno"]):
            logger.handle(logging.makeLogRecord(record))
    for variant, (path, entry) in done.items():
        artefacts[names[variant]] = Path(path)
        meta[Path(path).name] = entry
    write_tflite_meta(out.root, meta)
    for variant in variants:
        ready(names[variant], artefacts[names[variant]])
    return {f: artefacts[f] for f in formats}


def _append_output(output: Path, out: ExportDir) -> None:
    """The worker's terminal output, appended to ``export.log``, then removed."""
    if not output.is_file():
        return
    text = output.read_text(errors="replace")
    output.unlink()
    if text.strip():
        with open(out.log, "a") as f:
            f.write("--- TFLite worker's own output (C++ libraries) ---\n" + text)
