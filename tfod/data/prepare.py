"""Dataset preparation: annotations -> checked records -> split, sharded TFRecords + label map.

Data flows one way: a reader turns annotation files into :class:`Record` objects
(pixels, class names), :func:`check_records` drops and counts what cannot be
used, :func:`split_records` assigns splits, and :func:`write_tfrecords` writes
the OD API's own feature keys (as ``create_pascal_tf_record`` writes them).
Everything a later stage needs is on disk under ``data/<name>/``:
``<split>-00000-of-000NN.tfrecord``, ``label_map.pbtxt`` and ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

from tfod.data.annotations import Record, Report
from tfod.data.readers import READER_OPTIONS, READERS
from tfod.data.checks import MAX_PIXELS, check_records
from tfod.data.labelmap import LABEL_MAP_HEADER, read_label_map, write_label_map
from tfod.data.shards import num_shards_for, write_tfrecords
from tfod.data.split import split_records
from tfod.errors import DatasetError
from tfod.files import check_name, check_owned, is_owned, mark_owned, marker
from tfod.layout import DatasetDir, stage_log

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Split, label map
# --------------------------------------------------------------------------- #
# --------------------------------------------------------------------------- #
# TFRecords
# --------------------------------------------------------------------------- #
def _fingerprint(records: Sequence[Record]) -> str:
    """sha256 over every image's bytes (hashed once by the checks) and its boxes."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: str(r.image_path)):
        digest.update((record.image.sha256 if record.image else "").encode())
        for b in record.boxes:
            digest.update(f"{b.name},{b.xmin},{b.ymin},{b.xmax},{b.ymax}".encode())
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: Written into every folder ``prepare`` creates; a folder without it is never replaced or
#: deleted (``--name`` of a folder the user made, or one another tool wrote).
MARKER = marker("dataset")


def _before_marker(folder: Path) -> bool:
    """A folder prepared by a tfod from before :data:`MARKER`: its ``manifest.json`` names
    this very folder and holds a data fingerprint."""
    try:
        manifest = json.loads(DatasetDir(folder).manifest.read_text())
        return manifest.get("name") == folder.name and "fingerprint" in manifest
    except (OSError, ValueError, AttributeError):
        return False


def _check_replaceable(final: Path) -> None:
    check_owned(final, "dataset", DatasetError, legacy=_before_marker,
                fix="choose another --name or --out-root, or move that folder away")


def _is_given(path: Path, given) -> bool:
    """``path`` is the very file passed as ``--label-map``."""
    return (given is not None and path.is_file() and Path(given).is_file()
            and path.samefile(given))


def _label_map_is_ours(path: Path, dataset: Path, given) -> bool:
    """``label_maps/<name>.pbtxt`` may be (over)written: absent, the ``--label-map`` itself
    (then left as it is), or written by tfod (:data:`LABEL_MAP_HEADER`, or, from before
    the header, the same text as the dataset folder's copy that ``prepare`` replaces)."""
    if not (path.exists() or path.is_symlink()):
        return True
    if _is_given(path, given):
        return True
    if path.is_symlink() or not path.is_file():
        return False
    try:
        text = path.read_text()
        return text.startswith(LABEL_MAP_HEADER) or (
            is_owned(dataset, "dataset", _before_marker)
            and text == DatasetDir(dataset).label_map.read_text())
    except (OSError, UnicodeDecodeError):
        return False


def _check_label_map(path: Path, dataset: Path, given) -> None:
    if not _label_map_is_ours(path, dataset, given):
        raise DatasetError("label map exists and was not written by tfod: it is left as it is",
                           where=str(path),
                           fix="choose another --name or --label-maps DIR, move that file "
                               "away, or pass it as --label-map FILE to use its classes")


def _remove_stale_partials(out_root: Path, name: str) -> None:
    """Delete what killed runs left: ``.<name>.partial-<pid>-*`` and ``.<name>.old-<pid>``
    folders whose process is gone and that hold :data:`MARKER` (an unmarked one is removed
    only when empty). (They never look complete: hidden, no final name.)"""
    for path in list(out_root.glob(f".{name}.partial-*")) + list(out_root.glob(f".{name}.old-*")):
        pid = path.name.rsplit(".", 1)[-1].split("-")[1]
        if pid.isdigit() and not _pid_alive(int(pid)) and not path.is_symlink():
            if is_owned(path, "dataset"):
                log.info("prepare: removing %s, left by an interrupted run", path)
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def _replace_dir(new: Path, final: Path) -> None:
    """Put ``new`` in place of ``final``: at every moment ``final`` is the old complete
    folder, absent, or the new complete folder. A ``final`` tfod did not write is refused
    (:class:`DatasetError`) and left untouched."""
    _check_replaceable(final)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    try:
        if final.exists():
            os.replace(final, old)
        os.replace(new, final)
    finally:  # also on Ctrl-C, here or while cleaning: never leave the old copy behind
        interrupted = None
        for _ in range(3):  # a second Ctrl-C while cleaning gets another try
            if not old.exists():
                break
            try:
                if final.exists():
                    shutil.rmtree(old, ignore_errors=True)
                else:  # stopped between the two renames: the old folder goes back
                    os.replace(old, final)
            except KeyboardInterrupt as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted


def _start_plots(stats: dict, splits: dict, out_dir: Path):
    """Draw the statistics plots in a child process, while this one writes records."""
    import multiprocessing

    from tfod.data.stats import plot_stats

    process = multiprocessing.get_context("fork").Process(
        target=plot_stats, args=(stats, splits, out_dir), daemon=True)
    process.start()
    return process


def _choose_classes(records: Sequence[Record], report: Report, classes) -> list[str]:
    """The label map's classes, in id order: given (label map / list), else as the
    source declares them (YOLO names, COCO categories by id), else sorted by name.
    Declared classes without any box are left out and noted."""
    if classes:
        return list(classes)
    seen = {b.name for r in records for b in r.boxes}
    declared = [c for c in (report.classes or []) if c in seen]
    for name in (report.classes or []):
        if name not in seen:
            report.note(f"declared class without boxes left out of the label map: {name}")
    return declared + sorted(seen - set(declared))


def parse_sources(source, fmt: str) -> list[tuple[str, Path]]:
    """``(format, path)`` of each source: ``source`` is one path or a list of them, each a
    path (read as ``fmt``), ``"<format>:<path>"`` (``coco:ann.json``; a path that exists
    as written is taken as a path) or a ``(format, path)`` pair."""
    items = [source] if isinstance(source, (str, Path)) else list(source)
    if not items:
        raise DatasetError("no source given", where="source", fix="name a dataset to read")
    out = []
    for item in items:
        if isinstance(item, tuple):
            out.append((item[0], Path(item[1])))
            continue
        text = str(item)
        head, sep, rest = text.partition(":")
        if sep and head in READERS and rest and not Path(text).exists():
            out.append((head, Path(rest)))
        else:
            out.append((fmt, Path(text)))
    for kind, _ in out:
        if kind not in READERS:
            raise DatasetError(f"unknown format {kind!r}", where="--format",
                               fix=f"use one of: {', '.join(sorted(READERS))}")
    return out


def _merge_report(report: Report, part: Report) -> None:
    """Add one source's counts and examples to the whole dataset's report."""
    report.problems.update(part.problems)
    report.notes.update(part.notes)
    for kind, examples in part.examples.items():
        kept = report.examples.setdefault(kind, [])
        kept.extend(examples[:max(0, 20 - len(kept))])
    if part.classes is not None:
        report.classes = (report.classes or []) + [c for c in part.classes
                                                   if c not in (report.classes or [])]


def _rename(records: list[Record], report: Report, rename: dict[str, str]) -> None:
    """``--rename old=new``: class names changed in every box and in the declared order
    (two old names may become one). A name no source has is an error, not a no-op."""
    found = {b.name for r in records for b in r.boxes} | set(report.classes or [])
    unknown = sorted(set(rename) - found)
    if unknown:
        raise DatasetError(f"no class {', '.join(map(repr, unknown))} in the sources (their "
                           f"classes: {', '.join(sorted(found)) or 'none'})", where="--rename",
                           fix="rename classes the sources have (old=new, names as they are "
                               "written)")
    for record in records:
        for box in record.boxes:
            box.name = rename.get(box.name, box.name)
    if report.classes is not None:
        renamed = [rename.get(c, c) for c in report.classes]
        report.classes = [c for i, c in enumerate(renamed) if c not in renamed[:i]]
    for old, new in sorted(rename.items()):
        log.info("prepare: class %r renamed %r", old, new)


def _read_and_check(sources: list[tuple[str, Path]], report: Report, image_dir,
                    allow_outside: bool, columns, label_map, classes, workers, progress: bool,
                    max_pixels: int, decode: str, reader_options: dict | None = None,
                    rename: dict[str, str] | None = None) -> tuple[list[Record], list[str]]:
    """The records the readers make of the ``sources`` (each record's ``origin`` its source's
    index), renamed, checked (problems counted in ``report``), and the class names in id
    order."""
    if image_dir is not None and len(sources) > 1:
        raise DatasetError("--images applies to one source", where="--images",
                           fix="prepare the sources with their images beside them, or one "
                               "source at a time")
    given = {"columns": columns, "label_map": label_map, **(reader_options or {})}
    records: list[Record] = []
    for index, (fmt, source) in enumerate(sources):
        log.info("prepare: reading %s annotations from %s", fmt, source)
        extra = {k: given[k] for k in READER_OPTIONS.get(fmt, ()) if given.get(k) is not None}
        part = Report()
        found = READERS[fmt](source, part, image_dir=image_dir, allow_outside=allow_outside,
                             **extra)
        for record in found:
            record.origin = index
        if len(sources) > 1:
            log.info("prepare: %s: %d images, %d boxes", source, len(found),
                     sum(len(r.boxes) for r in found))
        _merge_report(report, part)
        records += found
    if rename:
        _rename(records, report, rename)
    fixed = read_label_map(label_map) if label_map is not None else classes
    if fixed is not None:
        log.info("prepare: classes fixed by %s: %s", label_map or "--classes", ", ".join(fixed))
    records = check_records(records, report, fixed, workers=workers, progress=progress,
                            max_pixels=max_pixels, decode=decode)
    return records, _choose_classes(records, report, fixed)


def _split_and_count(records: list[Record], report: Report, names: list[str], split,
                     seed: int, stratify: bool) -> tuple[dict, dict]:
    """Splits of the records and their statistics, logged with the report."""
    from tfod.data.stats import dataset_stats, stats_table

    if split and records and all(r.split for r in records):
        log.info("prepare: --split given: the dataset's own split is replaced")
    own = sum(bool(r.split) for r in records)
    if not split and 0 < own < len(records):
        report.note(f"{own} of {len(records)} images have a split of their own (the others, "
                    "e.g. another source's, have none): all are split by ratio")
    splits = split_records(records, split or {"train": 0.8, "val": 0.2}, seed,
                           keep_own_split=not split, stratify=stratify)
    if not {"val", "test"} & {s for s, rs in splits.items() if rs}:
        log.warning("prepare: no val or test split: evaluation needs one; "
                    "pass --split train=0.8,val=0.2 to make one")
    stats = dataset_stats(splits, names)
    log.info("prepare: %d usable images\n%s", len(records), stats_table(stats))
    for line in report.lines():
        log.warning("prepare: %s", line)
    for kind, count in sorted(report.notes.items()):
        log.info("prepare: note: %s: %d", kind, count)
    return splits, stats


def _sources_manifest(sources: list[tuple[str, Path]], records: list[Record]) -> dict:
    """The manifest's ``sources`` (format, path, usable images and boxes of each) and, for
    a merge, ``origins``: each image's source index."""
    out = {"sources": [{"format": fmt, "path": str(path.resolve()),
                        "images": sum(r.origin == i for r in records),
                        "boxes": sum(len(r.boxes) for r in records if r.origin == i)}
                       for i, (fmt, path) in enumerate(sources)]}
    if len(sources) > 1:  # by the image's real path, or its annotation for embedded ones
        out["origins"] = dict(sorted((_image_key(r), r.origin) for r in records))
    return out


def _image_key(record: Record) -> str:
    from tfod.data.annotations import _inside, embedded_root

    if _inside(record.image_path, embedded_root()):
        return record.source
    return os.path.realpath(record.image_path)


def _write_dataset(folder: Path, name: str, sources: list[tuple[str, Path]],
                   records: list[Record], splits: dict, stats: dict, report: Report,
                   names: list[str], seed: int, shard_size_mb: float, workers, progress: bool, plots: bool) -> dict:
    """Everything of ``data/<name>/`` into ``folder``; ``manifest.json`` last. Returns the
    manifest."""
    out = DatasetDir(folder)
    out.stats.write_text(json.dumps(stats, indent=2))
    out.report.write_text(json.dumps(report.as_dict(), indent=2))
    plotter = _start_plots(stats, splits, folder / "stats") if plots else None
    try:
        write_label_map(names, out.label_map)
        class_ids = {n: i for i, n in enumerate(names, 1)}
        shards = {}
        for split_name, split_records_ in splits.items():
            if split_records_:
                paths = write_tfrecords(split_records_, folder, split_name, class_ids,
                                        num_shards_for(split_records_, shard_size_mb),
                                        workers=workers, progress=progress)
                shards[split_name] = [p.name for p in paths]
        manifest = {
            "name": name, "format": "+".join(dict.fromkeys(f for f, _ in sources)),
            "source": str(sources[0][1].resolve()),
            "classes": names,
            "splits": {s: {"images": len(rs), "boxes": Counter(b.name for r in rs
                                                                for b in r.boxes),
                           "shards": shards[s],
                           "pattern": Path(out.pattern(s, len(shards[s]))).name}
                       for s, rs in splits.items() if rs},
            "problems": dict(report.problems), "notes": dict(report.notes),
            "fingerprint": _fingerprint(records), "seed": seed,
            **_sources_manifest(sources, records),
        }
        if plotter is not None:
            plotter.join()
            if plotter.exitcode != 0:
                log.warning("prepare: the statistics plots failed (exit %s); the data is "
                            "complete, stats.json has the numbers", plotter.exitcode)
    finally:
        if plotter is not None and plotter.is_alive():
            plotter.terminate()
            plotter.join()
    out.manifest.write_text(json.dumps(manifest, indent=2))
    return manifest


def _work_folder(out_root: Path, name: str) -> Path:
    """A fresh, marked ``.<name>.partial-<pid>-*`` folder in ``out_root`` (stale ones of
    dead processes removed first)."""
    out_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_root, name)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=out_root))
    tmp_dir.chmod(0o755)
    mark_owned(tmp_dir, "dataset")
    return tmp_dir


def prepare_dataset(source: str | Path | Sequence, name: str, fmt: str = "voc",
                    out_root: str | Path = "data", label_map_dir: str | Path = "label_maps",
                    split: dict[str, float] | None = None, seed: int = 0,
                    classes: Sequence[str] | None = None, strict: bool = False,
                    shard_size_mb: float = 100.0, image_dir: str | Path | None = None,
                    label_map: str | Path | None = None, check_only: bool = False,
                    workers: int | None = None, stratify: bool = True,
                    plots: bool = True, progress: bool = False,
                    columns: dict[str, str] | None = None, allow_outside: bool = False,
                    max_pixels: int = MAX_PIXELS, decode: str = "auto", *,
                    polygons_as_boxes: bool = False,
                    rename: dict[str, str] | None = None) -> dict:
    """Annotations -> checked, split, sharded TFRecords + label map + manifest + stats.

    ``source`` is one dataset or a list of them merged into one (:func:`parse_sources`:
    ``"coco:a.json"`` gives a source its own format, others are read as ``fmt``);
    ``rename`` (``{old: new}``) renames classes before the label map is built, so sources
    that name a class differently agree. The manifest lists the sources and, for a
    merge, each image's source (``origins``). Images in two sources are the checks'
    duplicates (same bytes: kept once, counted).
    Every problem is counted and reported; invalid boxes and unusable images
    are dropped (``strict=True``: nothing is written if there is any problem).
    ``label_map`` (an existing .pbtxt) fixes the classes and their ids; boxes of
    other classes are problems. ``check_only`` reads and checks, and writes
    nothing. ``columns`` maps CSV columns (see :func:`read_csv`). Images named by a
    path outside the dataset folders are refused unless ``allow_outside``; images
    over ``max_pixels`` are refused before decoding; ``decode="always"`` decodes
    every image instead of checking pass-through JPEGs' structure
    (:func:`tfod.data.checks.inspect_image`). ``polygons_as_boxes`` (CVAT, LabelMe) turns
    polygons into their bounding boxes instead of counting them as left out. Output goes
    to a temporary folder renamed to ``<out_root>/<name>`` at the end, so an interrupted
    run leaves no folder that looks complete; the folder holds the stage's log,
    ``prepare.log``.
    ``name`` must be a plain folder name (:func:`tfod.files.check_name`), checked first;
    an existing ``<out_root>/<name>`` is replaced only when tfod wrote it (it holds
    :data:`MARKER`), otherwise nothing is written and nothing deleted.

    Example:
        >>> prepare_dataset("data/raw/voc", name="shapes", fmt="voc")
    """
    start = time.time()
    check_name(name, "--name", DatasetError)  # before anything touches the disk
    sources = parse_sources(source, fmt)
    where = " + ".join(str(path) for _, path in sources)
    options = dict(image_dir=image_dir, allow_outside=allow_outside, columns=columns,
                   label_map=label_map, classes=classes, workers=workers, progress=progress,
                   max_pixels=max_pixels, decode=decode,
                   reader_options={"polygons_as_boxes": polygons_as_boxes or None},
                   rename=rename)
    report = Report()
    if check_only:  # reads and checks, writes nothing (no log file either)
        records, names = _read_and_check(sources, report, **options)
        _, stats = _split_and_count(records, report, names, split, seed, stratify)
        return {"report": report.as_dict(), "stats": stats, "classes": names,
                "ok": not report.problems}
    out_root, final_dir = Path(out_root), Path(out_root) / name
    label_map_out = Path(label_map_dir) / f"{name}.pbtxt"
    _check_replaceable(final_dir)
    _check_label_map(label_map_out, final_dir, label_map)
    with stage_log(None, "prepare") as stage:  # into the folder once it exists
        records, names = _read_and_check(sources, report, **options)
        splits, stats = _split_and_count(records, report, names, split, seed, stratify)
        if strict and report.problems:
            raise DatasetError("problems found with --strict:\n" + "\n".join(report.lines()),
                               where=where, fix="fix the files or drop --strict")
        if not records:
            raise DatasetError("no usable images", where=where,
                               fix="check the report above and the --format")
        try:
            tmp_dir = _work_folder(out_root, name)
            stage.attach(tmp_dir)
            manifest = _write_dataset(tmp_dir, name, sources, records, splits, stats,
                                      report, names, seed, shard_size_mb, workers, progress,
                                      plots)
            log.info("prepare: %s complete (%s images; %d classes; %d problems) in %.1fs",
                     final_dir, ", ".join(f"{s}={len(rs)}" for s, rs in splits.items()),
                     len(names), sum(report.problems.values()), time.time() - start)
            stage.close()  # the log is complete before the folder gets its final name
            _replace_dir(tmp_dir, final_dir)
        except BaseException:  # this process's work folders, whenever Ctrl-C came
            for partial in out_root.glob(f".{name}.partial-{os.getpid()}-*"):
                shutil.rmtree(partial, ignore_errors=True)
            raise
    if not _is_given(label_map_out, label_map):  # --label-map is kept as it is
        write_label_map(names, label_map_out)
    log.info("prepare: wrote %s and %s", final_dir, label_map_out)
    return {"dir": str(final_dir), "label_map": str(label_map_out), "manifest": manifest,
            "stats": stats, "report": report.as_dict()}


def split_pattern(data_dir: str | Path, split: str) -> str:
    """The input path glob for one split of a prepared dataset."""
    manifest = json.loads(DatasetDir(data_dir).manifest.read_text())
    if split not in manifest["splits"]:
        raise DatasetError(f"no split {split!r}", where=str(DatasetDir(data_dir).manifest),
                           fix=f"use one of: {', '.join(manifest['splits'])}")
    return str(Path(data_dir).resolve() / manifest["splits"][split]["pattern"])
