"""Checks on annotation records before anything is written.

:func:`check_records` opens every image once (in worker processes for large
datasets): it hashes the bytes, decodes the image to catch truncated and
corrupt files, reads the real size, colour mode and EXIF orientation, and then
checks every box against that image. What cannot be used is dropped and
counted in the :class:`~tfod.data.annotations.Report` with the file and the reason;
what is handled (greyscale, CMYK, RGBA, PNG, EXIF rotation) is counted as a
note, so the report says what the model will see. JPEGs whose bytes pass
through unchanged are checked for structure (:func:`jpeg_structure_error`), the
rest decoded.

EXIF orientation: an image whose annotation gives the size of the *rotated*
picture (or no size) was labelled as a viewer shows it, so its pixels are
rotated before writing; one whose annotation gives the size of the stored
pixels was labelled on those pixels, so they are written as stored (the OD
API's decoder ignores EXIF).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tfod.data.annotations import (CLIP_TOLERANCE, Box, Record, Report, _inside,
                                   embedded_root)

log = logging.getLogger(__name__)

#: two boxes of the same class overlapping at least this much are one box drawn twice.
DUPLICATE_IOU = 0.95
#: below this many images the work stays in this process (a pool costs more than it saves).
POOL_MIN_IMAGES = 200
#: images with more pixels are refused before decoding (decompression bombs); --max-pixels.
MAX_PIXELS = 100_000_000
#: what :func:`inspect_image` returns for a file that does not exist
MISSING = "missing"
_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees


@dataclass
class ImageInfo:
    """What one read of an image file tells: enough to check and to write it."""

    sha256: str
    width: int  # stored pixels, before any EXIF rotation
    height: int
    format: str  # "jpeg", "png", ...
    mode: str  # PIL mode: "RGB", "L", "CMYK", "RGBA", "P", ...
    orientation: int = 1
    rotate: bool = False  # set by the checks: apply the EXIF orientation when writing

    @property
    def passthrough(self) -> bool:
        """True when the file's bytes can go into the TFRecord unchanged."""
        return self.format == "jpeg" and self.mode in ("RGB", "L") and not self.rotate


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_structure_error(raw: bytes) -> str | None:
    """What makes a JPEG undecodable for TensorFlow, found without decoding pixels.

    Walks the marker segments from SOI to EOI: every segment length must fit in
    the file, a frame header (SOF) and a scan (SOS) must come before EOI, and the
    entropy-coded data of each scan must end in a marker. A truncated download,
    a cut file or a damaged header fails here; flipped bits inside the coded data
    do not (decoders show them as noise, they do not fail). About 20 times cheaper
    than decoding the picture; ``decode="always"`` decodes instead.

    Example:
        >>> jpeg_structure_error(Path("a.jpg").read_bytes()) is None
        True
    """
    n = len(raw)
    if raw[:2] != b"\xff\xd8":
        return "no JPEG start marker"
    pos, frame, scans = 2, False, 0
    while pos < n:
        if raw[pos] != 0xFF:
            return f"expected a marker at byte {pos}"
        while pos < n and raw[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = raw[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            if not (frame and scans):
                return "ends before any image data"
            return None
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0x00):
            continue
        if pos + 2 > n:
            break
        length = (raw[pos] << 8) | raw[pos + 1]
        if length < 2 or pos + length > n:
            return f"segment at byte {pos - 2} runs past the end of the file (truncated?)"
        frame = frame or marker in _SOF
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data up to the next real marker
            scans += 1
            while True:
                pos = raw.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return "image data ends without an end marker (truncated?)"
                following = raw[pos + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    pos += 1 if following == 0xFF else 2
                    continue
                break
    return "file ends without an end marker (truncated?)"


def inspect_image(path: str | Path, max_pixels: int = MAX_PIXELS,
                  decode: str = "auto") -> ImageInfo | str:
    """Hash and check one image; an error message (str) if it cannot be used.

    The size in the header is checked against ``max_pixels`` before anything is
    decoded, so a crafted file declaring a huge image costs no memory. With
    ``decode="auto"`` an RGB or greyscale JPEG without EXIF rotation, whose
    bytes go into the TFRecord unchanged, gets the structural check of
    :func:`jpeg_structure_error`; every other image is decoded here, since it
    will be re-encoded. ``decode="always"`` decodes every image.

    Example:
        >>> info = inspect_image("images/cat.jpg"); info.width, info.mode
    """
    import io

    from PIL import Image

    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return MISSING
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    Image.MAX_IMAGE_PIXELS = None  # our own limit below, with a clearer message
    try:
        with Image.open(io.BytesIO(raw)) as img:
            fmt, mode, size = (img.format or "").lower(), img.mode, img.size
            if size[0] * size[1] > max_pixels:
                return (f"declares {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over "
                        f"the limit of {max_pixels:,} (a decompression bomb?); raise "
                        "--max-pixels if the image is real")
            orientation = img.getexif().get(0x0112, 1)
            if not isinstance(orientation, int) or not 1 <= orientation <= 8:
                orientation = 1
            passthrough = fmt == "jpeg" and mode in ("RGB", "L") and orientation == 1
            if decode == "auto" and passthrough:
                problem = jpeg_structure_error(raw)
                if problem:
                    return f"broken JPEG: {problem}"
            else:
                img.load()
    except Exception as exc:  # PIL raises many types for broken files
        return f"cannot decode ({exc})"
    return ImageInfo(hashlib.sha256(raw).hexdigest(), size[0], size[1], fmt, mode, orientation)


def _iou(a: Box, b: Box) -> float:
    iw = min(a.xmax, b.xmax) - max(a.xmin, b.xmin)
    ih = min(a.ymax, b.ymax) - max(a.ymin, b.ymin)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a.xmax - a.xmin) * (a.ymax - a.ymin) + (b.xmax - b.xmin) * (b.ymax - b.ymin)
    return inter / (union - inter)


def _shown(record: Record) -> str:
    """An image as its owner knows it: one carried inside an annotation (LabelMe
    ``imageData``, TFRecord bytes) by that annotation, not by tfod's private copy."""
    if _inside(record.image_path, embedded_root()):
        return f"{record.source}: embedded image {record.image_path.name}"
    return str(record.image_path)


def _check_boxes(record: Record, report: Report, classes: set[str] | None) -> None:
    width, height = record.width, record.height
    kept: list[Box] = []
    for i, box in enumerate(record.boxes, 1):
        where = f"{record.source}: box {i} ({box.name} at {box.xmin:g},{box.ymin:g}," \
                f"{box.xmax:g},{box.ymax:g})"
        if classes is not None and box.name not in classes:
            report.add("class not in the label map", f"{where}: add {box.name!r} to the "
                       "label map or fix the name")
            continue
        if not all(math.isfinite(v) for v in (box.xmin, box.ymin, box.xmax, box.ymax)):
            report.add("box outside image", f"{where}: a coordinate is not a finite number; "
                       "fix the box")
            continue
        if box.xmax < box.xmin or box.ymax < box.ymin:
            report.add("inverted box", f"{where}: max < min; swap the coordinates")
            continue
        t = CLIP_TOLERANCE
        if box.xmin < -t or box.ymin < -t or box.xmax > width + t or box.ymax > height + t:
            report.add("box outside image", f"{where}: image is {width}x{height}; "
                       "fix the box")
            continue
        box.xmin, box.ymin = max(box.xmin, 0.0), max(box.ymin, 0.0)
        box.xmax, box.ymax = min(box.xmax, float(width)), min(box.ymax, float(height))
        if box.xmax - box.xmin < 1e-6 or box.ymax - box.ymin < 1e-6:
            report.add("zero-area box", f"{where}: no width or no height")
            continue
        twin = next((j for j, k in enumerate(kept, 1)
                     if k.name == box.name and _iou(k, box) >= DUPLICATE_IOU), None)
        if twin is not None:
            report.add("duplicate box", f"{where}: same class and IoU >= {DUPLICATE_IOU} "
                       f"with box {twin}; drawn twice")
            continue
        kept.append(box)
    record.boxes = kept


def _settle_size(record: Record, info: ImageInfo, report: Report) -> None:
    """Decide the size the boxes refer to and whether to apply EXIF rotation."""
    stored = (info.width, info.height)
    shown = stored[::-1] if info.orientation in _SWAPS_SIDES else stored
    given = (record.width, record.height)
    if info.orientation != 1:
        if given == stored and stored != shown:
            report.note("EXIF orientation ignored (annotation has the stored size)")
            info.rotate = False
        else:
            report.note("EXIF-rotated image (pixels rotated as viewers show them)")
            info.rotate = True
    real = shown if info.rotate else stored
    if given not in ((0, 0), real):
        report.add("annotation size differs from the image",
                   f"{record.source}: annotation says {given[0]}x{given[1]}, "
                   f"{record.image_path.name} is {real[0]}x{real[1]}; boxes checked against "
                   "the real size")
    record.width, record.height = real
    if info.mode == "L":
        report.note("greyscale JPEG (passed through; decoded as RGB)"
                    if info.format == "jpeg" else "greyscale image (converted to RGB)")
    elif info.mode == "CMYK":
        report.note("CMYK image (converted to RGB)")
    elif info.mode in ("RGBA", "LA", "PA") or (info.mode == "P"):
        report.note(f"{info.mode} image (converted to RGB, transparency dropped)")
    elif info.mode != "RGB":
        report.note(f"{info.mode} image (converted to RGB)")
    if info.format != "jpeg":
        report.note(f"{info.format.upper() or 'unknown-format'} image (encoded once as JPEG)")


def _pool(workers: int):
    # fork: workers inherit the imported modules. They run only PIL, hashlib and
    # protobuf code, never TensorFlow, so forking is safe even in a process that has
    # started TensorFlow (the tests).
    return multiprocessing.get_context("fork").Pool(workers)


def default_workers(n_items: int) -> int:
    """Worker processes for ``n_items`` images: 1 below POOL_MIN_IMAGES, else the CPUs."""
    if n_items < POOL_MIN_IMAGES:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def map_images(func, items: Sequence, workers: int, chunksize: int = 16) -> Iterable:
    """``func`` over ``items`` in order, in ``workers`` processes when more than one."""
    if workers <= 1:
        yield from map(func, items)
        return
    with _pool(workers) as pool:
        yield from pool.imap(func, items, chunksize=chunksize)


def check_records(records: Iterable[Record], report: Report,
                  classes: Sequence[str] | None = None, workers: int | None = None,
                  progress: bool = False, max_pixels: int = MAX_PIXELS, decode: str = "auto") -> list[Record]:
    """Drop unusable images and invalid boxes, counting each in ``report``.

    Sets ``record.image`` (an :class:`ImageInfo`) and the real size on every
    record kept. Boxes up to :data:`CLIP_TOLERANCE` pixels outside the image are
    clipped; of two files with the same bytes the first (by path) is kept.
    ``max_pixels`` and ``decode``: see :func:`inspect_image`.

    Example:
        >>> report = Report(); good = check_records(read_voc("voc"), report)
    """
    # by source, then path: of two equal images the first source's is kept (a merge)
    records = sorted(records, key=lambda r: (r.origin, str(r.image_path)))
    workers = default_workers(len(records)) if workers is None else workers
    known = set(classes) if classes is not None else None
    paths = [str(r.image_path) for r in records]
    inspect = functools.partial(inspect_image, max_pixels=max_pixels, decode=decode)
    infos = map_images(inspect, paths, workers, chunksize=64)
    if progress:
        from tqdm import tqdm

        infos = tqdm(infos, total=len(paths), desc="check", unit="img", leave=False)
    good: list[Record] = []
    seen: dict[str, Path] = {}
    for record, info in zip(records, infos):
        if info == MISSING:
            report.add("missing image", f"{record.source}: {record.image_path} not found; "
                       "add the image or remove its annotation")
            continue
        if isinstance(info, str):
            report.add("unreadable image", f"{_shown(record)}: {info}; replace or remove "
                       "the file")
            continue
        if info.sha256 in seen:
            report.add("duplicate image", f"{record.image_path}: same bytes as "
                       f"{seen[info.sha256]}; kept the first only")
            continue
        seen[info.sha256] = record.image_path
        record.image = info
        _settle_size(record, info, report)
        _check_boxes(record, report, known)
        good.append(record)
    return good
