"""The data stage (``tfod prepare``, ``tfod synth``): annotations -> checked, split,
sharded TFRecords + label map under ``data/<name>/`` (:class:`tfod.layout.DatasetDir`).

Data flows one way through its modules: :mod:`~tfod.data.readers` turn annotation files
into :class:`~tfod.data.annotations.Record` objects (pixels, class names),
:mod:`~tfod.data.checks` drops and counts what cannot be used, :mod:`~tfod.data.split`
assigns splits, :mod:`~tfod.data.shards` writes the OD API's feature keys through
:mod:`~tfod.data.tfrecord` (no TensorFlow), :mod:`~tfod.data.labelmap` writes the label
map and :mod:`~tfod.data.stats` the statistics; :mod:`~tfod.data.prepare` runs them in
order and replaces the dataset folder only when everything is written.
:mod:`~tfod.data.synth` generates the demo's dataset.

Names are loaded on first use, so ``import tfod.data.tfrecord`` stays cheap.

Example:
    >>> from tfod.data import prepare_dataset
    >>> prepare_dataset("data/raw/voc", "pets", fmt="voc")["manifest"]
"""

import importlib

# public name -> module of this package that defines it
_HOMES = {
    "prepare": ("prepare_dataset", "split_pattern", "MARKER"),
    "readers": ("READERS", "CSV_COLUMNS", "read_voc", "read_coco", "read_csv", "read_yolo"),
    "annotations": ("Box", "Record", "Report", "FORMATS", "CLIP_TOLERANCE",
                    "PathOutsideError", "problem_kind", "split_from_name"),
    "checks": ("check_records", "inspect_image", "MAX_PIXELS"),
    "split": ("split_records",),
    "shards": ("write_tfrecords", "record_to_example", "num_shards_for"),
    "labelmap": ("write_label_map", "read_label_map", "LABEL_MAP_HEADER"),
    "stats": ("dataset_stats", "stats_table"),
    "synth": ("synthesize",),
}
_LAZY = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tfod.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfod.data' has no attribute {name!r}")
