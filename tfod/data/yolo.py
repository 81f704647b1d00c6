"""YOLO txt: one ``<image>.txt`` per image with ``class cx cy w h`` normalised to the
image. Two layouts: an Ultralytics dataset YAML (``coco128.yaml``: ``path``, ``train``/
``val``/``test``, ``names``) read by Ultralytics' rules, or a folder of parallel ``images/``
and ``labels/`` folders (with split sub-folders) whose class names are in ``data.yaml`` or
``classes.txt``."""

from __future__ import annotations

import os
from pathlib import Path

from tfod.data.annotations import (Box, PathOutsideError, Record, Report, _images_inside, _inside,
                                   _number, _shown_size, _text,
                                   _outside_error, _roots, _source_folder, split_from_name)
from tfod.errors import DatasetError
from tfod.layout import IMAGE_SUFFIXES


def _load_yaml(path: Path) -> dict:
    """A YAML file as a mapping (an empty file is an empty mapping)."""
    import yaml

    try:
        doc = yaml.safe_load(_text(path))
    except yaml.YAMLError as exc:
        raise DatasetError(f"cannot parse YAML ({exc})", where=str(path),
                           fix="repair the file") from None
    return doc if isinstance(doc, dict) else {}


def _class_names(doc: dict, path: Path, report: Report) -> dict[int, str]:
    """Class id -> name from a YAML's ``names`` (a list, or an ``{id: name}`` mapping whose
    gaps are noted) or, without ``names``, ``nc`` (``class_0``, ... as Ultralytics does)."""
    names, count = doc.get("names"), doc.get("nc")
    if names is None and isinstance(count, int) and not isinstance(count, bool) and count > 0:
        report.note(f"no 'names' in {path.name}: classes named class_0..class_{count - 1} "
                    "from 'nc'")
        return {i: f"class_{i}" for i in range(count)}
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names or not all(
            isinstance(n, (str, int, float)) and not isinstance(n, bool)
            for n in names.values()):
        raise DatasetError("no 'names' list of class names", where=str(path),
                           fix="add names: [class0, class1, ...]")
    bad = [k for k in names if isinstance(k, bool) or not isinstance(k, int) or k < 0]
    if bad:
        raise DatasetError(f"'names' keys {bad} are not class ids 0, 1, 2, ...",
                           where=str(path), fix="number the names 0, 1, 2, ...")
    if count is not None and count != len(names):
        raise DatasetError(f"'nc: {count}' but {len(names)} names", where=str(path),
                           fix="make nc the number of names, or remove nc")
    gaps = sorted(set(range(max(names) + 1)) - set(names))
    if gaps:
        shown = ", ".join(map(str, gaps[:10])) + (" ..." if len(gaps) > 10 else "")
        report.note(f"'names' in {path.name} has no class id {shown}: label lines with "
                    "such ids are counted as unreadable")
    names = {k: str(v) for k, v in sorted(names.items())}
    if len(set(names.values())) != len(names):
        twice = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
        raise DatasetError(f"class names {twice} appear more than once in 'names'",
                           where=str(path), fix="give every class id its own name")
    return names


def _yolo_classes(root: Path, report: Report) -> dict[int, str]:
    """Class names of a plain YOLO folder: ``data.yaml`` / ``dataset.yaml`` / ``classes.txt``."""
    for name in ("data.yaml", "dataset.yaml"):
        path = root / name
        if path.is_file():
            return _class_names(_load_yaml(path), path, report)
    path = root / "classes.txt"
    if path.is_file():
        return dict(enumerate(line.strip() for line in _text(path).splitlines()
                              if line.strip()))
    raise DatasetError("no class names found (data.yaml or classes.txt)", where=str(root),
                       fix="add a classes.txt with one class name per line")


def _yolo_line(line: str, where: str, classes: dict[int, str], width: int,
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
    if cls not in classes:
        known = (f"0..{len(classes) - 1}" if list(classes) == list(range(len(classes)))
                 else ", ".join(map(str, classes)))
        raise DatasetError(f"class {cls} is not in {known}",
                           where=where, fix="add the class name or fix the id")
    cx, cy, w, h = (_number(v, where, "coordinate") for v in parts[1:])
    return Box(classes[cls], (cx - w / 2) * width, (cy - h / 2) * height,
               (cx + w / 2) * width, (cy + h / 2) * height)


def _read_labels(record: Record, label: Path, classes: dict[int, str],
                 report: Report) -> None:
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


def _find_yaml(folder: Path) -> Path | None:
    """The dataset YAML of a folder: ``data.yaml``, ``dataset.yaml``, else the one ``*.yaml``
    at its top (Ultralytics names it after the dataset: ``coco128.yaml``); with several, the
    one named like the folder. None when there is none."""
    for name in ("data.yaml", "dataset.yaml"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".yaml", ".yml") and p.is_file())
    if len(found) > 1:
        found = [p for p in found if p.stem == folder.name] or found
    if len(found) > 1:
        raise DatasetError(f"{len(found)} YAML files and none named data.yaml or "
                           f"{folder.name}.yaml: {', '.join(p.name for p in found)}",
                           where=str(folder), fix="pass the dataset YAML itself")
    return found[0] if found else None


SPLIT_KEYS = ("train", "val", "test")


def _is_dataset_yaml(doc: dict) -> bool:
    return any(doc.get(k) for k in (*SPLIT_KEYS, "validation"))


def _dataset_root(doc: dict, yaml_path: Path, report: Report) -> Path:
    """The folder the split paths are relative to, by Ultralytics' rule: ``path:`` if
    absolute; a relative ``path:`` is tried against the YAML's folder, then the current
    folder and ``./datasets/`` (Ultralytics' default datasets folder); without ``path:``, or
    when none of these exists but the splits resolve from the YAML's own folder, the YAML's
    folder (the YAML moved with the dataset). Which one was used is noted."""
    here = yaml_path.parent
    given = doc.get("path")
    if given in (None, ""):
        return here
    if not isinstance(given, str):
        raise DatasetError(f"'path' is {given!r}, not a folder", where=str(yaml_path),
                           fix="set path: to the dataset folder, or remove it")
    path = Path(given).expanduser()
    tried = [path] if path.is_absolute() else [here / path, Path.cwd() / path,
                                               Path.cwd() / "datasets" / path]
    for folder in tried:
        if folder.is_dir():
            if folder != tried[0]:
                report.note(f"'path: {given}' of {yaml_path.name} taken as {folder}")
            return folder
    if any(_resolve_split(here, entry).exists() for entry in _entries(doc.get("train"))):
        report.note(f"'path: {given}' of {yaml_path.name} not found; the splits are read "
                    f"from the YAML's folder {here}")
        return here
    raise DatasetError(f"'path: {given}' not found (tried {', '.join(map(str, tried))})",
                       where=str(yaml_path),
                       fix="set path: to the dataset folder (absolute, or relative to the "
                           "YAML), or remove it when the YAML lies in the dataset folder")


def _entries(value) -> list[str]:
    if value in (None, ""):
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _resolve_split(root: Path, entry: str) -> Path:
    """A ``train:``/``val:``/``test:`` entry below ``root``; ``../x`` that does not exist is
    tried as ``x`` (Ultralytics' rule, which Roboflow exports rely on)."""
    path = root / entry
    if not path.exists() and entry.startswith("../"):
        path = root / entry[3:]
    return path


def _label_path(image: Path) -> Path:
    """Ultralytics' pairing: the last ``images`` folder of the path becomes ``labels``,
    the suffix ``.txt`` (an image in no ``images`` folder has its label beside it)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _listed_images(listing: Path, root: Path, report: Report) -> list[Path]:
    """The images of a ``.txt`` list: one path a line, ``./x`` relative to the list's folder
    (as Ultralytics reads them), other relative paths tried against the list's folder, then
    the dataset root."""
    images = []
    for n, line in enumerate(_text(listing).splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if "\x00" in name:
            report.add("unreadable annotation", f"{listing}:{n}: NUL byte in the image path")
            continue
        path = Path(name)
        if not path.is_absolute():
            path = listing.parent / name
            if not path.exists() and not name.startswith("./") and (root / name).exists():
                path = root / name
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            report.add("unreadable annotation",
                       f"{listing}:{n}: {name!r} is not an image ({', '.join(IMAGE_SUFFIXES)})")
            continue
        images.append(path)
    return images


def _split_images(entry: str, root: Path, yaml_path: Path, key: str,
                  report: Report) -> tuple[list[Path], list[Path]]:
    """(images, image folders) of one split entry: a folder (searched recursively), a
    ``.txt`` list of images, or one image."""
    path = _resolve_split(root, entry)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES), [path]
    if path.is_file() and path.suffix.lower() == ".txt":
        return _listed_images(path, root, report), []
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [path], []
    raise DatasetError(f"'{key}: {entry}' not found (looked for {path})", where=str(yaml_path),
                       fix=f"correct '{key}:' (a folder of images, a .txt list of images or "
                           "a list of those), relative to 'path:'")


def _read_yaml_dataset(yaml_path: Path, doc: dict, report: Report, image_dir,
                       allow_outside: bool) -> list[Record]:
    """An Ultralytics dataset YAML: splits as declared, labels by Ultralytics' pairing."""
    classes = _class_names(doc, yaml_path, report)
    report.classes = list(classes.values())
    if not doc.get("val") and doc.get("validation"):
        doc = {**doc, "val": doc["validation"]}
    root = _dataset_root(doc, yaml_path, report)
    roots = _roots([root, yaml_path.parent, image_dir])
    declared: dict[str, list[Path]] = {}
    folders: list[Path] = []
    for key in SPLIT_KEYS:
        images: list[Path] = []
        for entry in _entries(doc.get(key)):
            found, dirs = _split_images(entry, root, yaml_path, key, report)
            images += found
            folders += dirs
        if images:
            declared[key] = images
    if not declared.get("train"):
        raise DatasetError("no training images ('train:' missing or empty)",
                           where=str(yaml_path), fix="set train: to the training images")
    same = [k for k in ("val", "test") if k in declared
            and set(map(str, declared[k])) == set(map(str, declared["train"]))]
    for key in same:  # coco128's val: is its train: images
        report.note(f"'{key}:' lists the same images as 'train:': they are read once"
                    + ("" if len(declared) > 2 else ", and split by --split (default train "
                       "0.8 / val 0.2) instead"))
        del declared[key]
    own_split = len(declared) > 1
    if not own_split and not same:
        report.note(f"only 'train:' images in {yaml_path.name}: split by --split "
                    "(default train 0.8 / val 0.2)")
    records, seen = [], {}
    for key, images in declared.items():
        for image in _images_inside(images, roots, allow_outside, report):
            real = os.path.realpath(image)
            if real in seen:
                report.add("image in two splits", f"{yaml_path}: {image} is listed in "
                           f"'{seen[real]}:' and '{key}:'; kept in '{seen[real]}:'")
                continue
            seen[real] = key
            records.append(_record(image, _label_path(image), classes, report, roots,
                                   allow_outside, key if own_split else None))
    records = [r for r in records if r is not None]
    _orphan_labels(folders, seen, report)
    return records


def _record(image: Path, label: Path, classes: dict[int, str], report: Report, roots,
            allow_outside: bool, split: str | None) -> Record | None:
    """One image's record; its label file read when there is one, else the image is a
    negative (noted). None (counted) when the label file leads outside the dataset: the
    image is left out rather than taken as having no objects."""
    if label.is_file() and not allow_outside and not _inside(label, roots):
        report.add(PathOutsideError.kind, str(_outside_error(label, roots, "label file",
                                                             label.name, str(label))))
        return None
    record = Record(image, 0, 0, source=str(label if label.is_file() else image), split=split)
    if label.is_file():
        _read_labels(record, label, classes, report)
    else:
        report.note("image without a label file (a negative: no objects)")
    return record


def _orphan_labels(image_folders: list[Path], images: dict[str, str], report: Report) -> None:
    """Count label files of the split folders that no image of the dataset pairs with."""
    paired = {os.path.realpath(_label_path(Path(p))) for p in images}
    for folder in image_folders:
        labels = _label_path(folder / "x.jpg").parent
        if labels == folder or not labels.is_dir():
            continue
        for label in sorted(labels.rglob("*.txt")):
            if os.path.realpath(label) not in paired and label.name != "classes.txt":
                report.add("label without image", f"{label}: no image of the same name in "
                                                  f"{folder}")


def read_yolo(root: str | Path, report: Report | None = None,
              image_dir: str | Path | None = None, allow_outside: bool = False
              ) -> list[Record]:
    """Read YOLO txt labels (``class cx cy w h``, normalised): an Ultralytics dataset YAML,
    or a folder of ``images/`` and ``labels/``.

    ``root`` is the dataset YAML (``coco128.yaml``), or a folder holding one
    (:func:`_find_yaml`: ``data.yaml`` first). A YAML with ``train:``/``val:``/``test:`` is
    read as Ultralytics reads it (:func:`_read_yaml_dataset`): ``path:`` (see
    :func:`_dataset_root`), each split a folder, a ``.txt`` list of images or a list of
    those, labels where the last ``images`` folder of an image's path is ``labels``, the
    declared splits kept. Otherwise (a YAML with only ``names``, or ``classes.txt``) images
    are looked up in ``images/`` (or ``image_dir``) and labels in ``labels/`` with the same
    relative path, or next to each other, and split folders (``train/``, ``val/``) give the
    split. Images without a label file are negatives (noted); label files without an image
    are reported. Images and labels whose real path (symlinks followed) leaves the dataset
    (``root``, the YAML's folder, its ``path:``, ``image_dir``) are refused unless
    ``allow_outside``.

    Example:
        >>> records = read_yolo("datasets/coco128/coco128.yaml")
    """
    source = Path(root)
    report = report if report is not None else Report()
    if source.is_file() and source.suffix.lower() in (".yaml", ".yml"):
        doc = _load_yaml(source)
        if not _is_dataset_yaml(doc):
            raise DatasetError("no 'train:' images in the YAML", where=str(source),
                               fix="add train: and val: (folders or .txt lists of images), "
                                   "or pass the folder holding images/ and labels/")
        return _read_yaml_dataset(source, doc, report, image_dir, allow_outside)
    root, report = _source_folder(root, report, "dataset folder",
                                  "pass the folder holding images/ and labels/ (or its "
                                  "dataset .yaml)")
    yaml_path = _find_yaml(root)
    if yaml_path is not None:
        doc = _load_yaml(yaml_path)
        if _is_dataset_yaml(doc):
            return _read_yaml_dataset(yaml_path, doc, report, image_dir, allow_outside)
    return _read_folder(root, report, image_dir, allow_outside)


def _read_folder(root: Path, report: Report, image_dir, allow_outside: bool) -> list[Record]:
    """A plain YOLO folder (see :func:`read_yolo`)."""
    classes = _yolo_classes(root, report)
    report.classes = list(classes.values())
    images_dir = Path(image_dir) if image_dir else (
        root / "images" if (root / "images").is_dir() else root)
    labels_dir = root / "labels" if (root / "labels").is_dir() else images_dir
    roots = _roots([root, image_dir])
    images = _images_inside(sorted(p for p in images_dir.rglob("*")
                                   if p.suffix.lower() in IMAGE_SUFFIXES),
                            roots, allow_outside, report)
    by_stem = {p.relative_to(images_dir).with_suffix(""): p for p in images}
    records = [_record(image, labels_dir / rel.with_suffix(".txt"), classes, report, roots,
                       allow_outside, split_from_name(rel.parts[0]) if len(rel.parts) > 1
                       else None) for rel, image in by_stem.items()]
    records = [r for r in records if r is not None]
    for label in sorted(labels_dir.rglob("*.txt")):
        rel = label.relative_to(labels_dir).with_suffix("")
        if rel not in by_stem and label.name != "classes.txt":
            report.add("label without image", f"{label}: no image {rel}.*")
    return records
