"""Records into sharded TFRecords with the OD API's own feature keys (as
``create_pascal_tf_record`` writes them): ``<split>-0000i-of-0000N.tfrecord``, each shard
under its final name only when complete."""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import os
from pathlib import Path
from typing import Sequence

from tfod.data.annotations import Record
from tfod.data.checks import default_workers, inspect_image, map_images
from tfod.errors import DatasetError
from tfod.layout import DatasetDir

log = logging.getLogger(__name__)


def _encoded_image(record: Record) -> tuple[bytes, int, int]:
    """JPEG bytes passed through unchanged (RGB or greyscale, not rotated); other
    formats, CMYK/RGBA and EXIF-rotated images encoded once as RGB JPEG, so the
    model sees what the annotator saw."""
    from PIL import Image, ImageOps

    info = record.image if record.image is not None else inspect_image(record.image_path)
    if isinstance(info, str):
        raise DatasetError(f"unreadable image ({info})", where=str(record.image_path),
                           fix="run the checks (prepare_dataset) before writing")
    raw = record.image_path.read_bytes()
    if info.passthrough:
        return raw, info.width, info.height
    with Image.open(io.BytesIO(raw)) as img:
        if info.rotate:
            img = ImageOps.exif_transpose(img)
        img = img.convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        return buf.getvalue(), img.width, img.height


def _sha256(record: Record, encoded: bytes) -> str:
    info = record.image
    if info is not None and not isinstance(info, str) and info.passthrough:
        return info.sha256  # the checks hashed these very bytes
    return hashlib.sha256(encoded).hexdigest()


def record_to_example(record: Record, class_ids: dict[str, int]) -> bytes:
    """A serialised ``tf.train.Example`` with the keys ``create_pascal_tf_record``
    writes (plus ``image/object/is_crowd``); built without TensorFlow
    (:mod:`tfod.data.tfrecord`)."""
    from tfod.data.tfrecord import example

    encoded, width, height = _encoded_image(record)
    boxes = record.boxes
    name = record.image_path.name.encode()
    return example({
        "image/height": [height],
        "image/width": [width],
        "image/filename": [name],
        "image/source_id": [name],
        "image/key/sha256": [_sha256(record, encoded).encode()],
        "image/encoded": [encoded],
        "image/format": [b"jpeg"],
        "image/object/bbox/xmin": [b.xmin / width for b in boxes],
        "image/object/bbox/xmax": [b.xmax / width for b in boxes],
        "image/object/bbox/ymin": [b.ymin / height for b in boxes],
        "image/object/bbox/ymax": [b.ymax / height for b in boxes],
        "image/object/class/text": [b.name.encode() for b in boxes],
        "image/object/class/label": [class_ids[b.name] for b in boxes],
        "image/object/difficult": [int(b.difficult) for b in boxes],
        "image/object/truncated": [int(b.truncated) for b in boxes],
        "image/object/view": [b.pose.encode() for b in boxes],
        "image/object/is_crowd": [int(b.crowd) for b in boxes],
    })


def num_shards_for(records: Sequence[Record], shard_size_mb: float) -> int:
    """Shards for a split so that each holds about ``shard_size_mb`` of image bytes."""
    size = sum(r.image_path.stat().st_size for r in records)
    return max(1, min(len(records), math.ceil(size / (shard_size_mb * 2**20))))


def write_tfrecords(records: Sequence[Record], out_dir: str | Path, split: str,
                    class_ids: dict[str, int], num_shards: int = 1,
                    workers: int | None = None, progress: bool = False) -> list[Path]:
    """Write ``<split>-0000i-of-0000N.tfrecord`` shards.

    Examples are built in ``workers`` processes and written here in record
    order (image ``i`` goes to shard ``i % N``), so the output does not depend
    on the number of workers. Each shard is written under a temporary name and
    renamed when complete.

    Example:
        >>> write_tfrecords(records, "data/pets", "train", {"cat": 1}, num_shards=2)
    """
    from tfod.data.tfrecord import TFRecordWriter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, min(num_shards, len(records) or 1))
    finals = [DatasetDir(out_dir).shard(split, i, num_shards)
              for i in range(num_shards)]
    tmps = [f.with_name(f".{f.name}.partial") for f in finals]
    writers = [TFRecordWriter(t) for t in tmps]
    workers = default_workers(len(records)) if workers is None else workers
    serialize = functools.partial(record_to_example, class_ids=dict(class_ids))
    examples = map_images(serialize, list(records), workers, chunksize=8)
    if progress:
        from tqdm import tqdm

        examples = tqdm(examples, total=len(records), desc=f"write {split}", unit="img",
                        leave=False)
    try:
        for i, example in enumerate(examples):
            writers[i % num_shards].write(example)
    finally:
        for writer in writers:
            writer.close()
    for tmp, final in zip(tmps, finals):
        os.replace(tmp, final)
    return finals
