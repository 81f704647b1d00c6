"""The annotation readers by format: Pascal VOC XML (:mod:`~tfod.data.voc`), COCO JSON
instances (:mod:`~tfod.data.coco`), CSV tables (:mod:`~tfod.data.csv_table`) and YOLO txt
(:mod:`~tfod.data.yolo`), each into the same :class:`~tfod.data.annotations.Record`
objects.

Each reader takes the annotation source, a :class:`~tfod.data.annotations.Report` to count
problems in, an optional image folder and ``allow_outside``. Nothing is dropped silently:
a file or line that cannot be read is counted with its location, and the reader goes on.
To add a format, write ``read_<format>(source, report, image_dir=None,
allow_outside=False)`` in a module of its own and list it in :data:`READERS`
(docs/ARCHITECTURE.md).
"""

from tfod.data.coco import read_coco
from tfod.data.csv_table import CSV_COLUMNS, read_csv
from tfod.data.voc import read_voc
from tfod.data.yolo import read_yolo

__all__ = ["CSV_COLUMNS", "READERS", "read_coco", "read_csv", "read_voc", "read_yolo"]

#: ``tfod prepare --format`` name -> reader
READERS = {"voc": read_voc, "coco": read_coco, "csv": read_csv, "yolo": read_yolo}
