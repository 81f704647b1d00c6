"""tfod.data.tfrecord_in: OD API TFRecords as input to ``tfod prepare``.

Hand-built records whose every feature is known, so a changed key, scale, default or message
fails a test; round trips through ``prepare`` decoded by TensorFlow itself; the raccoon
dataset's own ``test.record`` (written by its author's script) against its CSV; damaged and
random input, which ends in counted problems or a DatasetError naming the file.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from conftest import SHARED_DATASETS
from test_fuzz import FUZZ, _expect_records_or_named_error, _tmp, fuzz_folder
from tfod.cli import main
from tfod.data import checks, prepare_dataset, read_csv, read_label_map, write_label_map
from tfod.data.annotations import Report
from tfod.data.tfrecord import KINDS, TFRecordWriter, _classes, read_records
from tfod.data.tfrecord_in import RECORD_NAME, read_tfrecord
from tfod.errors import DatasetError

RACCOON = SHARED_DATASETS / "raccoon"
RACCOON_RECORD = RACCOON / "data" / "test.record"


def _jpeg(size=(200, 100), colour=(90, 120, 30), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _features(name="a.jpg", image=None, **changes) -> dict:
    """One image of 200x100 with a dog and a cat, every OD API key set; ``changes`` replace
    keys (``None`` removes one)."""
    features = {
        "image/encoded": [image if image is not None else _jpeg()],
        "image/format": [b"jpeg"], "image/filename": [name.encode()],
        "image/source_id": [name.encode()], "image/height": [100], "image/width": [200],
        "image/object/bbox/xmin": [0.1, 0.5], "image/object/bbox/ymin": [0.2, 0.25],
        "image/object/bbox/xmax": [0.4, 1.0], "image/object/bbox/ymax": [0.6, 0.75],
        "image/object/class/text": [b"dog", b"cat"], "image/object/class/label": [2, 1],
        "image/object/difficult": [1, 0], "image/object/truncated": [0, 1],
        "image/object/is_crowd": [0, 1], "image/object/group_of": [1, 0],
        "image/object/view": [b"Left", b""],
    }
    for key, value in changes.items():
        key = key if key.startswith("image/") else "image/" + key.replace("__", "/")
        if value is None:
            features.pop(key, None)
        else:
            features[key] = value
    return features


def _example(features: dict) -> bytes:
    """Like :func:`tfod.data.tfrecord.example`, but each kind from the values, so a test can
    write a feature of the wrong kind."""
    out = _classes()["Example"]()
    for key, values in features.items():
        kind = ("float_list" if values and isinstance(values[0], float) else
                "int64_list" if values and isinstance(values[0], int) else
                KINDS.get(key, "bytes_list") if not values else "bytes_list")
        getattr(out.features.feature[key], kind).value.extend(values)
    return out.SerializeToString()


def _write(path: Path, *examples: bytes | dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with TFRecordWriter(path) as writer:
        for item in examples:
            writer.write(_example(item) if isinstance(item, dict) else item)
    return path


def _boxes(record) -> list[tuple]:
    return [(b.name, round(b.xmin, 3), round(b.ymin, 3), round(b.xmax, 3), round(b.ymax, 3),
             b.difficult, b.truncated, b.crowd, b.pose) for b in record.boxes]


# --------------------------------------------------------------------------- #
# What each feature becomes
# --------------------------------------------------------------------------- #
def test_every_od_api_key_is_read_into_the_record(tmp_path):
    image = _jpeg()
    path = _write(tmp_path / "a.record", _features(image=image))
    report = Report()
    (record,) = read_tfrecord(path, report)
    assert _boxes(record) == [
        ("dog", 20.0, 20.0, 80.0, 60.0, True, False, True, "Left"),  # group_of -> crowd
        ("cat", 100.0, 25.0, 200.0, 75.0, False, True, True, "Unspecified")]  # is_crowd
    assert (record.width, record.height, record.split) == (200, 100, None)
    assert record.source == f"{path} record 0 at byte 0 (a.jpg)"
    assert record.image_path.name == "a.jpg" and record.image_path.read_bytes() == image
    assert report.classes == ["cat", "dog"]  # in the order of the records' own ids
    assert not report.problems and not report.notes
    report = Report()
    read_tfrecord(_write(tmp_path / "more.record", _features(**{
        "object/area": [1.0, 2.0], "object/mask": [b"png", b"png"],
        "object/keypoint/x": [0.1, 0.2, 0.3], "key/sha256": [b"ab"]})), report)
    assert report.notes == {f"feature not carried over to the new records: image/object/{k}": 1
                            for k in ("area", "mask", "keypoint/x")}


def test_unknown_flags_are_not_set(tmp_path):
    """The OD API's Open Images converter writes -1 for "unknown" (group_of, occluded): only 1
    sets a flag, as tfod's own Open Images reader reads the CSV."""
    path = _write(tmp_path / "a.record", _features(**{
        "object/group_of": [-1, -1], "object/is_crowd": [0, -1],
        "object/truncated": [-1, 1]}))
    (record,) = read_tfrecord(path, Report())
    assert [(b.crowd, b.truncated) for b in record.boxes] == [(False, False), (False, True)]


def test_boxes_use_the_images_own_size_and_the_checks_see_the_declared_one(tmp_path):
    """Normalised boxes refer to the decoded image: an Example that declares another size
    still gets boxes in the image's pixels, and the checks report the difference; without a
    size the image's stored size is taken (and noted)."""
    path = _write(tmp_path / "a.record",
                  _features("big.jpg", height=[200], width=[400]),
                  _features("nosize.jpg", image=_jpeg(colour=(1, 2, 3)), height=None,
                            width=None),
                  _features("png.jpg", image=_jpeg(colour=(5, 6, 7), fmt="PNG"),
                            format=[b"jpg"]))
    report = Report()
    big, nosize, png = read_tfrecord(path, report)
    assert _boxes(big)[0][1:5] == _boxes(nosize)[0][1:5] == (20.0, 20.0, 80.0, 60.0)
    assert (big.width, big.height, nosize.width, nosize.height) == (400, 200, 200, 100)
    assert report.notes == {
        "record without a valid image/width and image/height (the image's own size used)": 1,
        "image/format 'jpg' differs from the image bytes (png); the bytes decide": 1}
    kept = checks.check_records([big, nosize, png], report, workers=1)
    assert len(kept) == 3 and (big.width, big.height) == (200, 100)
    assert report.problems == {"annotation size differs from the image": 1}
    assert f"{path} record 0 at byte 0 (big.jpg): annotation says 400x200" in \
        report.examples["annotation size differs from the image"][0]


def test_file_name_falls_back_to_source_id_then_to_the_record(tmp_path):
    path = _write(tmp_path / "set.tfrecord",
                  _features(filename=None, source_id=[b"id7"]),
                  _features(image=_jpeg(colour=(3, 3, 3)), filename=[b"../../etc/x.jpg"]),
                  _features(image=_jpeg(colour=(4, 4, 4)), filename=None, source_id=None))
    records = read_tfrecord(path)
    assert [r.image_path.name for r in records] == ["id7.jpg", "x.jpg", "set-2.jpg"]
    offset = [o for o, _ in read_records(path)][2]
    assert records[2].source == f"{path} record 2 at byte {offset}"


def test_file_names_too_long_for_a_file_system_are_shortened(tmp_path):
    path = _write(tmp_path / "long.record",
                  _features(filename=[("é" * 150 + ".jpeg").encode()]),
                  _features(image=_jpeg(colour=(3, 3, 3)), filename=[b"a" * 300]),
                  _features(image=_jpeg(colour=(4, 4, 4)), filename=[b"b" * 200]))
    report = Report()
    records = read_tfrecord(path, report)
    assert [r.image_path.name for r in records] == ["é" * 97 + ".jpeg", "a" * 200, "b" * 200]
    assert report.notes == {"image file names over 200 bytes shortened": 2}


# --------------------------------------------------------------------------- #
# Class names: text, or ids through a label map
# --------------------------------------------------------------------------- #
def test_class_ids_need_a_label_map_and_disagreements_are_counted(tmp_path):
    label_map = write_label_map(["cat", "dog"], tmp_path / "pets.pbtxt")
    ids_only = _write(tmp_path / "ids.record",
                      _features(**{"object/class/text": None}),
                      _features("b.jpg", image=_jpeg(colour=(9, 9, 9)),
                                **{"object/class/text": None, "object/class/label": [2, 3]}),
                      _features("c.jpg", image=_jpeg(colour=(8, 8, 8)),
                                **{"object/class/text": [b"dog", b"dog"]}),
                      _features("d.jpg", image=_jpeg(colour=(7, 7, 7)),
                                **{"object/class/label": None,
                                   "object/class/text": [b"dog", b"wolf"]}))
    with pytest.raises(DatasetError) as caught:
        read_tfrecord(ids_only)
    assert str(caught.value) == (
        f"{ids_only} record 0 at byte 0 (a.jpg) object 1: objects have class ids "
        "(image/object/class/label) but no class names (image/object/class/text); pass the "
        "label map these records were written with: --label-map FILE.pbtxt")
    report = Report()
    a, b, c, d = read_tfrecord(ids_only, report, label_map=label_map)
    assert [x.name for x in a.boxes] == ["dog", "cat"]
    assert [x.name for x in b.boxes] == ["dog"]  # id 3: no name
    assert [x.name for x in c.boxes] == ["dog"]  # 'dog' with id 1 (cat)
    assert [x.name for x in d.boxes] == ["dog", "wolf"]  # no ids: the checks judge 'wolf'
    assert report.classes == ["cat", "dog"]
    at = f"{ids_only} record {{}} at byte {{}} ({{}}) object 2"
    size = ids_only.stat().st_size
    offsets = [o for o, _ in read_records(ids_only)]
    assert report.examples == {
        "class id not in the label map": [
            at.format(1, offsets[1], "b.jpg") + ": class id 3 has no name in the label map "
            "(ids 1..2); fix the id or the label map"],
        "class text and id disagree": [
            at.format(2, offsets[2], "c.jpg") + ": class text 'dog' but id 1, which the "
            "label map names 'cat'; fix the record or the label map"]}
    assert size > offsets[-1]
    checks.check_records([d], report, classes=read_label_map(label_map), workers=1)
    assert report.problems["class not in the label map"] == 1


def test_classes_keep_the_records_ids_or_fall_back_to_names(tmp_path):
    def classes(*examples):
        report = Report()
        read_tfrecord(_write(tmp_path / f"{len(list(tmp_path.iterdir()))}.record",
                             *examples), report)
        return report.classes, dict(report.notes)

    zebra = _features(**{"object/class/text": [b"zebra", b"ant"],
                         "object/class/label": [1, 2]})
    assert classes(zebra) == (["zebra", "ant"], {})
    clash = _features("b.jpg", image=_jpeg(colour=(1, 1, 1)),
                      **{"object/class/text": [b"zebra", b"ant"], "object/class/label": [2, 1]})
    assert classes(zebra, clash) == (None, {
        "class ids in the records do not match their texts one to one: new ids by class "
        "name": 1})
    assert classes(_features(**{"object/class/label": None})) == (None, {})


# --------------------------------------------------------------------------- #
# Bad records: counted one by one, named by file, record, byte and image
# --------------------------------------------------------------------------- #
def test_bad_records_are_counted_and_left_out(tmp_path):
    good = _features()
    path = _write(tmp_path / "bad.record",
                  good,
                  _features("noimage.jpg", encoded=None),
                  _features("empty.jpg", encoded=[b""]),
                  _features("short.jpg", image=_jpeg(colour=(1, 1, 1)),
                            **{"object/bbox/ymin": [0.2]}),
                  _features("flags.jpg", image=_jpeg(colour=(2, 2, 2)),
                            **{"object/difficult": [1, 0, 0]}),
                  _features("kind.jpg", image=_jpeg(colour=(3, 3, 3)), height=[b"100"]),
                  b"\xff\xff\xff",  # not an Example
                  _features("noclass.jpg", image=_jpeg(colour=(4, 4, 4)),
                            **{"object/class/text": None, "object/class/label": None}),
                  _features("nan.jpg", image=_jpeg(colour=(5, 5, 5)),
                            **{"object/bbox/xmax": [math.nan, math.inf]}),
                  _features("outside.jpg", image=_jpeg(colour=(6, 6, 6)),
                            **{"object/bbox/xmax": [0.4, 1.02]}),
                  _features("twice.jpg"),  # the same bytes as record 0
                  _features("broken.jpg", image=_jpeg()[:300]),
                  _features("unnamed.jpg", image=_jpeg(colour=(7, 7, 7)),
                            **{"object/class/text": [b"", b"cat"],
                               "object/class/label": None}))
    offsets = [o for o, _ in read_records(path)]
    at = [f"{path} record {i} at byte {o}" for i, o in enumerate(offsets)]
    report = Report()
    records = read_tfrecord(path, report)
    assert [r.image_path.name for r in records] == [
        "a.jpg", "nan.jpg", "outside.jpg", "twice.jpg", "broken.jpg", "unnamed.jpg"]
    assert report.examples == {
        "missing image": [
            f"{at[1]} (noimage.jpg): no image bytes (image/encoded); the record cannot be used",
            f"{at[2]} (empty.jpg): no image bytes (image/encoded); the record cannot be used"],
        "unreadable annotation": [
            f"{at[3]} (short.jpg): per-object lists of different lengths (bbox/xmin=2, "
            "bbox/ymin=1, bbox/xmax=2, bbox/ymax=2, class/text=2, class/label=2, view=2, "
            "difficult=2, truncated=2, is_crowd=2, group_of=2); the record cannot be used",
            f"{at[4]} (flags.jpg): per-object lists of different lengths (bbox/xmin=2, "
            "bbox/ymin=2, bbox/xmax=2, bbox/ymax=2, class/text=2, class/label=2, view=2, "
            "difficult=3, truncated=2, is_crowd=2, group_of=2); the record cannot be used",
            f"{at[5]} (kind.jpg): image/height holds bytes, not integers; write the record "
            "with the OD API's feature types",
            f"{at[6]}: not a tf.train.Example (its bytes do not parse as one); check that the "
            "file holds tf.train.Example records",
            f"{at[7]} (noclass.jpg): per-object lists of different lengths (bbox/xmin=2, "
            "bbox/ymin=2, bbox/xmax=2, bbox/ymax=2, view=2, difficult=2, truncated=2, "
            "is_crowd=2, group_of=2, class/text or class/label=0); the record cannot be used",
            f"{at[8]} (nan.jpg) object 1: box 0.10000000149011612,0.20000000298023224,nan,"
            "0.6000000238418579 is not finite numbers; fix the box",
            f"{at[8]} (nan.jpg) object 2: box 0.5,0.25,inf,0.75 is not finite numbers; fix "
            "the box",
            f"{at[12]} (unnamed.jpg) object 1: no class (empty class/text, no class/label); "
            "fix the record"]}
    assert [b.name for b in records[-1].boxes] == ["cat"]
    assert records[1].boxes == []
    # the checks: a box beyond the tolerance, the same bytes twice, broken image bytes
    kept = checks.check_records(records, report, workers=1)
    assert sorted(r.image_path.name for r in kept) in (
        ["a.jpg", "nan.jpg", "outside.jpg", "unnamed.jpg"],
        ["nan.jpg", "outside.jpg", "twice.jpg", "unnamed.jpg"])
    assert {k: report.problems[k] for k in ("box outside image", "duplicate image",
                                            "unreadable image")} == {
        "box outside image": 1, "duplicate image": 1, "unreadable image": 1}
    assert report.examples["box outside image"][0].startswith(
        f"{at[9]} (outside.jpg): box 2 (cat at 100,25,204,75)")
    assert [len(r.boxes) for r in kept if r.image_path.name == "outside.jpg"] == [1]


def test_a_decompression_bomb_inside_a_record_is_refused_by_the_checks(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2,
                                                                0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    path = _write(tmp_path / "bomb.record", _features("bomb.png", image=bomb, height=None,
                                                       width=None))
    report = Report()
    records = read_tfrecord(path, report)
    assert checks.check_records(records, report, workers=1) == []
    assert report.problems == {"unreadable image": 1}
    assert "declares 60000x60000 = 3,600,000,000 pixels" in report.lines()[1]


@pytest.mark.parametrize("damage, index, message", [
    (lambda raw: raw[:-5], 2, "the record's"),
    (lambda raw: raw[:30], 0, "the record's"),
    (lambda raw: raw[:-3] + bytes([raw[-3] ^ 4]) + raw[-2:], 2, "CRC of the record's data"),
    (lambda raw: raw + b"\x00" * 5, 3, "ends inside the record's 12-byte header"),
], ids=["cut-last", "cut-first", "flipped-crc", "trailing-bytes"])
def test_damaged_file_keeps_the_records_before_the_damage(tmp_path, damage, index, message):
    path = _write(tmp_path / "x.record", *(_features(f"{i}.jpg", image=_jpeg(colour=(i, 0, 0)))
                                           for i in range(3)))
    offsets = [o for o, _ in read_records(path)] + [path.stat().st_size]
    path.write_bytes(damage(path.read_bytes()))
    report = Report()
    records = read_tfrecord(path, report)
    assert [r.image_path.name for r in records] == [f"{i}.jpg" for i in range(index)]
    (line,) = report.examples["corrupt TFRecord file"]
    assert line.startswith(f"{path}: corrupt TFRecord: record {index} at byte "
                           f"{offsets[index]}: ") and message in line


# --------------------------------------------------------------------------- #
# Files, folders, patterns and splits
# --------------------------------------------------------------------------- #
def test_record_file_names():
    names = ["train.record", "val.tfrecord", "x.tfrecords", "a.tfrec", "TRAIN.RECORD",
             "coco_train.record-00000-of-00100", "test-00000-of-00004.tfrecord",
             "mnist-train.tfrecord-00000-of-00001"]
    others = ["train.record.partial", "ckpt-1.data-00000-of-00001", "records.txt", "record",
              "train_labels.csv", "a.recorder"]
    assert [n for n in names + others if RECORD_NAME.search(n)] == names


def _dataset(folder: Path, files: dict[str, int]) -> Path:
    """``files``: name -> number of images in it (each image a colour of its own)."""
    n = 0
    for name, count in files.items():
        examples = []
        for _ in range(count):
            n += 1
            examples.append(_features(f"{n}.jpg", image=_jpeg(colour=(n, n, n))))
        _write(folder / name, *examples)
    return folder


def _splits(records) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault(r.split, []).append(r.image_path.name)
    return {k: sorted(v, key=lambda n: int(n.split(".")[0])) for k, v in out.items()}


def test_folder_splits_from_names_and_files_without_one(tmp_path):
    folder = _dataset(tmp_path / "d", {"train.record": 2, "val.record": 1,
                                       "raccoon.record": 1, "notes.txt": 1, ".hidden.record": 1})
    report = Report()
    assert _splits(read_tfrecord(folder, report)) == {"train": ["1.jpg", "2.jpg"],
                                                      "val": ["3.jpg"]}
    assert report.notes == {"TFRecord file without a split in its name, not read: "
                            "raccoon.record": 1}
    (folder / "train.record").unlink()  # one split left: everything read, a new split made
    assert _splits(read_tfrecord(folder)) == {None: ["3.jpg", "4.jpg"]}


def test_shards_of_one_set_and_subfolders_and_patterns(tmp_path):
    shards = _dataset(tmp_path / "shards", {"pets.record-00000-of-00002": 2,
                                            "pets.record-00001-of-00002": 1})
    assert _splits(read_tfrecord(shards)) == {None: ["1.jpg", "2.jpg", "3.jpg"]}
    tfod = _dataset(tmp_path / "tfod", {"train-00000-of-00002.tfrecord": 1,
                                        "train-00001-of-00002.tfrecord": 1,
                                        "val-00000-of-00001.tfrecord": 1})
    assert _splits(read_tfrecord(tfod)) == {"train": ["1.jpg", "2.jpg"], "val": ["3.jpg"]}
    sub = _dataset(tmp_path / "sub", {"train/a.tfrecord": 1, "valid/a.tfrecord": 2})
    assert _splits(read_tfrecord(sub)) == {"train": ["1.jpg"], "val": ["2.jpg", "3.jpg"]}
    assert _splits(read_tfrecord(str(tfod / "train-*"))) == {None: ["1.jpg", "2.jpg"]}
    # a pattern's folders are not split names: 'test_run' is no test split
    run = _dataset(tmp_path / "test_run", {"train.record": 1, "other.record": 1})
    assert _splits(read_tfrecord(str(run / "*.record"))) == {None: ["1.jpg", "2.jpg"]}
    assert _splits(read_tfrecord(tfod / "val-00000-of-00001.tfrecord")) == {None: ["3.jpg"]}


def test_source_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "labels.csv").write_text("x")
    cases = {tmp_path / "empty": "no TFRecord files (*.record, *.tfrecord, *.record-00000-of-"
                                 "0000N, ...) in the folder or its subfolders; pass the record"
                                 " file itself, or a glob pattern",
             tmp_path / "missing.record": "TFRecord file or folder not found; check the path",
             tmp_path / "x-*.record": "no file matches the pattern; check the pattern (quote "
                                      "it so the shell leaves it alone)"}
    for source, message in cases.items():
        with pytest.raises(DatasetError) as caught:
            read_tfrecord(source)
        assert str(caught.value) == f"{source}: {message}"


def test_a_symlink_leading_out_of_the_folder_is_refused_unless_allowed(tmp_path):
    outside = _dataset(tmp_path / "elsewhere", {"secret.record": 1})
    folder = _dataset(tmp_path / "d", {"train.record": 1})
    (folder / "val.record").symlink_to(outside / "secret.record")
    report = Report()
    assert _splits(read_tfrecord(folder, report)) == {"train": ["1.jpg"]}
    assert report.problems == {"image path outside the dataset": 1}
    assert report.examples["image path outside the dataset"][0].startswith(
        f"{folder / 'val.record'}: TFRecord file 'val.record' leads outside the dataset folder "
        "through a symlink")
    assert _splits(read_tfrecord(folder, allow_outside=True)) == {"train": ["1.jpg"],
                                                                  "val": ["1.jpg"]}


def test_reading_imports_no_tensorflow(tmp_path):
    path = _write(tmp_path / "a.record", _features())
    code = ("import sys; from tfod.data.tfrecord_in import read_tfrecord; "
            f"r = read_tfrecord({str(path)!r}); "
            "print(len(r[0].boxes), 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "2 False"


# --------------------------------------------------------------------------- #
# Round trips through prepare, decoded by TensorFlow
# --------------------------------------------------------------------------- #
def _decoded(folder: Path) -> dict:
    """filename -> what TensorFlow parses of each Example of a prepared dataset (the OD
    API's decoder parses these keys the same way)."""
    import tensorflow as tf

    spec = {"image/filename": tf.io.FixedLenFeature((), tf.string),
            "image/encoded": tf.io.FixedLenFeature((), tf.string),
            "image/width": tf.io.FixedLenFeature((), tf.int64),
            "image/height": tf.io.FixedLenFeature((), tf.int64)}
    for key in ("xmin", "ymin", "xmax", "ymax"):
        spec[f"image/object/bbox/{key}"] = tf.io.VarLenFeature(tf.float32)
    for key in ("class/label", "difficult", "truncated", "is_crowd"):
        spec[f"image/object/{key}"] = tf.io.VarLenFeature(tf.int64)
    for key in ("class/text", "view"):
        spec[f"image/object/{key}"] = tf.io.VarLenFeature(tf.string)
    out = {}
    for shard in sorted(folder.glob("*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(shard)):
            parsed = tf.io.parse_single_example(raw, spec)
            values = {k: (v.values.numpy().tolist() if isinstance(v, tf.sparse.SparseTensor)
                          else v.numpy()) for k, v in parsed.items()}
            values["split"] = shard.name.split("-")[0]
            out[values.pop("image/filename").decode()] = values
    return out


def _compare(ours: dict, theirs: dict, tolerance: float = 1e-6) -> None:
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        a, b = ours[name], theirs[name]
        for key in a:
            if key.startswith("image/object/bbox/"):
                assert a[key] == pytest.approx(b[key], abs=tolerance), (name, key)
            elif key != "split":
                assert a[key] == b[key], (name, key)


def test_voc_round_trip_through_tfrecord_input(tmp_path):
    """synth VOC -> prepare -> its shards as input -> prepare: TensorFlow decodes the same
    boxes, classes, ids, flags and image bytes per file name; the own split is kept, or a
    new one made with --split."""
    import xml.etree.ElementTree as ET

    from tfod.data.synth import synthesize

    synthesize(tmp_path / "voc", num_train=8, num_val=4, image_size=64, seed=3)
    for i, xml in enumerate(sorted((tmp_path / "voc" / "Annotations").glob("*.xml"))):
        tree = ET.parse(xml)
        for j, obj in enumerate(tree.getroot().iter("object")):
            obj.find("difficult").text = str(int((i + j) % 3 == 0))
            obj.find("truncated").text = str(int((i + j) % 2 == 0))
            obj.find("pose").text = ["Left", "Unspecified", "Frontal"][(i + j) % 3]
        tree.write(xml)
    common = dict(out_root=tmp_path / "data", label_map_dir=tmp_path / "lm", plots=False)
    first = prepare_dataset(tmp_path / "voc", "first", fmt="voc", **common)
    again = prepare_dataset(first["dir"], "again", fmt="tfrecord", **common)
    resplit = prepare_dataset(first["dir"], "resplit", fmt="tfrecord", seed=5,
                              split={"train": 0.5, "val": 0.25, "test": 0.25}, **common)
    ours = _decoded(Path(first["dir"]))
    assert len(ours) == 12 and sum(len(v["image/object/class/text"]) for v in ours.values()) > 12
    assert {d for v in ours.values() for d in v["image/object/difficult"]} == {0, 1}
    for result in (again, resplit):
        assert result["report"]["problems"] == {}
        assert read_label_map(result["label_map"]) == read_label_map(first["label_map"])
        _compare(ours, _decoded(Path(result["dir"])))
    assert {n: v["split"] for n, v in _decoded(Path(again["dir"])).items()} == \
        {n: v["split"] for n, v in ours.items()}
    assert {s: v["images"] for s, v in resplit["manifest"]["splits"].items()} == \
        {"train": 6, "val": 3, "test": 3}


def test_prepare_twice_makes_the_same_split(tmp_path):
    source = _dataset(tmp_path / "d", {"pets.record": 16})
    splits = []
    for run in range(3):
        result = prepare_dataset(source, f"r{run}", fmt="tfrecord", out_root=tmp_path / "data",
                                 label_map_dir=tmp_path / "lm", plots=False)
        splits.append(({n: v["split"] for n, v in _decoded(Path(result["dir"])).items()},
                       result["manifest"]["fingerprint"]))
    assert splits[0] == splits[1] == splits[2]


@pytest.fixture
def raccoon_record():
    if not RACCOON_RECORD.is_file():
        pytest.skip(f"the raccoon dataset is not at {RACCOON}")
    return RACCOON_RECORD


def test_raccoon_test_record_equals_its_csv(raccoon_record, tmp_path):
    """The record file the dataset's author wrote (generate_tfrecord.py: image/format 'jpg',
    no difficult/truncated) prepares without a problem, and the fresh shards hold the same
    images and boxes as data/test_labels.csv."""
    result = prepare_dataset(raccoon_record, "raccoon", fmt="tfrecord",
                             out_root=tmp_path / "data", label_map_dir=tmp_path / "lm",
                             plots=False)
    assert result["report"] == {"problems": {}, "examples": {}, "notes": {}}
    assert sum(s["images"] for s in result["manifest"]["splits"].values()) == 40
    assert read_label_map(result["label_map"]) == ["raccoon"]
    written = {r.image_path.name: r for r in read_tfrecord(result["dir"])}
    expected = {r.image_path.name: r for r in read_csv(RACCOON / "data" / "test_labels.csv")}
    assert sorted(written) == sorted(expected) and len(written) == 40
    for name, record in written.items():
        want = expected[name]
        assert record.image_path.read_bytes() == want.image_path.read_bytes(), name
        assert [b.name for b in record.boxes] == [b.name for b in want.boxes]
        got = [(b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes]
        assert got == [pytest.approx((b.xmin, b.ymin, b.xmax, b.ymax), abs=1e-3)
                       for b in want.boxes], name


def test_raccoon_ids_only_with_its_label_map(raccoon_record, tmp_path):
    """The raccoon records without their class texts: --label-map names the ids."""
    label_map = RACCOON / "training" / "object-detection.pbtxt"
    if not label_map.is_file():
        label_map = write_label_map(["raccoon"], tmp_path / "raccoon.pbtxt")
    Example = _classes()["Example"]
    stripped = []
    for _, payload in list(read_records(raccoon_record))[:8]:
        parsed = Example.FromString(payload)
        del parsed.features.feature["image/object/class/text"]
        stripped.append(parsed.SerializeToString())
    path = _write(tmp_path / "ids" / "test.record", *stripped)
    with pytest.raises(DatasetError, match="--label-map FILE.pbtxt"):
        read_tfrecord(path)
    code = main(["prepare", str(path), "--format", "tfrecord", "--name", "ids", "--label-map",
                 str(label_map), "--out-root", str(tmp_path / "data"), "--label-maps",
                 str(tmp_path / "lm"), "--no-plots"])
    assert code == 0
    written = read_tfrecord(tmp_path / "data" / "ids")
    assert len(written) == 8 and {b.name for r in written for b in r.boxes} == {"raccoon"}
    full = {r.image_path.name: _boxes(r) for r in read_tfrecord(raccoon_record)}
    assert all(_boxes(r) == full[r.image_path.name] for r in written)


# --------------------------------------------------------------------------- #
# The command line
# --------------------------------------------------------------------------- #
def test_cli_prepares_records_and_reports_damage_without_a_traceback(tmp_path, capsys,
                                                                      caplog):
    source = _dataset(tmp_path / "d", {"pets.record": 6})
    args = ["--format", "tfrecord", "--out-root", str(tmp_path / "data"), "--label-maps",
            str(tmp_path / "lm"), "--no-plots"]
    assert main(["prepare", str(source / "pets.record"), "--name", "pets", *args]) == 0
    assert read_label_map(tmp_path / "lm" / "pets.pbtxt") == ["cat", "dog"]
    manifest = json.loads((tmp_path / "data" / "pets" / "manifest.json").read_text())
    assert manifest["format"] == "tfrecord"
    assert sum(s["images"] for s in manifest["splits"].values()) == 6
    raw = (source / "pets.record").read_bytes()
    (source / "pets.record").write_bytes(raw[:40])
    assert main(["prepare", str(source / "pets.record"), "--name", "cut", *args]) == 1
    err = capsys.readouterr().err + caplog.text
    assert "no usable images" in err and "Traceback" not in err
    assert f"{source / 'pets.record'}: corrupt TFRecord: record 0 at byte 0" in err


# --------------------------------------------------------------------------- #
# Fuzz: random bytes, damaged files, random Examples
# --------------------------------------------------------------------------- #
def _fuzz(write):
    with fuzz_folder() as folder:
        path = folder / "train.record"
        write(path)
        _expect_records_or_named_error(read_tfrecord, path, folder)


@FUZZ
@given(raw=st.binary(max_size=400))
def test_fuzz_random_bytes(raw):
    _fuzz(lambda path: path.write_bytes(raw))


VALID = None


def _valid_file() -> bytes:
    global VALID
    if VALID is None:
        folder = _tmp()
        try:
            VALID = _write(folder / "v.record", _features(image=_jpeg((16, 8))),
                           _features("b.jpg", image=_jpeg((8, 8), (1, 2, 3)))).read_bytes()
        finally:
            shutil.rmtree(folder)
    return VALID


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 10**6)), insert=st.binary(max_size=20),
       at=st.integers(0, 10**6))
def test_fuzz_damaged_files(flips, cut, insert, at):
    raw = bytearray(_valid_file())
    for position, bits in flips:
        raw[position % len(raw)] ^= bits
    raw[at % len(raw):at % len(raw)] = insert
    if cut is not None:
        del raw[cut % len(raw):]
    _fuzz(lambda path: path.write_bytes(bytes(raw)))


KEYS = sorted(_features()) + ["image/object/class/label", "image/key/sha256", "other"]
values = st.one_of(
    st.lists(st.floats(-0.5, 1.5, width=32), min_size=2, max_size=2),  # two objects, as
    st.lists(st.integers(-1, 3), min_size=2, max_size=2),  # the other lists have
    st.lists(st.sampled_from([b"cat", b"", "ü".encode(), b"\xff"]), min_size=2, max_size=2),
    st.lists(st.floats(width=32), max_size=4),
    st.lists(st.integers(-2**63, 2**63 - 1), max_size=4),
    st.lists(st.binary(max_size=12), max_size=3),
    st.lists(st.sampled_from([_jpeg((8, 8)), _jpeg((6, 4), fmt="PNG"), b"\xff\xd8\xff"]),
             max_size=2))


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(KEYS), st.one_of(st.none(), values),
                               max_size=3), extra=st.one_of(st.none(), st.binary(max_size=30)))
def test_fuzz_random_examples(changes, extra):
    """A valid Example with up to three features removed or replaced (any kind, length and
    value), and maybe a record of random bytes after it."""
    features = _features(image=_jpeg((8, 8)))
    for key, value in changes.items():
        if value is None:
            features.pop(key, None)
        else:
            features[key] = value
    _fuzz(lambda path: _write(path, features, *([] if extra is None else [extra])))
