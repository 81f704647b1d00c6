"""The annotation readers by format: Pascal VOC XML (:mod:`~tfod.data.voc`), COCO JSON
instances (:mod:`~tfod.data.coco`), CSV tables (:mod:`~tfod.data.csv_table`), YOLO txt and
Ultralytics dataset YAML (:mod:`~tfod.data.yolo`), KITTI (:mod:`~tfod.data.kitti`), Open
Images CSV (:mod:`~tfod.data.openimages`), CVAT for images XML (:mod:`~tfod.data.cvat`),
LabelMe JSON (:mod:`~tfod.data.labelme`) and OD API TFRecords
(:mod:`~tfod.data.tfrecord_in`), each into the same
:class:`~tfod.data.annotations.Record` objects.

Each reader takes the annotation source, a :class:`~tfod.data.annotations.Report` to count
problems in, an optional image folder and ``allow_outside``. Nothing is dropped silently:
a file or line that cannot be read is counted with its location, and the reader goes on.
To add a format, write ``read_<format>(source, report, image_dir=None,
allow_outside=False)`` in a module of its own and list it in :data:`READERS`
(docs/ARCHITECTURE.md); options only some formats take are listed in
:data:`READER_OPTIONS`. The newer formats' modules are imported when used.
"""

import importlib

from tfod.data.coco import read_coco
from tfod.data.csv_table import CSV_COLUMNS, read_csv
from tfod.data.voc import read_voc
from tfod.data.yolo import read_yolo

__all__ = ["CSV_COLUMNS", "READERS", "READER_OPTIONS", "read_coco", "read_csv", "read_voc",
           "read_yolo"]



def _lazy(module: str, function: str):
    """A reader imported on its first call (keeps ``import tfod.data.readers`` cheap)."""
    def read(*args, **kwargs):
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    read.__name__ = read.__qualname__ = function
    read.__doc__ = f"``{module}.{function}``, imported when first called."
    return read


#: ``tfod prepare --format`` name -> reader
READERS = {"voc": read_voc, "coco": read_coco, "csv": read_csv, "yolo": read_yolo,
           "kitti": _lazy("tfod.data.kitti", "read_kitti"),
           "openimages": _lazy("tfod.data.openimages", "read_openimages"),
           "cvat": _lazy("tfod.data.cvat", "read_cvat"),
           "labelme": _lazy("tfod.data.labelme", "read_labelme"),
           "tfrecord": _lazy("tfod.data.tfrecord_in", "read_tfrecord")}

#: keyword options beyond the common four, per format (``prepare`` passes only these)
READER_OPTIONS = {"csv": ("columns",), "cvat": ("polygons_as_boxes",),
                  "labelme": ("polygons_as_boxes",), "tfrecord": ("label_map",)}
