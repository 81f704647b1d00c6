"""KITTI object detection labels: one ``label_2/<id>.txt`` per image ``image_2/<id>.png``, a
line per object: ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y``
(a 16th value, ``score``, in results files), the 2D box in pixels.

What tfod does with KITTI, next to the OD API's ``create_kitti_tf_record.py``:

* class names are lower-cased, as upstream's ``read_annotation_file`` does (``Car`` ->
  ``car``), so its ``kitti_label_map.pbtxt`` works unchanged;
* ``DontCare`` regions are never boxes, and every box overlapping one (intersection of
  positive area, upstream's ``iou > 0``) is removed, as upstream's ``filter_annotations``
  does with its default ``classes_to_use`` (which holds ``dontcare``). Unlike upstream,
  every other class is kept: ``--classes``/``--label-map`` choose them later;
* ``truncated`` (KITTI: 0..1, the share of the object outside the image) becomes
  ``Box.truncated = value > 0``, as VOC's flag means "the box does not show the whole
  object"; ``occluded`` (0 visible, 1 partly, 2 largely occluded, 3 unknown) becomes
  ``Box.occluded = value in (1, 2)``. ``difficult`` stays False (upstream writes 0);
* an image without a label file is a negative (an image without objects); a label file
  without an image is reported. Upstream needs both for every image.

KITTI has no split in its folders: ``training/`` is the labelled part and is split by
``--split``; ``testing/`` has no labels in the KITTI download and is not read (noted).
"""

from __future__ import annotations

from pathlib import Path

from tfod.data.annotations import (Box, PathOutsideError, Record, Report, _images_inside,
                                   _inside, _number, _outside_error, _roots, _source_folder,
                                   _text)
from tfod.errors import DatasetError
from tfod.layout import IMAGE_SUFFIXES

#: the values of a KITTI label line, in order (a 16th, ``score``, is ignored)
FIELDS = ("type", "truncated", "occluded", "alpha", "x1", "y1", "x2", "y2", "h", "w", "l",
          "x", "y", "z", "rotation_y")
DONTCARE = "dontcare"


def _folders(root: Path, image_dir, report: Report) -> tuple[Path, Path]:
    """(labels folder, images folder) of a KITTI root: ``label_2``/``image_2`` in the root
    itself or in its ``training/`` (also upstream's ``data_object_image_2/training/``)."""
    base = next((b for b in (root, root / "training") if (b / "label_2").is_dir()), None)
    if base is None:
        raise DatasetError("no KITTI label_2 folder (in the folder or in training/)",
                           where=str(root),
                           fix="pass the folder holding label_2/ and image_2/ (or training/); "
                               "the KITTI test set has no labels")
    if base != root and (root / "testing").is_dir():
        report.note("KITTI testing/ not read (the KITTI download has no labels for it)")
    if image_dir:
        return base / "label_2", Path(image_dir)
    upstream = root / "data_object_image_2" / "training" / "image_2"
    images = next((d for d in (base / "image_2", upstream) if d.is_dir()), base / "image_2")
    return base / "label_2", images


def _kitti_line(line: str, where: str, report: Report) -> Box:
    """One label line as a box in pixels (a DontCare region has the name ``dontcare``)."""
    parts = line.split()
    if len(parts) not in (15, 16):
        raise DatasetError(f"{len(parts)} values, expected 15 ({' '.join(FIELDS)}) or 16 "
                           "(with a score)", where=where, fix="fix the line")
    values = [_number(v, where, name) for v, name in zip(parts[1:], FIELDS[1:] + ("score",))]
    truncated, occluded = values[0], values[1]
    if occluded != int(occluded):
        raise DatasetError(f"occluded is {parts[2]!r}, not a whole number (0..3)",
                           where=where, fix="fix the line")
    if len(parts) == 16:
        report.note("KITTI score column ignored (a results file?)")
    x1, y1, x2, y2 = values[3:7]
    return Box(parts[0].lower(), x1, y1, x2, y2, truncated=truncated > 0,
               occluded=int(occluded) in (1, 2))


def _overlaps(box: Box, region: Box) -> bool:
    """Intersection of positive area: upstream's ``np_box_ops.iou(...) > 0``."""
    return (min(box.xmax, region.xmax) - max(box.xmin, region.xmin) > 0
            and min(box.ymax, region.ymax) - max(box.ymin, region.ymin) > 0)


def _kitti_boxes(label: Path, report: Report) -> list[Box] | None:
    """The boxes of one label file, DontCare handled; None if the file cannot be read."""
    try:
        lines = _text(label).splitlines()
    except DatasetError as exc:
        report.add("unreadable annotation", str(exc))
        return None
    boxes, regions = [], []
    for n, line in enumerate(lines, 1):
        if not line.split():
            continue
        try:
            box = _kitti_line(line, f"{label}:{n}", report)
        except DatasetError as exc:
            report.add("unreadable annotation", str(exc))
            continue
        (regions if box.name == DONTCARE else boxes).append(box)
    for _ in regions:
        report.note("KITTI DontCare region (not a box)")
    kept = [b for b in boxes if not any(_overlaps(b, r) for r in regions)]
    for _ in range(len(boxes) - len(kept)):
        report.note("box removed: overlaps a KITTI DontCare region")
    return kept


def read_kitti(root: str | Path, report: Report | None = None,
               image_dir: str | Path | None = None, allow_outside: bool = False
               ) -> list[Record]:
    """Read KITTI object labels: ``label_2/*.txt`` and ``image_2/*.png`` in ``root`` or in
    ``root/training`` (as the KITTI download unpacks); ``image_dir`` overrides the images'
    folder.

    Class names are lower-cased; DontCare regions remove the boxes they overlap (noted);
    ``truncated > 0`` and ``occluded`` 1 or 2 set the box's flags (module docstring).
    Images without a label file are negatives (noted); label files without an image and
    bad lines (``file:line``) are counted. Files whose real path (symlinks followed)
    leaves ``root`` and ``image_dir`` are refused unless ``allow_outside``.

    Example:
        >>> records = read_kitti("datasets/kitti")  # kitti/training/{label_2,image_2}
    """
    root, report = _source_folder(root, report, "KITTI folder",
                                  "pass the folder holding label_2/ and image_2/")
    labels_dir, images_dir = _folders(root, image_dir, report)
    roots = _roots([root, image_dir])
    labels = sorted(labels_dir.glob("*.txt"))
    if not labels:
        raise DatasetError("no .txt label files", where=str(labels_dir),
                           fix="check the path and --format")
    found = sorted(p for p in images_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and p.is_file()) if images_dir.is_dir() else []
    by_stem: dict[str, Path] = {}
    for image in _images_inside(found, roots, allow_outside, report):
        if image.stem in by_stem:
            report.add("ambiguous image", f"{image}: same name as {by_stem[image.stem].name}; "
                       "only that one is read")
            continue
        by_stem[image.stem] = image
    records: dict[str, Record] = {}
    for label in labels:
        image = by_stem.get(label.stem)
        if image is None:
            report.add("label without image", f"{label}: no image {label.stem}.* in "
                       f"{images_dir}")
            continue
        if not allow_outside and not _inside(label, roots):
            report.add(PathOutsideError.kind, str(_outside_error(label, roots, "label file",
                                                                 label.name, str(label))))
            continue
        boxes = _kitti_boxes(label, report)
        if boxes is not None:  # an unreadable label file is not a negative
            records[label.stem] = Record(image, 0, 0, boxes, source=str(label))
    labelled = {label.stem for label in labels}
    for stem, image in by_stem.items():
        if stem not in labelled:
            report.note("image without a KITTI label file (kept as a negative)")
            records[stem] = Record(image, 0, 0, [], source=str(image))
    return [records[k] for k in sorted(records)]
