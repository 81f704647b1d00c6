"""CVAT for images 1.1: one ``annotations.xml`` with the task's (or project's) labels in
``<meta>`` and an ``<image>`` per picture holding its ``<box>`` shapes; CVAT's export zip
puts the pictures in ``images/`` beside it (``images/<subset>/`` for a project). Parsed
with lxml, no network or entity expansion (:func:`tfod.data.voc._xml_parser`).

Boxes are read (``occluded`` kept, a ``rotation`` becomes its axis-aligned bounds);
polygons become their bounding boxes with ``polygons_as_boxes``, otherwise they are
counted and left out, like every other shape (polylines, points, cuboids, masks,
ellipses, skeletons, and the tracks of a "CVAT for video" export); tags are noted."""

from __future__ import annotations

import math
from pathlib import Path

from tfod.data.annotations import (Box, Record, Report, _check_inside, _find_image, _number,
                                   _roots, _size, problem_kind, split_from_name)
from tfod.errors import DatasetError

#: what CVAT calls a bounding box
BOX = "box"
#: CVAT's subset name for a task without one: no split
DEFAULT_SUBSET = "default"
#: a task made from a video names its frames ``frame_000000``; the export saves them as .PNG
FRAME_SUFFIXES = (".PNG", ".png", ".jpg")
EXPORT_FIX = "export the task from CVAT as 'CVAT for images 1.1'"


def _annotation_file(source: Path, allow_outside: bool) -> Path:
    """The XML file: ``source`` itself, or the one ``.xml`` file in the folder ``source``
    (refused when its real path leaves the folder, unless ``allow_outside``)."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise DatasetError("CVAT annotation file or folder not found", where=str(source),
                           fix="pass annotations.xml or the folder of the unzipped export")
    found = sorted(p for p in source.glob("*.xml") if p.is_file())
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise DatasetError(f"expected one CVAT .xml file in the folder, found {listed}",
                           where=str(source), fix="pass the annotations.xml file itself")
    _check_inside(found[0], _roots([source]), allow_outside, "annotation file")
    return found[0]


def _parse(path: Path):
    from lxml import etree

    from tfod.data.voc import _xml_parser

    try:
        tree = etree.parse(str(path), _xml_parser())
    except (etree.XMLSyntaxError, OSError) as exc:
        raise DatasetError(f"cannot parse XML ({exc})", where=str(path),
                           fix="repair the file or export it again from CVAT") from None
    dtd = tree.docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise DatasetError("the file declares XML entities (<!ENTITY>), which CVAT never "
                           "writes; not read", where=str(path), fix=EXPORT_FIX)
    root = tree.getroot()
    if root.tag != "annotations":
        raise DatasetError(f"root element is <{root.tag}>, not CVAT's <annotations>",
                           where=str(path), fix=f"check --format; {EXPORT_FIX}")
    return root


def _declared_labels(root) -> list[str]:
    """Label names of ``<meta><task|project|job><labels>``, in order (skeleton points,
    which have a ``<parent>``, left out)."""
    names: list[str] = []
    for label in root.iterfind("meta/*/labels/label"):
        name = (label.findtext("name") or "").strip()
        if name and not (label.findtext("parent") or "").strip():
            names.append(name)
    return list(dict.fromkeys(names))


def _flag(value: str | None, where: str, what: str) -> bool:
    text = (value or "0").strip().lower()
    if text in ("0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise DatasetError(f"{what}={value!r} is not 0 or 1", where=where, fix="correct the value")


def _points(text: str | None, where: str) -> list[tuple[float, float]]:
    """CVAT's ``points="x1,y1;x2,y2;..."``."""
    points = []
    for pair in (text or "").split(";"):
        xy = pair.split(",")
        if len(xy) != 2:
            raise DatasetError(f"points {text!r} are not 'x1,y1;x2,y2;...'", where=where,
                               fix="correct the points")
        points.append((_number(xy[0], where, "x"), _number(xy[1], where, "y")))
    return points


def _label(node, where: str) -> str:
    label = node.get("label")
    if not label or not label.strip():
        raise DatasetError("no label", where=where, fix="give the shape a label")
    return label


def _box(node, where: str, report: Report) -> Box:
    """A ``<box>``; a rotated one becomes the axis-aligned box around it."""
    xmin, ymin, xmax, ymax = (_number(node.get(k), where, k) for k in ("xtl", "ytl", "xbr", "ybr"))
    angle = math.radians(_number(node.get("rotation", "0"), where, "rotation") % 360)
    if angle:  # the bounds of a rectangle turned about its centre, either way round
        cx, cy, w, h = (xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin, ymax - ymin
        half_w = (abs(w * math.cos(angle)) + abs(h * math.sin(angle))) / 2
        half_h = (abs(w * math.sin(angle)) + abs(h * math.cos(angle))) / 2
        xmin, ymin, xmax, ymax = cx - half_w, cy - half_h, cx + half_w, cy + half_h
        report.note("rotated CVAT box (its axis-aligned bounds used)")
    return Box(_label(node, where), xmin, ymin, xmax, ymax,
               occluded=_flag(node.get("occluded"), where, "occluded"))


def _polygon_box(node, where: str, report: Report) -> Box:
    points = _points(node.get("points"), where)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    report.note("polygon used as its bounding box (--polygons-as-boxes)")
    return Box(_label(node, where), min(xs), min(ys), max(xs), max(ys),
               occluded=_flag(node.get("occluded"), where, "occluded"))


def _shapes(image, where: str, name: str, report: Report, polygons_as_boxes: bool
            ) -> list[Box]:
    """The boxes of one ``<image>``; every other shape counted in ``report``."""
    boxes = []
    for node in image:
        if not isinstance(node.tag, str):  # comments, processing instructions
            continue
        at = f"{where}:{node.sourceline} image {name!r}"
        try:
            if node.tag == BOX:
                boxes.append(_box(node, at, report))
            elif node.tag == "polygon" and polygons_as_boxes:
                boxes.append(_polygon_box(node, at, report))
            elif node.tag == "polygon":
                report.add("polygon left out", f"{at}: polygon of {node.get('label')!r} left "
                           "out; pass --polygons-as-boxes to use its bounding box")
            elif node.tag == "tag":
                report.note("CVAT tag (a label of the whole image, not a box) not used")
            else:
                report.add(f"{node.tag} left out (not a box)",
                           f"{at}: {node.tag} of {node.get('label')!r} left out; "
                           "tfod reads boxes (and polygons with --polygons-as-boxes)")
        except DatasetError as exc:
            report.add("unreadable annotation", str(exc))
    return boxes


def _image_size(image, where: str) -> tuple[int, int]:
    width, height = image.get("width"), image.get("height")
    try:
        return _size(width), _size(height)
    except (ValueError, OverflowError):
        raise DatasetError(f"width={width!r} height={height!r} is not a size in pixels",
                           where=where, fix="correct the size or remove it") from None


def _subset(node, default: str | None, where: str, report: Report) -> str | None:
    """The split a CVAT subset stands for (``Train`` -> train), or None."""
    subset = (node.get("subset") or default or "").strip()
    split = split_from_name(subset)
    if subset and split is None and subset != DEFAULT_SUBSET:
        report.note(f"CVAT subset that names no split, not used as a split: {subset}")
    return split


def read_cvat(source: str | Path, report: Report | None = None,
              image_dir: str | Path | None = None, allow_outside: bool = False,
              polygons_as_boxes: bool = False) -> list[Record]:
    """Read a "CVAT for images 1.1" export: ``annotations.xml``, or the folder holding it.

    Images are looked for in ``image_dir``, in ``images/`` (``images/<subset>/`` for a
    project export) and beside the XML; an image ``name`` may hold sub-folders (a
    video's frames, named without a suffix, are found as the .PNG CVAT saves). The
    dataset is the XML's folder and ``image_dir``: names whose real path (symlinks
    followed) leaves it are refused unless ``allow_outside``. Classes keep the order
    of the labels in ``<meta>``; a task's ``<subset>`` (or an image's ``subset``
    attribute, in a project export) that names a split (Train, Validation, Test) is
    kept as the split. Boxes keep ``occluded``; polygons become their bounding boxes
    with ``polygons_as_boxes``, otherwise they and every other shape are counted in
    the report and left out.

    Example:
        >>> records = read_cvat("exports/task_12/annotations.xml", polygons_as_boxes=True)
    """
    report = report if report is not None else Report()
    path = _annotation_file(Path(source), allow_outside)
    where = str(path)
    root = _parse(path)
    declared = _declared_labels(root)
    if declared:
        report.classes = list(dict.fromkeys((report.classes or []) + declared))
    images = root.findall("image")
    tracks = root.findall("track")
    if tracks and not images:
        raise DatasetError(f"a CVAT for video export ({len(tracks)} tracks, no <image>)",
                           where=where, fix=EXPORT_FIX)
    for track in tracks:
        report.add("track left out", f"{where}:{track.sourceline}: track "
                   f"{track.get('id')!r} of {track.get('label')!r} left out; {EXPORT_FIX}")
    task_subset = root.findtext("meta/task/subset")
    folder = path.parent
    base_dirs = ([Path(image_dir)] if image_dir else []) + [folder / "images", folder]
    roots = _roots([folder, image_dir])
    records = []
    for image in images:
        at = f"{where}:{image.sourceline}"
        name = image.get("name") or ""
        try:
            if not name.strip():
                raise DatasetError("<image> without a name", where=at,
                                   fix="give the image its file name")
            subset = (image.get("subset") or "").strip()
            dirs = ([d / subset for d in base_dirs[:-1]] if subset else []) + base_dirs
            width, height = _image_size(image, f"{at} image {name!r}")
            names = [name] + ([name + s for s in FRAME_SUFFIXES]
                              if not Path(name).suffix else [])
            record = Record(_find_image(names, dirs, allow_outside, at, roots), width, height,
                            source=f"{at} image {name!r}",
                            split=_subset(image, task_subset, at, report))
        except DatasetError as exc:
            report.add(problem_kind(exc), str(exc))
            continue
        record.boxes = _shapes(image, where, name, report, polygons_as_boxes)
        records.append(record)
    return records
