"""tfod.tfrecord: records written without TensorFlow read back by TensorFlow itself."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from tfod.data import tfrecord
from tfod.errors import DatasetError


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


def test_framing_equals_tensorflows_bytes_without_tensorflow(tmp_path):
    """The exact bytes tf.io.TFRecordWriter (TF 2.20) wrote for three payloads: uint64 length,
    masked CRC-32C of the length, payload, masked CRC-32C of the payload, all little-endian.
    Pure Python, so the mutation run (which must not run TensorFlow in forked workers) checks
    the framing too; test_bytes_equal_tensorflows_own_writer checks it against TF itself."""
    golden = {b"": ("000000000000000029039807", "d8ea82a2"),
              b"tfod": ("040000000000000042455204", "ee0bf6ee"),
              b"a" * 300: ("2c01000000000000f2fe5b9d", "5c724175")}
    for payload, (header, footer) in golden.items():
        path = tmp_path / f"r{len(payload)}.tfrecord"
        with tfrecord.TFRecordWriter(path) as writer:
            writer.write(payload)
        assert path.read_bytes() == bytes.fromhex(header) + payload + bytes.fromhex(footer)


def test_no_tensorflow_import(tmp_path):
    import subprocess
    import sys

    path = str(tmp_path / "a")
    code = ("import sys; from tfod.data import tfrecord\n"
            f"with tfrecord.TFRecordWriter({path!r}) as w:\n"
            "    w.write(tfrecord.example({'a': [1]}))\n"
            f"print(len(list(tfrecord.read_records({path!r}))), 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "1 False"


def test_bytes_equal_tensorflows_own_writer(tmp_path):
    """Same payloads through tf.io.TFRecordWriter: the files must be byte for byte equal
    (length, masked CRC-32C of the length, data, masked CRC-32C of the data)."""
    import tensorflow as tf

    payloads = [b"", b"x", tfrecord.example(_features()), bytes(range(256)) * 40]
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "theirs.tfrecord"
    with tfrecord.TFRecordWriter(ours) as writer:
        for payload in payloads:
            writer.write(payload)
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for payload in payloads:
            writer.write(payload)
    assert ours.read_bytes() == theirs.read_bytes()
    assert tfrecord.count_records(ours) == 4


def test_feature_kinds_of_tfod_keys_and_of_others(tmp_path):
    """Empty lists of the keys tfod writes keep the kind the OD API decoder expects; other
    keys take the kind of their first value, bytes when empty."""
    Example = tfrecord._classes()["Example"]
    features = {key: [] for key in tfrecord.KINDS}
    features.update({"empty": [], "f": [1.5, 2], "i": [3, 2**40], "b": [b"x"], "s": ["t".encode()]})
    parsed = Example.FromString(tfrecord.example(features)).features.feature
    kinds = {key: parsed[key].WhichOneof("kind") for key in features}
    assert kinds == {**tfrecord.KINDS, "empty": "bytes_list", "f": "float_list",
                     "i": "int64_list", "b": "bytes_list", "s": "bytes_list"}
    assert set(tfrecord.KINDS.values()) == {"int64_list", "float_list"}
    assert sorted(tfrecord.KINDS) == sorted(
        ["image/height", "image/width", "image/object/bbox/xmin", "image/object/bbox/xmax",
         "image/object/bbox/ymin", "image/object/bbox/ymax", "image/object/class/label",
         "image/object/difficult", "image/object/truncated", "image/object/is_crowd"])
    assert [tfrecord.KINDS[f"image/object/bbox/{k}"] for k in ("xmin", "xmax", "ymin", "ymax")] \
        == ["float_list"] * 4
    assert list(parsed["f"].float_list.value) == [1.5, 2.0]
    assert list(parsed["i"].int64_list.value) == [3, 2**40]


def test_count_records_reads_lengths_and_refuses_a_cut_header(tmp_path):
    path = tmp_path / "x.tfrecord"
    with tfrecord.TFRecordWriter(path) as writer:
        for n in (0, 1, 300):
            writer.write(b"a" * n)
    assert tfrecord.count_records(path) == 3
    raw = path.read_bytes()
    assert len(raw) == 3 * 16 + 301
    (tmp_path / "empty").write_bytes(b"")
    assert tfrecord.count_records(tmp_path / "empty") == 0
    (tmp_path / "cut").write_bytes(raw + raw[:11])
    with pytest.raises(ValueError, match="cut: truncated record header"):
        tfrecord.count_records(tmp_path / "cut")


# --------------------------------------------------------------------------- #
# read_records: the framing read back without TensorFlow, both CRCs checked
# --------------------------------------------------------------------------- #
PAYLOADS = [b"", b"x", bytes(range(256)) * 3, b"tfod"]
OFFSETS = [0, 16, 33, 33 + 16 + 768]


def _written(path, payloads=PAYLOADS):
    with tfrecord.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)
    return path


def test_read_records_round_trip_with_offsets(tmp_path):
    path = _written(tmp_path / "x.tfrecord", PAYLOADS + [tfrecord.example(_features())])
    got = list(tfrecord.read_records(path))
    assert [p for _, p in got] == PAYLOADS + [tfrecord.example(_features())]
    assert [o for o, _ in got][:4] == OFFSETS
    assert list(tfrecord.read_records(_written(tmp_path / "empty", []))) == []


def test_read_records_reads_what_tensorflow_wrote(tmp_path):
    import tensorflow as tf

    payloads = PAYLOADS + [tfrecord.example(_features()), b"\x00" * 70000]
    path = tmp_path / "theirs.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for payload in payloads:
            writer.write(payload)
    assert [p for _, p in tfrecord.read_records(path)] == payloads


def _damaged(path, change):
    raw = bytearray(_written(path).read_bytes())
    change(raw)
    path.write_bytes(bytes(raw))
    return path


def _flip(at):
    def change(raw):
        raw[at] ^= 0x01
    return change


def _cut(at):
    def change(raw):
        del raw[at:]
    return change


@pytest.mark.parametrize("change, index, message", [
    (_flip(OFFSETS[2] + 3), 2, "CRC of the record's length does not match"),  # length byte
    (_flip(OFFSETS[2] + 9), 2, "CRC of the record's length does not match"),  # its CRC
    (_flip(OFFSETS[2] + 12 + 500), 2, "CRC of the record's data does not match"),  # data
    (_flip(OFFSETS[3] - 1), 2, "CRC of the record's data does not match"),  # data CRC
    (_cut(OFFSETS[3] + 7), 3, "ends inside the record's 12-byte header (7 bytes left"),
    (_cut(OFFSETS[2] + 12 + 100), 2, "768 bytes and CRC run past the end of the file"),
    (_cut(OFFSETS[3] - 2), 2, "run past the end of the file"),  # the data CRC cut
], ids=["length", "length-crc", "data", "data-crc", "cut-header", "cut-data", "cut-crc"])
def test_read_records_names_file_and_offset_of_a_damaged_record(tmp_path, change, index,
                                                                  message):
    path = _damaged(tmp_path / "bad.record", change)
    got = []
    with pytest.raises(DatasetError) as caught:
        for item in tfrecord.read_records(path):
            got.append(item)
    text = str(caught.value)
    assert text.startswith(f"{path}: corrupt TFRecord: record {index} at byte "
                           f"{OFFSETS[index]}: "), text
    assert message in text
    assert got == list(zip(OFFSETS, PAYLOADS))[:index]  # the good records came first
    assert (f"the {index} record(s) before byte {OFFSETS[index]} are intact" in text) == bool(
        index)


def test_read_records_refuses_a_huge_length_without_reading_it(tmp_path):
    """A length whose CRC matches but that the file cannot hold: refused from the file size,
    never allocated."""
    header = struct.pack("<Q", 2**62)
    path = tmp_path / "huge.record"
    path.write_bytes(header + struct.pack("<I", tfrecord._masked_crc(header)) + b"abc")
    with pytest.raises(DatasetError, match=r"record 0 at byte 0: the record's 4611686018427387904"
                                           r" bytes and CRC run past the end of the file \(15 "):
        list(tfrecord.read_records(path))


def test_read_records_refuses_gzip_and_missing_files(tmp_path):
    plain = _written(tmp_path / "x.record").read_bytes()
    (tmp_path / "x.record.gz").write_bytes(gzip.compress(plain))
    with pytest.raises(DatasetError, match=r"x.record.gz: a GZIP-compressed TFRecord .* "
                                           r"gunzip -c .*x.record.gz > .*x.record$"):
        list(tfrecord.read_records(tmp_path / "x.record.gz"))
    with pytest.raises(DatasetError, match=r"nope.record: cannot open \(No such file"):
        list(tfrecord.read_records(tmp_path / "nope.record"))
    (tmp_path / "text.record").write_text("filename,width\na.jpg,3\n")
    with pytest.raises(DatasetError, match="record 0 at byte 0: the CRC of the record's length"
                                           ".*check that this is an uncompressed TFRecord"):
        list(tfrecord.read_records(tmp_path / "text.record"))
