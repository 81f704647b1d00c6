"""A seeded synthetic object-detection dataset in Pascal VOC layout (offline, no downloads).

``make demo`` and the tests use it: filled shapes (circle, square, triangle, ...)
on textured backgrounds (smooth colour noise, gradients, stripes, low-contrast
patches), so a detector has to learn shapes, not "pixels that are not
background". Everything comes from one seed: the same seed writes
byte-identical files.

Layout written under ``out_dir``::

    JPEGImages/synth_000000.jpg      RGB JPEG, quality 90
    Annotations/synth_000000.xml     VOC XML, integer pixel boxes
    ImageSets/Main/train.txt         ids, one per line
    ImageSets/Main/val.txt

Boxes follow the VOC devkit convention: **1-based, inclusive** pixel
coordinates, so a shape covering pixel columns 10..29 (0-based) has
``xmin=11, xmax=30``. Every box is tight around the pixels the shape touches
and lies inside the image (``1 <= xmin <= xmax <= width``). Shapes never
cover each other; their boxes overlap with IoU <= 0.3.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from tfod.errors import DatasetError
from tfod.files import check_owned, mark_owned

log = logging.getLogger(__name__)

#: JPEG settings; fixed so that a seed gives byte-identical files.
JPEG_OPTIONS = {"quality": 90, "subsampling": 2, "optimize": False, "progressive": False}
MIN_SIZE, MAX_SIZE = 0.15, 0.45  # shape extent as a fraction of the image side
MAX_IOU = 0.3  # placements whose box overlaps an earlier box more than this are rejected
MIN_CONTRAST = 110.0  # RGB distance between a shape and the background under it
_SUPERSAMPLE = 2  # shapes are drawn at 2x and averaged down: smooth edges
_PLACEMENT_TRIES = 40
_COLOUR_TRIES = 32


# --------------------------------------------------------------------------- shapes
# Each shape is a polygon around (0, 0) before rotation and scaling; the circle is
# drawn as an ellipse. A shape function returns the polygon (N x 2) or None for a circle.

def _regular(n: int, start: float = -math.pi / 2) -> np.ndarray:
    angles = start + 2 * math.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _circle(rng: np.random.Generator) -> np.ndarray | None:
    return None


def _square(rng: np.random.Generator) -> np.ndarray:
    points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    return _rotate(points, rng.uniform(-15, 15))


def _triangle(rng: np.random.Generator) -> np.ndarray:
    points = _regular(3) + rng.uniform(-0.12, 0.12, size=(3, 2))  # not always equilateral
    return _rotate(points, rng.uniform(0, 360))


def _star(rng: np.random.Generator) -> np.ndarray:
    outer, inner = _regular(5), _regular(5, -math.pi / 2 + math.pi / 5) * 0.45
    points = np.stack([outer, inner], axis=1).reshape(-1, 2)
    return _rotate(points, rng.uniform(0, 360))


def _cross(rng: np.random.Generator) -> np.ndarray:
    a = 1 / 3
    points = np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                       [-a, a], [-1, a], [-1, -a], [-a, -a]])
    return _rotate(points, rng.uniform(-20, 20))


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    rotation = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return points @ rotation.T


#: Supported class names -> shape function.
SHAPES: dict[str, Callable[[np.random.Generator], np.ndarray | None]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
}


@dataclass(frozen=True)
class SynthObject:
    """One drawn shape: class name, RGB colour and tight 0-based inclusive box."""

    name: str
    colour: tuple[int, int, int]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1: 0-based, inclusive
    mask: np.ndarray  # float32 (H, W) coverage in 0..1; > 0 where the shape touches

    def voc_box(self) -> tuple[int, int, int, int]:
        """The box as VOC writes it: 1-based, inclusive (xmin, ymin, xmax, ymax)."""
        x0, y0, x1, y1 = self.box
        return x0 + 1, y0 + 1, x1 + 1, y1 + 1


# --------------------------------------------------------------------------- drawing

def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth RGB noise in [-1, 1]: a random cells x cells grid upsampled bicubically."""
    grid = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    smooth = Image.fromarray(grid, "RGB").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(smooth, dtype=np.float32) / 127.5 - 1.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured float32 (H, W, 3) background whose colours and pattern vary per image."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # a linear gradient between two related colours
    c0 = rng.uniform(40, 215, size=3).astype(np.float32)
    c1 = np.clip(c0 + rng.uniform(-70, 70, size=3), 0, 255).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = xx * math.cos(angle) + yy * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    image = c0 + (c1 - c0) * ramp[..., None]
    # smooth colour noise at a random scale
    image += _smooth_noise(rng, size, int(rng.integers(3, 9))) * np.float32(rng.uniform(15, 40))
    if rng.random() < 0.5:  # stripes at a random angle, period and tint
        angle, period = rng.uniform(0, math.pi), rng.uniform(0.04, 0.2)
        wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period
                      + rng.uniform(0, 2 * math.pi))
        tint = (rng.uniform(-1, 1, size=3) * rng.uniform(8, 25)).astype(np.float32)
        image += wave[..., None] * tint
    if rng.random() < 0.6:  # low-contrast irregular patches (camouflage)
        field = _smooth_noise(rng, size, int(rng.integers(4, 12)))[..., 0]
        patches = (field > rng.uniform(-0.2, 0.3)).astype(np.float32)
        image += patches[..., None] * rng.uniform(-30, 30, size=3).astype(np.float32)
    return image.astype(np.float32)


def _coverage(points: np.ndarray | None, x: float, y: float, extent: float,
              size: int) -> np.ndarray:
    """Float32 (size, size) coverage of a shape scaled to ``extent`` px at top-left (x, y)."""
    s = _SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    if points is None:
        draw.ellipse([x * s, y * s, (x + extent) * s - 1, (y + extent) * s - 1], fill=255)
    else:
        xy = (points + [x, y]) * s
        draw.polygon([tuple(p) for p in xy.tolist()], fill=255)
    small = canvas.reduce(s)
    return np.asarray(small, dtype=np.float32) / 255.0


def _fit(points: np.ndarray | None, extent: float) -> tuple[np.ndarray | None, float, float]:
    """Scale a unit shape so its larger side is ``extent`` px; return it, width, height."""
    if points is None:
        return None, extent, extent
    span = points.max(axis=0) - points.min(axis=0)
    scaled = (points - points.min(axis=0)) * (extent / span.max())
    width, height = scaled.max(axis=0)
    return scaled, float(width), float(height)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _contrasting_colour(rng: np.random.Generator, local: np.ndarray) -> np.ndarray:
    """A random colour at least MIN_CONTRAST away from ``local`` (else the farthest tried)."""
    best, best_distance = None, -1.0
    for _ in range(_COLOUR_TRIES):
        colour = rng.integers(0, 256, size=3).astype(np.float32)
        distance = float(np.linalg.norm(colour - local))
        if distance >= MIN_CONTRAST:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _render_image(rng: np.random.Generator, size: int, classes: Sequence[str],
                  max_objects: int, first_class: str) -> tuple[np.ndarray, list[SynthObject]]:
    """Draw one image: uint8 (size, size, 3) pixels and its objects (the first is first_class)."""
    background = _background(rng, size)
    image = background.copy()
    occupied = np.zeros((size, size), dtype=bool)
    objects: list[SynthObject] = []
    boxes: list[tuple[float, float, float, float]] = []
    wanted = int(rng.integers(1, max_objects + 1))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for k in range(wanted):
        name = first_class if k == 0 else str(classes[int(rng.integers(len(classes)))])
        for _ in range(_PLACEMENT_TRIES):
            extent = rng.uniform(MIN_SIZE, MAX_SIZE) * size
            points, width, height = _fit(SHAPES[name](rng), extent)
            # 1 px margin: the box stays inside the image even after anti-aliasing
            x = rng.uniform(1, size - 1 - width)
            y = rng.uniform(1, size - 1 - height)
            estimate = (x, y, x + width, y + height)
            if any(_iou(estimate, other) > MAX_IOU for other in boxes):
                continue
            mask = _coverage(points, x, y, extent, size)
            touched = mask > 0
            if not touched.any() or (touched & occupied).any():
                continue
            break
        else:
            continue  # no room left for this shape; the image gets fewer objects
        rows, cols = np.flatnonzero(touched.any(axis=1)), np.flatnonzero(touched.any(axis=0))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
        region = np.s_[box[1]:box[3] + 1, box[0]:box[2] + 1]
        local = background[touched].mean(axis=0)
        colour = _contrasting_colour(rng, local)
        # soft directional light across the shape, so fills are not perfectly flat
        angle = rng.uniform(0, 2 * math.pi)
        light = 1 + rng.uniform(0, 0.15) * ((xx[region] - 0.5) * math.cos(angle)
                                            + (yy[region] - 0.5) * math.sin(angle))
        fill = np.clip(colour * light[..., None], 0, 255)
        alpha = mask[region][..., None]
        image[region] = image[region] * (1 - alpha) + fill * alpha
        occupied |= touched
        boxes.append(estimate)
        objects.append(SynthObject(name, tuple(int(c) for c in colour), box, mask))
    image += rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(2, 6)  # sensor noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


# --------------------------------------------------------------------------- writing

def _voc_xml(image_id: str, size: int, objects: Sequence[SynthObject]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "tfod synthetic shapes"
    size_el = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_el, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = obj.name
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = "0"
        ET.SubElement(el, "difficult").text = "0"
        bndbox = ET.SubElement(el, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj.voc_box()):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


def _check_arguments(out: Path, num_train: int, num_val: int, image_size: int,
                     classes: Sequence[str], max_objects: int, overwrite: bool) -> None:
    supported = ", ".join(SHAPES)
    if isinstance(classes, str):
        raise DatasetError(f"classes must be a list of names, got the string {classes!r}",
                           where="classes",
                           fix=f"pass e.g. ['circle', 'square']; supported: {supported}")
    if not classes:
        raise DatasetError("no classes given", where="classes", fix=f"use some of: {supported}")
    unknown = [name for name in classes if name not in SHAPES]
    if unknown:
        raise DatasetError(f"unknown shape class {', '.join(map(repr, unknown))}", where="classes",
                           fix=f"use some of: {supported}")
    if len(set(classes)) != len(classes):
        raise DatasetError(f"classes repeat a name: {list(classes)}", where="classes",
                           fix="list each class once")
    for name, value, low in (("num_train", num_train, 0), ("num_val", num_val, 0),
                             ("image_size", image_size, 32), ("max_objects", max_objects, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DatasetError(f"{name} must be an integer >= {low}, got {value!r}", where=name,
                               fix=f"pass {name}={max(low, 1)} or more")
    if num_train + num_val == 0:
        raise DatasetError("num_train + num_val is 0: nothing to write", where="num_train",
                           fix="ask for at least one image")
    if out.exists() and not out.is_dir():
        raise DatasetError("exists and is not a folder", where=str(out),
                           fix="choose another out_dir or remove the file")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DatasetError("folder exists and is not empty", where=str(out),
                           fix="choose another out_dir or pass overwrite=True (--overwrite)")
    if out.is_dir() and any(out.iterdir()):  # overwrite only what synthesize wrote
        check_owned(out, "synth", DatasetError, legacy=_before_marker,
                    fix="choose another out_dir (a new or empty folder), or move that one away")


def _before_marker(out: Path) -> bool:
    """Written by a synthesize from before ``.tfod-synth``: the three VOC folders and
    nothing else, every image and annotation named ``synth_NNNNNN``."""
    if {p.name for p in out.iterdir()} != {"JPEGImages", "Annotations", "ImageSets"}:
        return False
    files = list((out / "JPEGImages").iterdir()) + list((out / "Annotations").iterdir())
    return all(re.fullmatch(r"synth_\d{6}\.(jpg|xml)", p.name) and p.is_file()
               and not p.is_symlink() for p in files)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``, replacing an existing ``out`` (already allowed by the caller)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def synthesize(out_dir: str | Path, num_train: int = 300, num_val: int = 60,
               image_size: int = 160, classes: Sequence[str] = ("circle", "square", "triangle"),
               max_objects: int = 3, seed: int = 0, *, overwrite: bool = False) -> dict:
    """Write a seeded synthetic shapes dataset in Pascal VOC layout.

    Images ``synth_000000`` .. are square RGB JPEGs with 1..``max_objects`` filled
    shapes on a textured background; the first ``num_train`` ids go to
    ``ImageSets/Main/train.txt``, the rest to ``val.txt``. Every image's first
    shape cycles through ``classes``, so each class appears in a split with at
    least ``len(classes)`` images. Boxes are 1-based inclusive VOC pixel boxes.

    The dataset is written to a hidden sibling folder and renamed to
    ``out_dir`` at the end, so an interrupted run never leaves a folder that
    looks complete. The same arguments give byte-identical files.

    Args:
        out_dir: Folder to create (its parent is created if missing).
        num_train: Number of training images.
        num_val: Number of validation images.
        image_size: Width and height in pixels (>= 32).
        classes: Shape names, from :data:`SHAPES` (circle, square, triangle, star, cross).
        max_objects: Largest number of shapes in one image (>= 1).
        seed: Seed of the numpy random generator; image ``i`` uses ``(seed, i)``.
        overwrite: Replace ``out_dir`` if it exists and is not empty; only a folder
            synthesize wrote (it holds ``.tfod-synth``) is ever replaced.

    Returns:
        ``{"out_dir": str, "train": int, "val": int, "objects": {class: count},
        "image_size": int}``.

    Raises:
        DatasetError: For an unknown class, a bad count or size, or an existing
            non-empty ``out_dir`` without ``overwrite=True``.

    Example:
        >>> summary = synthesize("data/demo/voc", num_train=300, num_val=60, seed=0)
        >>> summary["objects"]
        {'circle': 248, 'square': 235, 'triangle': 238}
    """
    out = Path(out_dir)
    classes = list(classes) if not isinstance(classes, str) else classes
    _check_arguments(out, num_train, num_val, image_size, classes, max_objects, overwrite)
    total = num_train + num_val
    log.info("synthesizing %d train + %d val images (%d px, classes %s, seed %d) into %s",
             num_train, num_val, image_size, ", ".join(classes), seed, out)
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    mark_owned(tmp, "synth")
    counts = {name: 0 for name in classes}
    ids: list[str] = []
    try:
        images, annotations = tmp / "JPEGImages", tmp / "Annotations"
        sets = tmp / "ImageSets" / "Main"
        for folder in (images, annotations, sets):
            folder.mkdir(parents=True)
        for i in tqdm(range(total), desc="synthesize", unit="img", delay=2, leave=False,
                      disable=None):
            image_id = f"synth_{i:06d}"
            rng = np.random.default_rng((seed, i))
            first = classes[(i if i < num_train else i - num_train) % len(classes)]
            pixels, objects = _render_image(rng, image_size, classes, max_objects, first)
            Image.fromarray(pixels, "RGB").save(images / f"{image_id}.jpg", "JPEG", **JPEG_OPTIONS)
            (annotations / f"{image_id}.xml").write_bytes(_voc_xml(image_id, image_size, objects))
            for obj in objects:
                counts[obj.name] += 1
            ids.append(image_id)
        (sets / "train.txt").write_text("".join(f"{i}\n" for i in ids[:num_train]))
        (sets / "val.txt").write_text("".join(f"{i}\n" for i in ids[num_train:]))
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    log.info("wrote %d images (%d train, %d val) with %d objects %s to %s in %.1f s",
             total, num_train, num_val, sum(counts.values()),
             ", ".join(f"{k}={v}" for k, v in counts.items()), out, seconds)
    return {"out_dir": str(out), "train": num_train, "val": num_val, "objects": counts,
            "image_size": image_size}
