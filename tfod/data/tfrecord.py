"""``tf.train.Example`` records and TFRecord files, written without importing TensorFlow.

`tfod prepare` needs two things from TensorFlow: the ``Example`` protobuf and the
TFRecord file format. Importing TensorFlow for them costs seconds (more than the
whole conversion of a few hundred images), so this module provides both:

* :data:`Example` is a message class built from the same message definitions
  (``tensorflow/core/example/{example,feature}.proto``: same names, field
  numbers and types) in a private descriptor pool, so it serialises to the
  same bytes on the wire and never clashes with TensorFlow's own classes in a
  process that has imported both;
* :class:`TFRecordWriter` writes TensorFlow's record framing: little-endian
  uint64 length, masked CRC-32C of the length, the data, masked CRC-32C of the
  data (CRC-32C from ``google-crc32c``'s C implementation);
  :func:`read_records` reads it back, checking both CRCs.

``tests/test_tfrecord.py`` reads what this writes with TensorFlow's own
``TFRecordDataset`` and ``tf.train.Example``, and what TensorFlow writes with
:func:`read_records`, and compares.
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import Iterator

from tfod.errors import DatasetError

_MASK_DELTA = 0xA282EAD8


@functools.lru_cache(maxsize=1)
def _classes() -> dict:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tfod/tfrecord_example.proto", package="tensorflow", syntax="proto3")

    def message(name, *fields, nested=None):
        msg = proto.message_type.add(name=name)
        for number, (field_name, kind, label, type_name, packed) in enumerate(fields, 1):
            f = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True
        if nested:
            entry = msg.nested_type.add(name=nested[0])
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
            entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE,
                            label=F.LABEL_OPTIONAL, type_name=nested[1])
        return msg

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", ("value", F.TYPE_BYTES, rep, None, False))
    message("FloatList", ("value", F.TYPE_FLOAT, rep, None, True))
    message("Int64List", ("value", F.TYPE_INT64, rep, None, True))
    feature = message("Feature",
                      ("bytes_list", F.TYPE_MESSAGE, opt, ".tensorflow.BytesList", False),
                      ("float_list", F.TYPE_MESSAGE, opt, ".tensorflow.FloatList", False),
                      ("int64_list", F.TYPE_MESSAGE, opt, ".tensorflow.Int64List", False))
    feature.oneof_decl.add(name="kind")
    for f in feature.field:
        f.oneof_index = 0
    message("Features",
            ("feature", F.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", False),
            nested=("FeatureEntry", ".tensorflow.Feature"))
    message("Example", ("features", F.TYPE_MESSAGE, opt, ".tensorflow.Features", False))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}"))
            for name in ("Example", "Features", "Feature", "BytesList", "FloatList",
                         "Int64List")}


def example(features: dict[str, list]) -> bytes:
    """Serialise a ``tf.train.Example`` from ``{key: list of bytes | float | int}``.

    The kind of each feature comes from :data:`KINDS` for the keys tfod writes
    (so an empty list still has the kind the OD API's decoder expects), else
    from the type of the first value (bytes when empty).

    Example:
        >>> example({"image/height": [480], "image/object/bbox/xmin": [0.1, 0.5]})
    """
    out = _classes()["Example"]()
    feature_map = out.features.feature
    for key, values in features.items():
        kind = _kind(key, values)
        getattr(feature_map[key], kind).value.extend(values)
    return out.SerializeToString()


#: feature kinds of the keys tfod writes, so that empty lists get the right kind
KINDS = {
    "image/height": "int64_list", "image/width": "int64_list",
    "image/object/bbox/xmin": "float_list", "image/object/bbox/xmax": "float_list",
    "image/object/bbox/ymin": "float_list", "image/object/bbox/ymax": "float_list",
    "image/object/class/label": "int64_list", "image/object/difficult": "int64_list",
    "image/object/truncated": "int64_list", "image/object/is_crowd": "int64_list",
}


def _kind(key: str, values: list) -> str:
    if key in KINDS:
        return KINDS[key]
    if values and isinstance(values[0], float):
        return "float_list"
    if values and isinstance(values[0], int):
        return "int64_list"
    return "bytes_list"


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


class TFRecordWriter:
    """Write records in TensorFlow's TFRecord framing (uncompressed).

    Example:
        >>> with TFRecordWriter("train-00000-of-00001.tfrecord") as writer:
        ...     writer.write(example({"image/height": [480]}))
    """

    def __init__(self, path: str | Path):
        self._file = open(path, "wb")

    def write(self, record: bytes) -> None:
        header = struct.pack("<Q", len(record))
        self._file.write(header + struct.pack("<I", _masked_crc(header)) + record
                         + struct.pack("<I", _masked_crc(record)))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TFRecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def count_records(path: str | Path) -> int:
    """Records in a TFRecord file, from its framing (lengths only, no CRC check)."""
    n = 0
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError(f"{path}: truncated record header")
            (length,) = struct.unpack("<Q", header[:8])
            f.seek(length + 4, 1)
            n += 1
    return n


def _corrupt(path: Path, offset: int, index: int, what: str) -> DatasetError:
    return DatasetError(
        f"corrupt TFRecord: record {index} at byte {offset}: {what}", where=str(path),
        fix=f"write the file again from its source (the {index} record(s) before byte "
            f"{offset} are intact)" if index else "check that this is an uncompressed "
            "TFRecord file, or write it again from its source")


def read_records(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, payload)`` of each record of a TFRecord file (uncompressed), both
    CRCs checked, without TensorFlow.

    A truncated file, a length or data whose masked CRC-32C does not match, or a length
    running past the end of the file raises :class:`~tfod.errors.DatasetError` naming the
    file and the byte offset where the bad record starts, after the good records before it
    were yielded. A GZIP-compressed file (which the OD API's input reader cannot read
    either) is refused with the command that decompresses it.

    Example:
        >>> [offset for offset, payload in read_records("data/train.record")][:3]
        [0, 53805, 121400]
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise DatasetError(f"cannot open ({exc.strerror})", where=str(path),
                           fix="check the path and its permissions") from None
    with handle as f:
        size = os.fstat(f.fileno()).st_size
        offset = index = 0
        while header := f.read(12):
            if offset == 0 and header[:2] == b"\x1f\x8b":
                plain = (path.with_suffix("") if path.suffix == ".gz"
                         else path.with_name(f"{path.stem}-plain{path.suffix}"))
                raise DatasetError(
                    "a GZIP-compressed TFRecord file: the OD API reads uncompressed ones",
                    where=str(path), fix=f"decompress it first: gunzip -c {path} > {plain}")
            if len(header) < 12:
                raise _corrupt(path, offset, index, f"the file ends inside the record's "
                               f"12-byte header ({len(header)} bytes left; truncated?)")
            if struct.unpack("<I", header[8:])[0] != _masked_crc(header[:8]):
                raise _corrupt(path, offset, index, "the CRC of the record's length does not "
                               "match (not a TFRecord file, or damaged)")
            (length,) = struct.unpack("<Q", header[:8])
            if offset + 16 + length > size:
                raise _corrupt(path, offset, index, f"the record's {length} bytes and CRC "
                               f"run past the end of the file ({size} bytes; truncated?)")
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:  # the file shrank while being read
                raise _corrupt(path, offset, index, "the file ends inside the record "
                               "(truncated?)")
            if struct.unpack("<I", footer)[0] != _masked_crc(data):
                raise _corrupt(path, offset, index, "the CRC of the record's data does not "
                               "match (damaged)")
            yield offset, data
            offset += 16 + length
            index += 1
