"""Statistics of a checked dataset: what is in each split, as a table, JSON and plots.

Box size classes follow COCO (area in pixels of the original image: small
< 32², medium < 96², large otherwise), so they read the same as the
APs/APm/APl lines of the COCO metrics later.

``box_shapes`` holds every box's shape per split and class as a sparse histogram, so that
``tfod config --check`` / ``--fit-data`` can resize the boxes as a config's image resizer
would and compare them with its anchors (:func:`box_shape_table` reads it back).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Sequence

from tfod.data.annotations import Record

log = logging.getLogger(__name__)

SMALL, MEDIUM = 32 ** 2, 96 ** 2
#: aspect-ratio (width / height) bin edges for the histogram and stats.json
ASPECT_EDGES = (0.25, 0.5, 0.8, 1.25, 2.0, 4.0)
#: ``box_shapes`` bins per octave: a cell spans a factor 2**(1/16) (4.4%) in each of
#: box width / image width, box height / image height and image width / height
SHAPE_BINS_PER_OCTAVE = 16


def _shape_bin(value: float) -> int:
    """Cell index of a positive ratio: cell ``i`` holds [2**(i/16), 2**((i+1)/16))."""
    return math.floor(math.log2(value) * SHAPE_BINS_PER_OCTAVE)


def _aspect_bin(ratio: float) -> str:
    edges = ASPECT_EDGES
    for i, edge in enumerate(edges):
        if ratio < edge:
            return f"<{edge:g}" if i == 0 else f"{edges[i - 1]:g}-{edge:g}"
    return f">={edges[-1]:g}"


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 4)

    return {"min": round(values[0], 4), "p05": at(0.05), "median": at(0.5), "p95": at(0.95),
            "max": round(values[-1], 4)}


def dataset_stats(splits: dict[str, Sequence[Record]], classes: Sequence[str]) -> dict:
    """Counts per class per split, box size classes, aspect ratios and image sizes.

    Example:
        >>> stats = dataset_stats({"train": records}, ["cat", "dog"])
        >>> stats["splits"]["train"]["boxes"]
    """
    out: dict = {"classes": list(classes), "splits": {}}
    sizes: Counter = Counter()
    aspects: Counter = Counter()
    sides: list[float] = []
    relative: list[float] = []
    shapes: dict = {}
    for split, records in splits.items():
        cells: dict[str, Counter] = {}
        per_class = {c: {"images": 0, "boxes": 0} for c in classes}
        size_classes = Counter({"small": 0, "medium": 0, "large": 0})
        negatives = boxes = 0
        for record in records:
            sizes[(record.width, record.height)] += 1
            negatives += not record.boxes
            for name in {b.name for b in record.boxes}:
                per_class.setdefault(name, {"images": 0, "boxes": 0})["images"] += 1
            for box in record.boxes:
                boxes += 1
                per_class[box.name]["boxes"] += 1
                w, h = box.xmax - box.xmin, box.ymax - box.ymin
                area = w * h
                size_classes["small" if area < SMALL else "medium" if area < MEDIUM
                             else "large"] += 1
                aspects[_aspect_bin(w / h)] += 1
                sides.append(math.sqrt(area))
                relative.append(math.sqrt(area / max(1, record.width * record.height)))
                if w > 0 and h > 0 and record.width > 0 and record.height > 0:
                    cells.setdefault(box.name, Counter())[(
                        _shape_bin(w / record.width), _shape_bin(h / record.height),
                        _shape_bin(record.width / record.height))] += 1
        out["splits"][split] = {"images": len(records), "negatives": negatives,
                                "boxes": boxes, "per_class": per_class,
                                "box_sizes": dict(size_classes)}
        shapes[split] = {name: [[*cell, n] for cell, n in sorted(counter.items())]
                         for name, counter in sorted(cells.items())}
    widths = sorted(w for (w, _), n in sizes.items() for _ in range(n))
    heights = sorted(h for (_, h), n in sizes.items() for _ in range(n))
    out["image_sizes"] = {
        "width": _quantiles([float(w) for w in widths]),
        "height": _quantiles([float(h) for h in heights]),
        "most_common": [[w, h, n] for (w, h), n in sizes.most_common(5)],
    }
    out["aspect_ratios"] = {k: aspects[k] for k in _aspect_order() if aspects[k]}
    out["box_side_pixels"] = _quantiles(sides)  # sqrt(area)
    out["box_side_relative"] = _quantiles(relative)  # sqrt(area / image area)
    out["box_shapes"] = {
        "bins_per_octave": SHAPE_BINS_PER_OCTAVE,
        "cell": "[floor(16*log2(box w / image w)), floor(16*log2(box h / image h)), "
                "floor(16*log2(image w / image h)), boxes]",
        "splits": shapes}
    missing = {s: [c for c in classes if not v["per_class"].get(c, {}).get("boxes")]
               for s, v in out["splits"].items()}
    out["classes_missing"] = {s: m for s, m in missing.items() if m}
    return out


def box_shape_table(stats: dict, split: str = "train") -> dict[str, list[tuple]] | None:
    """Box shapes of one split per class, from ``stats["box_shapes"]``: a list of
    ``(box w / image w, box h / image h, image w / image h, boxes)`` with each ratio at
    its cell's centre (within 2.2% of the true value). None when the stats were written
    by a tfod without ``box_shapes`` (re-run ``tfod prepare``); classes without boxes in
    the split are left out.

    Example:
        >>> box_shape_table(json.loads(Path("data/pets/stats.json").read_text()))["cat"][0]
        (0.0314, 0.0442, 1.3335, 4)
    """
    table = stats.get("box_shapes")
    if not isinstance(table, dict) or "splits" not in table:
        return None
    per_octave = float(table.get("bins_per_octave", SHAPE_BINS_PER_OCTAVE))

    def centre(i: int) -> float:
        return 2.0 ** ((i + 0.5) / per_octave)

    return {name: [(centre(i), centre(j), centre(k), int(n)) for i, j, k, n in cells]
            for name, cells in table["splits"].get(split, {}).items() if cells}


def _aspect_order() -> list[str]:
    return [_aspect_bin(e - 1e-9) for e in ASPECT_EDGES] + [_aspect_bin(ASPECT_EDGES[-1])]


def stats_table(stats: dict) -> str:
    """A plain-text table: boxes (images) per class per split, then the totals.

    Example:
        >>> print(stats_table(dataset_stats(splits, classes)))
    """
    splits = list(stats["splits"])
    head = ["class"] + splits
    rows = []
    for name in stats["classes"]:
        rows.append([name] + [f"{stats['splits'][s]['per_class'].get(name, {}).get('boxes', 0)}"
                              f" ({stats['splits'][s]['per_class'].get(name, {}).get('images', 0)})"
                              for s in splits])
    rows.append(["boxes (images)"] + [f"{stats['splits'][s]['boxes']} "
                                      f"({stats['splits'][s]['images']})" for s in splits])
    rows.append(["negatives"] + [str(stats["splits"][s]["negatives"]) for s in splits])
    rows.append(["small/med/large"] + ["/".join(str(stats["splits"][s]["box_sizes"][k])
                                                for k in ("small", "medium", "large"))
                                       for s in splits])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    sizes = stats["image_sizes"]
    if sizes["width"]:
        lines.append(f"image sizes: width {sizes['width']['min']:g}-{sizes['width']['max']:g} "
                     f"(median {sizes['width']['median']:g}), height "
                     f"{sizes['height']['min']:g}-{sizes['height']['max']:g} "
                     f"(median {sizes['height']['median']:g})")
    if stats["box_side_relative"]:
        rel = stats["box_side_relative"]
        lines.append(f"box side / image side: median {rel['median']:.3f}, "
                     f"5% below {rel['p05']:.3f}")
    if stats["aspect_ratios"]:
        lines.append("box aspect (w/h): " + ", ".join(
            f"{k}: {v}" for k, v in stats["aspect_ratios"].items()))
    for split, names in stats["classes_missing"].items():
        lines.append(f"warning: no boxes of {', '.join(names)} in {split}")
    return "\n".join(lines)


def plot_stats(stats: dict, splits: dict[str, Sequence[Record]], out_dir: str | Path) -> list[Path]:
    """PNG plots: boxes per class per split, box sizes, aspect ratios.

    Example:
        >>> plot_stats(stats, splits, "data/pets/stats")
    """
    import numpy as np

    from tfod.plots import _pyplot, save_figure

    plt = _pyplot()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    names = stats["classes"]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 3.5))
    width = 0.8 / max(1, len(stats["splits"]))
    x = np.arange(len(names))
    for i, (split, s) in enumerate(stats["splits"].items()):
        ax.bar(x + i * width, [s["per_class"].get(n, {}).get("boxes", 0) for n in names],
               width, label=split)
    ax.set_xticks(x + width * (len(stats["splits"]) - 1) / 2, names, rotation=45, ha="right")
    ax.set_ylabel("boxes")
    ax.set_title("boxes per class")
    ax.legend()
    written.append(save_figure(fig, out_dir / "class_histogram.png"))

    sides = [math.sqrt((b.xmax - b.xmin) * (b.ymax - b.ymin))
             for records in splits.values() for r in records for b in r.boxes]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if sides:
        bins = np.geomspace(max(1.0, min(sides)), max(sides) + 1, 30)
        ax.hist(sides, bins=bins)
        ax.set_xscale("log")
    for edge, label in ((32, "small|medium"), (96, "medium|large")):
        ax.axvline(edge, color="k", linestyle="--", linewidth=0.8)
        ax.text(edge, ax.get_ylim()[1] * 0.95, f" {label}", fontsize=7, va="top")
    ax.set_xlabel("box side, sqrt(area) in pixels")
    ax.set_ylabel("boxes")
    ax.set_title("box sizes")
    written.append(save_figure(fig, out_dir / "box_sizes.png"))

    ratios = [(b.xmax - b.xmin) / (b.ymax - b.ymin)
              for records in splits.values() for r in records for b in r.boxes]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if ratios:
        ax.hist(np.log2(ratios), bins=30)
    ax.set_xlabel("log2(width / height)")
    ax.set_ylabel("boxes")
    ax.set_title("box aspect ratios")
    written.append(save_figure(fig, out_dir / "aspect_ratios.png"))
    return written
