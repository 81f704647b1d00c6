"""Open Images boxes: a CSV with a row per box (``ImageID,Source,LabelName,Confidence,XMin,
XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside``, coordinates
normalised to the image) and the class descriptions (``LabelName,DisplayName``, e.g.
``/m/011k07,Tortoise``, usually without a header), images ``<ImageID>.jpg``.

The source is a boxes CSV (the descriptions are found beside it) or a folder holding both,
with one boxes CSV per split (``oidv6-train-annotations-bbox.csv``,
``validation-annotations-bbox.csv``, ...: the split is kept). Boxes CSVs are recognised by
their header, the descriptions by their name (``class-descriptions-boxable.csv``,
``oidv7-class-descriptions-boxable.csv``; a ``boxable`` one first). Images are looked for in
``image_dir``, else beside the CSV in the folder named like its split (``train/``,
``validation/``, ``test/``) or ``images/`` (also one folder up), else beside the CSV itself.

What tfod does, next to the OD API's ``oid_tfrecord_creation.py``:

* class names are the display names (upstream writes the ``LabelName`` MID as the class
  text); a ``LabelName`` missing from the descriptions is counted (``unknown class``);
* ``IsGroupOf`` becomes ``Box.crowd`` (written as ``image/object/is_crowd``; upstream writes
  ``image/object/group_of``), ``IsTruncated`` ``Box.truncated`` and ``IsOccluded``
  ``Box.occluded``: a flag is set when its value is 1 (Open Images' -1, unknown, is not
  set); ``IsDepiction`` and ``IsInside`` have no field in tfod's records;
* ``Confidence`` is ignored for boxes, as upstream does (box files hold 1 only; a 0 is
  noted); a row without coordinates is an image-level label, not a box (noted);
* every ``.jpg`` in an image folder that belongs to one CSV and that no row names is a
  negative (noted), as upstream's ``create_oid_tf_record.py`` includes every image;
* the box needs pixels, so each image's size is read from its header (as EXIF shows it,
  like the YOLO reader).
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

from tfod.data.annotations import (SPLIT_NAMES, Box, Record, Report, _find_image,
                                   _images_inside, _number, _roots, _shown_size, _split_files,
                                   problem_kind, split_from_name)
from tfod.errors import DatasetError
from tfod.layout import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

#: columns a boxes CSV must have
BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
FLAGS = {"IsOccluded": "occluded", "IsTruncated": "truncated", "IsGroupOf": "crowd"}


def _open(path: Path):
    """The file as text: UTF-8 (a BOM skipped), bytes that are not UTF-8 kept as
    surrogates so that the line holding them is reported, not the whole file."""
    try:
        return path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise DatasetError(f"cannot open ({exc.strerror})", where=str(path),
                           fix="check the path") from None


def _not_utf8(row: Sequence[str]) -> bool:
    """The row holds bytes that were not UTF-8 (decoded as surrogates by :func:`_open`)."""
    text = "".join(row)
    return not text.isascii() and any("\udc80" <= c <= "\udcff" for c in text)


def _rows(path: Path, report: Report):
    """(line, row) of a CSV, lines with bytes that are not UTF-8 counted and skipped."""
    with _open(path) as handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                if _not_utf8(row):
                    report.add("unreadable annotation", f"{path}:{reader.line_num}: not UTF-8 "
                               "text; line skipped")
                    continue
                yield reader.line_num, row
        except csv.Error as exc:
            raise DatasetError(f"not a readable CSV ({exc})", where=f"{path}:{reader.line_num}",
                               fix="repair the line or download the file again") from None


def _header(path: Path) -> list[str]:
    """The first row of a CSV (empty if it cannot be read)."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
            return [c.strip() for c in next(csv.reader([handle.readline(65536)]), [])]
    except (OSError, csv.Error):
        return []


def _is_boxes_csv(path: Path) -> bool:
    return set(BOX_COLUMNS) <= set(_header(path))


def _descriptions_file(folder: Path) -> Path:
    found = [p for p in sorted(folder.glob("*.csv"), reverse=True)
             if "class-descriptions" in p.name.lower().replace("_", "-")]
    if not found:
        raise DatasetError("no Open Images class descriptions (class-descriptions-boxable.csv) "
                           "beside the boxes CSV", where=str(folder),
                           fix="put the LabelName,DisplayName CSV of the Open Images download "
                               "beside the boxes CSV")
    found.sort(key=lambda p: "boxable" not in p.name.lower())  # stable: oidv7 before oidv6
    if len(found) > 1:
        log.info("openimages: class names from %s (also found: %s)", found[0].name,
                 ", ".join(p.name for p in found[1:]))
    return found[0]


def _descriptions(path: Path, report: Report) -> dict[str, str]:
    """LabelName (MID) -> display name; bad lines counted."""
    names: dict[str, str] = {}
    for line, row in _rows(path, report):
        cells = [c.strip() for c in row]
        if line == 1 and [c.lower() for c in cells] == ["labelname", "displayname"]:
            continue
        if not any(cells):
            continue
        if len(cells) != 2 or not cells[0] or not cells[1]:
            report.add("unreadable annotation", f"{path}:{line}: expected LabelName,"
                       f"DisplayName, two values that are not empty; got {row}")
            continue
        if cells[0] in names:
            report.note(f"LabelName described twice, the first kept: {cells[0]}")
            continue
        names[cells[0]] = cells[1]
    for name, count in Counter(names.values()).items():
        if count > 1:
            report.note(f"display name of several LabelNames (their boxes are one class): "
                        f"{name}")
    return names


def _flag(value: str, where: str, column: str) -> bool:
    """An Open Images flag: 1 is set; 0, -1 (unknown) and an empty cell are not."""
    value = value.strip()
    return bool(value) and _number(value, where, column) == 1


def _image_folders(path: Path, image_dir) -> tuple[list[Path], list[str]]:
    """Where the images of a boxes CSV are looked for, and what counts as its dataset:
    ``image_dir``, the split's folder or ``images/`` beside the CSV or one folder up, and
    the CSV's own folder. Not the folder one up itself (see ``_file_dataset``)."""
    split = split_from_name(path.stem)
    words = [w for w in path.stem.lower().replace("_", "-").split("-")
             if SPLIT_NAMES.get(w) == split] if split else []
    names = list(dict.fromkeys(words + [k for k, v in SPLIT_NAMES.items() if v == split]
                               + ["images"]))
    dirs = [Path(image_dir)] if image_dir else []
    dirs += [d for d in [path.parent / n for n in names] + [path.parent.parent / n for n in names]
             if d.is_dir()]  # looked in once per image: only those that exist
    dirs.append(path.parent)
    roots = _roots([image_dir, path.parent])
    roots += [os.path.join(os.path.realpath(path.parent.parent), n) for n in names]
    return dirs, roots


def _parse_rows(path: Path, names: dict[str, str], report: Report) -> dict[str, list]:
    """ImageID -> [(box fields in normalised coordinates, where)], in file order."""
    rows = _rows(path, report)
    first = next(rows, None)
    if first is None:
        raise DatasetError("empty file", where=str(path), fix="pass an Open Images boxes CSV")
    header = [c.strip() for c in first[1]]
    missing = [c for c in BOX_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"missing column(s) {', '.join(missing)}; the header is {header}",
                           where=str(path), fix="pass an Open Images boxes CSV (" +
                           ",".join(BOX_COLUMNS) + ",...)")
    col = {name: header.index(name) for name in header[::-1]}  # the first of a repeated name
    images: dict[str, list] = {}
    for line, row in rows:
        where = f"{path}:{line}"
        if not any(c.strip() for c in row):
            continue
        cells = {name: row[i].strip() for name, i in col.items() if i < len(row)}
        image_id = cells.get("ImageID", "")
        boxes = images.setdefault(image_id, []) if image_id else None
        try:  # a bad row loses its box; its image is still read (not made a negative)
            if boxes is None:
                raise DatasetError("no ImageID", where=where, fix="fill in the ImageID")
            if len(row) != len(header):
                raise DatasetError(f"{len(row)} values, the header has {len(header)}",
                                   where=where, fix="fix the line")
            coords = [cells[c] for c in ("XMin", "XMax", "YMin", "YMax")]
            if not any(coords):
                report.note("row without box coordinates (an image-level label), not a box")
                continue
            xmin, xmax, ymin, ymax = (_number(v, where, c) for v, c in
                                      zip(coords, ("XMin", "XMax", "YMin", "YMax")))
            flags = {field: _flag(cells.get(column, ""), where, column)
                     for column, field in FLAGS.items()}
            if cells.get("Confidence", "") not in ("", "1") and \
                    _number(cells["Confidence"], where, "Confidence") == 0:
                report.note("box row with Confidence 0, kept (as the OD API's converter does)")
        except DatasetError as exc:
            report.add("unreadable annotation", str(exc))
            if boxes is not None:
                boxes.append(None)  # the image had a box here: not a negative
            continue
        mid = cells["LabelName"]
        if mid not in names:
            report.add("unknown class", f"{where}: LabelName {mid!r} is not in the class "
                       "descriptions; add it there or remove the row")
            boxes.append(None)
            continue
        boxes.append(((mid, xmin, xmax, ymin, ymax), flags, where))
    return images


def _record(image_id: str, rows: list, names: dict[str, str], path: Path, dirs, roots,
            allow_outside: bool, report: Report) -> Record | None:
    """One image's record with its boxes in pixels, or None (counted) when it cannot be
    (also when every box row of the image was unreadable: it is not a negative)."""
    good = [r for r in rows if r is not None]
    if rows and not good:
        report.add("image without a readable box", f"{path}: every box row of {image_id} "
                   "is unreadable (counted above); the image is left out, not taken as "
                   "having no objects")
        return None
    rows = good
    where = rows[0][2] if rows else str(path)
    try:
        image = _find_image([image_id + s for s in IMAGE_SUFFIXES], dirs, allow_outside,
                            where, roots)
    except DatasetError as exc:
        report.add(problem_kind(exc), str(exc))
        return None
    record = Record(image, 0, 0, source=f"{path} ({image_id})")
    if not image.is_file():
        return record  # the checks report it missing
    try:
        record.width, record.height = _shown_size(image)
    except Exception as exc:  # PIL raises many types for broken files
        report.add("unreadable image", f"{image}: cannot read its size ({exc}); replace or "
                   "remove the file")
        return None
    w, h = record.width, record.height
    for (mid, xmin, xmax, ymin, ymax), flags, _ in rows:
        record.boxes.append(Box(names[mid], xmin * w, ymin * h, xmax * w, ymax * h, **flags))
    return record


def _read_file(path: Path, names: dict[str, str], report: Report, image_dir,
               allow_outside: bool) -> tuple[list[Record], list[Path], list[str], set[str]]:
    """The records of one boxes CSV, the folders its images are looked for in, its roots,
    and every ImageID its rows name."""
    dirs, roots = _image_folders(path, image_dir)
    records = []
    images = _parse_rows(path, names, report)
    for image_id, rows in images.items():
        record = _record(image_id, rows, names, path, dirs, roots, allow_outside, report)
        if record is not None:
            records.append(record)
    return records, dirs, roots, set(images)


def _negatives(by_file: dict[Path, tuple], named: set[str], report: Report,
               allow_outside: bool) -> list[Record]:
    """The ``.jpg`` files in each CSV's image folder that no row names, as negatives (split
    of that CSV); a folder that several CSVs share is not listed (noted)."""
    folders: dict[str, list[Path]] = defaultdict(list)
    for path, (_, dirs, roots, _) in by_file.items():
        folder = next((d for d in dirs if d.is_dir()), None)
        if folder is not None:
            folders[os.path.realpath(folder)].append(path)
    out = []
    for paths in folders.values():
        _, dirs, roots, split = by_file[paths[0]]
        folder = next(d for d in dirs if d.is_dir())
        images = sorted(p for p in folder.glob("*") if p.suffix.lower() == ".jpg"
                        and p.stem not in named and p.is_file())
        if images and len(paths) > 1:
            report.note(f"images named by no row in {folder}, which {len(paths)} CSVs share: "
                        "not read")
            continue
        for image in _images_inside(images, roots, allow_outside, report):
            report.note("image named by no Open Images row (kept as a negative)")
            out.append(Record(image, 0, 0, source=str(image), split=split))
    return out


def read_openimages(source: str | Path, report: Report | None = None,
                    image_dir: str | Path | None = None, allow_outside: bool = False
                    ) -> list[Record]:
    """Read Open Images boxes: a boxes CSV with the class descriptions beside it, or a
    folder holding both (one boxes CSV per split, each split kept).

    Class names are the descriptions' display names; ``IsGroupOf``, ``IsTruncated`` and
    ``IsOccluded`` set ``crowd``, ``truncated`` and ``occluded`` (module docstring for
    every difference from the OD API's converter). Boxes are turned into pixels with each
    image's size, read from its header. Bad lines and unknown ``LabelName`` values are
    counted with ``file:line``; images whose real path (symlinks followed) leaves the
    dataset's folders are refused unless ``allow_outside``.

    Example:
        >>> records = read_openimages("oid/validation-annotations-bbox.csv")
    """
    source = Path(source)
    report = report if report is not None else Report()
    if source.is_dir():
        found = [p for p in sorted(source.glob("*.csv")) if _is_boxes_csv(p)]
        if not found:
            raise DatasetError("no Open Images boxes CSV in the folder (a header with "
                               f"{', '.join(BOX_COLUMNS)})", where=str(source),
                               fix="pass the folder or the file of the boxes CSV")
        folder = source
    elif source.is_file():
        found, folder = [source], source.parent
    else:
        raise DatasetError("Open Images CSV not found", where=str(source), fix="check the path")
    descriptions = _descriptions_file(folder)
    names = _descriptions(descriptions, report)
    by_file: dict[Path, tuple] = {}
    named: set[str] = set()
    for path, split in _split_files(found, source, "boxes CSV", report).items():
        records, dirs, roots, ids = _read_file(path, names, report, image_dir, allow_outside)
        for record in records:
            record.split = split
        by_file[path] = (records, dirs, roots, split)
        named |= ids
    records = [r for rs, *_ in by_file.values() for r in rs]
    records += _negatives(by_file, named, report, allow_outside)
    used = {b.name for r in records for b in r.boxes}
    report.classes = [n for n in dict.fromkeys(names.values()) if n in used]
    return records
