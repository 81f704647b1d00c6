"""COCO instances JSON (``images``, ``annotations``, ``categories``): one file, or one per
split (Roboflow's ``train/_annotations.coco.json`` ...); boxes ``[x, y, w, h]`` in pixels."""

from __future__ import annotations

import json
from pathlib import Path

from tfod.data.annotations import (Box, Record, Report, _file_dataset, _find_image, _number,
                                   _size, _split_files, problem_kind)
from tfod.errors import DatasetError


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
