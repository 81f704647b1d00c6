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
    with pytest.raises(DatasetError, match="use one of: voc"):
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
