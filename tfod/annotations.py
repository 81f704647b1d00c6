"""Annotation readers: every format becomes the same :class:`Record` objects.

Each reader takes the annotation source, a :class:`Report` to count problems in
and an optional image folder, and returns records with boxes in pixels and
class names. Nothing is dropped silently: a file or line that cannot be read is
counted in the report with its location, and the reader goes on.

Formats: Pascal VOC XML, COCO JSON (instances), CSV
(``filename,width,height,class,xmin,ymin,xmax,ymax``) and YOLO txt.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tfod.errors import DatasetError

log = logging.getLogger(__name__)

FORMATS = ("voc", "coco", "csv", "yolo")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
#: boxes this far (pixels) outside the image are clipped; further out they are invalid.
CLIP_TOLERANCE = 2.0


@dataclass
class Box:
    """One object, in pixels (xmin, ymin inclusive corner; xmax, ymax exclusive)."""

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False
    truncated: bool = False
    pose: str = "Unspecified"
    crowd: bool = False  # COCO iscrowd


@dataclass
class Record:
    """One image and its boxes, as every reader produces it."""

    image_path: Path
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    source: str = ""  # the annotation file, for error messages
    split: str | None = None  # the dataset's own split, when it has one
    image: object = None  # checks.ImageInfo, set by checks.check_records


@dataclass
class Report:
    """What the checks found: counts per problem, and the examples that show it."""

    problems: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    #: things handled, not problems (greyscale converted, EXIF rotation applied, ...)
    notes: Counter = field(default_factory=Counter)
    #: class names in the order the source declares them (YOLO names, COCO categories)
    classes: list[str] | None = None

    def add(self, kind: str, message: str) -> None:
        self.problems[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 20:
            self.examples[kind].append(message)

    def note(self, kind: str) -> None:
        self.notes[kind] += 1

    def lines(self, examples: int = 5) -> list[str]:
        out = []
        for kind, count in sorted(self.problems.items()):
            out.append(f"{kind}: {count}")
            out.extend(f"  {m}" for m in self.examples[kind][:examples])
        return out

    def as_dict(self) -> dict:
        return {"problems": dict(self.problems), "examples": self.examples,
                "notes": dict(self.notes)}


SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test"}


def split_from_name(name: str) -> str | None:
    """The split a file or folder name stands for (``train_labels.csv`` -> train,
    ``valid`` -> val, ``instances_val2017.json`` -> val), or None."""
    import re

    for word in re.split(r"[^a-z]+", name.lower()):
        if word in SPLIT_NAMES:
            return SPLIT_NAMES[word]
    return None


# --------------------------------------------------------------------------- #
# Readers
# --------------------------------------------------------------------------- #
def _children(node) -> dict[str, str]:
    """Tag -> stripped text of a node's direct children (first one wins)."""
    out: dict[str, str] = {}
    for child in node:
        tag = child.tag if isinstance(child.tag, str) else ""
        if tag and tag not in out:
            out[tag] = (child.text or "").strip()
    return out


def _field(fields: dict[str, str], tag: str, where: str, cast=str, default=None):
    text = fields.get(tag, "")
    if not text:
        if default is not None:
            return default
        raise DatasetError(f"missing <{tag}>", where=where,
                           fix="add the field or remove the file from the dataset")
    try:
        return cast(text)
    except (ValueError, OverflowError):
        raise DatasetError(f"<{tag}> is {text!r}, not a valid number", where=where,
                           fix="correct the value") from None


def _flag(text: str) -> bool:
    return bool(int(text))


def _pixels(text: str) -> int:
    return int(float(text))


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


@functools.lru_cache(maxsize=1)
def _xml_parser():
    """No entity expansion, no DTD, no network: annotation files may come from anyone."""
    from lxml import etree

    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False)


def _parse_voc_xml(xml_path: Path, image_dirs: Sequence[Path],
                   allow_outside: bool = False, roots: Sequence[str] | None = None) -> Record:
    from lxml import etree

    parser = _xml_parser()
    where = str(xml_path)
    try:
        root = etree.parse(str(xml_path), parser).getroot()
    except (etree.XMLSyntaxError, OSError) as exc:
        raise DatasetError(f"cannot parse XML ({exc})", where=where,
                           fix="repair or remove the file") from None
    top = _children(root)
    filename = _field(top, "filename", where)
    image_path = _find_image([filename] + [xml_path.stem + s for s in IMAGE_SUFFIXES],
                             image_dirs, allow_outside, where, roots)
    size_node = root.find("size")
    size = _children(size_node) if size_node is not None else {}
    width = _field(size, "width", where, _pixels, 0)
    height = _field(size, "height", where, _pixels, 0)
    boxes = []
    for i, obj in enumerate(root.iterfind("object"), 1):
        bwhere = f"{where} object {i}"
        fields = _children(obj)
        bnd_node = obj.find("bndbox")
        bnd = _children(bnd_node) if bnd_node is not None else {}
        boxes.append(Box(
            name=_field(fields, "name", bwhere),
            xmin=_field(bnd, "xmin", bwhere, _finite),
            ymin=_field(bnd, "ymin", bwhere, _finite),
            xmax=_field(bnd, "xmax", bwhere, _finite),
            ymax=_field(bnd, "ymax", bwhere, _finite),
            difficult=_field(fields, "difficult", bwhere, _flag, False),
            truncated=_field(fields, "truncated", bwhere, _flag, False),
            pose=_field(fields, "pose", bwhere, str, "Unspecified"),
        ))
    return Record(image_path=image_path, width=width, height=height, boxes=boxes,
                  source=where)


def read_voc(root: str | Path, report: Report | None = None,
             image_dir: str | Path | None = None, allow_outside: bool = False) -> list[Record]:
    """Read Pascal VOC XML: a VOCdevkit-style folder or a folder of XML files.

    VOCdevkit layout (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/*.txt``)
    keeps the dataset's own split; a plain folder looks for each image next to
    its XML file. The dataset is ``root`` (and ``image_dir``): images and XML files
    whose real path (symlinks followed) leaves it are refused unless ``allow_outside``.

    Example:
        >>> records = read_voc("data/raw/VOC2012")
    """
    root = Path(root)
    report = report if report is not None else Report()
    if not root.is_dir():
        raise DatasetError("annotation folder not found", where=str(root),
                           fix="pass the folder holding the VOC XML files")
    ann_dir = root / "Annotations" if (root / "Annotations").is_dir() else root
    image_dirs = [Path(image_dir)] if image_dir else []
    image_dirs += [root / "JPEGImages", ann_dir, root, root / "images"]
    roots = _roots([root, image_dir])
    xml_files = sorted(ann_dir.rglob("*.xml"))
    if not xml_files:
        raise DatasetError("no .xml annotation files found", where=str(ann_dir),
                           fix="check the path and --format")
    splits: dict[str, str] = {}
    sets_dir = root / "ImageSets" / "Main"
    for split in ("train", "val", "test", "trainval"):
        ids_file = sets_dir / f"{split}.txt"
        if ids_file.is_file() and split != "trainval":
            for line in ids_file.read_text().split():
                splits[line.strip()] = split
    records = []
    for xml_path in xml_files:
        try:
            _check_inside(xml_path, roots, allow_outside, "annotation file")
            record = _parse_voc_xml(xml_path, [xml_path.parent, *image_dirs], allow_outside,
                                    roots)
        except DatasetError as exc:
            report.add(problem_kind(exc), str(exc))
            continue
        record.split = splits.get(xml_path.stem)
        records.append(record)
    return records



class PathOutsideError(DatasetError):
    """An annotation names an image outside the dataset's folders."""

    kind = "image path outside the dataset"


def problem_kind(exc: DatasetError) -> str:
    """The report category of a reader error."""
    return getattr(exc, "kind", "unreadable annotation")


def _roots(folders: Sequence[str | Path | None]) -> list[str]:
    """The dataset's folders as the filesystem resolves them (symlinks followed)."""
    return [os.path.realpath(f) for f in folders if f]


def _inside(path: Path, roots: Sequence[str]) -> bool:
    """True if ``path``, resolved by the filesystem (every symlink followed), lies in one of
    ``roots`` (see :func:`_roots`). Resolving, not comparing text, is what makes a symlink
    inside the dataset that points elsewhere count as outside."""
    p = os.path.realpath(path)
    return any(p == r or p.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _outside_error(path: Path, roots: Sequence[str], what: str, name: str,
                   where: str | None) -> PathOutsideError:
    real = os.path.realpath(path)
    lexical = os.path.normpath(os.path.abspath(path))
    via = "through a symlink " if real != lexical else ""
    return PathOutsideError(
        f"{what} {name!r} leads outside the dataset folder {via}(to {real}; the dataset is "
        f"{', '.join(roots)})", where=where,
        fix="move the file into the dataset, pass --images FOLDER for images kept elsewhere, "
            "or pass --allow-outside-paths if you trust this dataset")


def _check_inside(path: Path, roots: Sequence[str], allow_outside: bool, what: str) -> None:
    if not allow_outside and not _inside(path, roots):
        raise _outside_error(path, roots, what, path.name, str(path))


def _find_image(names: str | Sequence[str], dirs: Sequence[Path],
                allow_outside: bool = False, where: str | None = None,
                roots: Sequence[str] | None = None) -> Path:
    """The first existing ``dir/name`` (names in order, then dirs; a name with
    folders is also tried by its base name); the first candidate if none exists,
    so the checks report it as missing.

    "Inside the dataset" means inside ``roots`` (resolved folders, see :func:`_roots`;
    default: ``dirs`` themselves). A file whose real path is elsewhere (an absolute
    path, ``..``, or a symlink pointing out) is refused with :class:`PathOutsideError`
    unless ``allow_outside``: annotation files and datasets from strangers must not
    make tfod read arbitrary files.
    """
    roots = _roots(dirs) if roots is None else roots
    names = [names] if isinstance(names, str) else names
    for name in names:
        if "\x00" in name:
            raise DatasetError(f"file name {name!r} contains a NUL byte", where=where,
                               fix="correct the file name")
    def candidates():  # lazily: most images are found at the first or second try
        yield from (d / n for n in names for d in dirs)
        for n in names:
            base = os.path.basename(n)
            if base != n:
                yield from (d / base for d in dirs)

    outside = None
    for candidate in candidates():  # stops at the first existing file inside
        if candidate.is_file():
            if _inside(candidate, roots):
                return candidate
            outside = outside or candidate
    if outside is not None and not allow_outside:
        raise _outside_error(outside, roots, "image path", names[0], where)
    return outside or dirs[0] / names[0]


def _number(value: str, where: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise DatasetError(f"{what} is {value!r}, not a finite number", where=where,
                           fix="correct the value")
    return number


def _split_files(found: Sequence[Path], where: Path, what: str,
                 report: Report) -> dict[Path, str | None]:
    """Map each annotation file to the split its name (or its folder's) stands for.

    Files whose names give no split are left out (and noted) when others do:
    a ``raccoon_labels.csv`` next to ``train_labels.csv`` and ``test_labels.csv``
    is their union."""
    if len(found) == 1:
        return {found[0]: None}
    splits = {f: split_from_name(f.stem) or split_from_name(f.parent.name) for f in found}
    named = {f: s for f, s in splits.items() if s}
    if not named or len(set(named.values())) != len(named):
        raise DatasetError(f"{len(found)} {what} files and their splits are not clear from "
                           f"their names: {', '.join(str(f) for f in found)}", where=str(where),
                           fix="pass one file, or name them by split (train/val/test)")
    for file in sorted(set(found) - set(named)):
        log.warning("%s: no split in its name; not read (the files named by split are)", file)
        report.note(f"{what} file without a split in its name, not read: {file.name}")
    return named


def _file_dataset(path: Path, image_dir) -> tuple[list[Path], list[str]]:
    """Where a COCO or CSV file's images are looked for, and what counts as its dataset.

    The dataset is the file's own folder, ``image_dir`` when given, and one more
    folder: ``images/`` beside the file's folder (COCO's ``annotations/`` +
    ``images/``, the raccoon CSVs' ``data/`` + ``images/``). Not the parent folder
    itself: ``../private/x.jpg`` next to ``downloads/coco/ann.json`` is outside.
    ``images/`` counts as it is, not where a symlink of that name would lead.
    """
    dirs = [Path(image_dir)] if image_dir else []
    dirs += [path.parent, path.parent / "images", path.parent.parent / "images"]
    roots = _roots([image_dir, path.parent])
    roots.append(os.path.join(os.path.realpath(path.parent.parent), "images"))
    return dirs, roots


def read_coco(path: str | Path, report: Report | None = None,
              image_dir: str | Path | None = None, allow_outside: bool = False
              ) -> list[Record]:
    """Read COCO instances JSON: one file, or a folder of files named by split.

    Categories become class names (their ids do not matter: a category with id
    0, as in many Roboflow exports, cannot collide with the OD API's background).
    Images without annotations are kept as negatives; ``iscrowd`` is kept. A
    folder holding ``train.json``/``val.json`` (or Roboflow's
    ``train/_annotations.coco.json``, ``valid/...``) keeps that split.

    Example:
        >>> records = read_coco("annotations/instances_train.json", image_dir="train2017")
    """
    path = Path(path)
    report = report if report is not None else Report()
    if path.is_dir():
        found = sorted(path.glob("*.json")) or sorted(path.glob("*/*.json"))
        if not found:
            raise DatasetError("no .json files in the folder", where=str(path),
                               fix="pass the COCO annotation file itself")
    elif path.is_file():
        found = [path]
    else:
        raise DatasetError("COCO file not found", where=str(path), fix="check the path")
    records: list[Record] = []
    for file, split in _split_files(found, path, "JSON", report).items():
        for record in _read_coco_file(file, report, image_dir, allow_outside):
            record.split = split
            records.append(record)
    return records


def _coco_id(value, what: str):
    """COCO ids are integers (some tools write strings); anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what} {value!r} is not an integer or string id")
    return value


def _read_coco_file(path: Path, report: Report, image_dir, allow_outside: bool
                    ) -> list[Record]:
    where = str(path)
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DatasetError(f"cannot read COCO JSON ({exc})", where=where,
                           fix="check that this is a COCO instances file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DatasetError("no 'images' list", where=where,
                           fix="pass a COCO instances file (images, annotations, categories)")
    for key in ("annotations", "categories"):
        if not isinstance(doc.get(key, []), list):
            raise DatasetError(f"'{key}' is not a list", where=where,
                               fix="pass a COCO instances file (images, annotations, categories)")
    names: dict = {}
    for i, cat in enumerate(doc.get("categories", [])):
        try:
            names[_coco_id(cat["id"], "category id")] = str(cat["name"])
        except (KeyError, TypeError, ValueError) as exc:
            report.add("unreadable annotation", f"{where} categories[{i}]: {exc}")
    try:
        declared = [names[k] for k in sorted(names)]  # by category id
    except TypeError:  # ids of mixed types: keep the file's order
        declared = list(names.values())
    report.classes = list(dict.fromkeys((report.classes or []) + declared))
    dirs, roots = _file_dataset(path, image_dir)
    records: dict = {}
    for i, img in enumerate(doc["images"]):
        try:
            if not isinstance(img.get("file_name"), str) or not img["file_name"]:
                raise ValueError(f"file_name {img.get('file_name')!r} is not a file name")
            records[_coco_id(img["id"], "image id")] = Record(
                image_path=_find_image(img["file_name"], dirs, allow_outside,
                                       f"{where} images[{i}]", roots),
                width=_size(img.get("width")), height=_size(img.get("height")),
                source=f"{where} images[{i}]")
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
            report.add("unreadable annotation", f"{where} images[{i}]: {exc!r}")
        except DatasetError as exc:
            report.add(problem_kind(exc), str(exc))
    for i, ann in enumerate(doc.get("annotations", [])):
        at = f"{where} annotations[{i}]"
        try:
            record = records[_coco_id(ann["image_id"], "image_id")]
            name = names[_coco_id(ann["category_id"], "category_id")]
            bbox = ann["bbox"]
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError(f"bbox {bbox!r} is not [x, y, width, height]")
            x, y, w, h = (_number(v, at, "bbox value") for v in bbox)
        except KeyError as exc:
            report.add("unreadable annotation", f"{at}: unknown or missing {exc}")
            continue
        except (AttributeError, TypeError, ValueError) as exc:
            report.add("unreadable annotation", f"{at}: {exc}")
            continue
        except DatasetError as exc:
            report.add("unreadable annotation", str(exc))
            continue
        record.boxes.append(Box(name, x, y, x + w, y + h, crowd=ann.get("iscrowd") in (1, True)))
    return list(records.values())


def _size(value) -> int:
    """An image width/height from an annotation: a positive integer, or 0 for unknown."""
    if value in (None, "", 0):
        return 0
    number = float(value)
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise ValueError(f"size {value!r} is not a whole number of pixels")
    return int(number)


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
        raise DatasetError(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                           where=f"{path}:{reader.line_num + 1}",
                           fix="save the file as UTF-8 CSV") from None
    except csv.Error as exc:
        raise DatasetError(f"not a readable CSV ({exc})", where=f"{path}:{reader.line_num}",
                           fix="repair the line or export the CSV again") from None
    return list(records.values())


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
    from PIL import Image

    root = Path(root)
    report = report if report is not None else Report()
    if not root.is_dir():
        raise DatasetError("dataset folder not found", where=str(root),
                           fix="pass the folder holding images/ and labels/")
    classes = _yolo_classes(root)
    report.classes = classes
    images_dir = Path(image_dir) if image_dir else (
        root / "images" if (root / "images").is_dir() else root)
    labels_dir = root / "labels" if (root / "labels").is_dir() else images_dir
    images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    roots = _roots([root, image_dir])
    if not allow_outside:  # symlinked images or labels leading out of the dataset
        for path in [p for p in images if not _inside(p, roots)]:
            report.add(PathOutsideError.kind, str(_outside_error(path, roots, "image", path.name,
                                                                 str(path))))
            images.remove(path)
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
        if not label.is_file():
            continue
        try:
            with Image.open(image) as img:
                width, height = img.size
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # YOLO tools label
                    width, height = height, width  # the picture as EXIF turns it
            record.width, record.height = width, height
        except Exception:  # the checks report unreadable images
            continue
        try:
            lines = _text(label).splitlines()
        except DatasetError as exc:
            report.add("unreadable annotation", str(exc))
            continue
        for n, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{label}:{n}"
            try:
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
            except DatasetError as exc:
                report.add("unreadable annotation", str(exc))
                continue
            record.boxes.append(Box(classes[cls], (cx - w / 2) * width, (cy - h / 2) * height,
                                    (cx + w / 2) * width, (cy + h / 2) * height))
    for label in sorted(labels_dir.rglob("*.txt")):
        rel = label.relative_to(labels_dir).with_suffix("")
        if rel not in by_stem and label.name != "classes.txt":
            report.add("label without image", f"{label}: no image {rel}.*")
    return records


READERS = {"voc": read_voc, "coco": read_coco, "csv": read_csv, "yolo": read_yolo}
