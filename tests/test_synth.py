"""tfod.synth: VOC layout, valid tight boxes, determinism, safe writing, argument errors."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from lxml import etree
from PIL import Image

from tfod.data import synth
from tfod.errors import DatasetError

CLASSES = ("circle", "square", "triangle")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _objects(xml_path: Path) -> list[tuple[str, tuple[int, int, int, int]]]:
    root = etree.parse(str(xml_path)).getroot()
    return [(obj.findtext("name"),
             tuple(int(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")))
            for obj in root.iter("object")]


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "voc"
    return out, synth.synthesize(out)


def test_layout_and_counts(default_set):
    out, summary = default_set
    train = (out / "ImageSets/Main/train.txt").read_text().split()
    val = (out / "ImageSets/Main/val.txt").read_text().split()
    assert (len(train), len(val)) == (300, 60)
    assert not set(train) & set(val)
    assert train[0] == "synth_000000" and val[-1] == "synth_000359"
    assert sorted(p.stem for p in (out / "JPEGImages").glob("*.jpg")) == sorted(train + val)
    assert sorted(p.stem for p in (out / "Annotations").glob("*.xml")) == sorted(train + val)
    assert summary["out_dir"] == str(out)
    assert (summary["train"], summary["val"], summary["image_size"]) == (300, 60, 160)
    assert list(summary["objects"]) == list(CLASSES)
    # no temporary siblings are left next to the dataset
    assert [p.name for p in out.parent.iterdir()] == ["voc"]


def test_xml_is_voc_and_boxes_are_inside(default_set):
    out, summary = default_set
    counted = Counter()
    for xml_path in sorted((out / "Annotations").glob("*.xml")):
        root = etree.parse(str(xml_path)).getroot()
        assert root.tag == "annotation"
        assert root.findtext("filename") == f"{xml_path.stem}.jpg"
        size = tuple(int(root.findtext(f"size/{tag}")) for tag in ("width", "height", "depth"))
        assert size == (160, 160, 3)
        objects = root.findall("object")
        assert 1 <= len(objects) <= 3
        for obj in objects:
            assert obj.findtext("pose") and obj.findtext("truncated") == "0"
            assert obj.findtext("difficult") == "0"
        for name, (xmin, ymin, xmax, ymax) in _objects(xml_path):
            assert name in CLASSES
            # 1-based inclusive, non-empty, inside the image, within the size range
            assert 1 <= xmin < xmax <= 160 and 1 <= ymin < ymax <= 160
            extent = max(xmax - xmin + 1, ymax - ymin + 1)
            assert 0.12 * 160 <= extent <= 0.48 * 160
            counted[name] += 1
    assert dict(counted) == summary["objects"]


def test_images_are_rgb_jpegs(default_set):
    out, _ = default_set
    for path in sorted((out / "JPEGImages").glob("*.jpg"))[:20]:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (160, 160))
            # textured background: far from a flat colour
            assert np.asarray(image, dtype=np.float32).std(axis=(0, 1)).max() > 10


def test_every_class_in_both_splits(default_set):
    out, _ = default_set
    for split in ("train", "val"):
        ids = (out / f"ImageSets/Main/{split}.txt").read_text().split()
        names = {name for i in ids for name, _ in _objects(out / "Annotations" / f"{i}.xml")}
        assert names == set(CLASSES), split


def test_boxes_overlap_little(default_set):
    out, _ = default_set
    for xml_path in sorted((out / "Annotations").glob("*.xml")):
        boxes = [box for _, box in _objects(xml_path)]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                # the placement estimate is checked at <= 0.3; pixel boxes may differ by ~1 px
                assert synth._iou(a, b) <= 0.4, xml_path.name


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kwargs = dict(num_train=6, num_val=3, image_size=96, seed=7)
    synth.synthesize(tmp_path / "a", **kwargs)
    synth.synthesize(tmp_path / "b", **kwargs)
    synth.synthesize(tmp_path / "c", **{**kwargs, "seed": 8})
    a, b, c = (_digest(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    images = [key for key in a if key.endswith(".jpg")]
    assert all(a[key] != c[key] for key in images)


@pytest.mark.parametrize("name", sorted(synth.SHAPES))
def test_box_encloses_the_drawn_shape_tightly(name):
    for i in range(10):
        rng = np.random.default_rng((3, i))
        pixels, objects = synth._render_image(rng, 128, [name], 3, name)
        assert pixels.shape == (128, 128, 3) and pixels.dtype == np.uint8
        assert objects and all(obj.name == name for obj in objects)
        occupied = np.zeros((128, 128), dtype=bool)
        shapes = np.any([obj.mask > 0 for obj in objects], axis=0)
        for obj in objects:
            x0, y0, x1, y1 = obj.box
            touched = obj.mask > 0
            inside = np.zeros_like(touched)
            inside[y0:y1 + 1, x0:x1 + 1] = True
            assert not (touched & ~inside).any()  # nothing outside the box
            # tight: the shape reaches all four sides of its box
            assert touched[y0, :].any() and touched[y1, :].any()
            assert touched[:, x0].any() and touched[:, x1].any()
            assert not (touched & occupied).any()  # shapes never cover each other
            occupied |= touched
            # the shape's colour stands out from the pixels just outside its box
            core = obj.mask >= 0.999
            ring = np.zeros_like(touched)
            ring[max(y0 - 2, 0):y1 + 3, max(x0 - 2, 0):x1 + 3] = True
            ring &= ~inside & ~shapes
            shape_colour = pixels[core].astype(float).mean(axis=0)
            assert np.linalg.norm(shape_colour - np.array(obj.colour)) < 30
            if ring.sum() >= 10:
                ring_colour = pixels[ring].astype(float).mean(axis=0)
                assert np.linalg.norm(shape_colour - ring_colour) > 40


def test_written_files_match_the_renderer(tmp_path):
    summary = synth.synthesize(tmp_path / "voc", num_train=4, num_val=2, image_size=96, seed=5)
    for i in range(6):
        first = CLASSES[(i if i < 4 else i - 4) % len(CLASSES)]
        pixels, objects = synth._render_image(np.random.default_rng((5, i)), 96, CLASSES, 3, first)
        written = _objects(tmp_path / "voc" / "Annotations" / f"synth_{i:06d}.xml")
        assert written == [(obj.name, obj.voc_box()) for obj in objects]
        jpeg = np.asarray(Image.open(tmp_path / "voc" / "JPEGImages" / f"synth_{i:06d}.jpg"))
        assert np.abs(jpeg.astype(float) - pixels).mean() < 8  # only JPEG loss
    assert sum(summary["objects"].values()) >= 6


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "voc"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        synth.synthesize(out, num_train=2, num_val=1, image_size=64)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(DatasetError, match="not written by tfod"):  # not synth's folder
        synth.synthesize(out, num_train=2, num_val=1, image_size=64, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    synth.synthesize(out, num_train=1, num_val=1, image_size=64)
    summary = synth.synthesize(out, num_train=2, num_val=1, image_size=64, overwrite=True)
    assert summary["train"] == 2 and len(list((out / "JPEGImages").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voc"]


def test_empty_existing_folder_is_used(tmp_path):
    out = tmp_path / "voc"
    out.mkdir()
    synth.synthesize(out, num_train=1, num_val=1, image_size=64)
    assert (out / "ImageSets/Main/val.txt").read_text() == "synth_000001\n"


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    real, calls = synth._render_image, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "_render_image", failing)
    with pytest.raises(KeyboardInterrupt):
        synth.synthesize(tmp_path / "voc", num_train=5, num_val=1, image_size=64)
    assert list(tmp_path.iterdir()) == []


def test_unknown_class_lists_supported():
    with pytest.raises(DatasetError, match="unknown shape class 'hexagon'") as info:
        synth.synthesize("/nonexistent/never-written", classes=("circle", "hexagon"))
    assert info.value.where == "classes"
    for name in CLASSES:
        assert name in info.value.fix
    assert not Path("/nonexistent/never-written").exists()


@pytest.mark.parametrize("kwargs, where", [
    (dict(num_train=-1), "num_train"),
    (dict(num_train=0, num_val=0), "num_train"),
    (dict(image_size=16), "image_size"),
    (dict(max_objects=0), "max_objects"),
    (dict(classes=()), "classes"),
    (dict(classes="circle"), "classes"),
    (dict(classes=("circle", "circle")), "classes"),
])
def test_bad_arguments(tmp_path, kwargs, where):
    with pytest.raises(DatasetError) as info:
        synth.synthesize(tmp_path / "voc", **kwargs)
    assert info.value.where == where
    assert not (tmp_path / "voc").exists()


def test_other_shapes_and_more_objects(tmp_path):
    summary = synth.synthesize(tmp_path / "voc", num_train=8, num_val=2, image_size=200,
                               classes=("star", "cross"), max_objects=6, seed=1)
    assert set(summary["objects"]) == {"star", "cross"}
    assert all(count > 0 for count in summary["objects"].values())
    most = max(len(_objects(p)) for p in (tmp_path / "voc" / "Annotations").glob("*.xml"))
    assert 1 <= most <= 6
