"""LabelMe JSON: one file per image (``shapes``, ``imagePath``, ``imageData``,
``imageHeight``, ``imageWidth``), in a folder and its sub-folders.

Rectangles are read (two corners in any order); polygons become their bounding boxes
with ``polygons_as_boxes``, otherwise they are counted and left out, like every other
shape type (circle, line, point, linestrip, mask). ``imagePath`` is relative to the JSON
file (Windows backslashes accepted); when the image is not there, the picture LabelMe
embedded in ``imageData`` is used."""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from tfod.data.annotations import (Box, Record, Report, _check_inside, _file_dataset,
                                   _find_image, _number, _roots, _size, embedded_image,
                                   problem_kind, split_from_name)
from tfod.errors import DatasetError

#: LabelMe's shape type when a shape names none
DEFAULT_SHAPE = "polygon"


def _load(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DatasetError(f"cannot read JSON ({exc})", where=str(path),
                           fix="repair the file or save it again from LabelMe") from None


def _points(value, where: str) -> list[tuple[float, float]]:
    if not isinstance(value, list) or not value:
        raise DatasetError(f"points {value!r} are not a list of [x, y]", where=where,
                           fix="correct the points")
    points = []
    for point in value:
        if not isinstance(point, list) or len(point) != 2:
            raise DatasetError(f"point {point!r} is not [x, y]", where=where,
                               fix="correct the points")
        if any(isinstance(v, bool) or not isinstance(v, (int, float, str)) for v in point):
            raise DatasetError(f"point {point!r} is not two numbers", where=where,
                               fix="correct the points")
        points.append((_number(point[0], where, "x"), _number(point[1], where, "y")))
    return points


def _shape_box(shape, where: str, report: Report, polygons_as_boxes: bool) -> Box | None:
    """The box of one LabelMe shape, or None when it is counted as left out."""
    if not isinstance(shape, dict):
        raise DatasetError(f"shape {shape!r} is not an object", where=where,
                           fix="correct the shape")
    label, kind = shape.get("label"), shape.get("shape_type") or DEFAULT_SHAPE
    if not isinstance(label, str) or not label.strip():
        raise DatasetError(f"label {label!r} is not a name", where=where,
                           fix="give the shape a label")
    if not isinstance(kind, str):
        raise DatasetError(f"shape_type {kind!r} is not a name", where=where,
                           fix="correct the shape_type")
    if kind == "polygon" and not polygons_as_boxes:
        report.add("polygon left out", f"{where}: polygon of {label!r} left out; pass "
                   "--polygons-as-boxes to use its bounding box")
        return None
    if kind not in ("rectangle", "polygon"):
        report.add(f"{kind} left out (not a box)", f"{where}: {kind} of {label!r} left out; "
                   "tfod reads rectangles (and polygons with --polygons-as-boxes)")
        return None
    points = _points(shape.get("points"), where)
    if kind == "rectangle" and len(points) < 2:
        raise DatasetError(f"rectangle with {len(points)} point, not two corners",
                           where=where, fix="correct the points")
    if kind == "polygon":
        report.note("polygon used as its bounding box (--polygons-as-boxes)")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return Box(label, min(xs), min(ys), max(xs), max(ys))


def _image_path(doc: dict, path: Path, dirs: list[Path], roots: list[str],
                allow_outside: bool) -> Path:
    """The image of one LabelMe file: ``imagePath`` beside it (or found by its name in
    the dataset), else the picture embedded in ``imageData``."""
    where = str(path)
    name, data = doc.get("imagePath"), doc.get("imageData")
    if name is not None and not isinstance(name, str):
        raise DatasetError(f"imagePath {name!r} is not a file name", where=where,
                           fix="correct imagePath")
    name = (name or "").replace("\\", "/")  # LabelMe on Windows writes ..\images\a.jpg
    found = _find_image(name, dirs, allow_outside, where, roots) if name.strip("/") else None
    if found is not None and (found.is_file() or data is None):
        return found  # (when missing, the checks report it)
    if data is None:
        raise DatasetError("no imagePath and no imageData", where=where,
                           fix="save the file again from LabelMe with its image")
    if not isinstance(data, str):
        raise DatasetError("imageData is not base64 text", where=where,
                           fix="save the file again from LabelMe")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DatasetError(f"imageData is not valid base64 ({exc})", where=where,
                           fix="save the file again from LabelMe, or put the image at "
                               "imagePath") from None
    problem = _not_an_image(raw)
    if problem:
        raise DatasetError(f"imageData is not an image ({problem})", where=where,
                           fix="save the file again from LabelMe, or put the image at "
                               "imagePath")
    return embedded_image(raw, name or f"{path.stem}.jpg")


def _not_an_image(raw: bytes) -> str | None:
    """Why ``raw`` is no image Pillow knows (its header only is read), or None. Said
    here, the problem names the JSON file; the checks would name the embedded copy."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)):
            return None
    except Image.DecompressionBombError:  # an image: the checks apply tfod's pixel limit
        return None
    except Exception as exc:  # Pillow raises many types for what is not an image
        return str(exc) or type(exc).__name__


def _read_file(path: Path, root: Path, dirs: list[Path], roots: list[str],
               allow_outside: bool, polygons_as_boxes: bool, report: Report
               ) -> Record | None:
    """The record of one JSON file; None for a JSON file that is not LabelMe's."""
    where = str(path)
    doc = _load(path)
    if not isinstance(doc, dict) or "shapes" not in doc:
        return None
    if not isinstance(doc["shapes"], list):
        raise DatasetError("'shapes' is not a list", where=where,
                           fix="save the file again from LabelMe")
    try:
        width, height = _size(doc.get("imageWidth")), _size(doc.get("imageHeight"))
    except (ValueError, TypeError, OverflowError) as exc:
        raise DatasetError(f"imageWidth/imageHeight: {exc}", where=where,
                           fix="correct the size or remove it") from None
    rel = path.relative_to(root)
    record = Record(_image_path(doc, path, [path.parent, *dirs], roots, allow_outside),
                    width, height, source=where,
                    split=split_from_name(rel.parts[0]) if len(rel.parts) > 1 else None)
    for i, shape in enumerate(doc["shapes"]):
        try:
            box = _shape_box(shape, f"{where} shapes[{i}]", report, polygons_as_boxes)
        except DatasetError as exc:
            report.add("unreadable annotation", str(exc))
            continue
        if box is not None:
            record.boxes.append(box)
    return record


def read_labelme(source: str | Path, report: Report | None = None,
                 image_dir: str | Path | None = None, allow_outside: bool = False,
                 polygons_as_boxes: bool = False) -> list[Record]:
    """Read LabelMe JSON files: a folder (and its sub-folders), or one file.

    ``imagePath`` is taken relative to each JSON file, then by its name in
    ``image_dir`` and the folder; when no such image exists, the picture in
    ``imageData`` is used. The dataset is ``source`` and ``image_dir``: images and JSON
    files whose real path (symlinks followed) leaves it are refused unless
    ``allow_outside``. ``imageWidth``/``imageHeight`` give the record's size (the checks
    compare it with the image). Rectangles become boxes; polygons too with
    ``polygons_as_boxes``, otherwise they and other shape types are counted in the
    report and left out. JSON files without ``shapes`` are skipped and noted by name. A
    first sub-folder named by a split (``train/``, ``val/``) keeps that split.

    Example:
        >>> records = read_labelme("labelme/", polygons_as_boxes=True)
    """
    source = Path(source)
    report = report if report is not None else Report()
    if source.is_file():  # one file: its folder and images/ beside that, as for COCO
        root, files = source.parent, [source]
        dirs, roots = _file_dataset(source, image_dir)
    elif source.is_dir():
        root, files = source, sorted(source.rglob("*.json"))
        dirs = ([Path(image_dir)] if image_dir else []) + [root]
        roots = _roots([root, image_dir])
    else:
        raise DatasetError("LabelMe folder not found", where=str(source),
                           fix="pass the folder holding the LabelMe .json files")
    if not files:
        raise DatasetError("no .json files found", where=str(source),
                           fix="check the path and --format")
    records, skipped, broken = [], [], 0
    for path in files:
        try:
            _check_inside(path, roots, allow_outside, "annotation file")
            record = _read_file(path, root, dirs, roots, allow_outside, polygons_as_boxes,
                                report)
        except DatasetError as exc:
            report.add(problem_kind(exc), str(exc))
            broken += 1
            continue
        if record is None:
            skipped.append(path)
        else:
            records.append(record)
    if skipped and not records and not broken:
        raise DatasetError(f"no LabelMe files: {len(skipped)} JSON files without 'shapes' "
                           f"({', '.join(p.name for p in skipped[:5])})", where=str(source),
                           fix="check the path and --format")
    for path in skipped:
        report.note(f"JSON file without LabelMe 'shapes', skipped: {path.relative_to(root)}")
    return records
