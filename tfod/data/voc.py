"""Pascal VOC: one XML file per image (``Annotations/*.xml``), images in ``JPEGImages/``
or beside the XML; splits from ``ImageSets/Main/<split>.txt``. Parsed with lxml, no
network or entity expansion."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

from tfod.data.annotations import (Box, Record, Report, _check_inside, _find_image, _roots,
                                   _source_folder, problem_kind)
from tfod.errors import DatasetError
from tfod.layout import IMAGE_SUFFIXES


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
    root, report = _source_folder(root, report, "annotation folder",
                                  "pass the folder holding the VOC XML files")
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
