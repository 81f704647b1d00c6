"""Dataset preparation: annotations -> checked records -> split, sharded TFRecords + label map.

Data flows one way: a reader turns annotation files into :class:`Record` objects
(pixels, class names), :func:`check_records` drops and counts what cannot be
used, :func:`split_records` assigns splits, and :func:`write_tfrecords` writes
the OD API's own feature keys (as ``create_pascal_tf_record`` writes them).
Everything a later stage needs is on disk under ``data/<name>/``:
``<split>-00000-of-000NN.tfrecord``, ``label_map.pbtxt`` and ``manifest.json``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

from tfod.annotations import (  # noqa: F401  (re-exported: data.read_voc etc.)
    CLIP_TOLERANCE, FORMATS, IMAGE_SUFFIXES, READERS, Box, Record, Report, read_coco,
    read_csv, read_voc, read_yolo)
from tfod.checks import (  # noqa: F401
    MAX_PIXELS, check_records, default_workers, inspect_image, map_images)
from tfod.errors import DatasetError
from tfod.files import (check_name, check_owned, is_owned, mark_owned, marker,
                        write_text_atomic)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Split, label map
# --------------------------------------------------------------------------- #
def _rarest_class(record: Record, frequency: Counter) -> str:
    names = {b.name for b in record.boxes}
    return min(names, key=lambda n: (frequency[n], n)) if names else ""


def split_records(records: list[Record], ratios: dict[str, float], seed: int = 0,
                  keep_own_split: bool = True, stratify: bool = True
                  ) -> dict[str, list[Record]]:
    """Assign records to splits: the dataset's own, or seeded by ratios.

    Stratified: images are grouped by the rarest class they contain and each
    group, rarest first, is dealt out by the ratios (to the split furthest behind
    its share, in the group and overall), so every class reaches every split
    when it has at least as many images as there are splits. Images without
    boxes form a group of their own. The result depends only on the records and
    the seed.

    Example:
        >>> splits = split_records(records, {"train": 0.8, "val": 0.2}, seed=1)
    """
    if keep_own_split and records and all(r.split for r in records):
        out: dict[str, list[Record]] = {}
        for record in sorted(records, key=lambda r: str(r.image_path)):
            out.setdefault(record.split, []).append(record)
        return out
    bad = [f"{k}={v}" for k, v in ratios.items() if not v >= 0]
    total = sum(v for v in ratios.values() if v >= 0)
    if bad or total <= 0:
        raise DatasetError(f"bad split ratios {', '.join(bad) or ratios}", where="--split",
                           fix="give non-negative ratios like train=0.8,val=0.2")
    share = {k: v / total for k, v in ratios.items() if v > 0}
    frequency = Counter(b for r in records for b in {x.name for x in r.boxes})
    groups: dict[str, list[Record]] = {}
    for record in sorted(records, key=lambda r: str(r.image_path)):
        key = _rarest_class(record, frequency) if stratify else ""
        groups.setdefault(key, []).append(record)
    rng = random.Random(seed)
    out = {name: [] for name in ratios}
    overall: Counter = Counter()
    for key in sorted(groups, key=lambda g: (len(groups[g]), g)):  # rarest first
        group = groups[key]
        rng.shuffle(group)
        assigned: Counter = Counter()
        for k, record in enumerate(group):
            empty = [s for s in share if not assigned[s]]
            if len(group) >= len(share) and len(group) - k <= len(empty):
                name = empty[0]  # the last images of the group reach the empty splits
            else:  # the split most behind its share, in this group and overall
                done = sum(overall.values())
                name = max(share, key=lambda s: (
                    round(share[s] * (k + 1) - assigned[s] + share[s] * (done + 1)
                          - overall[s], 9), share[s]))
            assigned[name] += 1
            overall[name] += 1
            record.split = name
            out[name].append(record)
    return out


#: First line of every label map tfod writes: ``prepare`` overwrites ``label_maps/<name>.pbtxt``
#: only when it starts with this line (or is the copy of the dataset it replaces).
LABEL_MAP_HEADER = "# written by tfod: tfod overwrites this file only while this line is first\n"


def write_label_map(classes: Sequence[str], path: str | Path) -> Path:
    """Write a label map with ids 1..N in the given order (0 is the background), under
    :data:`LABEL_MAP_HEADER`.

    Example:
        >>> write_label_map(["cat", "dog"], "label_maps/pets.pbtxt")
    """
    from google.protobuf import text_format

    import tfod  # noqa: F401  (compat hook for the proto modules)
    from object_detection.protos import string_int_label_map_pb2

    label_map = string_int_label_map_pb2.StringIntLabelMap()
    for i, name in enumerate(classes, 1):
        label_map.item.add(id=i, name=name, display_name=name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, LABEL_MAP_HEADER + text_format.MessageToString(label_map))
    return path


def read_label_map(path: str | Path) -> list[str]:
    """Class names ordered by id, read with the OD API's own parser.

    Refuses (naming the file) what the OD API would misread: text that is not a
    label map, ids not 1..N, empty or repeated names.

    Example:
        >>> read_label_map("label_maps/pets.pbtxt")
        ['cat', 'dog']
    """
    from google.protobuf import message, text_format
    from object_detection.utils import label_map_util

    path = Path(path)
    if not path.is_file():
        raise DatasetError("label map not found", where=str(path), fix="check the path")
    try:
        items = label_map_util.load_labelmap(str(path)).item
    except (text_format.ParseError, message.DecodeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DatasetError(f"not a readable label map ({reason})", where=str(path),
                           fix="write items like: item { id: 1 name: 'cat' }") from None
    names = [item.name for item in items]
    ids = sorted(item.id for item in items)
    if ids != list(range(1, len(ids) + 1)):
        raise DatasetError(f"label ids are {ids}, not 1..{len(ids)}", where=str(path),
                           fix="number the items 1, 2, ... without gaps (0 is background)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if "" in names or repeated:
        raise DatasetError(f"empty or repeated class names {repeated or ['']}", where=str(path),
                           fix="give every item its own non-empty name")
    return [item.name for item in sorted(items, key=lambda item: item.id)]


# --------------------------------------------------------------------------- #
# TFRecords
# --------------------------------------------------------------------------- #
def _encoded_image(record: Record) -> tuple[bytes, int, int]:
    """JPEG bytes passed through unchanged (RGB or greyscale, not rotated); other
    formats, CMYK/RGBA and EXIF-rotated images encoded once as RGB JPEG, so the
    model sees what the annotator saw."""
    from PIL import Image, ImageOps

    info = record.image if record.image is not None else inspect_image(record.image_path)
    if isinstance(info, str):
        raise DatasetError(f"unreadable image ({info})", where=str(record.image_path),
                           fix="run the checks (prepare_dataset) before writing")
    raw = record.image_path.read_bytes()
    if info.passthrough:
        return raw, info.width, info.height
    with Image.open(io.BytesIO(raw)) as img:
        if info.rotate:
            img = ImageOps.exif_transpose(img)
        img = img.convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        return buf.getvalue(), img.width, img.height


def _sha256(record: Record, encoded: bytes) -> str:
    info = record.image
    if info is not None and not isinstance(info, str) and info.passthrough:
        return info.sha256  # the checks hashed these very bytes
    return hashlib.sha256(encoded).hexdigest()


def record_to_example(record: Record, class_ids: dict[str, int]) -> bytes:
    """A serialised ``tf.train.Example`` with the keys ``create_pascal_tf_record``
    writes (plus ``image/object/is_crowd``); built without TensorFlow
    (:mod:`tfod.tfrecord`)."""
    from tfod.tfrecord import example

    encoded, width, height = _encoded_image(record)
    boxes = record.boxes
    name = record.image_path.name.encode()
    return example({
        "image/height": [height],
        "image/width": [width],
        "image/filename": [name],
        "image/source_id": [name],
        "image/key/sha256": [_sha256(record, encoded).encode()],
        "image/encoded": [encoded],
        "image/format": [b"jpeg"],
        "image/object/bbox/xmin": [b.xmin / width for b in boxes],
        "image/object/bbox/xmax": [b.xmax / width for b in boxes],
        "image/object/bbox/ymin": [b.ymin / height for b in boxes],
        "image/object/bbox/ymax": [b.ymax / height for b in boxes],
        "image/object/class/text": [b.name.encode() for b in boxes],
        "image/object/class/label": [class_ids[b.name] for b in boxes],
        "image/object/difficult": [int(b.difficult) for b in boxes],
        "image/object/truncated": [int(b.truncated) for b in boxes],
        "image/object/view": [b.pose.encode() for b in boxes],
        "image/object/is_crowd": [int(b.crowd) for b in boxes],
    })


def num_shards_for(records: Sequence[Record], shard_size_mb: float) -> int:
    """Shards for a split so that each holds about ``shard_size_mb`` of image bytes."""
    size = sum(r.image_path.stat().st_size for r in records)
    return max(1, min(len(records), math.ceil(size / (shard_size_mb * 2**20))))


def write_tfrecords(records: Sequence[Record], out_dir: str | Path, split: str,
                    class_ids: dict[str, int], num_shards: int = 1,
                    workers: int | None = None, progress: bool = False) -> list[Path]:
    """Write ``<split>-0000i-of-0000N.tfrecord`` shards.

    Examples are built in ``workers`` processes and written here in record
    order (image ``i`` goes to shard ``i % N``), so the output does not depend
    on the number of workers. Each shard is written under a temporary name and
    renamed when complete.

    Example:
        >>> write_tfrecords(records, "data/pets", "train", {"cat": 1}, num_shards=2)
    """
    from tfod.tfrecord import TFRecordWriter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, min(num_shards, len(records) or 1))
    finals = [out_dir / f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord"
              for i in range(num_shards)]
    tmps = [f.with_name(f".{f.name}.partial") for f in finals]
    writers = [TFRecordWriter(t) for t in tmps]
    workers = default_workers(len(records)) if workers is None else workers
    serialize = functools.partial(record_to_example, class_ids=dict(class_ids))
    examples = map_images(serialize, list(records), workers, chunksize=8)
    if progress:
        from tqdm import tqdm

        examples = tqdm(examples, total=len(records), desc=f"write {split}", unit="img",
                        leave=False)
    try:
        for i, example in enumerate(examples):
            writers[i % num_shards].write(example)
    finally:
        for writer in writers:
            writer.close()
    for tmp, final in zip(tmps, finals):
        os.replace(tmp, final)
    return finals


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
        manifest = json.loads((folder / "manifest.json").read_text())
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
            and text == (dataset / "label_map.pbtxt").read_text())
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

    from tfod.stats import plot_stats

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


def prepare_dataset(source: str | Path, name: str, fmt: str = "voc",
                    out_root: str | Path = "data", label_map_dir: str | Path = "label_maps",
                    split: dict[str, float] | None = None, seed: int = 0,
                    classes: Sequence[str] | None = None, strict: bool = False,
                    shard_size_mb: float = 100.0, image_dir: str | Path | None = None,
                    label_map: str | Path | None = None, check_only: bool = False,
                    workers: int | None = None, stratify: bool = True,
                    plots: bool = True, progress: bool = False,
                    columns: dict[str, str] | None = None, allow_outside: bool = False,
                    max_pixels: int = MAX_PIXELS, decode: str = "auto") -> dict:
    """Annotations -> checked, split, sharded TFRecords + label map + manifest + stats.

    Every problem is counted and reported; invalid boxes and unusable images
    are dropped (``strict=True``: nothing is written if there is any problem).
    ``label_map`` (an existing .pbtxt) fixes the classes and their ids; boxes of
    other classes are problems. ``check_only`` reads and checks, and writes
    nothing. ``columns`` maps CSV columns (see :func:`read_csv`). Images named by a
    path outside the dataset folders are refused unless ``allow_outside``; images
    over ``max_pixels`` are refused before decoding; ``decode="always"`` decodes
    every image instead of checking pass-through JPEGs' structure
    (:func:`tfod.checks.inspect_image`). Output goes to a temporary folder renamed to ``<out_root>/<name>``
    at the end, so an interrupted run leaves no folder that looks complete.
    ``name`` must be a plain folder name (:func:`tfod.files.check_name`), checked first;
    an existing ``<out_root>/<name>`` is replaced only when tfod wrote it (it holds
    :data:`MARKER`), otherwise nothing is written and nothing deleted.

    Example:
        >>> prepare_dataset("data/raw/voc", name="shapes", fmt="voc")
    """
    from tfod.stats import dataset_stats, stats_table

    start = time.time()
    check_name(name, "--name", DatasetError)  # before anything touches the disk
    if not check_only:
        _check_replaceable(Path(out_root) / name)
        _check_label_map(Path(label_map_dir) / f"{name}.pbtxt", Path(out_root) / name,
                         label_map)
    if fmt not in READERS:
        raise DatasetError(f"unknown format {fmt!r}", where="--format",
                           fix=f"use one of: {', '.join(sorted(READERS))}")
    log.info("prepare: reading %s annotations from %s", fmt, source)
    report = Report()
    extra = {"columns": columns} if fmt == "csv" and columns else {}
    records = READERS[fmt](source, report, image_dir=image_dir, allow_outside=allow_outside,
                           **extra)
    fixed = read_label_map(label_map) if label_map is not None else classes
    if fixed is not None:
        log.info("prepare: classes fixed by %s: %s", label_map or "--classes", ", ".join(fixed))
    records = check_records(records, report, fixed, workers=workers, progress=progress,
                            max_pixels=max_pixels, decode=decode)
    names = _choose_classes(records, report, fixed)
    if split and records and all(r.split for r in records):
        log.info("prepare: --split given: the dataset's own split is replaced")
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
    if check_only:
        return {"report": report.as_dict(), "stats": stats, "classes": names,
                "ok": not report.problems}
    if strict and report.problems:
        raise DatasetError("problems found with --strict:\n" + "\n".join(report.lines()),
                           where=str(source), fix="fix the files or drop --strict")
    if not records:
        raise DatasetError("no usable images", where=str(source),
                           fix="check the report above and the --format")
    class_ids = {n: i for i, n in enumerate(names, 1)}

    out_root = Path(out_root)
    final_dir = out_root / name
    out_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_root, name)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=out_root))
    tmp_dir.chmod(0o755)
    mark_owned(tmp_dir, "dataset")
    plotter = None
    try:
        (tmp_dir / "stats.json").write_text(json.dumps(stats, indent=2))
        (tmp_dir / "report.json").write_text(json.dumps(report.as_dict(), indent=2))
        plotter = _start_plots(stats, splits, tmp_dir / "stats") if plots else None
        write_label_map(names, tmp_dir / "label_map.pbtxt")
        shards = {}
        for split_name, split_records_ in splits.items():
            if not split_records_:
                continue
            num = num_shards_for(split_records_, shard_size_mb)
            paths = write_tfrecords(split_records_, tmp_dir, split_name, class_ids, num,
                                    workers=workers, progress=progress)
            shards[split_name] = [p.name for p in paths]
        manifest = {
            "name": name, "format": fmt, "source": str(Path(source).resolve()),
            "classes": names,
            "splits": {s: {"images": len(rs), "boxes": Counter(b.name for r in rs
                                                                for b in r.boxes),
                           "shards": shards[s],
                           "pattern": f"{s}-?????-of-{len(shards[s]):05d}.tfrecord"}
                       for s, rs in splits.items() if rs},
            "problems": dict(report.problems),
            "notes": dict(report.notes),
            "fingerprint": _fingerprint(records),
            "seed": seed,
        }
        if plotter is not None:
            plotter.join()
            if plotter.exitcode != 0:
                log.warning("prepare: the statistics plots failed (exit %s); the data is "
                            "complete, stats.json has the numbers", plotter.exitcode)
        (tmp_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _replace_dir(tmp_dir, final_dir)
    except BaseException:
        if plotter is not None and plotter.is_alive():
            plotter.terminate()
            plotter.join()
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    label_map_out = Path(label_map_dir) / f"{name}.pbtxt"
    if not _is_given(label_map_out, label_map):  # --label-map is kept as it is
        write_label_map(names, label_map_out)
    counts = ", ".join(f"{s}={len(rs)}" for s, rs in splits.items())
    dropped = sum(report.problems.values())
    log.info("prepare: wrote %s (%s images; %d classes; %d problems) and %s in %.1fs",
             final_dir, counts, len(names), dropped, label_map_out, time.time() - start)
    return {"dir": str(final_dir), "label_map": str(label_map_out), "manifest": manifest,
            "stats": stats, "report": report.as_dict()}


def split_pattern(data_dir: str | Path, split: str) -> str:
    """The input path glob for one split of a prepared dataset."""
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    if split not in manifest["splits"]:
        raise DatasetError(f"no split {split!r}", where=str(Path(data_dir) / "manifest.json"),
                           fix=f"use one of: {', '.join(manifest['splits'])}")
    return str(Path(data_dir).resolve() / manifest["splits"][split]["pattern"])
