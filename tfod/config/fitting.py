"""``tfod config --fit-data``: the input size and the anchors of an SSD config chosen from
the training boxes of the prepared dataset it reads (:mod:`tfod.config.anchors` has the
geometry, the coverage and which templates are supported).

The rules, in order; the same boxes always give the same config:

1. **input size**: the smallest square side, a multiple of 32 (or of the feature
   pyramid's own multiple), from the template's side up to ``max_size``, at which the 5%
   quantile of every class's box sides reaches the finest feature map's stride (a box
   smaller than a cell sits between anchor centres). A size given with ``--image-size``
   is kept.
2. **aspect ratios**: as many as the template has, so that the box predictor keeps its
   shape and a detection checkpoint still restores into it: the centres of a k-means of
   log2(w / h) of the resized boxes (each class weighted the same, started at evenly spaced
   quantiles), at least a quarter octave apart, rounded to 2 decimals.
3. **scales**: ``ssd_anchor_generator`` ``min_scale`` and ``max_scale`` together,
   ``multiscale_anchor_generator`` ``anchor_scale``, from grids of eight values per octave
   (and the template's): the values at which the worst-covered class has the most boxes
   matching an anchor at IoU ``matched_threshold`` + :data:`MARGIN`, then the most boxes
   overall, then the values nearest the template's. The margin leaves room for boxes off
   the anchor centres, so a fitted config passes ``tfod config --check``.

The number of feature maps, ``scales_per_octave``, ``reduce_boxes_in_lowest_layer`` and
the interpolated anchor stay the template's (they decide the box predictor's shape).
"""

from __future__ import annotations

import logging
import math

from tfod.config import anchors
from tfod.errors import ConfigError

log = logging.getLogger(__name__)

#: IoU above the matcher's threshold that the fitted anchors aim for
MARGIN = 0.1
#: grid of candidate scales: this many per octave
STEPS_PER_OCTAVE = 8
#: fitted aspect ratios are at least this far apart (octaves of w/h)
MIN_ASPECT_GAP = 0.25
DEFAULT_MAX_SIZE = 640


def fit_data(configs: dict, max_size: int = DEFAULT_MAX_SIZE, keep_size: bool = False) -> dict:
    """Fit the input size and anchors of ``configs`` (in place) to its training boxes.

    Returns what changed: ``input_size``, ``aspect_ratios``, the scale fields, and the
    share of each class's boxes covered before and after. Raises ConfigError when the
    config is not a supported SSD or reads no ``tfod prepare`` output with box shapes.

    Example:
        >>> configs = load_configs("runs/nuts/pipeline.config")
        >>> fit_data(configs, max_size=640)["input_size"]
        512
    """
    reason = anchors.unsupported(configs)
    if reason:
        raise ConfigError(f"--fit-data cannot fit this model: {reason}", where="model",
                          fix="use an SSD template with ssd_anchor_generator or "
                              "multiscale_anchor_generator (e.g. ssd_mobilenet_v2_tiny, "
                              "ssd_mobilenet_v2_320, ssd_mobilenet_v2_fpnlite_320)")
    table, files = anchors.training_boxes(configs)
    if table is None:
        raise ConfigError("no per-class box shapes to fit to" + (
            " (stats.json written by an older tfod prepare)" if files else ""),
            where=", ".join(files) or "train_input_reader.tf_record_input_reader.input_path",
            fix="re-run `tfod prepare`" if files else
                "give the dataset with --data data/NAME (a `tfod prepare` output)")
    threshold = anchors.matched_threshold(configs)
    before = anchors.coverage(anchors.anchor_geometry(configs),
                              anchors.resize_boxes(configs, table), threshold)
    result = {"input_size": _fit_size(configs, table, max_size, keep_size)}
    boxes = anchors.resize_boxes(configs, table)
    kind = configs["model"].ssd.anchor_generator.WhichOneof("anchor_generator_oneof")
    generator = getattr(configs["model"].ssd.anchor_generator, kind)
    result["aspect_ratios"] = _fit_aspect_ratios(generator, boxes)
    fit = _fit_ssd_scales if kind == "ssd_anchor_generator" else _fit_anchor_scale
    result.update(fit(configs, generator, boxes, threshold + MARGIN))
    after = anchors.coverage(anchors.anchor_geometry(configs), boxes, threshold)
    result["covered"] = {name: [round(before[name].covered, 3), round(after[name].covered, 3)]
                         for name in sorted(after)}
    log.info("fit-data: boxes matching an anchor at IoU %g, before -> after: %s", threshold,
             ", ".join(f"{name} {b:.0%} -> {a:.0%}" for name, (b, a) in
                       result["covered"].items()))
    short = [name for name, c in after.items() if c.covered < 1 - anchors.WARN_SHARE]
    if short:
        log.warning("fit-data: boxes of %s still match no anchor; %s", ", ".join(short),
                    "the finest map keeps its 0.1 square anchor with "
                    "reduce_boxes_in_lowest_layer: true (false changes the box predictor's "
                    "shape)" if getattr(generator, "reduce_boxes_in_lowest_layer", False)
                    else "their shapes are far from the rest: more aspect ratios (the box "
                    "predictor changes shape) or a larger --max-size may cover them")
    return result


def _fit_size(configs: dict, table: dict, max_size: int, keep_size: bool) -> int:
    from tfod.config.patch import _set_image_size

    height, width = anchors.model_input(configs)
    if keep_size:
        log.info("fit-data: input %dx%d kept (given with --image-size)", width, height)
        return max(height, width)
    multiple = anchors.size_multiple(configs)
    cap = max(multiple, max_size // multiple * multiple)
    boxes = anchors.resize_boxes(configs, table)
    stride = anchors.anchor_geometry(configs).finest_stride
    needed = anchors.size_for_stride(configs, boxes, stride)
    side = min(cap, max(max(height, width), needed))
    lows = {name: group.quantile(group.sides(), anchors.LOW_QUANTILE)
            for name, group in boxes.items()}
    smallest = min(lows, key=lows.get)
    why = (f"the smallest 5% of {smallest!r} boxes are {lows[smallest]:.1f} px at "
           f"{width}x{height}, the finest stride {stride:g} px; they reach it at {needed}")
    if needed > cap:
        why += f", beyond --max-size {max_size}: some boxes stay below the stride"
    log.info("fit-data: input %dx%d -> %dx%d (%s; about %.1fx the compute per step)",
             width, height, side, side, why, side * side / (width * height))
    _set_image_size(configs, side)
    return side


def _weighted_quantile(values, weights, q: float) -> float:
    import numpy as np

    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
    return float(values[order][min(index, len(order) - 1)])


def _fit_aspect_ratios(generator, boxes: dict) -> list[float]:
    """k-means of log2(w/h), each class weighted the same, as many centres as the
    template has aspect ratios (module docstring, rule 2)."""
    import numpy as np

    k = len(generator.aspect_ratios)
    if k == 0:
        return []
    values = np.concatenate([np.log2(g.width / g.height) for g in boxes.values()])
    weights = np.concatenate([g.count / g.count.sum() for g in boxes.values()])
    centres = np.array([_weighted_quantile(values, weights, (i + 0.5) / k) for i in range(k)])
    for _ in range(100):
        nearest = np.abs(values[:, None] - centres[None, :]).argmin(axis=1)
        moved = np.array([np.average(values[nearest == i], weights=weights[nearest == i])
                          if (nearest == i).any() else centres[i] for i in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    centres = np.sort(centres)
    mean = centres.mean()
    for i in range(1, k):  # at least MIN_ASPECT_GAP apart, around the same mean
        centres[i] = max(centres[i], centres[i - 1] + MIN_ASPECT_GAP)
    centres += mean - centres.mean()
    ratios = sorted((round(float(2 ** c), 2) for c in centres), key=lambda r: (abs(math.log(r)), r))
    old = [round(a, 4) for a in generator.aspect_ratios]
    del generator.aspect_ratios[:]
    generator.aspect_ratios.extend(ratios)
    log.info("fit-data: aspect ratios %s -> %s (k-means of log2 w/h of the training boxes, "
             "%d as the template has)", old, ratios, k)
    return ratios


def _shapes(configs: dict) -> list[tuple[float, float]]:
    """Every anchor (width, height) of the config at its input, made by the OD API's
    generator on 1x1 maps (the sizes do not depend on the number of cells)."""
    height, width = anchors.model_input(configs)
    count = len(anchors.feature_maps(configs, height, width))
    shapes = set()
    for corners in anchors.generate(configs["model"].ssd.anchor_generator, [(1, 1)] * count,
                                    height, width):
        for b in corners:
            shapes.add((float((b[3] - b[1]) * width), float((b[2] - b[0]) * height)))
    return sorted(shapes)


def _ssd_shapes(configs: dict) -> list[tuple[float, float]]:
    """:func:`_shapes` of an ``ssd_anchor_generator`` without TensorFlow ops: the
    (scale, aspect ratio) pairs ``create_ssd_anchors`` gives each map, sized as
    ``tile_anchors`` sizes them (height s / sqrt(a), width s * sqrt(a), times the base
    anchor and the input's short side). Thousands of candidates cost under a second;
    tests/test_config_fit.py checks it against :func:`_shapes`."""
    from object_detection.builders import anchor_generator_builder

    generator = anchor_generator_builder.build(configs["model"].ssd.anchor_generator)
    base_height, base_width = generator._base_anchor_size
    short = min(anchors.model_input(configs))
    return sorted({(scale * math.sqrt(aspect) * base_width * short,
                    scale / math.sqrt(aspect) * base_height * short)
                   for specs in generator._box_specs for scale, aspect in specs})


def _score(shapes, boxes: dict, target: float) -> tuple[float, float]:
    """(share covered of the worst-covered class, share covered of every box together)."""
    covered = {name: (anchors.best_iou(group, shapes) >= target) for name, group in boxes.items()}
    worst = min(group.share(covered[name]) for name, group in boxes.items())
    total = sum(float(group.count[covered[name]].sum()) for name, group in boxes.items())
    return round(worst, 6), round(total / sum(g.total for g in boxes.values()), 6)


def _grid(low: float, high: float, also: float) -> list[float]:
    """Eight values per octave from ``low`` to ``high``, and ``also`` (the template's)."""
    steps = int(math.floor(math.log2(high / low) * STEPS_PER_OCTAVE))
    grid = {round(low * 2 ** (i / STEPS_PER_OCTAVE), 4) for i in range(steps + 1)} | {high}
    return sorted(grid | ({round(also, 4)} if low <= also <= high else set()))


def _distance(values: tuple[float, ...], old: tuple[float, ...]) -> float:
    return sum(abs(math.log(v / o)) for v, o in zip(values, old) if v > 0 and o > 0)


def _pick(configs: dict, generator, fields: tuple[str, ...], candidates, boxes: dict,
          target: float, shapes_of) -> dict:
    """Set ``fields`` to the candidate values with the best coverage (module docstring,
    rule 3) and log the choice."""
    old = tuple(float(getattr(generator, f)) for f in fields)
    best = None
    for values in candidates:
        for field, value in zip(fields, values):
            setattr(generator, field, value)
        score = _score(shapes_of(configs), boxes, target)
        key = (score, -_distance(values, old), tuple(-v for v in values))
        if best is None or key > best[0]:
            best = (key, values)
    (score, _, _), values = best
    for field, value in zip(fields, values):
        setattr(generator, field, value)
    log.info("fit-data: %s (worst class %.0f%%, all boxes %.0f%% matching an anchor at IoU "
             "%.2g)", ", ".join(f"{f} {o:.4g} -> {v:.4g}" for f, o, v in zip(fields, old, values)),
             100 * score[0], 100 * score[1], target)
    return dict(zip(fields, values))


def _fit_ssd_scales(configs: dict, generator, boxes: dict, target: float) -> dict:
    """min_scale and max_scale together, from a grid of 8 values per octave."""
    if generator.scales:
        log.info("fit-data: the explicit scales %s are replaced by min_scale/max_scale",
                 list(generator.scales))
        del generator.scales[:]
    lows = _grid(0.01, 0.9, generator.min_scale)
    highs = _grid(0.01, 0.95, generator.max_scale)
    pairs = [(low, high) for low in lows for high in highs if high >= low]
    return _pick(configs, generator, ("min_scale", "max_scale"), pairs, boxes, target,
                 _ssd_shapes)


def _fit_anchor_scale(configs: dict, generator, boxes: dict, target: float) -> dict:
    """anchor_scale of a multiscale generator, from a grid of 8 values per octave."""
    values = [(v,) for v in _grid(0.5, 16.0, generator.anchor_scale)]
    return _pick(configs, generator, ("anchor_scale",), values, boxes, target, _shapes)
