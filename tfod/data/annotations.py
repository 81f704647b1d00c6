"""Annotation readers: every format becomes the same :class:`Record` objects.

Each reader takes the annotation source, a :class:`Report` to count problems in
and an optional image folder, and returns records with boxes in pixels and
class names. Nothing is dropped silently: a file or line that cannot be read is
counted in the report with its location, and the reader goes on.

Formats: Pascal VOC XML, COCO JSON (instances), CSV
(``filename,width,height,class,xmin,ymin,xmax,ymax``) and YOLO txt.
"""

from __future__ import annotations

import itertools
import math
import os
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tfod.errors import DatasetError

log = logging.getLogger(__name__)

FORMATS = ("voc", "coco", "csv", "yolo", "kitti", "openimages", "cvat", "labelme", "tfrecord")
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
    crowd: bool = False  # COCO iscrowd, Open Images IsGroupOf
    occluded: bool = False  # CVAT occluded (kept in the record, not an OD API feature)


@dataclass
class Record:
    """One image and its boxes, as every reader produces it."""

    image_path: Path
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    source: str = ""  # the annotation file, for error messages
    split: str | None = None  # the dataset's own split, when it has one
    origin: int = 0  # which source of a merged prepare it came from (index)
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


def _size(value) -> int:
    """An image width/height from an annotation: a positive integer, or 0 for unknown."""
    if value in (None, "", 0):
        return 0
    number = float(value)
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise ValueError(f"size {value!r} is not a whole number of pixels")
    return int(number)


# --------------------------------------------------------------------------- #
# Shared by the readers
# --------------------------------------------------------------------------- #
def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                           where=str(path), fix="save the file as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"cannot read ({exc.strerror})", where=str(path),
                           fix="check the file") from None


def _shown_size(image: Path) -> tuple[int, int]:
    """(width, height) of the picture as EXIF turns it: what YOLO labelling tools label."""
    from PIL import Image

    with Image.open(image) as img:
        width, height = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            width, height = height, width
    return width, height


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


def _source_folder(root: str | Path, report: Report | None, what: str,
                   fix: str) -> tuple[Path, Report]:
    """(folder, report) of a reader whose source is a folder: a missing one is an error."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{what} not found", where=str(root), fix=fix)
    return root, report if report is not None else Report()


# --------------------------------------------------------------------------- #
# Images that come inside the annotations (LabelMe imageData, TFRecords)
# --------------------------------------------------------------------------- #
_EMBEDDED: list[str] = []
_EMBEDDED_COUNT = itertools.count()  # folders in reading order: records are ordered by path


def embedded_image(raw: bytes, name: str) -> Path:
    """Write an image that an annotation file carries inside it (LabelMe's base64
    ``imageData``, a TFRecord's ``image/encoded``) to a private folder of this process,
    and return its path, so the checks and the record writer treat it like any other
    image. The folder (``tfod-embedded-*`` in the temporary directory, mode 0700) is
    removed when the process ends. ``name`` keeps only its last component; each image
    gets a folder of its own, numbered in reading order (so the records' order, which
    follows paths, and with it a seeded split, is the same on every run), and equal names
    never collide.
    """
    import atexit
    import shutil
    import tempfile

    if not _EMBEDDED:
        _EMBEDDED.append(tempfile.mkdtemp(prefix="tfod-embedded-"))
        atexit.register(shutil.rmtree, _EMBEDDED[0], ignore_errors=True)
    base = os.path.basename(name.replace("\\", "/")).replace("\x00", "") or "image"
    if base in (".", ".."):
        base = "image"
    folder = Path(_EMBEDDED[0]) / f"{next(_EMBEDDED_COUNT):09d}"
    folder.mkdir(mode=0o700)
    path = folder / base
    with open(path, "xb") as f:
        f.write(raw)
    return path


def embedded_root() -> list[str]:
    """The folder of :func:`embedded_image`, resolved, for a reader's ``roots``."""
    return _roots(_EMBEDDED)
