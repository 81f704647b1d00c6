"""OD API TFRecords as input: the ``train.record`` a user of the OD API already holds becomes
records again, so ``tfod prepare`` checks it, counts it, splits it anew and writes fresh shards.

Each ``tf.train.Example`` is read with the keys of the OD API's ``TfExampleDecoder`` (and of
``create_pascal_tf_record``): the image from ``image/encoded`` (written to a private folder
by :func:`~tfod.data.annotations.embedded_image`; its format is what the bytes are, whatever
``image/format`` says), boxes from the normalised ``image/object/bbox/{xmin,ymin,xmax,ymax}``,
class names from ``image/object/class/text`` or, through ``--label-map``, from
``image/object/class/label``; ``difficult``, ``truncated``, ``is_crowd`` / ``group_of`` and
``view`` (the VOC pose) when present. Files are read without TensorFlow
(:func:`tfod.data.tfrecord.read_records`, both CRCs checked).
"""

from __future__ import annotations

import glob
import io
import logging
import math
import os
import re
import warnings
from pathlib import Path

from tfod.data.annotations import (Box, Record, Report, _check_inside, _roots, embedded_image,
                                   problem_kind, split_from_name)
from tfod.errors import DatasetError

log = logging.getLogger(__name__)

#: file names taken from a folder: ``*.record``, ``*.tfrecord(s)``, ``*.tfrec``, each also
#: sharded as ``*.record-00000-of-00010`` (tfod's own ``train-00000-of-00004.tfrecord`` too)
RECORD_NAME = re.compile(r"\.(tfrecords?|tfrec|records?)(-\d+-of-\d+)?$", re.IGNORECASE)
_BBOX = ("xmin", "ymin", "xmax", "ymax")
#: per-object lists read besides the boxes: key -> the Box field it fills
_FLAGS = {"image/object/difficult": "difficult", "image/object/truncated": "truncated",
          "image/object/is_crowd": "crowd", "image/object/group_of": "crowd"}
#: features read, or written anew by tfod (``image/key/sha256``); others are noted as left out
READ = {"image/encoded", "image/format", "image/filename", "image/source_id", "image/height",
        "image/width", "image/key/sha256", "image/object/class/text", "image/object/class/label",
        "image/object/view", *(f"image/object/bbox/{k}" for k in _BBOX), *_FLAGS}
#: longest image file name kept (bytes; most file systems allow 255)
MAX_NAME = 200
_KIND_NAMES = {"bytes_list": "bytes", "float_list": "floats", "int64_list": "integers"}


def read_tfrecord(source: str | Path, report: Report | None = None,
                  image_dir: str | Path | None = None, allow_outside: bool = False,
                  label_map: str | Path | None = None) -> list[Record]:
    """Read OD API TFRecords: one file, a folder of them, or a glob pattern.

    A folder's files are those named like TFRecords (:data:`RECORD_NAME`: ``train.record``,
    ``val.tfrecord``, ``coco_train.record-00000-of-00100``, ``test-00000-of-00004.tfrecord``),
    else those one folder down (``train/*.tfrecord``). Splits come from the names
    (:func:`~tfod.data.annotations.split_from_name`, else the subfolder's name) when they name
    two splits or more; then files whose names give none are left out and noted, as for CSV
    files. One file, or files of one split or none (the shards of one set), get a new split.

    Class names are ``image/object/class/text``; a record without them needs ``label_map``
    (a ``.pbtxt``: ids -> names). With both, a text that is not the label map's name for its
    id is counted and the object left out; so is an id the label map does not name. Without a
    label map, the classes are declared in the order of the records' own ids, so the new
    label map keeps them when they run 1..N.

    Counted per record (file, record index, byte offset, file name) and left out: a record
    that is not a ``tf.train.Example``, has no ``image/encoded``, per-object lists of
    different lengths or features of the wrong kind; per object: a coordinate that is not a
    finite number. A damaged file (truncated, bad CRC) is counted with the byte offset and
    the records before the damage are kept. Boxes go back to pixels with the image's own
    size (normalised coordinates refer to the decoded image); ``image/height`` and
    ``image/width`` are passed on, so the checks report a record whose size is not its
    image's. Boxes outside the image, duplicate images (the same bytes in two records) and
    broken image bytes are the checks' (:func:`tfod.data.checks.check_records`).

    Other features (masks, keypoints, ``image/object/area``, weights ...) are not carried
    over; each is noted with the number of records holding it.

    ``image_dir`` is not used (the images are inside the records); ``allow_outside``: files
    of a folder that lead outside it through a symlink are counted and left unread without
    it.

    Example:
        >>> records = read_tfrecord("data/train.record")
        >>> records = read_tfrecord("data/records/", label_map="training/labels.pbtxt")
    """
    report = report if report is not None else Report()
    if image_dir is not None:
        log.warning("%s: --images is not used: TFRecords hold their images", source)
    files = _split_of_files(_record_files(source), source, report)
    roots = _roots([source]) if Path(source).is_dir() else None
    names = _label_map_names(label_map)
    if names is not None:
        report.classes = list(names.values())
    ids: dict[str, set[int]] = {}
    records: list[Record] = []
    for file, split in files.items():
        if roots is not None:  # a file of the folder that is a symlink leading out
            try:
                _check_inside(file, roots, allow_outside, "TFRecord file")
            except DatasetError as exc:
                report.add(problem_kind(exc), str(exc))
                continue
        for record in _read_file(file, report, names, ids):
            record.split = split
            records.append(record)
    if names is None:
        report.classes = _classes_by_id(ids, report)
    return records


class LabelMapNeeded(DatasetError):
    """Records name their classes by id only, and no label map was given."""


# --------------------------------------------------------------------------- #
# Files and splits
# --------------------------------------------------------------------------- #
def _record_files(source: str | Path) -> list[Path]:
    """The record files ``source`` stands for, sorted."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = _named_records(path.iterdir()) or _named_records(
            f for sub in sorted(path.iterdir()) if sub.is_dir() and not sub.name.startswith(".")
            for f in sub.iterdir())
        if not found:
            raise DatasetError("no TFRecord files (*.record, *.tfrecord, *.record-00000-of-0000N"
                               ", ...) in the folder or its subfolders", where=str(path),
                               fix="pass the record file itself, or a glob pattern")
        return found
    if any(c in str(source) for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(source)) if os.path.isfile(p))
        if not found:
            raise DatasetError("no file matches the pattern", where=str(source),
                               fix="check the pattern (quote it so the shell leaves it alone)")
        return found
    raise DatasetError("TFRecord file or folder not found", where=str(source),
                       fix="check the path")


def _named_records(paths) -> list[Path]:
    return sorted(p for p in paths if RECORD_NAME.search(p.name)
                  and not p.name.startswith(".") and p.is_file())


def _split_of_files(found: list[Path], source, report: Report) -> dict[Path, str | None]:
    """Each file's split: kept when the names give two splits or more (files naming none
    are then left out, noted); otherwise every file is read and a new split made."""
    folder = Path(source) if Path(source).is_dir() else None  # its subfolders may name splits
    splits = {f: split_from_name(f.name) or (split_from_name(f.parent.name)
                                             if folder and f.parent != folder else None)
              for f in found}
    named = {f: s for f, s in splits.items() if s}
    if len(set(named.values())) < 2:
        if len(named) == len(found) and len(found) > 1:
            log.info("%s: every file is of split %r: a new split is made", source,
                     next(iter(named.values())))
        return {f: None for f in found}
    for file in sorted(set(found) - set(named)):
        log.warning("%s: no split in its name; not read (the files named by split are)", file)
        report.note(f"TFRecord file without a split in its name, not read: {file.name}")
    return named


# --------------------------------------------------------------------------- #
# Classes
# --------------------------------------------------------------------------- #
def _label_map_names(label_map) -> dict[int, str] | None:
    if label_map is None:
        return None
    from tfod.data.labelmap import read_label_map

    return dict(enumerate(read_label_map(label_map), 1))  # ids are 1..N, checked there


def _classes_by_id(ids: dict[str, set[int]], report: Report) -> list[str] | None:
    """Class texts in the order of their ids in the records, when each text has one id and
    each id one text; None (new ids, by name) otherwise, noted when the records had ids."""
    if not any(ids.values()):
        return None
    texts_of: dict[int, set[str]] = {}
    for text, labels in ids.items():
        for label in labels:
            texts_of.setdefault(label, set()).add(text)
    if all(len(labels) == 1 for labels in ids.values()) and all(
            len(texts) == 1 for texts in texts_of.values()):
        return sorted(ids, key=lambda t: min(ids[t]))
    report.note("class ids in the records do not match their texts one to one: new ids "
                "by class name")
    return None


def _class_names(texts: list[bytes], labels: list[int], n: int, names: dict[int, str] | None,
                 where: str, report: Report, ids: dict[str, set[int]]) -> list[str | None]:
    """The class name of each of ``n`` objects (None: counted, left out)."""
    out: list[str | None] = []
    for i in range(n):
        text = texts[i].decode("utf-8", "replace") if texts else ""
        label = labels[i] if labels else None
        at = f"{where} object {i + 1}"
        if not text and label is None:
            report.add("unreadable annotation", f"{at}: no class (empty class/text, no "
                       "class/label); fix the record")
            out.append(None)
        elif names is None:
            if not text:
                raise LabelMapNeeded(
                    "objects have class ids (image/object/class/label) but no class names "
                    "(image/object/class/text)", where=at,
                    fix="pass the label map these records were written with: --label-map "
                        "FILE.pbtxt")
            ids.setdefault(text, set()).update([label] if label is not None else [])
            out.append(text)
        elif label is None:
            out.append(text)  # the checks count a name the label map lacks
        elif label not in names:
            report.add("class id not in the label map",
                       f"{at}: class id {label}{f' ({text!r})' if text else ''} has no name in "
                       f"the label map (ids 1..{len(names)}); fix the id or the label map")
            out.append(None)
        elif text and text != names[label]:
            report.add("class text and id disagree",
                       f"{at}: class text {text!r} but id {label}, which the label map names "
                       f"{names[label]!r}; fix the record or the label map")
            out.append(None)
        else:
            out.append(names[label])
    return out


# --------------------------------------------------------------------------- #
# Records
# --------------------------------------------------------------------------- #
def _read_file(file: Path, report: Report, names, ids) -> list[Record]:
    from tfod.data.tfrecord import read_records

    records: list[Record] = []
    try:
        for index, (offset, payload) in enumerate(read_records(file)):
            try:
                record = _to_record(payload, f"{file} record {index} at byte {offset}", file,
                                    index, report, names, ids)
            except LabelMapNeeded:
                raise
            except DatasetError as exc:
                report.add(problem_kind(exc), str(exc))
                continue
            if record is not None:
                records.append(record)
    except LabelMapNeeded:
        raise
    except DatasetError as exc:  # the framing: what came before the damage is kept
        report.add("corrupt TFRecord file", str(exc))
    return records


def _values(features, key: str, kind: str, where: str) -> list:
    """The values of one feature ([] when absent), refused when of another kind."""
    if key not in features:
        return []
    feature = features[key]
    found = feature.WhichOneof("kind")
    if found is None:
        return []
    if found != kind:
        raise DatasetError(f"{key} holds {_KIND_NAMES[found]}, not {_KIND_NAMES[kind]}",
                           where=where, fix="write the record with the OD API's feature types")
    return list(getattr(feature, found).value)


def _to_record(payload: bytes, where: str, file: Path, index: int, report: Report,
               names, ids) -> Record | None:
    from google.protobuf.message import DecodeError

    from tfod.data.tfrecord import _classes

    try:
        features = _classes()["Example"].FromString(payload).features.feature
    except (DecodeError, RecursionError, ValueError):
        raise DatasetError("not a tf.train.Example (its bytes do not parse as one)",
                           where=where, fix="check that the file holds tf.train.Example "
                                            "records") from None
    get = lambda key, kind="bytes_list": _values(features, key, kind, where)  # noqa: E731
    for key in sorted(set(features) - READ):  # masks, keypoints, area, weights ...
        report.note(f"feature not carried over to the new records: {key[:80]}")
    filename = b"".join(get("image/filename")[:1]).decode("utf-8", "replace")
    source_id = b"".join(get("image/source_id")[:1]).decode("utf-8", "replace")
    if filename or source_id:
        where = f"{where} ({filename or source_id})"
    encoded = get("image/encoded")
    if len(encoded) != 1 or not encoded[0]:
        what = "no image bytes (image/encoded)" if not any(encoded) else \
            f"{len(encoded)} images in image/encoded"
        report.add("missing image" if not any(encoded) else "unreadable annotation",
                   f"{where}: {what}; the record cannot be used")
        return None
    coords = {k: get(f"image/object/bbox/{k}", "float_list") for k in _BBOX}
    n = len(coords["xmin"])
    texts = get("image/object/class/text")
    labels = get("image/object/class/label", "int64_list")
    flags = {key: get(key, "int64_list") for key in _FLAGS}
    views = get("image/object/view")
    optional = {"class/text": texts, "class/label": labels, "view": views,
                **{key.rsplit("/", 1)[1]: values for key, values in flags.items()}}
    lengths = {f"bbox/{k}": len(v) for k, v in coords.items()}
    lengths.update({k: len(v) for k, v in optional.items() if v})
    if n and not texts and not labels:
        lengths["class/text or class/label"] = 0
    if len(set(lengths.values())) > 1:
        report.add("unreadable annotation",
                   f"{where}: per-object lists of different lengths "
                   f"({', '.join(f'{k}={v}' for k, v in lengths.items())}); the record cannot "
                   "be used")
        return None
    classes = _class_names(texts, labels, n, names, where, report, ids)
    width, height = (get(f"image/{k}", "int64_list")[:1] for k in ("width", "height"))
    given = (width[0], height[0]) if width and height else (0, 0)
    stored = _stored_size(encoded[0], get("image/format"), report)
    if not all(0 < v < 2**31 for v in given):
        report.note("record without a valid image/width and image/height (the image's own "
                    "size used)")
        # the stored size, so the checks take the pixels as stored, as TensorFlow decodes them
        given = stored or (0, 0)
    real = stored or given
    image_name = _short(filename or (f"{source_id}.jpg" if source_id
                                     else f"{file.stem}-{index}.jpg"), report)
    boxes = []
    for i in range(n):
        if classes[i] is None:
            continue
        x0, y0, x1, y1 = (coords[k][i] for k in _BBOX)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            report.add("unreadable annotation", f"{where} object {i + 1}: box "
                       f"{x0!r},{y0!r},{x1!r},{y1!r} is not finite numbers; fix the box")
            continue
        box = Box(classes[i], x0 * real[0], y0 * real[1], x1 * real[0], y1 * real[1])
        for key, field in _FLAGS.items():
            if flags[key]:  # 1 is set; 0, and -1 (unknown, the OD API's Open Images), not
                setattr(box, field, getattr(box, field) or flags[key][i] == 1)
        if views and views[i]:
            box.pose = views[i].decode("utf-8", "replace")
        boxes.append(box)
    try:
        image_path = embedded_image(encoded[0], image_name)
    except OSError as exc:
        raise DatasetError(f"cannot write the image to a temporary file ({exc.strerror})",
                           where=where, fix="check the space in the temporary folder "
                                            "(TMPDIR)") from None
    return Record(image_path, given[0], given[1], boxes, source=where)


def _short(name: str, report: Report) -> str:
    """The image's file name without folders, cut to :data:`MAX_NAME` bytes (keeping its
    extension) so that it can be a file name."""
    base = os.path.basename(name.replace("\\", "/"))
    if len(base.encode()) <= MAX_NAME:
        return name
    stem, suffix = os.path.splitext(base)
    suffix = suffix if len(suffix.encode()) <= 16 else ""
    report.note(f"image file names over {MAX_NAME} bytes shortened")
    return stem.encode()[:MAX_NAME - len(suffix.encode())].decode("utf-8", "ignore") + suffix


def _stored_size(raw: bytes, declared: list[bytes], report: Report) -> tuple[int, int] | None:
    """The image's stored size (what TensorFlow decodes; EXIF is ignored) from its header,
    None when unreadable (the checks report it). A format other than ``image/format`` is
    noted; the bytes decide."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(raw)) as img:
                size, fmt = img.size, (img.format or "").lower()
    except Exception:  # PIL raises many types for broken files; the checks name the problem
        return None
    said = b"".join(declared[:1]).decode("utf-8", "replace").lower()
    if said and {"jpg": "jpeg"}.get(said, said) != fmt:
        report.note(f"image/format {said!r} differs from the image bytes ({fmt}); the bytes "
                    "decide")
    return size if size[0] > 0 and size[1] > 0 else None
