"""Splitting records into train/val/test: seeded, stratified by each image's rarest class,
so that every class lands in every split when it can."""

from __future__ import annotations

import random
from collections import Counter
from tfod.data.annotations import Record
from tfod.errors import DatasetError


def _rarest_class(record: Record, frequency: Counter) -> str:
    names = {b.name for b in record.boxes}
    return min(names, key=lambda n: (frequency[n], n)) if names else ""


def split_records(records: list[Record], ratios: dict[str, float], seed: int = 0,
                  keep_own_split: bool = True, stratify: bool = True
                  ) -> dict[str, list[Record]]:
    """Assign records to splits: the dataset's own, or seeded by ratios.

    Stratified: images are grouped by the rarest class they contain and each
    group, rarest first, is dealt out by the ratios (to the split furthest behind
    its share, in the group and overall), so every class reaches every split
    when it has at least as many images as there are splits. Images without
    boxes form a group of their own. The result depends only on the records and
    the seed.

    Example:
        >>> splits = split_records(records, {"train": 0.8, "val": 0.2}, seed=1)
    """
    if keep_own_split and records and all(r.split for r in records):
        out: dict[str, list[Record]] = {}
        for record in sorted(records, key=lambda r: str(r.image_path)):
            out.setdefault(record.split, []).append(record)
        return out
    bad = [f"{k}={v}" for k, v in ratios.items() if not v >= 0]
    total = sum(v for v in ratios.values() if v >= 0)
    if bad or total <= 0:
        raise DatasetError(f"bad split ratios {', '.join(bad) or ratios}", where="--split",
                           fix="give non-negative ratios like train=0.8,val=0.2")
    share = {k: v / total for k, v in ratios.items() if v > 0}
    frequency = Counter(b for r in records for b in {x.name for x in r.boxes})
    groups: dict[str, list[Record]] = {}
    for record in sorted(records, key=lambda r: str(r.image_path)):
        key = _rarest_class(record, frequency) if stratify else ""
        groups.setdefault(key, []).append(record)
    rng = random.Random(seed)
    out = {name: [] for name in ratios}
    overall: Counter = Counter()
    for key in sorted(groups, key=lambda g: (len(groups[g]), g)):  # rarest first
        group = groups[key]
        rng.shuffle(group)
        assigned: Counter = Counter()
        for k, record in enumerate(group):
            empty = [s for s in share if not assigned[s]]
            if len(group) >= len(share) and len(group) - k <= len(empty):
                name = empty[0]  # the last images of the group reach the empty splits
            else:  # the split most behind its share, in this group and overall
                done = sum(overall.values())
                name = max(share, key=lambda s: (
                    round(share[s] * (k + 1) - assigned[s] + share[s] * (done + 1)
                          - overall[s], 9), share[s]))
            assigned[name] += 1
            overall[name] += 1
            record.split = name
            out[name].append(record)
    return out
