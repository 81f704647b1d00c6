"""YOLO txt: one ``<image>.txt`` per image with ``class cx cy w h`` normalised to the
image, classes from ``data.yaml`` or ``classes.txt``, images and labels in parallel
``images/`` and ``labels/`` folders (with Ultralytics' split sub-folders)."""

from __future__ import annotations

from pathlib import Path

from tfod.data.annotations import (Box, PathOutsideError, Record, Report, _inside, _number,
                                   _outside_error, _roots, _source_folder, split_from_name)
from tfod.errors import DatasetError
from tfod.layout import IMAGE_SUFFIXES


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                           where=str(path), fix="save the file as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"cannot read ({exc.strerror})", where=str(path),
                           fix="check the file") from None


def _yolo_classes(root: Path) -> list[str]:
    import yaml

    for name in ("data.yaml", "dataset.yaml"):
        path = root / name
        if path.is_file():
            try:
                doc = yaml.safe_load(_text(path)) or {}
            except yaml.YAMLError as exc:
                raise DatasetError(f"cannot parse YAML ({exc})", where=str(path),
                                   fix="repair the file") from None
            names = doc.get("names") if isinstance(doc, dict) else None
            if isinstance(names, dict):
                if sorted(names, key=repr) != sorted(range(len(names)), key=repr):
                    raise DatasetError(f"'names' keys are {list(names)}, not 0..{len(names) - 1}",
                                       where=str(path), fix="number the names 0, 1, 2, ...")
                names = [names[k] for k in range(len(names))]
            if isinstance(names, list) and all(isinstance(n, (str, int, float)) for n in names):
                return [str(n) for n in names]
            raise DatasetError("no 'names' list of class names", where=str(path),
                               fix="add names: [class0, class1, ...]")
    path = root / "classes.txt"
    if path.is_file():
        return [line.strip() for line in _text(path).splitlines() if line.strip()]
    raise DatasetError("no class names found (data.yaml or classes.txt)", where=str(root),
                       fix="add a classes.txt with one class name per line")


def _yolo_line(line: str, where: str, classes: list[str], width: int,
               height: int) -> Box:
    """One ``class cx cy w h`` line (normalised) as a box in pixels."""
    parts = line.split()
    if len(parts) != 5:
        raise DatasetError(f"{len(parts)} values, expected 5 (class cx cy w h)",
                           where=where, fix="fix the line")
    number = _number(parts[0], where, "class")
    if number != int(number):
        raise DatasetError(f"class {parts[0]!r} is not a whole number", where=where,
                           fix="use the class index, 0 for the first name")
    cls = int(number)
    if not 0 <= cls < len(classes):
        raise DatasetError(f"class {cls} is not in 0..{len(classes) - 1}",
                           where=where, fix="add the class name or fix the id")
    cx, cy, w, h = (_number(v, where, "coordinate") for v in parts[1:])
    return Box(classes[cls], (cx - w / 2) * width, (cy - h / 2) * height,
               (cx + w / 2) * width, (cy + h / 2) * height)


def _shown_size(image: Path) -> tuple[int, int]:
    """(width, height) of the picture as EXIF turns it: what YOLO labelling tools label."""
    from PIL import Image

    with Image.open(image) as img:
        width, height = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            width, height = height, width
    return width, height


def _read_labels(record: Record, label: Path, classes: list[str], report: Report) -> None:
    """The boxes of one label file into ``record``; bad lines counted in ``report``."""
    try:
        record.width, record.height = _shown_size(record.image_path)
    except Exception:  # the checks report unreadable images
        return
    try:
        lines = _text(label).splitlines()
    except DatasetError as exc:
        report.add("unreadable annotation", str(exc))
        return
    for n, line in enumerate(lines, 1):
        if not line.split():
            continue
        try:
            record.boxes.append(_yolo_line(line, f"{label}:{n}", classes, record.width,
                                           record.height))
        except DatasetError as exc:
            report.add("unreadable annotation", str(exc))


def _images_inside(images: list[Path], roots, allow_outside: bool,
                   report: Report) -> list[Path]:
    """The images whose real path stays in the dataset (others counted), unless allowed."""
    if allow_outside:  # symlinked images leading out of the dataset are the user's choice
        return images
    outside = [p for p in images if not _inside(p, roots)]
    for path in outside:
        report.add(PathOutsideError.kind, str(_outside_error(path, roots, "image", path.name,
                                                             str(path))))
    return [p for p in images if p not in outside]


def read_yolo(root: str | Path, report: Report | None = None,
              image_dir: str | Path | None = None, allow_outside: bool = False
              ) -> list[Record]:
    """Read YOLO txt labels (``class cx cy w h``, normalised) with names from
    ``data.yaml`` or ``classes.txt``.

    Images are looked up in ``images/`` (or ``image_dir``) and labels in
    ``labels/`` with the same relative path, or next to each other. Images
    without a label file are negatives; label files without an image are reported.
    Images and labels whose real path (symlinks followed) leaves ``root`` and
    ``image_dir`` are refused unless ``allow_outside``.

    Example:
        >>> records = read_yolo("datasets/cells")
    """
    root, report = _source_folder(root, report, "dataset folder",
                                  "pass the folder holding images/ and labels/")
    classes = _yolo_classes(root)
    report.classes = classes
    images_dir = Path(image_dir) if image_dir else (
        root / "images" if (root / "images").is_dir() else root)
    labels_dir = root / "labels" if (root / "labels").is_dir() else images_dir
    roots = _roots([root, image_dir])
    images = _images_inside(sorted(p for p in images_dir.rglob("*")
                                   if p.suffix.lower() in IMAGE_SUFFIXES),
                            roots, allow_outside, report)
    by_stem = {p.relative_to(images_dir).with_suffix(""): p for p in images}
    records = []
    for rel, image in by_stem.items():
        label = labels_dir / rel.with_suffix(".txt")
        if label.is_file() and not allow_outside and not _inside(label, roots):
            report.add(PathOutsideError.kind, str(_outside_error(label, roots, "label file",
                                                                 label.name, str(label))))
            continue
        record = Record(image, 0, 0, source=str(label if label.is_file() else image),
                        split=split_from_name(rel.parts[0]) if len(rel.parts) > 1 else None)
        records.append(record)
        if label.is_file():
            _read_labels(record, label, classes, report)
    for label in sorted(labels_dir.rglob("*.txt")):
        rel = label.relative_to(labels_dir).with_suffix("")
        if rel not in by_stem and label.name != "classes.txt":
            report.add("label without image", f"{label}: no image {rel}.*")
    return records
