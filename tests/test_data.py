"""tfod.data: VOC reading, checks that drop and count, splits, label map, TFRecords
read back with the OD API's own decoder."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATASETS, dataset_tool
from tfod import data
from tfod.data import prepare
from tfod.errors import DatasetError
from tfod.data.synth import synthesize


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "voc"
    synthesize(root, num_train=12, num_val=6, seed=3)
    return root


def _decode_all(pattern, label_map):
    import tensorflow as tf
    from object_detection.data_decoders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder(label_map_proto_file=str(label_map))
    files = tf.io.gfile.glob(pattern)
    return [{k: v.numpy() for k, v in decoder.decode(rec).items()}
            for rec in tf.data.TFRecordDataset(files)]


def test_prepare_round_trip(voc, tmp_path):
    result = data.prepare_dataset(voc, "shapes", out_root=tmp_path / "data",
                                  label_map_dir=tmp_path / "label_maps")
    out = tmp_path / "data" / "shapes"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["circle", "square", "triangle"]
    # the dataset's own split (ImageSets/Main) is kept
    assert manifest["splits"]["train"]["images"] == 12
    assert manifest["splits"]["val"]["images"] == 6
    assert (tmp_path / "label_maps" / "shapes.pbtxt").read_text() == \
        (out / "label_map.pbtxt").read_text()
    assert data.read_label_map(out / "label_map.pbtxt") == manifest["classes"]
    decoded = _decode_all(data.split_pattern(out, "train"), out / "label_map.pbtxt")
    assert len(decoded) == 12
    # compare one record with its XML, via the OD API decoder
    records = {r.image_path.name: r for r in data.read_voc(voc)}
    for example in decoded:
        record = records[example["filename"].decode()]
        h, w = example["image"].shape[:2]
        assert (w, h) == (record.width, record.height)
        expected = np.array([[b.ymin / h, b.xmin / w, b.ymax / h, b.xmax / w]
                             for b in record.boxes], np.float32)
        np.testing.assert_allclose(example["groundtruth_boxes"], expected, atol=1e-6)
        names = [manifest["classes"][c - 1] for c in example["groundtruth_classes"]]
        assert names == [b.name for b in record.boxes]
        assert example["image"].shape == (record.height, record.width, 3)
    # JPEG bytes are passed through unchanged
    import tensorflow as tf

    for raw in tf.data.TFRecordDataset(tf.io.gfile.glob(data.split_pattern(out, "train"))):
        features = tf.train.Example.FromString(raw.numpy()).features.feature
        name = features["image/filename"].bytes_list.value[0].decode()
        assert features["image/encoded"].bytes_list.value[0] == \
            records[name].image_path.read_bytes()
        assert features["image/key/sha256"].bytes_list.value[0]
    assert result["manifest"]["fingerprint"] == manifest["fingerprint"]


def test_bad_boxes_and_images_are_dropped_and_counted(voc, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(voc, broken)
    xmls = sorted((broken / "Annotations").glob("*.xml"))
    # 1: box far outside the image; 2: inverted box; 3: missing image; 4: corrupt XML
    text = xmls[0].read_text()
    xmls[0].write_text(text.replace("<xmax>", "<xmax>9", 1))
    text = xmls[1].read_text()
    start = text.index("<xmin>") + 6
    xmls[1].write_text(text[:start] + "999" + text[text.index("</xmin>"):])
    (broken / "JPEGImages" / (xmls[2].stem + ".jpg")).unlink()
    xmls[3].write_text("<annotation><filename>")
    (broken / "JPEGImages" / (xmls[4].stem + ".jpg")).write_bytes(b"\xff\xd8not a jpeg")
    report = data.Report()
    records = data.check_records(data.read_voc(broken, report), report)
    assert report.problems["box outside image"] == 1
    assert report.problems["inverted box"] == 1
    assert report.problems["missing image"] == 1
    assert report.problems["unreadable annotation"] == 1
    assert report.problems["unreadable image"] == 1
    assert len(records) == 18 - 3
    assert any(xmls[3].name in line for line in report.lines())
    with pytest.raises(DatasetError, match="--strict"):
        data.prepare_dataset(broken, "b", out_root=tmp_path / "d", strict=True,
                             label_map_dir=tmp_path / "lm")
    assert not (tmp_path / "d" / "b").exists()


def test_seeded_split_without_own_split(voc, tmp_path):
    records = data.read_voc(voc)
    for r in records:
        r.split = None
    a = data.split_records(records, {"train": 0.5, "val": 0.5}, seed=1)
    assert {r.split for r in records} == {"train", "val"}
    for r in records:
        r.split = None
    b = data.split_records(list(reversed(records)), {"train": 0.5, "val": 0.5}, seed=1)
    assert [r.image_path for r in a["train"]] == [r.image_path for r in b["train"]]
    assert len(a["train"]) == len(a["val"]) == 9


def test_unknown_format_and_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="use one of: coco, csv, cvat, kitti, labelme, openimages, tfrecord, voc, yolo"):
        data.prepare_dataset(tmp_path, "x", fmt="pascal")
    with pytest.raises(DatasetError, match="not found"):
        data.read_voc(tmp_path / "nope")


def test_label_map_ids_must_be_contiguous(tmp_path):
    path = tmp_path / "lm.pbtxt"
    path.write_text("item { id: 1 name: 'a' } item { id: 3 name: 'b' }")
    with pytest.raises(DatasetError, match=r"not 1\.\.2"):
        data.read_label_map(path)


def test_no_partial_output_on_failure(voc, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(prepare, "write_tfrecords", boom)
    with pytest.raises(RuntimeError):
        data.prepare_dataset(voc, "s", out_root=tmp_path / "data", label_map_dir=tmp_path)
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.skipif(not (SHARED_DATASETS / "raccoon").is_dir(), reason="shared datasets absent")
def test_raccoon_greyscale_images_become_rgb(tmp_path):
    root = SHARED_DATASETS / "raccoon"
    result = data.prepare_dataset(root / "annotations", "raccoon", out_root=tmp_path / "data",
                                  label_map_dir=tmp_path / "lm", image_dir=root / "images")
    splits = result["manifest"]["splits"]
    # the dataset holds 4 images twice under two names (raccoon-116 = raccoon-11, ...),
    # annotated slightly differently: the second copy is dropped and reported
    assert result["manifest"]["problems"] == {"duplicate image": 4}
    dropped = {line.split(":")[0].rsplit("/", 1)[-1]
               for line in result["report"]["examples"]["duplicate image"]}
    assert dropped == {"raccoon-116.jpg", "raccoon-74.jpg", "raccoon-83.jpg", "raccoon-98.jpg"}
    voc = {r.image_path.name: r for r in data.read_voc(root / "annotations",
                                                       image_dir=root / "images")}
    assert sum(s["images"] for s in splits.values()) == 196
    assert sum(sum(s["boxes"].values()) for s in splits.values()) == \
        217 - sum(len(voc[n].boxes) for n in dropped)
    assert result["manifest"]["notes"]["greyscale JPEG (passed through; decoded as RGB)"] == 3
    decoded = _decode_all(data.split_pattern(result["dir"], "train"),
                          f"{result['dir']}/label_map.pbtxt")
    decoded += _decode_all(data.split_pattern(result["dir"], "val"),
                           f"{result['dir']}/label_map.pbtxt")
    grey = [d for d in decoded if d["filename"].decode() in
            ("raccoon-150.jpg", "raccoon-152.jpg", "raccoon-161.jpg")]
    assert len(grey) == 3 and all(d["image"].shape[2] == 3 for d in grey)


# --------------------------------------------------------------------------- #
# COCO, CSV and YOLO readers: the synthetic VOC set written in each format must read
# back to the same boxes.
# --------------------------------------------------------------------------- #
def _voc_boxes(voc):
    return {r.image_path.name: [(b.name, b.xmin, b.ymin, b.xmax, b.ymax) for b in r.boxes]
            for r in data.read_voc(voc)}


def _same(records, expected, tol=1e-6):
    got = {r.image_path.name: [(b.name, b.xmin, b.ymin, b.xmax, b.ymax) for b in r.boxes]
           for r in records}
    assert got.keys() == expected.keys()
    for name, boxes in expected.items():
        assert [b[0] for b in got[name]] == [b[0] for b in boxes]
        np.testing.assert_allclose([b[1:] for b in got[name]], [b[1:] for b in boxes],
                                   atol=tol)


def test_coco_reader(voc, tmp_path):
    expected = _voc_boxes(voc)
    names = sorted({b[0] for boxes in expected.values() for b in boxes})
    cats = [{"id": i, "name": n} for i, n in enumerate(names)]  # id 0, as Roboflow does
    images, anns = [], []
    for i, (fname, boxes) in enumerate(sorted(expected.items())):
        images.append({"id": i, "file_name": fname, "width": 160, "height": 160})
        for name, x0, y0, x1, y1 in boxes:
            anns.append({"id": len(anns), "image_id": i, "category_id": names.index(name),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
    images.append({"id": 999, "file_name": "negative.jpg", "width": 160, "height": 160})
    anns.append({"id": 9999, "image_id": 12345, "category_id": 0, "bbox": [1, 1, 2, 2]})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    report = data.Report()
    records = data.read_coco(path, report, image_dir=voc / "JPEGImages")
    assert report.problems["unreadable annotation"] == 1  # the orphan annotation, counted
    negative = [r for r in records if r.image_path.name == "negative.jpg"]
    assert len(negative) == 1 and negative[0].boxes == []
    _same([r for r in records if r.image_path.name != "negative.jpg"], expected)


def test_csv_reader_with_column_mapping(voc, tmp_path):
    expected = _voc_boxes(voc)
    lines = ["file,w,h,label,x1,y1,x2,y2"]
    for fname, boxes in sorted(expected.items()):
        for name, x0, y0, x1, y1 in boxes:
            lines.append(f"{fname},160,160,{name},{x0},{y0},{x1},{y1}")
    lines.append("broken.jpg,160,160,circle,abc,1,2,3")
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    mapping = {"filename": "file", "width": "w", "height": "h", "class": "label",
               "xmin": "x1", "ymin": "y1", "xmax": "x2", "ymax": "y2"}
    report = data.Report()
    records = data.read_csv(path, report, image_dir=voc / "JPEGImages", columns=mapping)
    assert report.problems["unreadable annotation"] == 1
    assert any("labels.csv:" in line and "abc" in line for line in report.lines())
    _same([r for r in records if r.boxes], expected)
    with pytest.raises(DatasetError, match="missing column"):
        data.read_csv(path)


def test_yolo_reader(voc, tmp_path):
    expected = _voc_boxes(voc)
    names = sorted({b[0] for boxes in expected.values() for b in boxes})
    root = tmp_path / "yolo"
    (root / "labels").mkdir(parents=True)
    shutil.copytree(voc / "JPEGImages", root / "images")
    (root / "data.yaml").write_text("names:\n" + "".join(f"  - {n}\n" for n in names))
    for fname, boxes in expected.items():
        rows = [f"{names.index(n)} {(x0 + x1) / 320} {(y0 + y1) / 320} {(x1 - x0) / 160} "
                f"{(y1 - y0) / 160}" for n, x0, y0, x1, y1 in boxes]
        (root / "labels" / fname).with_suffix(".txt").write_text("\n".join(rows) + "\n")
    (root / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    first = sorted(expected)[0]
    with open((root / "labels" / first).with_suffix(".txt"), "a") as f:
        f.write("7 0.5 0.5 0.1 0.1\n")  # class id out of range
    report = data.Report()
    records = data.read_yolo(root, report)
    assert report.problems["label without image"] == 1
    assert report.problems["unreadable annotation"] == 1
    _same(records, expected, tol=1e-3)


def test_prepare_from_coco_writes_is_crowd(voc, tmp_path):
    expected = _voc_boxes(voc)
    names = sorted({b[0] for boxes in expected.values() for b in boxes})
    images, anns = [], []
    for i, (fname, boxes) in enumerate(sorted(expected.items())):
        images.append({"id": i, "file_name": fname, "width": 160, "height": 160})
        for name, x0, y0, x1, y1 in boxes:
            anns.append({"id": len(anns), "image_id": i, "category_id": names.index(name) + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": int(len(anns) == 0)})
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": i + 1, "name": n} for i, n in enumerate(names)]}))
    result = data.prepare_dataset(path, "c", fmt="coco", out_root=tmp_path / "d",
                                  label_map_dir=tmp_path / "lm", image_dir=voc / "JPEGImages")
    decoded = _decode_all(data.split_pattern(result["dir"], "train"),
                          f"{result['dir']}/label_map.pbtxt")
    decoded += _decode_all(data.split_pattern(result["dir"], "val"),
                           f"{result['dir']}/label_map.pbtxt")
    assert sum(int(d["groundtruth_is_crowd"].sum()) for d in decoded) == 1
    assert sum(len(d["groundtruth_boxes"]) for d in decoded) == len(anns)


@pytest.mark.skipif(not (SHARED_DATASETS / "raccoon").is_dir(), reason="shared datasets absent")
def test_raccoon_csv_matches_its_voc(tmp_path):
    root = SHARED_DATASETS / "raccoon"
    from_csv = data.read_csv(root / "data" / "train_labels.csv", image_dir=root / "images")
    from_voc = {r.image_path.name: r for r in data.read_voc(root / "annotations",
                                                            image_dir=root / "images")}
    assert len(from_csv) == 160
    for record in from_csv:
        voc = from_voc[record.image_path.name]
        assert record.image_path.is_file()
        assert sorted((b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes) == \
            sorted((b.xmin, b.ymin, b.xmax, b.ymax) for b in voc.boxes)


# --------------------------------------------------------------------------- #
# Own splits from file and folder names; stratified splits; label maps
# --------------------------------------------------------------------------- #
def test_split_names():
    from tfod.data.annotations import split_from_name

    assert [split_from_name(n) for n in ("train_labels", "instances_val2017", "valid",
                                         "Test", "raccoon_labels")] == \
        ["train", "val", "val", "test", None]


def test_coco_and_csv_folders_keep_their_split(voc, tmp_path):
    expected = _voc_boxes(voc)
    names = sorted(expected)
    coco = tmp_path / "coco"
    for split, part in (("train", names[:10]), ("valid", names[10:])):
        (coco / split).mkdir(parents=True)
        images = [{"id": i, "file_name": f, "width": 160, "height": 160}
                  for i, f in enumerate(part)]
        (coco / split / "_annotations.coco.json").write_text(json.dumps(
            {"images": images, "annotations": [], "categories": []}))
    records = data.read_coco(coco, image_dir=voc / "JPEGImages")
    assert sorted((r.split, r.image_path.name) for r in records) == sorted(
        [("train", n) for n in names[:10]] + [("val", n) for n in names[10:]])

    csvs = tmp_path / "csv"
    csvs.mkdir()
    for split, part in (("train", names[:10]), ("test", names[10:])):
        rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
        rows += [f"{f},160,160,,,,," for f in part]
        (csvs / f"{split}_labels.csv").write_text("\n".join(rows) + "\n")
    splits = data.split_records(data.read_csv(csvs, image_dir=voc / "JPEGImages"),
                                {"train": 0.5, "val": 0.5})
    assert {s: len(r) for s, r in splits.items()} == {"train": 10, "test": 8}
    (csvs / "all_labels.csv").write_text("filename,class,xmin,ymin,xmax,ymax\n")
    report = data.Report()
    assert len(data.read_csv(csvs, report, image_dir=voc / "JPEGImages")) == 18
    assert report.notes == {"CSV file without a split in its name, not read: all_labels.csv": 1}
    (csvs / "train_labels.csv").rename(csvs / "more_test.csv")
    with pytest.raises(DatasetError, match="name them by split"):
        data.read_csv(csvs)


def _records(counts: dict[str, int], negatives: int = 0):
    out = []
    for name, n in counts.items():
        for i in range(n):
            out.append(data.Record(Path(f"/x/{name}-{i}.jpg"), 100, 100,
                                   [data.Box(name, 1, 1, 9, 9), data.Box("common", 1, 1, 9, 9)]))
    out += [data.Record(Path(f"/x/neg-{i}.jpg"), 100, 100) for i in range(negatives)]
    return out


def test_stratified_split_puts_every_class_in_every_split():
    records = _records({"common": 60, "rare": 3, "few": 7}, negatives=10)
    ratios = {"train": 0.8, "val": 0.1, "test": 0.1}
    splits = data.split_records(records, ratios, seed=0)
    for split, rs in splits.items():
        assert {"common", "rare", "few"} <= {b.name for r in rs for b in r.boxes}, split
    sizes = {s: len(rs) for s, rs in splits.items()}
    assert sum(sizes.values()) == 80
    assert all(abs(sizes[s] - 80 * r) <= 1 for s, r in ratios.items()), sizes
    again = data.split_records(list(reversed(_records({"common": 60, "rare": 3, "few": 7},
                                                      negatives=10))), ratios, seed=0)
    assert {s: sorted(str(r.image_path) for r in rs) for s, rs in splits.items()} == \
        {s: sorted(str(r.image_path) for r in rs) for s, rs in again.items()}
    other = data.split_records(_records({"common": 60, "rare": 3, "few": 7}, 10), ratios, 1)
    assert sorted(str(r.image_path) for r in other["val"]) != \
        sorted(str(r.image_path) for r in splits["val"])
    plain = data.split_records(_records({"common": 60, "rare": 3}), ratios, seed=0,
                               stratify=False)
    assert sum(len(v) for v in plain.values()) == 63
    with pytest.raises(DatasetError, match="--split"):
        data.split_records(_records({"a": 2}), {"train": -1, "val": 0.5})


def test_existing_label_map_is_enforced(voc, tmp_path):
    label_map = tmp_path / "given.pbtxt"
    label_map.write_text("item { id: 1 name: 'triangle' } item { id: 2 name: 'circle' }")
    result = data.prepare_dataset(voc, "lm", out_root=tmp_path / "data",
                                  label_map_dir=tmp_path / "lms", label_map=label_map)
    assert result["manifest"]["classes"] == ["triangle", "circle"]
    assert result["manifest"]["problems"]["class not in the label map"] > 0
    assert data.read_label_map(tmp_path / "lms" / "lm.pbtxt") == ["triangle", "circle"]
    decoded = _decode_all(data.split_pattern(result["dir"], "train"), label_map)
    records = {r.image_path.name: r for r in data.read_voc(voc)}
    for example in decoded:
        want = [b.name for b in records[example["filename"].decode()].boxes
                if b.name != "square"]
        assert [["triangle", "circle"][c - 1] for c in example["groundtruth_classes"]] == want


def test_declared_class_order_is_kept_and_unused_classes_noted(voc, tmp_path):
    root = tmp_path / "yolo"
    (root / "labels" / "train").mkdir(parents=True)
    (root / "images" / "train").mkdir(parents=True)
    src = sorted((voc / "JPEGImages").glob("*.jpg"))[:3]
    for img in src:
        shutil.copy(img, root / "images" / "train" / img.name)
        (root / "labels" / "train" / f"{img.stem}.txt").write_text("1 0.5 0.5 0.2 0.2\n"
                                                                   "0 0.3 0.3 0.1 0.1\n")
    (root / "classes.txt").write_text("zebra\nant\nunused\n")
    result = data.prepare_dataset(root, "y", fmt="yolo", out_root=tmp_path / "d",
                                  label_map_dir=tmp_path / "l", plots=False)
    assert result["manifest"]["classes"] == ["zebra", "ant"]
    assert list(result["manifest"]["splits"]) == ["train"]  # images/train/ is the own split
    assert any("unused" in k for k in result["manifest"]["notes"])


# --------------------------------------------------------------------------- #
# Shards, workers, statistics
# --------------------------------------------------------------------------- #
def test_shards_from_target_size_and_workers_do_not_change_bytes(voc, tmp_path):
    import tensorflow as tf

    records = data.check_records(data.read_voc(voc), data.Report())
    ids = {"circle": 1, "square": 2, "triangle": 3}
    size_mb = sum(r.image_path.stat().st_size for r in records) / 2**20
    assert data.num_shards_for(records, size_mb / 3) == 3
    one = data.write_tfrecords(records, tmp_path / "one", "train", ids, 3, workers=1)
    two = data.write_tfrecords(records, tmp_path / "two", "train", ids, 3, workers=2)
    assert [p.name for p in one] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    assert sum(1 for p in one for _ in tf.data.TFRecordDataset(str(p))) == len(records)
    assert not list((tmp_path / "one").glob(".*"))  # no temporary files left


def test_prepare_writes_stats_and_plots(voc, tmp_path):
    result = data.prepare_dataset(voc, "s", out_root=tmp_path / "data",
                                  label_map_dir=tmp_path / "lm")
    out = tmp_path / "data" / "s"
    stats = json.loads((out / "stats.json").read_text())
    records = data.read_voc(voc)
    assert stats["splits"]["train"]["images"] == 12
    assert sum(s["boxes"] for s in stats["splits"].values()) == \
        sum(len(r.boxes) for r in records)
    for name in ("class_histogram", "box_sizes", "aspect_ratios"):
        with data_image(out / "stats" / f"{name}.png") as img:
            assert img.format == "PNG" and img.width > 200
    assert result["stats"] == stats


def data_image(path):
    from PIL import Image

    return Image.open(path)


# --------------------------------------------------------------------------- #
# Parity with reference writers
# --------------------------------------------------------------------------- #
@pytest.mark.skipif(not (SHARED_DATASETS / "raccoon").is_dir(), reason="shared datasets absent")
def test_raccoon_test_record_parity(tmp_path):
    """tfod's TFRecord of data/test_labels.csv equals the dataset's own test.record."""
    root = SHARED_DATASETS / "raccoon"
    report = data.Report()
    records = data.check_records(data.read_csv(root / "data" / "test_labels.csv", report,
                                               image_dir=root / "images"), report)
    assert len(records) == 40 and not report.problems
    data.write_tfrecords(records, tmp_path, "test", {"raccoon": 1})
    label_map = root / "training" / "object-detection.pbtxt"
    ours = {d["filename"]: d for d in _decode_all(str(tmp_path / "test-*"), label_map)}
    theirs = {d["filename"]: d for d in _decode_all(str(root / "data" / "test.record"),
                                                    label_map)}
    assert ours.keys() == theirs.keys() and len(ours) == 40
    for name, want in theirs.items():
        got = ours[name]
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_allclose(got["groundtruth_boxes"], want["groundtruth_boxes"],
                                   atol=1e-6)
        np.testing.assert_array_equal(got["groundtruth_classes"], want["groundtruth_classes"])
        assert got["source_id"] == want["source_id"]


def _voc_devkit(voc, root):
    """The synthetic VOC set laid out as VOCdevkit/VOC2012, as the OD API's converter wants."""
    year = root / "VOC2012"
    shutil.copytree(voc / "JPEGImages", year / "JPEGImages")
    (year / "Annotations").mkdir(parents=True)
    for xml in (voc / "Annotations").glob("*.xml"):
        text = xml.read_text().replace("<folder>JPEGImages</folder>", "<folder>VOC2012</folder>")
        (year / "Annotations" / xml.name).write_text(text)
    (year / "ImageSets" / "Main").mkdir(parents=True)
    for split in ("train", "val"):
        ids = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        (year / "ImageSets" / "Main" / f"aeroplane_{split}.txt").write_text(
            "".join(f"{i}  1\n" for i in ids))
    return year


def test_parity_with_create_pascal_tf_record(voc, tmp_path):
    """Decoded examples equal those of the OD API's own create_pascal_tf_record."""
    import tensorflow as tf
    from lxml import etree
    peer = dataset_tool("create_pascal_tf_record")
    from object_detection.utils import dataset_util, label_map_util

    year = _voc_devkit(voc, tmp_path / "VOCdevkit")
    data.write_label_map(["circle", "square", "triangle"], tmp_path / "lm.pbtxt")
    label_map_dict = label_map_util.get_label_map_dict(str(tmp_path / "lm.pbtxt"))
    peer_path = tmp_path / "peer.record"
    with tf.io.TFRecordWriter(str(peer_path)) as writer:
        for xml in sorted((year / "Annotations").glob("*.xml")):
            tree = dataset_util.recursive_parse_xml_to_dict(etree.fromstring(xml.read_bytes()))
            writer.write(peer.dict_to_tf_example(tree["annotation"], str(year.parent),
                                                 label_map_dict).SerializeToString())
    result = data.prepare_dataset(year, "pascal", out_root=tmp_path / "data",
                                  label_map_dir=tmp_path / "lms", plots=False)
    ours = _decode_all(data.split_pattern(result["dir"], "train"), tmp_path / "lm.pbtxt")
    ours += _decode_all(data.split_pattern(result["dir"], "val"), tmp_path / "lm.pbtxt")
    theirs = {d["filename"]: d for d in _decode_all(str(peer_path), tmp_path / "lm.pbtxt")}
    assert len(ours) == len(theirs) == 18
    for got in ours:
        want = theirs[got["filename"]]
        assert got.keys() == want.keys()
        for key in want:
            if key == "groundtruth_is_crowd":  # the peer omits it (decoded as none crowd)
                assert want[key].size == 0 and not got[key].any()
                continue
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    raw = {tf.train.Example.FromString(r.numpy()).features.feature["image/filename"]
           .bytes_list.value[0]: set(tf.train.Example.FromString(r.numpy()).features.feature)
           for r in tf.data.TFRecordDataset(str(peer_path))}
    ours_keys = set(tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(
        tf.io.gfile.glob(data.split_pattern(result["dir"], "train"))))).numpy()).features.feature)
    assert ours_keys - next(iter(raw.values())) == {"image/object/is_crowd"}


def test_csv_with_excel_bom_header(voc, tmp_path):
    name = sorted((voc / "JPEGImages").glob("*.jpg"))[0].name
    path = tmp_path / "labels.csv"
    path.write_bytes("\ufefffilename,width,height,class,xmin,ymin,xmax,ymax\n".encode()
                     + f"{name},160,160,circle,1,2,30,40\n".encode())
    [record] = data.read_csv(path, image_dir=voc / "JPEGImages")
    assert [(b.name, b.xmax) for b in record.boxes] == [("circle", 30.0)]


def test_prepare_log_is_in_the_dataset_folder(voc, tmp_path, caplog):
    """prepare's log (from the first file read to the final summary) is written into the
    dataset folder, with the records made before that folder existed; --check-only writes
    no log."""
    caplog.set_level(logging.INFO, logger="tfod")
    result = data.prepare_dataset(voc, "s", out_root=tmp_path / "data",
                                  label_map_dir=tmp_path / "lm", plots=False)
    text = (Path(result["dir"]) / "prepare.log").read_text()
    assert "prepare: reading voc annotations from" in text
    assert "usable images" in text and "complete (train=" in text
    assert text.index("reading voc") < text.index("usable images") < text.index("complete")
    data.prepare_dataset(voc, "c", out_root=tmp_path / "check", check_only=True)
    assert not (tmp_path / "check").exists()


# --------------------------------------------------------------------------- #
# Several sources into one dataset
# --------------------------------------------------------------------------- #
def _yolo_source(voc: Path, root: Path) -> dict[str, list[tuple]]:
    """A YOLO dataset of three new images (class 'Square' and 'disc', other names than the
    VOC set's) plus one image copied from the VOC set (a duplicate across sources)."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text("names: [Square, disc]\n")
    expected = {}
    for i in range(3):
        Image.new("RGB", (100, 80), (40 * i, 200, 90)).save(root / "images" / f"y{i}.jpg")
        (root / "labels" / f"y{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.2 0.5\n")
        expected[f"y{i}.jpg"] = [("square" if i % 2 == 0 else "circle", 40.0, 20.0, 60.0, 60.0)]
    copied = sorted((voc / "JPEGImages").iterdir())[0]
    shutil.copy(copied, root / "images" / "copy.jpg")
    (root / "labels" / "copy.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    return expected


def test_sources_merged_with_renamed_classes(voc, tmp_path):
    """VOC + YOLO into one dataset: --rename makes the YOLO set's 'Square'/'disc' the VOC
    set's 'square'/'circle' (one label map of three classes), the image both sources hold
    is a counted duplicate, and the manifest says where each image came from."""
    expected = _yolo_source(voc, tmp_path / "yolo")
    voc_images = len(list((voc / "JPEGImages").iterdir()))
    result = data.prepare_dataset(
        [f"voc:{voc}", ("yolo", tmp_path / "yolo")], "merged", out_root=tmp_path / "data",
        label_map_dir=tmp_path / "maps", plots=False, workers=1,
        rename={"Square": "square", "disc": "circle"})
    manifest = result["manifest"]
    assert manifest["classes"] == ["square", "circle", "triangle"]  # YOLO's declared order
    assert manifest["format"] == "voc+yolo"
    assert [(s["format"], s["images"]) for s in manifest["sources"]] == [
        ("voc", voc_images), ("yolo", 3)]
    assert result["report"]["problems"] == {"duplicate image": 1}
    assert "copy.jpg: same bytes as " in result["report"]["examples"]["duplicate image"][0]
    # the VOC set has ImageSets, the YOLO set no split: said, not silently re-split
    assert any("have a split of their own (the others, e.g. another source's, have none): "
               "all are split by ratio" in note for note in result["report"]["notes"])
    origins = manifest["origins"]
    assert sum(v == 1 for v in origins.values()) == 3 and len(origins) == voc_images + 3
    assert all(origins[str(tmp_path / "yolo" / "images" / name)] == 1 for name in expected)
    out = tmp_path / "data" / "merged"
    decoded = [e for s in manifest["splits"] for e in _decode_all(
        str(out / manifest["splits"][s]["pattern"]), out / "label_map.pbtxt")]
    assert len(decoded) == voc_images + 3
    ids = {n: i for i, n in enumerate(manifest["classes"], 1)}
    for example in decoded:
        name = example["filename"].decode()
        if name in expected:
            ((cls, x0, y0, x1, y1),) = expected[name]
            np.testing.assert_allclose(example["groundtruth_boxes"],
                                       [[y0 / 80, x0 / 100, y1 / 80, x1 / 100]], atol=1e-6)
            assert example["groundtruth_classes"].tolist() == [ids[cls]]


def test_merge_from_the_command_line_and_its_errors(voc, tmp_path):
    from tfod import cli

    _yolo_source(voc, tmp_path / "yolo")
    code = cli.main(["prepare", f"voc:{voc}", f"yolo:{tmp_path / 'yolo'}", "--name", "m",
                     "--out-root", str(tmp_path / "data"), "--label-maps",
                     str(tmp_path / "maps"), "--rename", "Square=square,disc=square",
                     "--no-plots", "--workers", "1"])
    assert code == 0
    manifest = json.loads((tmp_path / "data" / "m" / "manifest.json").read_text())
    assert manifest["classes"] == ["square", "circle", "triangle"]
    squares = sum(b.name == "square" for r in data.read_voc(voc) for b in r.boxes)
    assert sum(manifest["splits"][s]["boxes"].get("square", 0)  # Square and disc: 3 more
               for s in manifest["splits"]) == squares + 3
    with pytest.raises(DatasetError, match=r"--rename: no class 'Sqare' in the sources \(their "
                                           r"classes: Square, circle, disc, square, triangle\)"):
        data.prepare_dataset([voc, f"yolo:{tmp_path / 'yolo'}"], "x",
                             out_root=tmp_path / "data", rename={"Sqare": "square"})
    with pytest.raises(DatasetError, match="--images applies to one source"):
        data.prepare_dataset([voc, voc], "x", out_root=tmp_path / "data", image_dir=voc)
    with pytest.raises(DatasetError, match="unknown format 'pascal'"):
        data.prepare_dataset([("pascal", voc)], "x", out_root=tmp_path / "data")
    assert not (tmp_path / "data" / "x").exists()


def test_the_cli_formats_are_the_readers():
    """--format's choices (annotations.FORMATS, kept import-light for `tfod --help`) name
    exactly the readers, in the same order."""
    from tfod.data.annotations import FORMATS
    from tfod.data.readers import READERS

    assert FORMATS == tuple(READERS)


def test_a_path_with_a_colon_is_a_path(tmp_path):
    odd = tmp_path / "coco:set"
    odd.mkdir()
    assert prepare.parse_sources([str(odd), "coco:a.json", "yolo:"], "voc") == [
        ("voc", odd), ("coco", Path("a.json")), ("voc", Path("yolo:"))]
