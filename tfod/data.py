"""Dataset preparation: annotations -> checked records -> split, sharded TFRecords + label map.

Data flows one way: a reader turns annotation files into :class:`Record` objects
(pixels, class names), :func:`check_records` drops and counts what cannot be
used, :func:`split_records` assigns splits, and :func:`write_tfrecords` writes
the OD API's own feature keys (as ``create_pascal_tf_record`` writes them).
Everything a later stage needs is on disk under ``data/<name>/``:
``<split>-00000-of-000NN.tfrecord``, ``label_map.pbtxt`` and ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from tfod.annotations import (  # noqa: F401  (re-exported: data.read_voc etc.)
    CLIP_TOLERANCE, FORMATS, IMAGE_SUFFIXES, READERS, Box, Record, Report, read_coco,
    read_csv, read_voc, read_yolo)
from tfod.errors import DatasetError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Checks
# --------------------------------------------------------------------------- #
def _image_info(path: Path) -> tuple[int, int, str]:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        fmt = (img.format or "").lower()
        img = ImageOps.exif_transpose(img)
        img.load()  # decodes: catches truncated and corrupt files
        return img.width, img.height, fmt


def check_records(records: Iterable[Record], report: Report,
                  classes: Sequence[str] | None = None) -> list[Record]:
    """Drop unusable images and invalid boxes, counting each in ``report``.

    Boxes up to :data:`CLIP_TOLERANCE` pixels outside the image are clipped.

    Example:
        >>> report = Report(); good = check_records(read_voc("voc"), report)
    """
    good = []
    for record in records:
        if not record.image_path.is_file():
            report.add("missing image", f"{record.source}: {record.image_path} not found")
            continue
        try:
            width, height, _ = _image_info(record.image_path)
        except Exception as exc:  # PIL raises many types for broken files
            report.add("unreadable image", f"{record.image_path}: {exc}")
            continue
        if (record.width, record.height) not in ((0, 0), (width, height)):
            report.add("size mismatch (annotation fixed to real size)",
                       f"{record.source}: annotation says {record.width}x{record.height}, "
                       f"image is {width}x{height}")
        record.width, record.height = width, height
        kept = []
        for i, box in enumerate(record.boxes, 1):
            where = f"{record.source}: box {i} ({box.name})"
            if classes is not None and box.name not in classes:
                report.add("unknown class", f"{where}: not in the label map")
                continue
            if box.xmax <= box.xmin or box.ymax <= box.ymin:
                report.add("empty or inverted box", f"{where}: {box.xmin},{box.ymin},"
                           f"{box.xmax},{box.ymax}")
                continue
            t = CLIP_TOLERANCE
            if box.xmin < -t or box.ymin < -t or box.xmax > width + t or box.ymax > height + t:
                report.add("box outside image", f"{where}: {box.xmin},{box.ymin},{box.xmax},"
                           f"{box.ymax} vs image {width}x{height}")
                continue
            box.xmin, box.ymin = max(box.xmin, 0.0), max(box.ymin, 0.0)
            box.xmax, box.ymax = min(box.xmax, float(width)), min(box.ymax, float(height))
            kept.append(box)
        record.boxes = kept
        good.append(record)
    return good


# --------------------------------------------------------------------------- #
# Split, label map
# --------------------------------------------------------------------------- #
def split_records(records: list[Record], ratios: dict[str, float], seed: int = 0,
                  keep_own_split: bool = True) -> dict[str, list[Record]]:
    """Assign records to splits: the dataset's own, or seeded by ratios.

    Example:
        >>> splits = split_records(records, {"train": 0.8, "val": 0.2}, seed=1)
    """
    if keep_own_split and records and all(r.split for r in records):
        out: dict[str, list[Record]] = {}
        for record in records:
            out.setdefault(record.split, []).append(record)
        return out
    total = sum(ratios.values())
    if total <= 0:
        raise DatasetError("split ratios sum to 0", where="--split",
                           fix="give ratios like train=0.8,val=0.2")
    shuffled = sorted(records, key=lambda r: str(r.image_path))
    random.Random(seed).shuffle(shuffled)
    out, start = {}, 0
    names = list(ratios)
    for i, name in enumerate(names):
        end = len(shuffled) if i == len(names) - 1 else start + round(
            len(shuffled) * ratios[name] / total)
        out[name] = shuffled[start:end]
        for record in out[name]:
            record.split = name
        start = end
    return out


def write_label_map(classes: Sequence[str], path: str | Path) -> Path:
    """Write a label map with ids 1..N in the given order (0 is the background).

    Example:
        >>> write_label_map(["cat", "dog"], "label_maps/pets.pbtxt")
    """
    from google.protobuf import text_format

    import tfod  # noqa: F401  (compat hook for the proto modules)
    from object_detection.protos import string_int_label_map_pb2

    label_map = string_int_label_map_pb2.StringIntLabelMap()
    for i, name in enumerate(classes, 1):
        label_map.item.add(id=i, name=name, display_name=name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(path, text_format.MessageToString(label_map))
    return path


def read_label_map(path: str | Path) -> list[str]:
    """Class names ordered by id, read with the OD API's own parser."""
    from object_detection.utils import label_map_util

    mapping = label_map_util.get_label_map_dict(str(path))
    ids = sorted(mapping.values())
    if ids != list(range(1, len(ids) + 1)):
        raise DatasetError(f"label ids are {ids}, not 1..{len(ids)}", where=str(path),
                           fix="number the items 1, 2, ... without gaps (0 is background)")
    return [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- #
# TFRecords
# --------------------------------------------------------------------------- #
def _encoded_image(path: Path) -> tuple[bytes, str, int, int]:
    """JPEG bytes passed through unchanged; other formats and EXIF-rotated
    images re-encoded once, so the model sees what the annotator saw."""
    from PIL import Image, ImageOps

    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as img:
        rotated = img.getexif().get(0x0112, 1) not in (1, None)
        if img.format == "JPEG" and img.mode == "RGB" and not rotated:
            return raw, "jpeg", img.width, img.height
        img = ImageOps.exif_transpose(img).convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        return buf.getvalue(), "jpeg", img.width, img.height


def record_to_example(record: Record, class_ids: dict[str, int]):
    """A ``tf.train.Example`` with the keys ``create_pascal_tf_record`` writes."""
    import tensorflow as tf
    from object_detection.utils import dataset_util as du

    encoded, fmt, width, height = _encoded_image(record.image_path)
    boxes = record.boxes
    feature = {
        "image/height": du.int64_feature(height),
        "image/width": du.int64_feature(width),
        "image/filename": du.bytes_feature(record.image_path.name.encode()),
        "image/source_id": du.bytes_feature(record.image_path.name.encode()),
        "image/key/sha256": du.bytes_feature(hashlib.sha256(encoded).hexdigest().encode()),
        "image/encoded": du.bytes_feature(encoded),
        "image/format": du.bytes_feature(fmt.encode()),
        "image/object/bbox/xmin": du.float_list_feature([b.xmin / width for b in boxes]),
        "image/object/bbox/xmax": du.float_list_feature([b.xmax / width for b in boxes]),
        "image/object/bbox/ymin": du.float_list_feature([b.ymin / height for b in boxes]),
        "image/object/bbox/ymax": du.float_list_feature([b.ymax / height for b in boxes]),
        "image/object/class/text": du.bytes_list_feature([b.name.encode() for b in boxes]),
        "image/object/class/label": du.int64_list_feature([class_ids[b.name] for b in boxes]),
        "image/object/difficult": du.int64_list_feature([int(b.difficult) for b in boxes]),
        "image/object/truncated": du.int64_list_feature([int(b.truncated) for b in boxes]),
        "image/object/view": du.bytes_list_feature([b.pose.encode() for b in boxes]),
        "image/object/is_crowd": du.int64_list_feature([int(b.crowd) for b in boxes]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_tfrecords(records: Sequence[Record], out_dir: str | Path, split: str,
                    class_ids: dict[str, int], num_shards: int = 1) -> list[Path]:
    """Write ``<split>-0000i-of-0000N.tfrecord`` shards; each is written under a
    temporary name and renamed when complete.

    Example:
        >>> write_tfrecords(records, "data/pets", "train", {"cat": 1}, num_shards=2)
    """
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, min(num_shards, len(records) or 1))
    paths = []
    for shard in range(num_shards):
        final = out_dir / f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"
        tmp = final.with_name(f".{final.name}.partial")
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in records[shard::num_shards]:
                writer.write(record_to_example(record, class_ids).SerializeToString())
        os.replace(tmp, final)
        paths.append(final)
    return paths


def _fingerprint(records: Sequence[Record]) -> str:
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: str(r.image_path)):
        digest.update(record.image_path.read_bytes())
        for b in record.boxes:
            digest.update(f"{b.name},{b.xmin},{b.ymin},{b.xmax},{b.ymax}".encode())
    return digest.hexdigest()


def prepare_dataset(source: str | Path, name: str, fmt: str = "voc",
                    out_root: str | Path = "data", label_map_dir: str | Path = "label_maps",
                    split: dict[str, float] | None = None, seed: int = 0,
                    classes: Sequence[str] | None = None, strict: bool = False,
                    shard_size_mb: float = 100.0, image_dir: str | Path | None = None) -> dict:
    """Annotations -> checked, split, sharded TFRecords + label map + manifest.

    Writes into a temporary folder and renames it to ``<out_root>/<name>`` at the
    end, so an interrupted run leaves no folder that looks complete.

    Example:
        >>> prepare_dataset("data/raw/voc", name="shapes", fmt="voc")
    """
    start = time.time()
    if fmt not in READERS:
        raise DatasetError(f"unknown format {fmt!r}", where="--format",
                           fix=f"use one of: {', '.join(sorted(READERS))}")
    log.info("prepare: reading %s annotations from %s", fmt, source)
    report = Report()
    records = READERS[fmt](source, report, image_dir=image_dir)
    records = check_records(records, report, classes)
    for line in report.lines():
        log.warning("prepare: %s", line)
    if strict and report.problems:
        raise DatasetError("problems found with --strict:\n" + "\n".join(report.lines()),
                           where=str(source), fix="fix the files or drop --strict")
    if not records:
        raise DatasetError("no usable images", where=str(source),
                           fix="check the report above and the --format")
    names = list(classes) if classes else sorted({b.name for r in records for b in r.boxes})
    class_ids = {n: i for i, n in enumerate(names, 1)}
    splits = split_records(records, split or {"train": 0.8, "val": 0.2}, seed)

    out_root = Path(out_root)
    final_dir = out_root / name
    out_root.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out_root))
    tmp_dir.chmod(0o755)
    try:
        write_label_map(names, tmp_dir / "label_map.pbtxt")
        shards = {}
        for split_name, split_records_ in splits.items():
            size = sum(r.image_path.stat().st_size for r in split_records_)
            num = max(1, int(size / (shard_size_mb * 2**20)) + 1)
            paths = write_tfrecords(split_records_, tmp_dir, split_name, class_ids, num)
            shards[split_name] = [p.name for p in paths]
        manifest = {
            "name": name, "format": fmt, "source": str(Path(source).resolve()),
            "classes": names,
            "splits": {s: {"images": len(rs), "boxes": Counter(b.name for r in rs
                                                                for b in r.boxes),
                           "shards": shards[s],
                           "pattern": f"{s}-?????-of-{len(shards[s]):05d}.tfrecord"}
                       for s, rs in splits.items()},
            "problems": dict(report.problems),
            "fingerprint": _fingerprint(records),
            "seed": seed,
        }
        (tmp_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    label_map = write_label_map(names, Path(label_map_dir) / f"{name}.pbtxt")
    counts = ", ".join(f"{s}={len(rs)}" for s, rs in splits.items())
    log.info("prepare: wrote %s (%s images; %d classes) and %s in %.1fs", final_dir, counts,
             len(names), label_map, time.time() - start)
    return {"dir": str(final_dir), "label_map": str(label_map), "manifest": manifest}


def split_pattern(data_dir: str | Path, split: str) -> str:
    """The input path glob for one split of a prepared dataset."""
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    if split not in manifest["splits"]:
        raise DatasetError(f"no split {split!r}", where=str(Path(data_dir) / "manifest.json"),
                           fix=f"use one of: {', '.join(manifest['splits'])}")
    return str(Path(data_dir).resolve() / manifest["splits"][split]["pattern"])
