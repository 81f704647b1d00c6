"""tfod.data: VOC reading, checks that drop and count, splits, label map, TFRecords
read back with the OD API's own decoder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import SHARED_DATASETS
from tfod import data
from tfod.errors import DatasetError
from tfod.synth import synthesize


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
    assert report.problems["empty or inverted box"] == 1
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
    with pytest.raises(DatasetError, match="use one of: coco, csv, voc, yolo"):
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

    monkeypatch.setattr(data, "write_tfrecords", boom)
    with pytest.raises(RuntimeError):
        data.prepare_dataset(voc, "s", out_root=tmp_path / "data", label_map_dir=tmp_path)
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.skipif(not (SHARED_DATASETS / "raccoon").is_dir(), reason="shared datasets absent")
def test_raccoon_greyscale_images_become_rgb(tmp_path):
    root = SHARED_DATASETS / "raccoon"
    result = data.prepare_dataset(root / "annotations", "raccoon", out_root=tmp_path / "data",
                                  label_map_dir=tmp_path / "lm", image_dir=root / "images")
    splits = result["manifest"]["splits"]
    assert sum(s["images"] for s in splits.values()) == 200
    assert sum(sum(s["boxes"].values()) for s in splits.values()) == 217
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
