"""A config's anchors and feature maps in pixels, and how the training boxes of a prepared
dataset fit them: the data findings of ``tfod config --check`` (warnings, never errors).

Supported: the SSD meta-architecture with an ``ssd_anchor_generator`` or a
``multiscale_anchor_generator`` (:data:`GENERATORS`) and a feature extractor whose maps
are known here (:func:`feature_maps`): of ``pipelines/``, ``ssd_mobilenet_v2_tiny``,
``ssd_mobilenet_v2_320``, ``ssd_mobilenet_v2_fpnlite_320/640``, ``ssd_mobilenet_v1_fpn_640``,
``ssd_resnet50_v1_fpn_640`` and ``efficientdet_d0_512``. Faster R-CNN (grid anchors of a
region proposal network) and CenterNet (no anchors) get a finding that the check does not
apply.

How the OD API places an SSD's anchors (read from its code; the anchors themselves are
made here by its own generators, ``anchor_generator_builder.build(...).generate``):

* **input**: the image resizer's output is what the model sees: ``fixed_shape_resizer``
  H x W (each side scaled on its own); ``keep_aspect_ratio_resizer`` with
  ``pad_to_max_dimension`` a ``max_dimension`` square, the image scaled by
  min(min_dimension / short side, max_dimension / long side). Anchors are generated for
  that input (``SSDMetaArch.predict``: ``im_height``/``im_width`` of the resized image).
* **feature maps**: the MobileNet SSD extractors (``ssd_mobilenet_v1_keras``,
  ``ssd_mobilenet_v2_keras``) take the stride-16 and stride-32 maps of the backbone and add
  stride-2 layers up to ``num_layers`` maps (6: strides 16 ... 512); FPN and BiFPN
  extractors give one map per level ``min_level..max_level`` (stride 2**level). Every
  stride-2 layer pads SAME, so a map has ceil(side / stride) cells of the input (padded to
  ``pad_to_multiple`` first). ``depth_multiplier`` and ``min_depth`` change channels only.
* **ssd_anchor_generator** (``create_ssd_anchors``): map k gets scale s_k, linear from
  ``min_scale`` to ``max_scale`` (or the ``scales`` list), with each aspect ratio a an
  anchor of height s_k / sqrt(a) and width s_k * sqrt(a) times the input's short side, plus
  one of scale sqrt(s_k * s_k+1) (s_k+1 = 1 after the last map) and aspect
  ``interpolated_scale_aspect_ratio``; with ``reduce_boxes_in_lowest_layer`` the finest map
  gets (0.1, 1), (s_0, 2), (s_0, 0.5) instead. Centres sit at the cells' centres, input /
  cells apart: anchor size scales with the input, so only the scales move anchors against
  the boxes.
* **multiscale_anchor_generator**: at level l, anchors of side ``anchor_scale`` * 2**l *
  2**(i / ``scales_per_octave``) with each aspect ratio, 2**l pixels apart: anchors are
  fixed in pixels, so a larger input makes boxes larger against them.

A box (resized as the model's input) is *covered* when an anchor of the same centre
overlaps it with IoU >= the matcher's ``matched_threshold`` (0.5); uncovered boxes are
*small* (below the smallest anchor), *large* (above the largest) or of a *shape* no anchor
fits. A box whose side (sqrt of its area) is below the finest map's stride lies within one
cell: anchor centres are a cell apart, so most positions are too far from every centre.
"""

from __future__ import annotations

import glob
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tfod.config.templates import PLACEHOLDER, meta_architecture
from tfod.layout import DatasetDir, read_json

#: the anchor generators the check and ``--fit-data`` understand
GENERATORS = ("ssd_anchor_generator", "multiscale_anchor_generator")
#: SSD feature extractors without a pyramid: (stride of the first map, of the last
#: backbone map); the maps after it are stride-2 layers (``feature_map_layout``)
BACKBONE_STRIDES = {"ssd_mobilenet_v1_keras": (16, 32), "ssd_mobilenet_v2_keras": (16, 32)}
DEFAULT_NUM_LAYERS = 6  # the MobileNet SSD extractors' feature_map_layout
#: a kind of uncovered box is reported for a class from this share of its boxes on
WARN_SHARE = 0.05
#: the quantile of box sides the suggested fixes aim to cover (the smallest 5% aside)
LOW_QUANTILE, HIGH_QUANTILE = 0.05, 0.95
#: the input side is kept a multiple of this (and of the FPN's own multiple)
SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class Layer:
    """One feature map: its cells, the pixels between anchor centres, and the anchors
    at each location as (width, height) in input pixels."""

    grid: tuple[int, int]
    stride: float
    anchors: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Geometry:
    """Where a config's anchors are: the input the model sees and its feature maps."""

    input_size: tuple[int, int]  # (height, width)
    generator: str
    layers: tuple[Layer, ...]

    @property
    def finest_stride(self) -> float:
        return min(layer.stride for layer in self.layers)

    def anchor_shapes(self) -> list[tuple[float, float]]:
        """Every distinct anchor (width, height) in pixels."""
        return sorted({a for layer in self.layers for a in layer.anchors})

    def sides(self) -> tuple[float, float]:
        """Side (sqrt of the area) of the smallest and the largest anchor."""
        sides = [math.sqrt(w * h) for w, h in self.anchor_shapes()]
        return min(sides), max(sides)

    def describe(self) -> str:
        low, high = self.sides()
        height, width = self.input_size
        return (f"{self.generator} at {width}x{height}: anchors {low:.0f}-{high:.0f} px, "
                "strides " + ", ".join(f"{layer.stride:g}" for layer in self.layers))


def _ssd(configs: dict):
    return configs["model"].ssd


def unsupported(configs: dict) -> str | None:
    """Why the anchor check does not apply to a config, or None when it does."""
    arch = meta_architecture(configs)
    if arch != "ssd":
        return (f"model.{arch} is not an SSD" + (" (it has no anchors)" if arch == "center_net"
                                               else ""))
    ssd = _ssd(configs)
    kind = ssd.anchor_generator.WhichOneof("anchor_generator_oneof")
    if kind not in GENERATORS:
        return f"model.ssd.anchor_generator is {kind}, not one of {', '.join(GENERATORS)}"
    extractor = ssd.feature_extractor
    if extractor.type not in BACKBONE_STRIDES and not (extractor.HasField("fpn")
                                                       or extractor.HasField("bifpn")):
        return f"the feature maps of {extractor.type} are not known to tfod"
    resizer = ssd.image_resizer
    which = resizer.WhichOneof("image_resizer_oneof")
    if which == "keep_aspect_ratio_resizer" and not \
            resizer.keep_aspect_ratio_resizer.pad_to_max_dimension:
        return "keep_aspect_ratio_resizer without pad_to_max_dimension gives varying inputs"
    if which not in ("fixed_shape_resizer", "keep_aspect_ratio_resizer"):
        return f"model.ssd.image_resizer is {which}"
    return None


def model_input(configs: dict) -> tuple[int, int]:
    """(height, width) of the input the SSD sees (the resizer's output, padded)."""
    resizer = _ssd(configs).image_resizer
    if resizer.WhichOneof("image_resizer_oneof") == "fixed_shape_resizer":
        return (int(resizer.fixed_shape_resizer.height), int(resizer.fixed_shape_resizer.width))
    side = int(resizer.keep_aspect_ratio_resizer.max_dimension)
    return side, side


def feature_maps(configs: dict, height: int, width: int) -> list[tuple[int, int]]:
    """(rows, columns) of each feature map the extractor gives for an input, finest first.

    Example:
        >>> feature_maps(load_configs(resolve_template("ssd_mobilenet_v2_tiny")), 160, 160)
        [(10, 10), (5, 5), (3, 3), (2, 2), (1, 1), (1, 1)]
    """
    extractor = _ssd(configs).feature_extractor
    if extractor.HasField("fpn") or extractor.HasField("bifpn"):
        pyramid = extractor.fpn if extractor.HasField("fpn") else extractor.bifpn
        strides = [2 ** level for level in range(pyramid.min_level, pyramid.max_level + 1)]
    else:
        first, last = BACKBONE_STRIDES[extractor.type]
        count = extractor.num_layers if extractor.HasField("num_layers") else DEFAULT_NUM_LAYERS
        strides = [first, last] + [last * 2 ** k for k in range(1, count - 1)]
        strides = strides[:count]
    multiple = max(1, extractor.pad_to_multiple)
    rows, cols = (math.ceil(side / multiple) * multiple for side in (height, width))
    return [(math.ceil(rows / s), math.ceil(cols / s)) for s in strides]


def generate(config, shapes: list[tuple[int, int]], height: int, width: int) -> list:
    """The OD API's anchors of generator ``config`` for feature maps ``shapes``: per map an
    array of normalized (ymin, xmin, ymax, xmax), cell-major. Made in a graph of its own and
    run by a session with the pools training asks for
    (:func:`tfod.distribute.session_config`), so that a training later in this process (the
    demo, a notebook) still gets its thread pools: TensorFlow's eager runtime stays
    unstarted, and the process-wide intra-op pool this first device fixes is training's."""
    import tensorflow as tf
    from object_detection.builders import anchor_generator_builder

    from tfod.distribute import session_config

    with tf.Graph().as_default():
        generated = anchor_generator_builder.build(config).generate(
            shapes, im_height=height, im_width=width)
        with tf.compat.v1.Session(config=session_config()) as session:
            return session.run([boxes.get() for boxes in generated])


def anchor_geometry(configs: dict, input_size: tuple[int, int] | None = None) -> Geometry:
    """The anchors of a supported config (:func:`unsupported` is None), made by the OD
    API's own generator for the feature maps of its input (``input_size`` overrides it).

    Example:
        >>> anchor_geometry(load_configs(resolve_template("ssd_mobilenet_v2_tiny"))).describe()
        'ssd_anchor_generator at 160x160: anchors 24-152 px, strides 16, 32, 53.333, 80, 160, 160'
    """
    height, width = input_size or model_input(configs)
    config = _ssd(configs).anchor_generator
    shapes = feature_maps(configs, height, width)
    layers = []
    for (rows, cols), corners in zip(shapes, generate(config, shapes, height, width)):
        per_cell = len(corners) // (rows * cols)
        first = corners[:per_cell]
        anchors = tuple((round(float((b[3] - b[1]) * width), 3),
                         round(float((b[2] - b[0]) * height), 3)) for b in first)
        centres_x = sorted({round(float((b[1] + b[3]) / 2 * width), 3) for b in corners})
        centres_y = sorted({round(float((b[0] + b[2]) / 2 * height), 3) for b in corners})
        stride = max(centres_x[1] - centres_x[0] if len(centres_x) > 1 else width,
                     centres_y[1] - centres_y[0] if len(centres_y) > 1 else height)
        layers.append(Layer((rows, cols), round(stride, 3), anchors))
    return Geometry((height, width), config.WhichOneof("anchor_generator_oneof"), tuple(layers))


def matched_threshold(configs: dict) -> float:
    """IoU from which the SSD's matcher makes an anchor a positive (0.5 by default)."""
    matcher = _ssd(configs).matcher
    if matcher.WhichOneof("matcher_oneof") == "argmax_matcher":
        return float(matcher.argmax_matcher.matched_threshold)
    return 0.5


# --- the dataset's boxes in model pixels ---------------------------------------------------

@dataclass(frozen=True)
class Boxes:
    """One class's training boxes resized as the model's input: width, height (pixels)
    and how many boxes share them."""

    width: "object"  # numpy arrays
    height: "object"
    count: "object"

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def sides(self):
        import numpy as np

        return np.sqrt(self.width * self.height)

    def quantile(self, values, q: float, mask=None) -> float:
        """The q-quantile of ``values`` (one per cell, or per cell of ``mask``), each
        counted as often as its boxes."""
        import numpy as np

        count = self.count if mask is None else self.count[mask]
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(count[order])
        index = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
        return float(values[order][min(index, len(order) - 1)])

    def share(self, mask) -> float:
        return float(self.count[mask].sum() / max(1, self.count.sum()))

    def subset(self, mask) -> "Boxes":
        return Boxes(self.width[mask], self.height[mask], self.count[mask])


def resize_boxes(configs: dict, table: dict[str, list[tuple]],
                 input_size: tuple[int, int] | None = None) -> dict[str, Boxes]:
    """Each class's boxes (from :func:`tfod.data.stats.box_shape_table`) in the pixels of
    the model's input, resized as the config's image resizer resizes images."""
    import numpy as np

    height, width = input_size or model_input(configs)
    resizer = _ssd(configs).image_resizer
    keep = resizer.WhichOneof("image_resizer_oneof") == "keep_aspect_ratio_resizer"
    low, high = (resizer.keep_aspect_ratio_resizer.min_dimension, height) if keep else (0, 0)
    out = {}
    for name, cells in table.items():
        rel_w, rel_h, aspect, count = (np.array(column, dtype=float) for column in zip(*cells))
        if keep:  # image side * min(low / short side, high / long side), by the image aspect
            image_w = np.minimum(low * np.maximum(aspect, 1), high * np.minimum(aspect, 1))
            image_h = np.minimum(low * np.maximum(1 / aspect, 1),
                                 high * np.minimum(1 / aspect, 1))
        else:
            image_w, image_h = float(width), float(height)
        out[name] = Boxes(rel_w * image_w, rel_h * image_h, count)
    return out


def best_iou(boxes: Boxes, anchors: Sequence[tuple[float, float]]):
    """For each box, the highest IoU with an anchor of the same centre."""
    import numpy as np

    shapes = np.array(anchors, dtype=float)
    w, h = boxes.width[:, None], boxes.height[:, None]
    inter = np.minimum(w, shapes[None, :, 0]) * np.minimum(h, shapes[None, :, 1])
    union = w * h + shapes[None, :, 0] * shapes[None, :, 1] - inter
    return (inter / union).max(axis=1)


@dataclass(frozen=True)
class ClassFit:
    """How one class's training boxes fit the anchors: shares of its boxes."""

    boxes: int
    small: float  # no anchor matches, smaller than the smallest anchor
    large: float  # no anchor matches, larger than the largest anchor
    shape: float  # no anchor matches, within the anchors' sizes (aspect ratio or a gap)
    below_stride: float  # side below the finest feature map's stride
    side: tuple[float, float, float]  # 5%, median, 95% of the box sides (pixels)
    medians: dict  # kind (small, large, shape, below_stride) -> median side of those boxes

    @property
    def covered(self) -> float:
        return 1.0 - self.small - self.large - self.shape


def coverage(geometry: Geometry, boxes: dict[str, Boxes], threshold: float = 0.5
             ) -> dict[str, ClassFit]:
    """Per class, the shares of training boxes that no anchor matches (small, large,
    other shape) and that lie below the finest stride.

    Example:
        >>> fits = coverage(anchor_geometry(configs), resize_boxes(configs, table))
        >>> round(fits["nut"].small, 2)
        0.62
    """
    low, high = geometry.sides()
    out = {}
    for name, group in boxes.items():
        sides = group.sides()
        unmatched = best_iou(group, geometry.anchor_shapes()) < threshold
        kinds = {"small": unmatched & (sides < low), "large": unmatched & (sides > high)}
        kinds["shape"] = unmatched & ~kinds["small"] & ~kinds["large"]
        kinds["below_stride"] = sides < geometry.finest_stride
        medians = {kind: round(group.quantile(sides[mask], 0.5, mask), 1)
                   for kind, mask in kinds.items() if mask.any()}
        out[name] = ClassFit(
            group.total, *(group.share(kinds[k]) for k in ("small", "large", "shape",
                                                           "below_stride")),
            tuple(round(group.quantile(sides, q), 1) for q in (LOW_QUANTILE, 0.5, HIGH_QUANTILE)),
            medians)
    return out


# --- the dataset a config trains on ---------------------------------------------------------

def training_data(configs: dict) -> list[tuple[DatasetDir, str]]:
    """(prepared dataset folder, split) of each training input written by ``tfod prepare``
    (a folder with ``stats.json`` whose manifest lists the shards); train by default."""
    found: list[tuple[DatasetDir, str]] = []
    for pattern in configs["train_input_config"].tf_record_input_reader.input_path:
        if PLACEHOLDER in pattern or pattern.startswith(("gs://", "s3://")):
            continue
        files = glob.glob(pattern) or [pattern]
        for folder in sorted({Path(f).parent for f in files}):
            dataset = DatasetDir(folder)
            if not dataset.stats.is_file() or any(d == dataset for d, _ in found):
                continue
            names = {Path(f).name for f in files if Path(f).parent == folder}
            splits = (read_json(dataset.manifest) or {}).get("splits", {})
            split = next((s for s, v in splits.items()
                          if names and names <= set(v.get("shards", []))), "train")
            found.append((dataset, split))
    return found


def training_boxes(configs: dict) -> tuple[dict[str, list[tuple]] | None, list[str]]:
    """The box-shape tables of a config's training data, merged per class, and the
    ``stats.json`` files read; the table is None when one of them has no ``box_shapes``
    (an older ``tfod prepare``) or when there is no prepared dataset."""
    from tfod.data.stats import box_shape_table

    merged: dict[str, list[tuple]] = {}
    files = []
    for dataset, split in training_data(configs):
        files.append(str(dataset.stats))
        try:
            stats = json.loads(dataset.stats.read_text())
        except (OSError, ValueError):
            return None, files
        table = box_shape_table(stats, split)
        if table is None:
            return None, files
        for name, cells in table.items():
            merged.setdefault(name, []).extend(cells)
    return (merged or None), files


def size_multiple(configs: dict) -> int:
    """The multiple an input side is kept to: 32, or the feature pyramid's own."""
    from tfod.config.validate import required_multiple

    need = required_multiple(configs)
    return max(SIZE_MULTIPLE, need[0] if need else 1)


def size_for_stride(configs: dict, boxes: dict[str, Boxes], stride: float) -> int:
    """The input side (a multiple of :func:`size_multiple`) at which the 5% quantile of
    every class's box sides reaches ``stride`` pixels, from the boxes at the current input."""
    height, width = model_input(configs)
    lows = [group.quantile(group.sides(), LOW_QUANTILE) for group in boxes.values()]
    factor = stride / max(1e-9, min(lows))
    multiple = size_multiple(configs)
    return int(math.ceil(max(height, width) * factor / multiple) * multiple)


# --- the findings of `tfod config --check` --------------------------------------------------

def _classes(fits: dict[str, ClassFit], kind: str) -> list[str]:
    return [name for name, fit in sorted(fits.items()) if getattr(fit, kind) >= WARN_SHARE]


def _listing(fits: dict[str, ClassFit], names: list[str], kind: str) -> str:
    return ", ".join(f"{name!r} {getattr(fits[name], kind):.0%} (median side "
                     f"{fits[name].medians[kind]:g} px)" for name in names)


def data_findings(configs: dict) -> list:
    """Warnings about how the training boxes fit the config's input size and anchors
    (module docstring); empty when the config does not train on a ``tfod prepare`` output.

    Example:
        >>> [str(f) for f in data_findings(load_configs("runs/nuts/pipeline.config"))]
    """
    import logging

    from tfod.config.validate import Finding

    log = logging.getLogger(__name__)
    if not training_data(configs):
        return []
    reason = unsupported(configs)
    if reason:
        return [Finding(f"the check of box sizes against anchors does not apply: {reason}",
                        "model", "it covers SSD models with ssd_anchor_generator or "
                        "multiscale_anchor_generator (tfod.config.anchors); compare the box "
                        "sizes in stats.json with the model's input by hand", error=False)]
    table, files = training_boxes(configs)
    if table is None:
        return _old_stats_findings(configs, files)
    geometry = anchor_geometry(configs)
    threshold = matched_threshold(configs)
    boxes = resize_boxes(configs, table)
    fits = coverage(geometry, boxes, threshold)
    log.info("config: training boxes against %s: covered at IoU %g %s", geometry.describe(),
             threshold, ", ".join(f"{name} {fit.covered:.0%}" for name, fit in sorted(fits.items())))
    return _stride_findings(configs, geometry, boxes, fits) + _anchor_findings(
        configs, geometry, boxes, fits, threshold)


def _finer_templates(geometry: Geometry) -> str:
    if geometry.finest_stride <= 8:
        return ""
    return ", use a template with a stride-8 map (ssd_mobilenet_v2_fpnlite_320/640)"


def _stride_findings(configs, geometry: Geometry, boxes, fits) -> list:
    from tfod.config.validate import Finding

    names = _classes(fits, "below_stride")
    if not names:
        return []
    height, width = geometry.input_size
    size = size_for_stride(configs, {n: boxes[n] for n in names}, geometry.finest_stride)
    return [Finding(
        f"training boxes smaller than the finest feature map's stride "
        f"({geometry.finest_stride:g} px at {width}x{height}): {_listing(fits, names, 'below_stride')}"
        "; such a box lies inside one cell, and anchor centres are a cell apart",
        "model.ssd.image_resizer",
        f"raise the input size to {size} (tfod config --image-size {size})"
        f"{_finer_templates(geometry)}, or let `tfod config --fit-data` choose", error=False)]


def _anchor_findings(configs, geometry: Geometry, boxes, fits, threshold: float) -> list:
    from tfod.config.validate import Finding

    kind = geometry.generator
    where = f"model.ssd.anchor_generator.{kind}"
    config = getattr(_ssd(configs).anchor_generator, kind)
    low, high = geometry.sides()
    short = min(geometry.input_size)
    fit_hint = ", or let `tfod config --fit-data` choose the anchors"
    findings = []
    names = _classes(fits, "small")
    if names:
        side = min(boxes[n].quantile(boxes[n].sides(), LOW_QUANTILE) for n in names)
        if kind == "ssd_anchor_generator":
            fix = f"lower min_scale to {side / short:.3g} (anchors of about {side:.0f} px)"
        else:
            fix = (f"lower anchor_scale to {side / 2 ** config.min_level:.3g} (anchors of "
                   f"about {side:.0f} px), or raise the input size")
        findings.append(Finding(
            f"training boxes smaller than the smallest anchor ({low:.0f} px) that match no "
            f"anchor at IoU {threshold:g}: {_listing(fits, names, 'small')}",
            f"{where}.{'min_scale' if kind == 'ssd_anchor_generator' else 'anchor_scale'}",
            fix + fit_hint, error=False))
    names = _classes(fits, "large")
    if names:
        side = max(boxes[n].quantile(boxes[n].sides(), HIGH_QUANTILE) for n in names)
        fix = (f"raise max_scale to {min(1.0, side / short):.3g}" if kind == "ssd_anchor_generator"
               else f"raise anchor_scale or max_level (the largest anchor is {high:.0f} px, "
                    f"these boxes reach {side:.0f} px), or lower the input size")
        findings.append(Finding(
            f"training boxes larger than the largest anchor ({high:.0f} px) that match no "
            f"anchor at IoU {threshold:g}: {_listing(fits, names, 'large')}",
            f"{where}.{'max_scale' if kind == 'ssd_anchor_generator' else 'anchor_scale'}",
            fix + fit_hint, error=False))
    names = _classes(fits, "shape")
    if names:
        shapes = geometry.anchor_shapes()
        ratios = []
        for name in names:
            group = boxes[name]
            odd = group.subset((best_iou(group, shapes) < threshold) & (group.sides() >= low)
                               & (group.sides() <= high))
            ratios.append(odd.quantile(odd.width / odd.height, 0.5))
        present = ", ".join(f"{a:g}" for a in config.aspect_ratios)
        findings.append(Finding(
            f"training boxes within the anchors' sizes that match no anchor at IoU "
            f"{threshold:g} (aspect ratio w/h): {_listing(fits, names, 'shape')}",
            f"{where}.aspect_ratios",
            f"add aspect ratios near {', '.join(f'{r:.2g}' for r in ratios)} (w/h after "
            f"resizing; now {present})" + fit_hint, error=False))
    return findings


def _old_stats_findings(configs: dict, files: list[str]) -> list:
    """stats.json without ``box_shapes``: say how to get them, and compare the overall box
    side quantiles (``box_side_relative``) with the finest stride."""
    from tfod.config.validate import Finding

    findings = [Finding("stats.json has no per-class box shapes (written by an older tfod "
                        "prepare), so boxes are checked against the stride only, as a whole",
                        ", ".join(files) or "stats.json",
                        "re-run `tfod prepare` to get the per-class check against the anchors "
                        "and `tfod config --fit-data`", error=False)]
    geometry = anchor_geometry(configs)
    for file in files:
        relative = (read_json(file) or {}).get("box_side_relative") or {}
        if "p05" not in relative:
            continue
        side = relative["p05"] * max(geometry.input_size)
        if side < geometry.finest_stride:
            size = int(math.ceil(max(geometry.input_size) * geometry.finest_stride / side
                                 / size_multiple(configs)) * size_multiple(configs))
            findings.append(Finding(
                f"5% of the training boxes are smaller than {side:.0f} px at the model's input, "
                f"below the finest feature map's stride ({geometry.finest_stride:g} px)",
                "model.ssd.image_resizer",
                f"raise the input size to {size} (tfod config --image-size {size})"
                f"{_finer_templates(geometry)}", error=False))
    return findings
