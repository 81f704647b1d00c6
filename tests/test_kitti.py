"""tfod.data.kitti: KITTI labels read like the OD API's own ``create_kitti_tf_record`` reads
them (parity on a generated dataset), every bad input counted, paths leaving the dataset
refused, and fuzzed label files.

Where tfod differs from upstream on purpose (module docstring of tfod/data/kitti.py):

* upstream keeps only ``classes_to_use``; tfod keeps every class (so the parity run gives
  upstream every class of the data, plus ``dontcare``, its default);
* upstream writes KITTI's ``truncated`` float, ``alpha`` and the ``3d_bbox/*`` values;
  tfod writes ``truncated`` as 0/1 (``value > 0``) and no 3D values;
* upstream writes the image path as ``image/filename`` and passes the PNG bytes through;
  tfod writes the file name and encodes the PNG once as JPEG;
* upstream's class ids come from its label map, tfod's from its own: classes are compared
  by their text;
* upstream needs a label file for each image; tfod makes an image without one a negative.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from conftest import dataset_tool
from test_fuzz import FUZZ, _expect_records_or_named_error, fuzz_folder
from tfod.data.annotations import Report
from tfod.data.kitti import read_kitti
from tfod.errors import DatasetError


def _line(kind: str, box, truncated=0.0, occluded=0, score=None) -> str:
    x1, y1, x2, y2 = box
    line = (f"{kind} {truncated:.2f} {occluded} -1.57 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} "
            "1.52 1.63 3.88 -2.11 1.71 25.32 -1.59")
    return line + (f" {score}" if score is not None else "")


def _png(path: Path, size=(96, 64), colour=(40, 90, 160)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


#: file stem -> label lines; image 000003 has an empty label file, 000006 none at all
LABELS = {
    "000000": [_line("Car", (2.5, 3.25, 40.75, 30.5)),
               _line("Pedestrian", (50, 8, 60.5, 50), truncated=0.31, occluded=1),
               _line("Cyclist", (70, 10, 90, 40), occluded=2)],
    # the car overlaps the DontCare region by one pixel; the van does not touch it
    "000001": [_line("Car", (10, 10, 41, 40)),
               _line("Van", (60, 5, 90, 30), truncated=0.0, occluded=3),
               _line("DontCare", (40, 20, 55, 60), truncated=-1, occluded=-1)],
    # a box that only touches a DontCare region (shared edge) is kept, as upstream keeps it
    "000002": [_line("DontCare", (0, 0, 20, 20), truncated=-1, occluded=-1),
               _line("Car", (20, 0, 50, 20)), _line("Truck", (30, 25, 80, 60), 0.8, 2)],
    "000003": [],
    # every box lies in one of the two regions: none is left
    "000004": [_line("Car", (5, 5, 30, 30)), _line("Pedestrian", (60, 30, 70, 60)),
               _line("DontCare", (0, 0, 35, 35), -1, -1),
               _line("dontcare", (55, 25, 80, 62), -1, -1)],
    "000005": [_line("Person_sitting", (4, 6, 20, 40), 0.05), _line("Misc", (30, 30, 60, 50)),
               _line("Tram", (62, 2, 94, 60), occluded=3)],
}
SIZES = {"000000": (96, 64), "000001": (100, 70), "000002": (96, 64), "000003": (80, 60),
         "000004": (96, 64), "000005": (96, 64), "000006": (90, 60)}


def _kitti(root: Path, images_in: str = "training/image_2",
           labels_in: str = "training/label_2") -> Path:
    """The generated KITTI dataset: PNG images of distinct colours and sizes."""
    for i, (stem, size) in enumerate(sorted(SIZES.items())):
        _png(root / images_in / f"{stem}.png", size, (30 * i, 200 - 20 * i, 90))
    (root / labels_in).mkdir(parents=True, exist_ok=True)
    for stem, lines in LABELS.items():
        (root / labels_in / f"{stem}.txt").write_text("".join(f"{x}\n" for x in lines))
    return root


# --------------------------------------------------------------------------- #
# Parity with the OD API's create_kitti_tf_record
# --------------------------------------------------------------------------- #
def test_records_match_upstream_read_and_filter(tmp_path):
    """Box by box, the records are what upstream's ``read_annotation_file`` +
    ``filter_annotations`` (all classes and ``dontcare``) keep: pixels, lower-cased type,
    ``truncated > 0``, ``occluded`` in (1, 2); the DontCare notes count regions and removed
    boxes."""
    upstream = dataset_tool("create_kitti_tf_record")

    root = _kitti(tmp_path / "kitti")
    report = Report()
    records = {r.image_path.stem: r for r in read_kitti(root, report)}
    assert sorted(records) == sorted(SIZES)
    every = sorted({line.split()[0].lower() for lines in LABELS.values() for line in lines})
    for stem in LABELS:
        anno = upstream.filter_annotations(upstream.read_annotation_file(
            str(root / "training" / "label_2" / f"{stem}.txt")), every)
        want = [(str(t), float(x1), float(y1), float(x2), float(y2), bool(tr > 0), o in (1, 2))
                for t, x1, y1, x2, y2, tr, o in zip(
                    anno["type"], anno["2d_bbox_left"], anno["2d_bbox_top"],
                    anno["2d_bbox_right"], anno["2d_bbox_bottom"], anno["truncated"],
                    anno["occluded"])]
        got = [(b.name, b.xmin, b.ymin, b.xmax, b.ymax, b.truncated, b.occluded)
               for b in records[stem].boxes]
        assert got == want, stem
        assert not any(b.difficult or b.crowd for b in records[stem].boxes)
    assert records["000006"].boxes == []  # no label file: a negative
    assert [len(records[s].boxes) for s in sorted(LABELS)] == [3, 1, 2, 0, 0, 3]
    assert report.notes == {"KITTI DontCare region (not a box)": 4,
                            "box removed: overlaps a KITTI DontCare region": 3,
                            "image without a KITTI label file (kept as a negative)": 1}
    assert not report.problems


def _decode(paths, truncated_dtype) -> dict[str, dict]:
    """Image file name -> the features both converters write, decoded with tf.io."""
    import tensorflow as tf

    spec = {"image/filename": tf.io.FixedLenFeature([], tf.string),
            "image/height": tf.io.FixedLenFeature([], tf.int64),
            "image/width": tf.io.FixedLenFeature([], tf.int64),
            "image/object/class/text": tf.io.VarLenFeature(tf.string),
            "image/object/class/label": tf.io.VarLenFeature(tf.int64),
            "image/object/difficult": tf.io.VarLenFeature(tf.int64),
            "image/object/truncated": tf.io.VarLenFeature(truncated_dtype)}
    spec.update({f"image/object/bbox/{k}": tf.io.VarLenFeature(tf.float32)
                 for k in ("xmin", "ymin", "xmax", "ymax")})
    out = {}
    for raw in tf.data.TFRecordDataset([str(p) for p in paths]):
        parsed = tf.io.parse_single_example(raw, spec)
        values = {k: (v.values if isinstance(v, tf.SparseTensor) else v).numpy()
                  for k, v in parsed.items()}
        out[os.path.basename(values["image/filename"].decode())] = values
    return out


def test_tfrecords_match_upstream_converter(tmp_path):
    """The OD API's ``convert_kitti_to_tfrecords`` and ``prepare_dataset(fmt="kitti")`` on
    the same folder (upstream's own layout: ``training/label_2`` and
    ``data_object_image_2/training/image_2``) give the same images, boxes (normalised,
    within 1e-6), class texts, difficult and truncated flags."""
    upstream = dataset_tool("create_kitti_tf_record")

    from tfod.data import prepare_dataset, read_label_map, write_label_map

    root = _kitti(tmp_path / "kitti", images_in="data_object_image_2/training/image_2")
    (root / "training" / "label_2" / "000006.txt").write_text("")  # upstream needs one
    every = sorted({line.split()[0].lower() for lines in LABELS.values() for line in lines})
    write_label_map([c for c in every if c != "dontcare"], tmp_path / "kitti.pbtxt")
    upstream.convert_kitti_to_tfrecords(str(root), str(tmp_path / "upstream"), every,
                                        str(tmp_path / "kitti.pbtxt"), validation_set_size=0)
    import tensorflow as tf

    theirs = _decode([tmp_path / "upstream_train.tfrecord"], tf.float32)
    result = prepare_dataset(root, "kitti", fmt="kitti", out_root=tmp_path / "data",
                             label_map_dir=tmp_path / "lm", split={"train": 1.0}, plots=False,
                             workers=1)
    ours = _decode(sorted(Path(result["dir"]).glob("train-*.tfrecord")), tf.int64)
    names = read_label_map(Path(result["dir"]) / "label_map.pbtxt")
    assert sorted(ours) == sorted(theirs) == [f"{s}.png" for s in sorted(SIZES)]
    boxes = 0
    for name, want in theirs.items():
        got = ours[name]
        assert (got["image/width"], got["image/height"]) == \
            (want["image/width"], want["image/height"])
        for key in ("xmin", "ymin", "xmax", "ymax"):
            key = f"image/object/bbox/{key}"
            np.testing.assert_allclose(got[key], want[key], atol=1e-6, err_msg=f"{name} {key}")
        texts = list(want["image/object/class/text"])
        assert list(got["image/object/class/text"]) == texts, name
        assert [names[i - 1].encode() for i in got["image/object/class/label"]] == texts
        np.testing.assert_array_equal(got["image/object/difficult"],
                                      want["image/object/difficult"])
        np.testing.assert_array_equal(got["image/object/truncated"],
                                      (want["image/object/truncated"] > 0).astype(np.int64))
        boxes += len(texts)
    assert boxes == 9
    assert result["manifest"]["notes"]["box removed: overlaps a KITTI DontCare region"] == 3


# --------------------------------------------------------------------------- #
# Layouts, lines and counts
# --------------------------------------------------------------------------- #
def test_layouts_root_training_and_image_dir(tmp_path):
    flat = _kitti(tmp_path / "flat", images_in="image_2", labels_in="label_2")
    assert len(read_kitti(flat)) == 7
    report = Report()
    both = _kitti(tmp_path / "both")
    _png(both / "testing" / "image_2" / "000100.png")
    records = read_kitti(both, report)
    assert [r.image_path.parent for r in records] == [both / "training" / "image_2"] * 7
    assert all(r.split is None for r in records)  # KITTI has no split: --split decides
    assert report.notes["KITTI testing/ not read (the KITTI download has no labels for it)"] == 1
    other = tmp_path / "elsewhere"
    _png(other / "000000.png")
    report = Report()
    [record] = read_kitti(flat, report, image_dir=other)
    assert record.image_path == other / "000000.png"
    assert len(record.boxes) == 3
    assert report.problems["label without image"] == 5  # 000001..000005: not in image_dir
    with pytest.raises(DatasetError, match="no KITTI label_2 folder") as exc:
        read_kitti(both / "testing")
    assert str(both / "testing") in str(exc.value)
    (tmp_path / "empty" / "label_2").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no .txt label files"):
        read_kitti(tmp_path / "empty")
    with pytest.raises(DatasetError, match="KITTI folder not found"):
        read_kitti(tmp_path / "nope")


def test_bad_lines_missing_files_and_score_column_are_counted(tmp_path):
    root = _kitti(tmp_path / "kitti", images_in="image_2", labels_in="label_2")
    label = root / "label_2" / "000000.txt"
    good = LABELS["000000"]
    label.write_text("\n".join([good[0], "Car 0 0 1 2 3", "", good[1].replace(" 1 ", " 1.5 ", 1),
                                good[2].replace("70.00", "nan"),
                                _line("Car", (1, 2, 3, 4), score=0.87)]) + "\n")
    (root / "label_2" / "000009.txt").write_text(good[0])  # no image
    (root / "label_2" / "000005.txt").write_bytes(b"Car \xff\xfe 0 0")  # not UTF-8
    report = Report()
    records = {r.image_path.stem: r for r in read_kitti(root, report)}
    assert [(b.name, b.xmax) for b in records["000000"].boxes] == [("car", 40.75), ("car", 3.0)]
    assert "000005" not in records  # labels unknown: not a negative either
    assert report.problems == {"unreadable annotation": 4, "label without image": 1}
    examples = report.examples["unreadable annotation"]
    assert examples[0] == (f"{label}:2: 6 values, expected 15 (type truncated occluded alpha "
                           "x1 y1 x2 y2 h w l x y z rotation_y) or 16 (with a score); fix the "
                           "line")
    assert f"{label}:4" in examples[1] and "occluded is '1.5'" in examples[1]
    assert f"{label}:5" in examples[2] and "x1 is 'nan'" in examples[2]
    assert str(root / "label_2" / "000005.txt") in examples[3] and "UTF-8" in examples[3]
    assert f"{root / 'label_2' / '000009.txt'}: no image 000009.*" in \
        report.examples["label without image"][0]
    assert report.notes["KITTI score column ignored (a results file?)"] == 1
    assert report.notes["image without a KITTI label file (kept as a negative)"] == 1


def test_class_names_lower_cased_and_dontcare_in_any_case(tmp_path):
    root = tmp_path / "kitti"
    _png(root / "image_2" / "a.png")
    (root / "label_2").mkdir()
    (root / "label_2" / "a.txt").write_text("\n".join([
        _line("CAR", (1, 1, 20, 20)), _line("Car", (40, 1, 60, 20)),
        _line("DONTCARE", (15, 15, 30, 30), -1, -1)]))
    report = Report()
    [record] = read_kitti(root, report)
    assert [(b.name, b.xmin) for b in record.boxes] == [("car", 40.0)]
    assert report.notes["box removed: overlaps a KITTI DontCare region"] == 1


# --------------------------------------------------------------------------- #
# Hostile input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("what", ["image", "label"])
def test_symlinks_leading_out_of_the_dataset_are_refused(tmp_path, what):
    root = _kitti(tmp_path / "kitti", images_in="image_2", labels_in="label_2")
    private = tmp_path / "private"
    private.mkdir()
    if what == "image":
        secret = _png(private / "secret.png", colour=(1, 2, 3))
        (root / "image_2" / "000007.png").symlink_to(secret)
        (root / "label_2" / "000007.txt").write_text(_line("Car", (1, 1, 9, 9)))
    else:
        (private / "notes.txt").write_text(_line("Secret", (1, 1, 9, 9)))
        (root / "label_2" / "000006.txt").symlink_to(private / "notes.txt")
    report = Report()
    records = read_kitti(root, report)
    assert report.problems["image path outside the dataset"] == 1
    assert all(private.name not in os.path.realpath(r.image_path) for r in records)
    assert "secret" not in {b.name for r in records for b in r.boxes}
    if what == "image":  # the label of the refused image has no image left
        assert report.problems["label without image"] == 1
    else:  # the image of the refused label is not a negative: its labels are unknown
        assert "000006" not in {r.image_path.stem for r in records}
    allowed = {r.image_path.stem: r for r in read_kitti(root, Report(), allow_outside=True)}
    assert [b.name for b in allowed["000007" if what == "image" else "000006"].boxes] == \
        ["car" if what == "image" else "secret"]


@FUZZ
@given(label=st.one_of(st.text(max_size=120), st.binary(max_size=120).map(
    lambda b: b.decode("latin-1"))), mutate=st.lists(st.sampled_from(
        ["nan", "inf", "-1", "1e400", "", "DontCare", "0.5", "x"]), max_size=16),
    raw=st.binary(max_size=40))
def test_fuzzed_label_files(label, mutate, raw):
    with fuzz_folder() as folder:
        _png(folder / "image_2" / "a.png", (32, 24))
        _png(folder / "image_2" / "b.png", (32, 24), (9, 9, 9))
        (folder / "label_2").mkdir()
        parts = _line("Car", (1, 2, 20, 20)).split()
        for i, value in enumerate(mutate):
            parts[i % len(parts)] = value
        (folder / "label_2" / "a.txt").write_text(label + "\n" + " ".join(parts),
                                                  errors="surrogateescape")
        (folder / "label_2" / "b.txt").write_bytes(raw)
        _expect_records_or_named_error(read_kitti, folder, folder)
