"""tfod.data.labelme: folders of LabelMe JSON files made here as LabelMe writes them
(rectangles with corners in any order, polygons, the other shape types, Windows
``..\\images\\a.jpg`` paths, pictures embedded in ``imageData``), prepared into TFRecords
that decode (OD API decoder) to the files' boxes; image paths that leave the folder
refused; fuzzed files end in records or an error naming the file."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tfod.data.annotations import Report
from tfod.data.labelme import read_labelme
from tfod.data.prepare import prepare_dataset
from tfod.errors import DatasetError
from test_fuzz import FUZZ, _expect_records_or_named_error, fuzz_folder

SIZE = (80, 60)


def _image(path: Path, colour: int, size=SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (colour, 255 - colour, (colour * 7) % 256)).save(path, quality=95)
    return path


def _jpeg(colour: int, size=SIZE) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (colour, 40, 200)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _shape(label, points, kind="rectangle", **extra) -> dict:
    return {"label": label, "points": [list(p) for p in points], "group_id": None,
            "description": "", "shape_type": kind, "flags": {}, "mask": None, **extra}


def _labelme(path: Path, image_path: str, shapes: list[dict], size=SIZE,
             image_data: str | None = None) -> Path:
    """A LabelMe 5.x file as the tool saves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "version": "5.4.1", "flags": {"blurry": False}, "shapes": shapes,
        "imagePath": image_path, "imageData": image_data,
        "imageHeight": size[1], "imageWidth": size[0]}, indent=2))
    return path


POLYGON = _shape("ant", [(30.5, 10), (50, 4.25), (62, 20), (41, 33.75)], "polygon")
OTHERS = [_shape("ant", [(20, 20), (25, 20)], "circle"), _shape("ant", [(1, 1), (9, 9)], "line"),
          _shape("ant", [(5, 5)], "point"), _shape("ant", [(1, 1), (5, 9), (9, 2)], "linestrip")]


def _folder(root: Path) -> Path:
    """LabelMe's usual layouts side by side: JSON beside its image; JSON in json/ naming
    ``..\\images\\b.jpg`` (saved on Windows); an image only inside ``imageData``; a JSON
    that is not LabelMe's."""
    _image(root / "a.jpg", 10)
    _labelme(root / "a.json", "a.jpg", [
        _shape("zebra", [(40, 30), (4, 5)]),  # corners in reverse order
        _shape("ant", [(50, 55), (70, 10)])])  # the other diagonal
    _image(root / "images" / "b.jpg", 60)
    _labelme(root / "json" / "b.json", "..\\images\\b.jpg",
             [_shape("ant", [(1.5, 2.25), (20.75, 12)]), POLYGON] + OTHERS)
    embedded = base64.b64encode(_jpeg(110)).decode()
    _labelme(root / "c.json", "gone/c.jpg", [_shape("zebra", [(10, 10), (70, 50)])],
             image_data=embedded)
    (root / "classes.json").write_text(json.dumps({"names": ["ant", "zebra"]}))
    return root


EXPECTED = {"a.jpg": [("zebra", 4, 5, 40, 30), ("ant", 50, 10, 70, 55)],
            "b.jpg": [("ant", 1.5, 2.25, 20.75, 12)], "c.jpg": [("zebra", 10, 10, 70, 50)]}
POLYGON_BOX = ("ant", 30.5, 4.25, 62.0, 33.75)
LEFT_OUT = {"circle left out (not a box)": 1, "line left out (not a box)": 1,
            "point left out (not a box)": 1, "linestrip left out (not a box)": 1}


def _prepare(source, tmp_path, name="l", **kwargs) -> dict:
    return prepare_dataset(source, name, fmt="labelme", out_root=tmp_path / "data",
                           label_map_dir=tmp_path / "maps", plots=False, workers=1,
                           split={"train": 0.5, "val": 0.5}, **kwargs)


def test_folder_prepares_into_records_of_its_boxes(tmp_path):
    from test_cvat import _decoded

    root = _folder(tmp_path / "lm")
    result = _prepare(root, tmp_path)
    assert result["manifest"]["classes"] == ["ant", "zebra"]  # sorted: LabelMe declares none
    assert _decoded(result) == EXPECTED
    report = result["report"]
    assert report["problems"] == {"polygon left out": 1, **LEFT_OUT}
    (example,) = report["examples"]["polygon left out"]
    assert example.startswith(f"{root / 'json' / 'b.json'} shapes[1]: polygon of 'ant'")
    assert "--polygons-as-boxes" in example
    assert report["notes"] == {"JSON file without LabelMe 'shapes', skipped: classes.json": 1}


def test_paths_sizes_and_embedded_images(tmp_path):
    root = _folder(tmp_path / "lm")
    report = Report()
    records = {r.source: r for r in read_labelme(root, report)}
    assert report.classes is None
    assert records[str(root / "a.json")].image_path == root / "a.jpg"
    # the Windows path, taken relative to the JSON's folder
    assert records[str(root / "json" / "b.json")].image_path.resolve() == \
        (root / "images" / "b.jpg").resolve()
    embedded = records[str(root / "c.json")].image_path
    assert embedded.name == "c.jpg" and embedded.read_bytes() == _jpeg(110)
    assert not embedded.is_relative_to(root)
    assert all((r.width, r.height) == SIZE for r in records.values())
    # a file on disk wins over imageData; a wrong imageHeight is the checks' finding
    _image(root / "gone" / "c.jpg", 111)
    _labelme(root / "a.json", "a.jpg", [_shape("zebra", [(4, 5), (40, 30)])], size=(80, 61))
    report = Report()
    records = {r.source: r for r in read_labelme(root, report)}
    assert records[str(root / "c.json")].image_path == root / "gone" / "c.jpg"
    from tfod.data.checks import check_records

    check_records(list(records.values()), report, workers=1)
    assert report.problems == {"annotation size differs from the image": 1, "polygon left out": 1,
                               **LEFT_OUT}
    assert "a.json: annotation says 80x61, a.jpg is 80x60" in \
        report.examples["annotation size differs from the image"][0]
    # one file as the source; image_dir for pictures kept elsewhere
    (record,) = read_labelme(root / "json" / "b.json", Report())
    assert record.image_path.resolve() == (root / "images" / "b.jpg").resolve()
    _labelme(tmp_path / "solo" / "b.json", "C:\\Users\\ann\\Pictures\\b.jpg", [])
    (record,) = read_labelme(tmp_path / "solo", Report(), image_dir=root / "images")
    assert record.image_path == root / "images" / "b.jpg"  # found by its name


def test_polygons_as_boxes_use_the_polygon_bounds(tmp_path):
    from test_cvat import _decoded

    root = _folder(tmp_path / "lm")
    result = _prepare(root, tmp_path, polygons_as_boxes=True)
    assert _decoded(result) == {**EXPECTED, "b.jpg": EXPECTED["b.jpg"] + [POLYGON_BOX]}
    assert result["report"]["problems"] == LEFT_OUT
    assert result["report"]["notes"]["polygon used as its bounding box (--polygons-as-boxes)"] \
        == 1


def test_broken_files_are_counted_by_name(tmp_path):
    root = tmp_path / "lm"
    _image(root / "ok.jpg", 5)
    _labelme(root / "ok.json", "ok.jpg", [
        _shape("ant", [(1, 1), (9, 9)]), _shape("", [(1, 1), (9, 9)]),
        _shape("ant", [(1, 1)]), _shape("ant", [(1, "nan"), (9, 9)]),
        _shape("ant", [[1, 2, 3], (9, 9)]), _shape("ant", [(True, 1), (9, 9)]),
        {"label": "ant", "points": [[1, 1], [9, 9]]},  # no shape_type: a polygon
        "not a shape", _shape("ant", [(1, 1), (9, 9)], kind=7)])
    _labelme(root / "base64.json", "nothing.jpg", [], image_data="aGVsbG8=!")  # "hello" and a stray "!"
    _labelme(root / "text.json", "nothing.jpg", [], image_data=base64.b64encode(
        b"hello").decode())
    _labelme(root / "size.json", "ok.jpg", [], size=("wide", 2))
    _labelme(root / "none.json", "", [])
    (root / "truncated.json").write_text('{"shapes": [')
    (root / "shapes.json").write_text('{"shapes": {}}')
    report = Report()
    (record,) = read_labelme(root, report)
    assert [(b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes] == [(1, 1, 9, 9)]
    assert report.problems == {"unreadable annotation": 13, "polygon left out": 1}
    examples = report.examples["unreadable annotation"]
    expect = {"base64.json": "imageData is not valid base64",
              "text.json": "imageData is not an image",
              "size.json": "imageWidth/imageHeight", "truncated.json": "cannot read JSON",
              "shapes.json": "'shapes' is not a list",
              "none.json": "no imagePath and no imageData",
              "ok.json shapes[1]": "label '' is not a name",
              "ok.json shapes[2]": "rectangle with 1 point",
              "ok.json shapes[3]": "y is 'nan', not a finite number",
              "ok.json shapes[4]": "point [1, 2, 3] is not [x, y]",
              "ok.json shapes[5]": "point [True, 1] is not two numbers",
              "ok.json shapes[7]": "shape 'not a shape' is not an object",
              "ok.json shapes[8]": "shape_type 7 is not a name"}
    for where, what in expect.items():
        assert any(e.startswith(f"{root / where}") and what in e for e in examples), where
    assert report.examples["polygon left out"][0].startswith(f"{root / 'ok.json'} shapes[6]")
    # a folder of JSON that is not LabelMe's at all: said at once
    other = tmp_path / "coco"
    other.mkdir()
    (other / "instances.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match="no LabelMe files: 1 JSON files without 'shapes' "
                                           r"\(instances.json\).*--format"):
        read_labelme(other)
    with pytest.raises(DatasetError, match="lm/gone: LabelMe folder not found"):
        read_labelme(tmp_path / "lm" / "gone")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no .json files found"):
        read_labelme(tmp_path / "empty")


def test_truncated_embedded_image_is_reported_by_its_json(tmp_path):
    """A JPEG whose header is whole but whose data is cut passes the reader's header
    check; the checks find it and count it (this part holds); their message should name
    the JSON file that carries it."""
    import random

    from tfod.data.checks import check_records

    noise = Image.frombytes("RGB", (200, 150), random.Random(0).randbytes(200 * 150 * 3))
    buf = io.BytesIO()
    noise.save(buf, format="JPEG")
    cut = buf.getvalue()[: len(buf.getvalue()) // 2]
    _labelme(tmp_path / "a.json", "a.jpg", [], image_data=base64.b64encode(cut).decode())
    report = Report()
    assert check_records(read_labelme(tmp_path, report), report, workers=1) == []
    assert report.problems == {"unreadable image": 1}
    assert str(tmp_path / "a.json") in report.examples["unreadable image"][0]


def test_subfolders_named_by_split_keep_it(tmp_path):
    for split, colour in (("train", 1), ("val", 2)):
        _image(tmp_path / split / f"{split}.jpg", colour)
        _labelme(tmp_path / split / f"{split}.json", f"{split}.jpg",
                 [_shape("ant", [(1, 1), (9, 9)])])
    assert sorted(r.split for r in read_labelme(tmp_path, Report())) == ["train", "val"]


def _secret(path: Path) -> bytes:
    return _image(path, 33, size=(50, 40)).read_bytes()


def test_image_paths_leaving_the_folder_are_refused(tmp_path):
    """``../../outside.jpg``, an absolute path, a symlinked image and a symlinked JSON
    leading out are each refused (the files exist: checked against the filesystem), also
    when imageData is there; allow_outside reads them."""
    outside = tmp_path / "outside.jpg"
    secret = _secret(outside)
    root = tmp_path / "sets" / "lm"
    _image(root / "ok.jpg", 70)
    _labelme(root / "ok.json", "ok.jpg", [_shape("ant", [(1, 1), (9, 9)])])
    escape = "..\\..\\outside.jpg"
    assert (root / escape.replace("\\", "/")).resolve() == outside.resolve()
    _labelme(root / "dots.json", escape, [_shape("ant", [(1, 1), (9, 9)])],
             image_data=base64.b64encode(_jpeg(5)).decode())
    _labelme(root / "abs.json", str(outside), [_shape("ant", [(1, 1), (9, 9)])])
    os.symlink(outside, root / "link.jpg")
    _labelme(root / "link.json", "link.jpg", [_shape("ant", [(1, 1), (9, 9)])])
    private = tmp_path / "private"
    _labelme(private / "notes.json", "ok.jpg", [_shape("private-class", [(1, 1), (9, 9)])])
    os.symlink(private / "notes.json", root / "notes.json")
    report = Report()
    records = read_labelme(root, report)
    assert [r.source for r in records] == [str(root / "ok.json")]
    assert report.problems == {"image path outside the dataset": 4}
    text = "\n".join(report.examples["image path outside the dataset"])
    assert "through a symlink" in text and "--allow-outside-paths" in text
    assert "private-class" not in text
    allowed = read_labelme(root, Report(), allow_outside=True)
    assert sorted(str(r.image_path.resolve()) for r in allowed) == sorted(
        [str(outside.resolve())] * 3 + [str((root / "ok.jpg").resolve())] * 2)
    result = _prepare(root, tmp_path)
    assert result["report"]["problems"] == {"image path outside the dataset": 4}
    written = b"".join(p.read_bytes() for p in Path(result["dir"]).rglob("*") if p.is_file())
    assert secret not in written and b"private-class" not in written


# --------------------------------------------------------------------------- #
# Fuzz: records, or an error naming the file
# --------------------------------------------------------------------------- #
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4), max_leaves=12)
coordinate = st.one_of(st.floats(), st.integers(-2**70, 2**70), st.text(max_size=4),
                       st.none(), st.booleans())
shapes = st.lists(st.one_of(json_values, st.fixed_dictionaries(
    {"label": st.one_of(st.sampled_from(["ant", "", " "]), json_values),
     "points": st.one_of(st.lists(st.lists(coordinate, min_size=0, max_size=3), max_size=5),
                         json_values)},
    optional={"shape_type": st.one_of(st.sampled_from(
        ["rectangle", "polygon", "circle", "line", "point", "linestrip", "mask", ""]),
        json_values)})), max_size=4)
good_jpeg = base64.b64encode(_jpeg(9, size=(12, 10))).decode()
image_data = st.one_of(st.none(), json_values, st.sampled_from([good_jpeg, good_jpeg[:40], "=="]),
                       st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()))
image_path = st.one_of(st.sampled_from(["a.jpg", "..\\a.jpg", "../../../etc/hostname",
                                        "/etc/hostname", "", ".", "sub\\", "\x00"]),
                       json_values)


VALID = {"version": "5.4.1", "flags": {}, "imagePath": "a.jpg", "imageData": None,
         "imageHeight": 10, "imageWidth": 12,
         "shapes": [_shape("ant", [(1, 1), (9, 8)]), _shape("bee", [(2, 3), (4, 1), (5, 5)],
                                                            "polygon")]}
fields = {"shapes": st.one_of(shapes, json_values), "imagePath": image_path,
          "imageData": image_data, "imageWidth": json_values, "imageHeight": json_values,
          "version": json_values}


@FUZZ
@given(changed=st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({k: fields[k] for k in keys})),
    dropped=st.sets(st.sampled_from(sorted(VALID)), max_size=2),
    whole=st.one_of(st.none(), json_values), as_boxes=st.booleans())
def test_fuzz_documents(changed, dropped, whole, as_boxes):
    """A valid file with up to three fields replaced and two left out, or any JSON value."""
    with fuzz_folder() as folder:
        doc = {k: v for k, v in {**VALID, **changed}.items() if k not in dropped}
        _image(folder / "a.jpg", 1, size=(12, 10))
        (folder / "sub").mkdir()
        (folder / "sub" / "a.json").write_text(json.dumps(doc if whole is None else whole))
        _expect_records_or_named_error(
            lambda target, report: read_labelme(target, report, polygons_as_boxes=as_boxes),
            folder, folder)


@FUZZ
@given(shapes=st.lists(st.fixed_dictionaries(
    {"label": st.one_of(st.just("ant"), json_values),
     "shape_type": st.sampled_from(["rectangle", "polygon"]),
     "points": st.one_of(st.lists(st.one_of(st.lists(coordinate, min_size=2, max_size=2),
                                            json_values), max_size=4), json_values)}),
    min_size=1, max_size=3), as_boxes=st.booleans())
def test_fuzz_shapes(shapes, as_boxes):
    """A valid file whose rectangles and polygons carry any labels and points."""
    with fuzz_folder() as folder:
        _image(folder / "a.jpg", 1, size=(12, 10))
        (folder / "a.json").write_text(json.dumps({**VALID, "shapes": shapes}))
        _expect_records_or_named_error(
            lambda target, report: read_labelme(target, report, polygons_as_boxes=as_boxes),
            folder, folder)


@FUZZ
@given(raw=st.one_of(st.just(b""), st.binary(max_size=300)), cut=st.integers(0, 400))
def test_fuzz_bytes(raw, cut):
    with fuzz_folder() as folder:
        _image(folder / "a.jpg", 1, size=(12, 10))
        valid = json.dumps({"shapes": [_shape("ant", [(1, 1), (9, 9)]), POLYGON],
                            "imagePath": "a.jpg", "imageData": None, "imageWidth": 12,
                            "imageHeight": 10}).encode()
        (folder / "a.json").write_bytes(valid[:cut] + raw)
        _expect_records_or_named_error(read_labelme, folder, folder)
