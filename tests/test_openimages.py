"""tfod.data.openimages: Open Images boxes read like the OD API's own
``oid_tfrecord_creation`` reads them (parity on a generated dataset), the layouts a download
comes in, every bad input counted, paths leaving the dataset refused, and fuzzed CSVs.

The upstream side of the parity test does what ``create_oid_tf_record.main`` does around
``tf_example_from_annotations_data_frame`` (``pd.read_csv`` of the boxes, one more row per
``.jpg`` of the image folder, ``groupby('ImageID')``), in the test: ``main`` itself needs
flags and ``contextlib2``, and opens the JPEG in text mode. Where tfod differs from upstream
on purpose (module docstring of tfod/data/openimages.py):

* upstream's class text is the ``LabelName`` MID (``/m/011k07``), tfod's the display name
  (``Tortoise``): compared through the descriptions; class ids come from each one's label
  map;
* upstream writes ``IsGroupOf`` as ``image/object/group_of``, tfod as
  ``image/object/is_crowd``; upstream writes ``image/object/occluded`` and
  ``image/object/depiction``, tfod keeps ``occluded`` in the records only (compared there)
  and has no depiction;
* a flag of -1 (Open Images: unknown) is written as -1 by upstream (a decoder casting to
  bool reads it as set); tfod does not set it;
* upstream writes no ``difficult``; tfod writes 0 for every box;
* upstream keeps only the label map's classes; tfod keeps every described class.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from test_fuzz import FUZZ, _expect_records_or_named_error, fuzz_folder, numbers
from tfod.data.annotations import Report
from tfod.data.openimages import read_openimages
from tfod.errors import DatasetError

HEADER = ("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,"
          "IsGroupOf,IsDepiction,IsInside")
DESCRIPTIONS = {"/m/011k07": "Tortoise", "/m/0199g": "Bicycle", "/m/01g317": "Person",
                "/m/0k4j": "Car", "/m/09j2d": "Clothing"}
#: ImageID -> image size; the last image is named by no row (a negative)
SIZES = {"0001eeaf4aed83f9": (120, 80), "000595fe6fee6369": (64, 96),
         "00075905539074f2": (100, 100), "0007cebe1b2ba653": (90, 60),
         "0008e425fb49a2bf": (70, 50)}
#: ImageID, LabelName, Confidence, XMin, XMax, YMin, YMax, IsOccluded, IsTruncated,
#: IsGroupOf, IsDepiction (rows of one image interleaved with another's on purpose)
ROWS = [
    ("0001eeaf4aed83f9", "/m/011k07", 1, 0.022673, 0.964201, 0.071038, 0.800546, 0, 0, 0, 0),
    ("000595fe6fee6369", "/m/01g317", 1, 0.141167, 0.314462, 0.116041, 0.99658, 1, 1, 0, 0),
    ("0001eeaf4aed83f9", "/m/01g317", 1, 0.5, 0.75, 0.125, 0.375, 1, 0, 1, 0),
    ("000595fe6fee6369", "/m/01g317", 1, 0.015625, 0.984375, 0.0, 1.0, 0, 1, 1, 1),
    ("000595fe6fee6369", "/m/0199g", 0, 0.33, 0.66, 0.51, 0.9, 0, 0, 0, 0),
    ("00075905539074f2", "/m/0k4j", 1, 0.0, 1.0, 0.123457, 0.876543, -1, -1, -1, -1),
    ("00075905539074f2", "/m/0199g", 1, 0.3, 0.4, 0.3, 0.7, 1, 0, 0, 1),
    ("0007cebe1b2ba653", "/m/011k07", 1, 0.111111, 0.222222, 0.333333, 0.444444, 0, 0, 1, 0),
]


def _jpg(path: Path, size=(64, 48), colour=(120, 30, 200), exif_orientation=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    if exif_orientation is None:
        img.save(path, quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(path, quality=90, exif=exif)
    return path


def _csv(path: Path, rows, header: str = HEADER) -> Path:
    lines = [header] + [",".join([r[0], "xclick", *map(str, r[1:]), "0"]) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _descriptions(path: Path, header: bool = False) -> Path:
    lines = (["LabelName,DisplayName"] if header else []) + \
        [f"{mid},{name}" for mid, name in DESCRIPTIONS.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _oid(root: Path, name="validation-annotations-bbox.csv", images="validation",
         rows=ROWS, sizes=SIZES) -> Path:
    """A generated Open Images folder: boxes CSV, descriptions, JPEGs of distinct colours."""
    for i, (image_id, size) in enumerate(sizes.items()):
        _jpg(root / images / f"{image_id}.jpg", size, (40 * i, 200 - 30 * i, 60))
    _descriptions(root / "class-descriptions-boxable.csv")
    return _csv(root / name, rows)


# --------------------------------------------------------------------------- #
# Parity with the OD API's oid_tfrecord_creation
# --------------------------------------------------------------------------- #
def _decode(paths, extra: dict) -> dict[str, dict]:
    """Image file name -> the features both converters write, decoded with tf.io."""
    import tensorflow as tf

    spec = {"image/filename": tf.io.FixedLenFeature([], tf.string),
            "image/object/class/text": tf.io.VarLenFeature(tf.string),
            "image/object/class/label": tf.io.VarLenFeature(tf.int64),
            "image/object/truncated": tf.io.VarLenFeature(tf.int64)}
    spec.update({f"image/object/bbox/{k}": tf.io.VarLenFeature(tf.float32)
                 for k in ("xmin", "ymin", "xmax", "ymax")})
    spec.update({k: tf.io.VarLenFeature(tf.int64) for k in extra})
    out = {}
    for raw in tf.data.TFRecordDataset([str(p) for p in paths]):
        parsed = tf.io.parse_single_example(raw, spec)
        values = {k: (v.values if isinstance(v, tf.SparseTensor) else v).numpy()
                  for k, v in parsed.items()}
        out[values["image/filename"].decode()] = values
    return out


def test_tfrecords_and_records_match_upstream_converter(tmp_path):
    """``tf_example_from_annotations_data_frame`` and ``prepare_dataset(fmt="openimages")``
    on the same folder give the same images (the one no row names too), boxes (normalised,
    within 1e-6), classes (MID -> display name), group_of/is_crowd and truncated flags; the
    records' ``occluded`` is upstream's ``image/object/occluded``."""
    import pandas as pd
    import tensorflow as tf
    from object_detection.dataset_tools import oid_tfrecord_creation as upstream

    from tfod.data import prepare_dataset, read_label_map

    csv_path = _oid(tmp_path / "oid")
    images = tmp_path / "oid" / "validation"
    label_map = {mid: i for i, mid in enumerate(DESCRIPTIONS, 1)}
    frame = pd.concat([pd.read_csv(csv_path),
                       pd.DataFrame({"ImageID": [p.stem for p in sorted(images.glob("*.jpg"))]})])
    with tf.io.TFRecordWriter(str(tmp_path / "upstream.tfrecord")) as writer:
        for image_id, rows in frame.groupby("ImageID"):
            example = upstream.tf_example_from_annotations_data_frame(
                rows, label_map, (images / f"{image_id}.jpg").read_bytes())
            writer.write(example.SerializeToString())
    theirs = _decode([tmp_path / "upstream.tfrecord"],
                     ["image/object/group_of", "image/object/occluded"])
    result = prepare_dataset(csv_path, "oid", fmt="openimages", out_root=tmp_path / "data",
                             label_map_dir=tmp_path / "lm", split={"train": 1.0}, plots=False,
                             workers=1)
    ours = _decode(sorted(Path(result["dir"]).glob("train-*.tfrecord")),
                   ["image/object/is_crowd", "image/object/difficult"])
    names = read_label_map(Path(result["dir"]) / "label_map.pbtxt")
    records = {r.image_path.name: r for r in read_openimages(csv_path)}
    assert sorted(ours) == sorted(theirs) == sorted(records) == \
        sorted(f"{i}.jpg" for i in SIZES)
    boxes = 0
    for name, want in theirs.items():
        got = ours[name]
        for key in ("xmin", "ymin", "xmax", "ymax"):
            key = f"image/object/bbox/{key}"
            np.testing.assert_allclose(got[key], want[key], atol=1e-6, err_msg=f"{name} {key}")
        texts = [DESCRIPTIONS[t.decode()].encode() for t in want["image/object/class/text"]]
        assert list(got["image/object/class/text"]) == texts, name
        assert [names[i - 1].encode() for i in got["image/object/class/label"]] == texts
        np.testing.assert_array_equal(got["image/object/is_crowd"],
                                      want["image/object/group_of"] == 1, err_msg=name)
        np.testing.assert_array_equal(got["image/object/truncated"],
                                      want["image/object/truncated"] == 1, err_msg=name)
        assert not got["image/object/difficult"].any()
        assert [int(b.occluded) for b in records[name].boxes] == \
            list(want["image/object/occluded"] == 1), name
        boxes += len(texts)
    assert boxes == len(ROWS)
    assert any(ours[name]["image/object/is_crowd"].any() for name in ours)
    assert result["manifest"]["notes"]["image named by no Open Images row (kept as a negative)"] \
        == 1


# --------------------------------------------------------------------------- #
# What the reader makes of each field
# --------------------------------------------------------------------------- #
def test_boxes_in_pixels_with_flags_names_and_notes(tmp_path):
    csv_path = _oid(tmp_path / "oid")
    report = Report()
    records = {r.image_path.stem: r for r in read_openimages(csv_path, report)}
    tortoise, crowd = records["0001eeaf4aed83f9"].boxes
    assert (records["0001eeaf4aed83f9"].width, records["0001eeaf4aed83f9"].height) == (120, 80)
    assert (tortoise.name, tortoise.xmin, tortoise.xmax, tortoise.ymin, tortoise.ymax) == \
        ("Tortoise", 0.022673 * 120, 0.964201 * 120, 0.071038 * 80, 0.800546 * 80)
    assert (crowd.name, crowd.crowd, crowd.occluded, crowd.truncated, crowd.difficult) == \
        ("Person", True, True, False, False)
    car, bicycle = records["00075905539074f2"].boxes
    assert (car.crowd, car.occluded, car.truncated) == (False, False, False)  # -1: unknown
    assert bicycle.occluded and not bicycle.crowd
    assert records["0008e425fb49a2bf"].boxes == []
    assert all(r.split is None and r.source.startswith(str(csv_path)) for r in records.values()
               if r.boxes)
    assert report.classes == ["Tortoise", "Bicycle", "Person", "Car"]  # descriptions' order
    assert not report.problems
    assert report.notes == {
        "box row with Confidence 0, kept (as the OD API's converter does)": 1,
        "image named by no Open Images row (kept as a negative)": 1}


def test_exif_rotated_image_gets_the_size_it_is_shown_at(tmp_path):
    root = tmp_path / "oid"
    _jpg(root / "images" / "abc.jpg", (80, 40), exif_orientation=6)
    _descriptions(root / "class-descriptions-boxable.csv")
    _csv(root / "boxes.csv", [("abc", "/m/0k4j", 1, 0.25, 0.5, 0.5, 1.0, 0, 0, 0, 0)])
    [record] = read_openimages(root / "boxes.csv")
    assert (record.width, record.height) == (40, 80)
    assert [(b.xmin, b.xmax, b.ymin, b.ymax) for b in record.boxes] == [(10, 20, 40, 80)]


def test_folder_with_a_csv_per_split_keeps_the_splits(tmp_path):
    root = tmp_path / "oid"
    _csv(root / "oidv6-train-annotations-bbox.csv", ROWS[:2])
    _csv(root / "validation-annotations-bbox.csv", ROWS[5:6])
    _jpg(root / "train" / "0001eeaf4aed83f9.jpg", (120, 80))
    _jpg(root / "train" / "000595fe6fee6369.jpg", (64, 96), (1, 2, 3))
    _jpg(root / "validation" / "00075905539074f2.jpg", (100, 100), (4, 5, 6))
    _jpg(root / "validation" / "ffff000000000000.jpg", (30, 30), (7, 8, 9))
    # the descriptions of every class (with a header) and the boxable ones: boxable wins
    (root / "oidv7-class-descriptions.csv").write_text("LabelName,DisplayName\n/m/0k4j,Auto\n")
    _descriptions(root / "oidv7-class-descriptions-boxable.csv", header=True)
    (root / "train-images-boxable-with-rotation.csv").write_text("ImageID,Rotation\n")
    report = Report()
    records = read_openimages(root, report)
    got = sorted((r.split, r.image_path.relative_to(root).as_posix(),
                  [b.name for b in r.boxes]) for r in records)
    assert got == [("train", "train/0001eeaf4aed83f9.jpg", ["Tortoise"]),
                   ("train", "train/000595fe6fee6369.jpg", ["Person"]),
                   ("val", "validation/00075905539074f2.jpg", ["Car"]),
                   ("val", "validation/ffff000000000000.jpg", [])]
    assert not report.problems
    # one image folder for both CSVs: an image no row names has no split to go to
    shared = tmp_path / "pictures"
    shared.mkdir()
    for image in [*(root / "train").glob("*.jpg"), *(root / "validation").glob("*.jpg")]:
        shutil.copy(image, shared / image.name)
    report = Report()
    records = read_openimages(root, report, image_dir=shared)
    assert sorted(r.image_path.stem for r in records) == sorted(SIZES)[:3]
    assert report.notes[f"images named by no row in {shared}, which 2 CSVs share: not read"] == 1


@pytest.mark.parametrize("layout", ["images", "up", "beside", "image_dir"])
def test_where_images_are_looked_for(tmp_path, layout):
    root = tmp_path / "oid"
    folder = {"images": root / "images", "up": tmp_path / "validation", "beside": root,
              "image_dir": tmp_path / "pictures"}[layout]
    _jpg(folder / "0007cebe1b2ba653.jpg", (90, 60))
    _descriptions(root / "class-descriptions-boxable.csv")
    csv_path = _csv(root / "validation-annotations-bbox.csv", ROWS[-1:])
    [record] = read_openimages(csv_path, image_dir=folder if layout == "image_dir" else None)
    assert record.image_path == folder / "0007cebe1b2ba653.jpg"
    assert [b.name for b in record.boxes] == ["Tortoise"]


def test_bad_rows_unknown_classes_and_files_are_counted(tmp_path):
    root = tmp_path / "oid"
    csv_path = _oid(root)
    text = csv_path.read_text().splitlines()
    text[2] = text[2].replace("/m/01g317", "/m/0nope")  # line 3: unknown LabelName
    text[4] = "0001eeaf4aed83f9,xclick,/m/011k07,1,0.1"  # line 5: too few values
    text[6] = text[6].replace("0.123457", "abc")  # line 7: not a number
    text.append("0007cebe1b2ba653,verification,/m/011k07,1,,,,,0,0,0,0,0")  # line 10: a label
    raw = ("\n".join(text) + "\n").encode()
    raw += b"000595fe6fee6369,x,/m/0k4j,1,0.1,\xff,0,1,0,0,0,0,0\n"  # line 11: not UTF-8
    csv_path.write_bytes(raw)
    _jpg(root / "validation" / "000595fe6fee6369.jpg", (64, 96))  # same name, broken below
    (root / "validation" / "000595fe6fee6369.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    report = Report()
    records = {r.image_path.stem: r for r in read_openimages(csv_path, report)}
    assert report.problems == {"unknown class": 1, "unreadable annotation": 3,
                               "unreadable image": 1}
    assert report.examples["unknown class"] == [
        f"{csv_path}:3: LabelName '/m/0nope' is not in the class descriptions; add it there "
        "or remove the row"]
    bad = report.examples["unreadable annotation"]
    assert bad[0] == f"{csv_path}:5: 5 values, the header has 13; fix the line"
    assert bad[1] == f"{csv_path}:7: YMin is 'abc', not a finite number; correct the value"
    assert bad[2] == f"{csv_path}:11: not UTF-8 text; line skipped"
    assert f"{root / 'validation' / '000595fe6fee6369.jpg'}: cannot read its size" in \
        report.examples["unreadable image"][0]
    assert "000595fe6fee6369" not in records  # not a negative: its rows say it has boxes
    assert [b.name for b in records["0001eeaf4aed83f9"].boxes] == ["Tortoise", "Person"]
    assert [b.name for b in records["00075905539074f2"].boxes] == ["Bicycle"]
    assert report.notes["row without box coordinates (an image-level label), not a box"] == 1


def test_file_level_errors_name_the_file(tmp_path):
    root = tmp_path / "oid"
    csv_path = _oid(root)
    (root / "class-descriptions-boxable.csv").unlink()
    with pytest.raises(DatasetError, match="no Open Images class descriptions") as exc:
        read_openimages(csv_path)
    assert str(root) in str(exc.value)
    _descriptions(root / "class-descriptions-boxable.csv")
    _csv(root / "other.csv", [], header="ImageID,LabelName,XMin,YMin")
    with pytest.raises(DatasetError, match="missing column.s. XMax, YMax") as exc:
        read_openimages(root / "other.csv")
    assert str(root / "other.csv") in str(exc.value)
    (root / "empty.csv").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty file"):
        read_openimages(root / "empty.csv")
    empty = tmp_path / "none"
    empty.mkdir()
    (empty / "class-descriptions-boxable.csv").write_text("/m/0k4j,Car\n")
    with pytest.raises(DatasetError, match="no Open Images boxes CSV in the folder"):
        read_openimages(empty)
    with pytest.raises(DatasetError, match="not found"):
        read_openimages(tmp_path / "nope.csv")


def test_descriptions_bad_lines_twice_described_and_shared_names(tmp_path):
    root = tmp_path / "oid"
    csv_path = _oid(root, rows=ROWS[:1])
    (root / "class-descriptions-boxable.csv").write_bytes(
        b"/m/011k07,Tortoise\n/m/011k07,Turtle\n/m/01,A,B\n/m/02,Car\n/m/03,Car\n/m/04,\xe9\n")
    report = Report()
    records = {r.image_path.stem: r for r in read_openimages(csv_path, report)}
    assert [b.name for b in records["0001eeaf4aed83f9"].boxes] == ["Tortoise"]
    path = root / "class-descriptions-boxable.csv"
    assert report.examples["unreadable annotation"] == [
        f"{path}:3: expected LabelName,DisplayName, two values that are not empty; got "
        "['/m/01', 'A', 'B']", f"{path}:6: not UTF-8 text; "
        "line skipped"]
    assert report.notes["LabelName described twice, the first kept: /m/011k07"] == 1
    assert report.notes["display name of several LabelNames (their boxes are one class): Car"] == 1


# --------------------------------------------------------------------------- #
# Hostile input
# --------------------------------------------------------------------------- #
def test_image_ids_and_symlinks_leading_out_are_refused(tmp_path):
    root = tmp_path / "data" / "oid"
    private = tmp_path / "private"
    secret = _jpg(private / "secret.jpg", (50, 50), (1, 1, 1))
    _jpg(private / "other.jpg", (50, 50), (2, 2, 2))
    rows = [("../../../private/secret", "/m/0k4j", 1, 0.1, 0.5, 0.1, 0.5, 0, 0, 0, 0),
            (str(secret.with_suffix("")), "/m/0k4j", 1, 0.1, 0.5, 0.1, 0.5, 0, 0, 0, 0),
            ("linked", "/m/0k4j", 1, 0.1, 0.5, 0.1, 0.5, 0, 0, 0, 0),
            ("0007cebe1b2ba653", "/m/011k07", 1, 0.1, 0.5, 0.1, 0.5, 0, 0, 0, 0)]
    csv_path = _oid(root, rows=rows, sizes={"0007cebe1b2ba653": (90, 60)})
    (root / "validation" / "linked.jpg").symlink_to(secret)
    (root / "validation" / "unnamed.jpg").symlink_to(private / "other.jpg")  # a "negative"
    report = Report()
    records = read_openimages(csv_path, report)
    assert [r.image_path.name for r in records] == ["0007cebe1b2ba653.jpg"]
    assert report.problems == {"image path outside the dataset": 4}
    assert all("leads outside the dataset folder" in m
               for m in report.examples["image path outside the dataset"])
    allowed = read_openimages(csv_path, Report(), allow_outside=True)
    assert {os.path.realpath(r.image_path) for r in allowed} >= {str(secret.resolve())}


def test_nul_and_separator_in_image_id_are_counted(tmp_path):
    root = tmp_path / "oid"
    csv_path = _oid(root, rows=[("a\x00b", "/m/0k4j", 1, 0.1, 0.5, 0.1, 0.5, 0, 0, 0, 0)],
                    sizes={})
    report = Report()
    assert read_openimages(csv_path, report) == []
    assert "contains a NUL byte" in report.examples["unreadable annotation"][0]


# --------------------------------------------------------------------------- #
# Fuzz
# --------------------------------------------------------------------------- #
cells = st.one_of(numbers, st.text(max_size=10), st.sampled_from(
    ["", "0", "1", "-1", "/m/0k4j", "/m/zz", "abc", "../abc", "0.5"]))


@FUZZ
@given(rows=st.lists(st.lists(cells, min_size=0, max_size=14), max_size=6),
       header=st.sampled_from([HEADER, HEADER.replace("XMax,", ""), "", "ImageID,LabelName"]),
       descriptions=st.one_of(st.text(max_size=40), st.just("/m/0k4j,Car\n")),
       raw=st.binary(max_size=60))
def test_fuzzed_boxes_and_descriptions(rows, header, descriptions, raw):
    with fuzz_folder() as folder:
        _jpg(folder / "images" / "abc.jpg", (16, 12))
        (folder / "class-descriptions-boxable.csv").write_text(descriptions,
                                                               errors="surrogateescape")
        buffer = io.StringIO()
        buffer.write(header + "\n")
        csv.writer(buffer).writerows(rows)
        path = folder / "boxes.csv"
        path.write_bytes(buffer.getvalue().encode("utf-8", "surrogateescape") + raw)
        _expect_records_or_named_error(read_openimages, path, folder)


def test_an_image_whose_every_box_row_is_unreadable_is_left_out(tmp_path):
    """Its objects are there but unreadable: taken as a negative it would teach the model
    that they are background. An image named by no row stays a negative."""
    rows = ROWS + [("0008e425fb49a2bf", "/m/0unknown", 1, 0.1, 0.2, 0.1, 0.2, 0, 0, 0, 0)]
    report = Report()
    records = read_openimages(_oid(tmp_path, rows=rows), report)
    assert "0008e425fb49a2bf" not in {r.image_path.stem for r in records}
    assert report.problems["unknown class"] == 1
    assert report.problems["image without a readable box"] == 1
    assert "every box row of 0008e425fb49a2bf" in report.examples[
        "image without a readable box"][0]
    negative = tmp_path / "validation" / "0008e425fb49a2bf.jpg"
    rows = ROWS  # the same image named by no row at all: a negative
    records = read_openimages(_oid(tmp_path / "b", rows=rows), Report())
    assert [r.boxes for r in records if r.image_path.stem == negative.stem] == [[]]
