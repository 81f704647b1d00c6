"""tfod.tfrecord: records written without TensorFlow read back by TensorFlow itself."""

from __future__ import annotations

import numpy as np
import pytest

from tfod import tfrecord


def _features():
    return {"image/height": [480], "image/width": [640], "image/encoded": [b"\xff\xd8" * 50],
            "image/filename": ["ünï cödé.jpg".encode()],
            "image/object/bbox/xmin": [0.1, 0.25], "image/object/class/label": [1, 3],
            "image/object/class/text": [b"cat", b"dog"], "big": [2**62, -5]}


def test_records_read_back_by_tensorflow(tmp_path):
    import tensorflow as tf

    path = tmp_path / "x.tfrecord"
    with tfrecord.TFRecordWriter(path) as writer:
        writer.write(tfrecord.example(_features()))
        writer.write(tfrecord.example({"image/object/bbox/xmin": [],  # a negative image
                                       "image/object/class/text": []}))
    raw = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]  # checks both CRCs
    assert len(raw) == 2 and tfrecord.count_records(path) == 2
    ours = tf.train.Example.FromString(raw[0])
    theirs = tf.train.Example()
    for key, values in _features().items():
        kind = ("bytes_list" if isinstance(values[0], bytes) else
                "int64_list" if isinstance(values[0], int) else "float_list")
        getattr(theirs.features.feature[key], kind).value.extend(values)
    assert ours == theirs
    empty = tf.train.Example.FromString(raw[1]).features.feature
    assert empty["image/object/bbox/xmin"].WhichOneof("kind") == "float_list"
    assert empty["image/object/class/text"].WhichOneof("kind") == "bytes_list"
    # the OD API's parsing spec reads the floats back exactly (float32)
    parsed = tf.io.parse_single_example(raw[0], {
        "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32)})
    np.testing.assert_array_equal(parsed["image/object/bbox/xmin"].values.numpy(),
                                  np.float32([0.1, 0.25]))


def test_corrupted_record_is_rejected_by_tensorflow(tmp_path):
    import tensorflow as tf

    path = tmp_path / "x.tfrecord"
    with tfrecord.TFRecordWriter(path) as writer:
        writer.write(tfrecord.example(_features()))
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # a flipped bit in the payload: the data CRC must catch it
    path.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))


def test_no_tensorflow_import(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from tfod import tfrecord; "
            f"tfrecord.TFRecordWriter({str(tmp_path / 'a')!r}).write(tfrecord.example({{'a': [1]}})); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
