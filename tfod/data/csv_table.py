"""CSV tables, one box per row: ``filename,width,height,class,xmin,ymin,xmax,ymax`` (the
header of TensorFlow tutorials' ``*_labels.csv``) or other columns named with
``--columns``; rows without a box keep an image with no objects."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from tfod.data.annotations import (Box, Record, Report, _file_dataset, _find_image, _number,
                                   _split_files, problem_kind)
from tfod.errors import DatasetError


CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


def read_csv(path: str | Path, report: Report | None = None,
             image_dir: str | Path | None = None,
             columns: dict[str, str] | None = None, allow_outside: bool = False
             ) -> list[Record]:
    """Read the common ``filename,width,height,class,xmin,ymin,xmax,ymax`` CSV.

    ``path`` is one file, or a folder of files named by split
    (``train_labels.csv``, ``test_labels.csv``), whose split is kept.
    ``columns`` maps those names to the file's own headers when they differ,
    e.g. ``{"class": "label"}``. One row per box; a row without a class is an
    image without boxes (a negative).

    Example:
        >>> records = read_csv("data/train_labels.csv", image_dir="images")
    """
    path = Path(path)
    report = report if report is not None else Report()
    if path.is_dir():
        found = sorted(path.glob("*.csv"))
        if not found:
            raise DatasetError("no .csv files in the folder", where=str(path),
                               fix="pass the CSV file itself")
    else:
        found = [path]
    records: list[Record] = []
    for file, split in _split_files(found, path, "CSV", report).items():
        for record in _read_csv_file(file, report, image_dir, columns, allow_outside):
            record.split = split
            records.append(record)
    return records


def _read_csv_file(path: Path, report: Report, image_dir, columns,
                   allow_outside: bool) -> list[Record]:
    mapping = {c: c for c in CSV_COLUMNS} | dict(columns or {})
    try:
        handle = path.open(newline="", encoding="utf-8-sig")  # Excel writes a BOM
    except OSError as exc:
        raise DatasetError(f"cannot open CSV ({exc.strerror})", where=str(path),
                           fix="check the path") from None
    dirs, roots = _file_dataset(path, image_dir)
    records: dict[str, Record] = {}
    reader = csv.DictReader(handle)
    try:
        with handle:
            _read_csv_rows(reader, path, mapping, dirs, records, report, allow_outside, roots)
    except UnicodeDecodeError as exc:
        line, offset = _first_bad_byte(path, exc)
        raise DatasetError(f"not UTF-8 text ({exc.reason} at byte {offset})",
                           where=f"{path}:{line}", fix="save the file as UTF-8 CSV") from None
    except csv.Error as exc:
        raise DatasetError(f"not a readable CSV ({exc})", where=f"{path}:{reader.line_num}",
                           fix="repair the line or export the CSV again") from None
    return list(records.values())


def _first_bad_byte(path: Path, exc: UnicodeDecodeError) -> tuple[int, int]:
    """(line, byte offset in the file) of the first byte that is not UTF-8. The decoder's
    own error counts from the start of the chunk it was decoding, and the csv reader's line
    number is where parsing was, not where decoding failed."""
    raw = path.read_bytes()
    skip = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        raw[skip:].decode("utf-8")
    except UnicodeDecodeError as whole:
        offset = skip + whole.start
        return raw.count(b"\n", 0, offset) + 1, offset
    return 0, exc.start  # pragma: no cover - the file changed while being read


def _read_csv_rows(reader: csv.DictReader, path: Path, mapping: dict, dirs: list[Path],
                   records: dict[str, Record], report: Report, allow_outside: bool,
                   roots: Sequence[str] | None = None) -> None:
    missing = [c for c in ("filename", "class", "xmin", "ymin", "xmax", "ymax")
               if mapping[c] not in (reader.fieldnames or [])]
    if missing:
        raise DatasetError(f"missing column(s) {', '.join(mapping[c] for c in missing)}; "
                           f"the header is {reader.fieldnames}", where=str(path),
                           fix="rename the columns or map them (--columns class=label)")
    for row in reader:
        where = f"{path}:{reader.line_num}"
        try:
            name = (row[mapping["filename"]] or "").strip()
            if not name:
                raise DatasetError("no file name", where=where, fix="fill in the filename")
            record = records.get(name)
            if record is None:
                size = [row.get(mapping["width"]), row.get(mapping["height"])]
                w, h = (int(_number(v, where, c)) if v else 0
                        for v, c in zip(size, ("width", "height")))
                record = records[name] = Record(_find_image(name, dirs, allow_outside, where,
                                                            roots),
                                                w, h,
                                                source=f"{path} ({name})")
            cls = (row[mapping["class"]] or "").strip()
            if cls:
                record.boxes.append(Box(cls, *(_number(row[mapping[k]], where, k)
                                               for k in ("xmin", "ymin", "xmax", "ymax"))))
        except DatasetError as exc:
            report.add(problem_kind(exc), str(exc))
