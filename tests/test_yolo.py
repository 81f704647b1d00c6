"""tfod.data.yolo with Ultralytics dataset YAMLs, in the forms they come in: a YAML named
after the dataset (coco128.yaml) whose ``path:`` does not exist here and whose ``val:`` is
its ``train:``, Roboflow's ``../train/images``, ``.txt`` image lists, lists of folders,
``names`` as a mapping with gaps, negatives and label files without an image. (The plain
images/ + labels/ folder is tested in test_annotations.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tfod.data.annotations import Report
from tfod.data.prepare import prepare_dataset
from tfod.data.yolo import _label_path, read_yolo
from tfod.errors import DatasetError
from test_fuzz import FUZZ, _expect_records_or_named_error, fuzz_folder


def _pair(images: Path, labels: Path, stem: str, lines: list[str] | None,
          size=(160, 120)) -> Path:
    """An image of ``size`` and (unless ``lines`` is None) its label file."""
    images.mkdir(parents=True, exist_ok=True)
    image = images / f"{stem}.jpg"
    import zlib

    seed = zlib.crc32(str(images / stem).encode())  # every image its own bytes
    Image.new("RGB", size, (seed % 256, seed // 256 % 256, seed // 65536 % 256)).save(image)
    if lines is not None:
        labels.mkdir(parents=True, exist_ok=True)
        (labels / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
    return image


def _boxes(records) -> dict[str, list[tuple]]:
    return {r.image_path.name: [(b.name, round(b.xmin, 3), round(b.ymin, 3), round(b.xmax, 3),
                                 round(b.ymax, 3)) for b in r.boxes] for r in records}


def _coco128(root: Path, n: int = 6) -> Path:
    """coco128 as Ultralytics ships it: ``coco128.yaml`` (its ``path: ../datasets/coco128``
    is relative to where Ultralytics runs, not to the YAML), ``val:`` = ``train:``, names as
    an {id: name} mapping."""
    for i in range(n):
        _pair(root / "images" / "train2017", root / "labels" / "train2017", f"{i:012d}",
              [f"{i % 2} 0.5 0.5 0.25 0.5"] + (["1 0.25 0.25 0.1 0.1"] if i == 0 else []))
    (root / "coco128.yaml").write_text(
        "# COCO 2017 dataset, first 128 images\n"
        "path: ../datasets/coco128 # dataset root dir\n"
        "train: images/train2017 # train images (relative to 'path') 128 images\n"
        "val: images/train2017 # val images (relative to 'path') 128 images\n"
        "test: # test images (optional)\n"
        "names:\n  0: person\n  1: bicycle\n"
        "download: https://example.invalid/coco128.zip\n")
    return root / "coco128.yaml"


def test_coco128_from_the_folder_and_from_the_yaml_alike(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./datasets/coco128 does not exist here either
    yaml_path = _coco128(tmp_path / "coco128")
    by_yaml, by_folder = Report(), Report()
    records = read_yolo(yaml_path, by_yaml)
    assert _boxes(records) == _boxes(read_yolo(yaml_path.parent, by_folder))
    assert by_yaml.as_dict() == by_folder.as_dict()
    assert by_yaml.classes == ["person", "bicycle"]
    assert len(records) == 6 and all(r.split is None for r in records)  # val = train: read once
    assert _boxes(records)["000000000000.jpg"] == [("person", 60.0, 30.0, 100.0, 90.0),
                                                   ("bicycle", 32.0, 24.0, 48.0, 36.0)]
    notes = "\n".join(by_yaml.notes)
    assert "'path: ../datasets/coco128' of coco128.yaml not found" in notes
    assert "'val:' lists the same images as 'train:'" in notes
    assert not by_yaml.problems


def test_prepare_coco128_from_folder_and_yaml_writes_the_same_records(tmp_path, monkeypatch):
    """The issue's 'done when': both entry points prepare, and the records decode to the
    label files' boxes (checked through the OD API's decoder)."""
    import numpy as np

    from test_data import _decode_all

    monkeypatch.chdir(tmp_path)
    yaml_path = _coco128(tmp_path / "coco128")
    out = {}
    for name, source in (("f", yaml_path.parent), ("y", yaml_path)):
        result = prepare_dataset(source, name, fmt="yolo", out_root=tmp_path / "data",
                                 label_map_dir=tmp_path / "maps", plots=False, workers=1)
        manifest = result["manifest"]
        assert manifest["classes"] == ["person", "bicycle"]
        assert {s: v["images"] for s, v in manifest["splits"].items()} == {"train": 4, "val": 2}
        folder = tmp_path / "data" / name
        out[name] = sorted(
            (e["filename"].decode(), e["groundtruth_boxes"].round(4).tolist(),
             e["groundtruth_classes"].tolist())
            for split in manifest["splits"]
            for e in _decode_all(str(folder / manifest["splits"][split]["pattern"]),
                                 folder / "label_map.pbtxt"))
    assert out["f"] == out["y"]
    first = dict((f, (b, c)) for f, b, c in out["y"])["000000000000.jpg"]
    np.testing.assert_allclose(first[0], [[0.25, 0.375, 0.75, 0.625], [0.2, 0.2, 0.3, 0.3]])
    assert first[1] == [1, 2]


def test_roboflow_export_keeps_its_three_splits(tmp_path):
    """Roboflow writes ``train: ../train/images`` next to train/, valid/, test/: by
    Ultralytics' rule the ``../`` is dropped when the path does not exist."""
    for split, n in (("train", 4), ("valid", 2), ("test", 1)):
        for i in range(n):
            _pair(tmp_path / split / "images", tmp_path / split / "labels", f"{split}{i}",
                  [f"{i % 2} 0.5 0.5 0.5 0.5"])
    (tmp_path / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\n"
        "nc: 2\nnames: ['cat', 'dog']\n")
    report = Report()
    records = read_yolo(tmp_path, report)
    assert sorted((r.image_path.name, r.split) for r in records) == [
        ("test0.jpg", "test"), ("train0.jpg", "train"), ("train1.jpg", "train"),
        ("train2.jpg", "train"), ("train3.jpg", "train"), ("valid0.jpg", "val"),
        ("valid1.jpg", "val")]
    assert _boxes(records)["valid1.jpg"] == [("dog", 40.0, 30.0, 120.0, 90.0)]
    assert not report.problems


def test_txt_lists_folder_lists_absolute_path_negatives_and_orphans(tmp_path):
    root = tmp_path / "set"
    for i in range(3):
        _pair(root / "images" / "a", root / "labels" / "a", f"a{i}", ["0 0.5 0.5 0.2 0.2"])
    _pair(root / "images" / "b", root / "labels" / "b", "b0", ["0 0.5 0.5 0.2 0.2"])
    _pair(root / "images" / "b", root / "labels" / "b", "negative", None)  # no label file
    (root / "labels" / "b" / "gone.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # no image
    _pair(root / "images" / "v", root / "labels" / "v", "v0", ["0 0.5 0.5 0.2 0.2"])
    (root / "val.txt").write_text("./images/v/v0.jpg\n\nimages/a/a2.jpg\n")
    yaml_path = tmp_path / "elsewhere" / "mine.yaml"
    yaml_path.parent.mkdir()
    yaml_path.write_text(f"path: {root}\ntrain: [images/a, images/b]\nval: val.txt\n"
                         "names: [thing]\n")
    report = Report()
    records = read_yolo(yaml_path, report)
    assert sorted((r.image_path.name, r.split) for r in records) == [
        ("a0.jpg", "train"), ("a1.jpg", "train"), ("a2.jpg", "train"), ("b0.jpg", "train"),
        ("negative.jpg", "train"), ("v0.jpg", "val")]
    assert _boxes(records)["negative.jpg"] == []
    assert report.notes["image without a label file (a negative: no objects)"] == 1
    assert report.problems == {"label without image": 1, "image in two splits": 1}
    assert "gone.txt" in report.examples["label without image"][0]
    assert "listed in 'train:' and 'val:'; kept in 'train:'" in \
        report.examples["image in two splits"][0]


def test_names_mapping_with_gaps_and_nc(tmp_path):
    _pair(tmp_path / "images", tmp_path / "labels", "x",
          ["0 0.5 0.5 0.2 0.2", "2 0.5 0.5 0.4 0.4", "1 0.5 0.5 0.1 0.1"])
    (tmp_path / "data.yaml").write_text("train: images\nnames: {0: cat, 2: dog}\n")
    report = Report()
    (record,) = read_yolo(tmp_path, report)
    assert [b.name for b in record.boxes] == ["cat", "dog"]
    assert report.classes == ["cat", "dog"]
    assert "'names' in data.yaml has no class id 1" in "".join(report.notes)
    assert report.problems == {"unreadable annotation": 1}
    assert "data.yaml" not in report.examples["unreadable annotation"][0]
    assert "class 1 is not in 0, 2" in report.examples["unreadable annotation"][0]
    (tmp_path / "data.yaml").write_text("train: images\nnc: 3\n")
    report = Report()
    (record,) = read_yolo(tmp_path, report)
    assert [b.name for b in record.boxes] == ["class_0", "class_2", "class_1"]


def test_path_resolution_and_its_errors(tmp_path, monkeypatch):
    data_root = tmp_path / "datasets" / "mine"
    _pair(data_root / "images", data_root / "labels", "p", ["0 0.5 0.5 0.2 0.2"])
    yaml_path = tmp_path / "cfg" / "mine.yaml"
    yaml_path.parent.mkdir()
    yaml_path.write_text("path: mine\ntrain: images\nnames: [a]\n")
    monkeypatch.chdir(tmp_path)  # Ultralytics' default datasets folder: ./datasets
    report = Report()
    assert [r.image_path for r in read_yolo(yaml_path, report)] == \
        [Path("datasets/mine/images/p.jpg").absolute()]
    assert f"taken as {tmp_path / 'datasets' / 'mine'}" in "".join(report.notes)
    yaml_path.write_text("path: ../datasets/mine\ntrain: images\nnames: [a]\n")  # from the YAML
    assert len(read_yolo(yaml_path)) == 1
    yaml_path.write_text("path: nowhere\ntrain: images\nnames: [a]\n")
    with pytest.raises(DatasetError, match=r"mine.yaml: 'path: nowhere' not found \(tried "):
        read_yolo(yaml_path)
    yaml_path.write_text(f"path: {data_root}\ntrain: imgs\nnames: [a]\n")
    with pytest.raises(DatasetError, match=r"'train: imgs' not found .*; correct 'train:'"):
        read_yolo(yaml_path)
    yaml_path.write_text(f"path: {data_root}\nval: images\nnames: [a]\n")
    with pytest.raises(DatasetError, match=r"no training images"):
        read_yolo(yaml_path)
    yaml_path.write_text("names: [a]\n")
    with pytest.raises(DatasetError, match=r"no 'train:' images in the YAML"):
        read_yolo(yaml_path)


def test_which_yaml_of_a_folder(tmp_path):
    _pair(tmp_path / "images", tmp_path / "labels", "q", ["0 0.5 0.5 0.2 0.2"])
    (tmp_path / "one.yaml").write_text("train: images\nnames: [one]\n")
    (tmp_path / "two.yaml").write_text("train: images\nnames: [two]\n")
    with pytest.raises(DatasetError, match=r"2 YAML files and none named data.yaml"):
        read_yolo(tmp_path)
    (tmp_path / f"{tmp_path.name}.yaml").write_text("train: images\nnames: [named]\n")
    report = Report()
    read_yolo(tmp_path, report)
    assert report.classes == ["named"]
    (tmp_path / "data.yaml").write_text("train: images\nnames: [data]\n")
    read_yolo(tmp_path, report)
    assert report.classes == ["data"]


def test_label_path_is_ultralytics_pairing():
    assert _label_path(Path("/d/images/train/images/a.b.jpg")) == \
        Path("/d/images/train/labels/a.b.txt")
    assert _label_path(Path("/d/pics/a.png")) == Path("/d/pics/a.txt")
    assert _label_path(Path("/images/a.jpg")) == Path("/labels/a.txt")


def test_listed_images_outside_the_dataset_are_refused(tmp_path):
    """A ``.txt`` list naming ``../`` paths, an absolute path or a symlink leading out: none of
    those images is read (checked in the written records' bytes)."""
    secret = tmp_path / "private" / "images" / "secret.jpg"
    Image.new("RGB", (40, 30), (1, 2, 250)).save(secret.parent.mkdir(parents=True) or secret)
    (tmp_path / "private" / "labels").mkdir()
    (tmp_path / "private" / "labels" / "secret.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    root = tmp_path / "set"
    _pair(root / "images", root / "labels", "ok", ["0 0.5 0.5 0.2 0.2"])
    _pair(root / "images", root / "labels", "ok2", ["0 0.5 0.5 0.2 0.2"])
    (root / "images" / "link.jpg").symlink_to(secret)
    (root / "train.txt").write_text(f"./images/ok.jpg\n./images/ok2.jpg\n../private/images/"
                                    f"secret.jpg\n{secret}\n./images/link.jpg\n")
    (root / "data.yaml").write_text("train: train.txt\nnames: [a]\n")
    report = Report()
    records = read_yolo(root, report)
    assert sorted(r.image_path.name for r in records) == ["ok.jpg", "ok2.jpg"]
    assert report.problems == {"image path outside the dataset": 3}
    prepare_dataset(root, "h", fmt="yolo", out_root=tmp_path / "data",
                    label_map_dir=tmp_path / "maps", plots=False, workers=1)
    written = b"".join(p.read_bytes() for p in (tmp_path / "data" / "h").glob("*.tfrecord"))
    assert secret.read_bytes() not in written and b"ok.jpg" in written


@FUZZ
@given(yaml_text=st.one_of(
    st.text(max_size=80),
    st.fixed_dictionaries({
        "path": st.one_of(st.none(), st.sampled_from(["", ".", "..", "/", "nope", "../x", 3,
                                                      "images"])),
        "train": st.one_of(st.none(), st.sampled_from(["images", "../images", "list.txt",
                                                       "images/a.jpg", "/etc", "", 7]),
                           st.lists(st.sampled_from(["images", "x", "list.txt"]), max_size=3)),
        "val": st.one_of(st.none(), st.sampled_from(["images", "list.txt", "nope"])),
        "names": st.one_of(st.none(), st.lists(st.text(max_size=4), max_size=3),
                           st.dictionaries(st.integers(-2, 4), st.text(max_size=3),
                                           max_size=3), st.text(max_size=5)),
        "nc": st.one_of(st.none(), st.integers(-1, 4), st.text(max_size=2)),
    }).map(lambda d: json.dumps({k: v for k, v in d.items() if v is not None}))),
    listing=st.text(max_size=60), label=st.text(max_size=40))
def test_fuzz_dataset_yaml(yaml_text, listing, label):
    """Random dataset YAMLs (JSON is YAML), image lists and label lines: records, or an
    error naming the YAML or the folder."""
    with fuzz_folder() as folder:
        _pair(folder / "images", folder / "labels", "a", None)
        (folder / "labels").mkdir()
        (folder / "labels" / "a.txt").write_text(label, errors="surrogateescape")
        (folder / "list.txt").write_text(listing, errors="surrogateescape")
        (folder / "data.yaml").write_text(yaml_text, errors="surrogateescape")
        _expect_records_or_named_error(read_yolo, folder / "data.yaml", folder)
