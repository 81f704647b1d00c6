"""tfod.data.cvat: "CVAT for images 1.1" exports (a task's, a project's with subsets) made
here as CVAT writes them, prepared into TFRecords that decode (OD API decoder) to the
XML's boxes; polygons left out or used as boxes, every other shape counted; image paths
that leave the export refused; XML entities refused; fuzzed files end in records or an
error naming the file."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tfod.data.annotations import Report
from tfod.data.cvat import read_cvat
from tfod.data.prepare import prepare_dataset
from tfod.errors import DatasetError
from test_fuzz import FUZZ, _expect_records_or_named_error, fuzz_folder

SIZE = (80, 60)
LABELS = ("zebra", "ant", "unused")  # declared order, not sorted: the label map keeps it


def _image(path: Path, colour: int, size=SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (colour, 255 - colour, (colour * 7) % 256)).save(path, quality=95)
    return path


def _box(label, xtl, ytl, xbr, ybr, occluded=0, extra=""):
    return (f'<box label="{label}" source="manual" occluded="{occluded}" xtl="{xtl:.2f}" '
            f'ytl="{ytl:.2f}" xbr="{xbr:.2f}" ybr="{ybr:.2f}" z_order="0"{extra}>'
            '<attribute name="colour">grey</attribute></box>')


def _labels(names=LABELS) -> str:
    """The labels, then a skeleton "body" whose point "1" (its <parent>) is no class."""
    return "<labels>" + "".join(
        f"<label><name>{n}</name><color>#33ddff</color><type>any</type><attributes>"
        "</attributes></label>" for n in names) + (
        "<label><name>body</name><type>skeleton</type><attributes/><svg>&lt;circle/&gt;</svg>"
        "</label><label><name>1</name><type>points</type><attributes/><parent>body</parent>"
        "</label></labels>")


def _xml(images: list[str], meta: str | None = None, head: str = "") -> str:
    """annotations.xml as CVAT 2.x writes it for a task (``meta``: the <meta> content)."""
    meta = meta if meta is not None else (
        "<task><id>7</id><name>animals</name><size>4</size><mode>annotation</mode>"
        f"<overlap>0</overlap><subset>default</subset>{_labels()}</task>")
    return (f'<?xml version="1.0" encoding="utf-8"?>\n{head}<annotations>\n  <version>1.1'
            f'</version>\n  <meta>{meta}<dumped>2024-05-01</dumped></meta>\n'
            + "\n".join(images) + "\n</annotations>\n")


def _img(i: int, name: str, shapes: str, size=SIZE, attrs: str = "") -> str:
    return (f'  <image id="{i}" name="{name}"{attrs} width="{size[0]}" height="{size[1]}">'
            f"\n    {shapes}\n  </image>")


OTHER_SHAPES = (  # one of each shape tfod does not read, as CVAT writes them
    '<polyline label="ant" source="manual" occluded="0" points="1.00,2.00;30.00,40.00" '
    'z_order="0"/>'
    '<points label="ant" source="manual" occluded="0" points="5.00,5.00" z_order="0"/>'
    '<cuboid label="ant" source="manual" occluded="0" xtl1="1" ytl1="1" xbl1="1" ybl1="9" '
    'xtr1="9" ytr1="1" xbr1="9" ybr1="9" xtl2="2" ytl2="2" xbl2="2" ybl2="8" xtr2="8" '
    'ytr2="2" xbr2="8" ybr2="8" z_order="0"/>'
    '<mask label="ant" source="manual" occluded="0" rle="3, 5, 7" left="2" top="3" width="5" '
    'height="3" z_order="0"/>'
    '<ellipse label="ant" source="manual" occluded="0" cx="20" cy="20" rx="5" ry="4" '
    'z_order="0"/>'
    '<skeleton label="ant" source="manual" z_order="0"><points label="1" outside="0" '
    'occluded="0" points="3,3"/></skeleton>'
    '<tag label="zebra" source="manual"/>')
POLYGON = ('<polygon label="ant" source="manual" occluded="1" '
           'points="30.50,10.00;50.00,4.25;62.00,20.00;41.00,33.75" z_order="0"/>')


def _task_export(root: Path) -> Path:
    """A task's export zip, unzipped: annotations.xml + images/ (one in a sub-folder)."""
    _image(root / "images" / "a.jpg", 10)
    _image(root / "images" / "b.jpg", 60)
    _image(root / "images" / "sub" / "c.jpg", 110)
    _image(root / "images" / "d.jpg", 160)
    (root / "annotations.xml").write_text(_xml([
        _img(0, "a.jpg", _box("zebra", 4, 5, 40, 30) + _box("ant", 50, 10, 70, 55, occluded=1)),
        _img(1, "b.jpg", _box("ant", 1.5, 2.25, 20.75, 12) + POLYGON),
        _img(2, "sub/c.jpg", _box("zebra", 10, 10, 70, 50) + OTHER_SHAPES),
        _img(3, "d.jpg", ""),  # a negative
    ]))
    return root


#: the task export's boxes in pixels, by image (polygon not included)
EXPECTED = {"a.jpg": [("zebra", 4, 5, 40, 30), ("ant", 50, 10, 70, 55)],
            "b.jpg": [("ant", 1.5, 2.25, 20.75, 12)],
            "c.jpg": [("zebra", 10, 10, 70, 50)], "d.jpg": []}
POLYGON_BOX = ("ant", 30.5, 4.25, 62.0, 33.75)
LEFT_OUT = {"polyline left out (not a box)": 1, "points left out (not a box)": 1,
            "cuboid left out (not a box)": 1, "mask left out (not a box)": 1,
            "ellipse left out (not a box)": 1, "skeleton left out (not a box)": 1}


def _decoded(result: dict) -> dict[str, list[tuple]]:
    """The prepared records through the OD API's decoder: filename -> boxes in pixels."""
    from test_data import _decode_all

    folder = Path(result["dir"])
    manifest = result["manifest"]
    out = {}
    for split in manifest["splits"]:
        for e in _decode_all(str(folder / manifest["splits"][split]["pattern"]),
                             folder / "label_map.pbtxt"):
            h, w = e["image"].shape[:2]
            out[e["filename"].decode()] = [
                (manifest["classes"][c - 1], round(x0 * w, 3), round(y0 * h, 3),
                 round(x1 * w, 3), round(y1 * h, 3))
                for c, (y0, x0, y1, x1) in zip(e["groundtruth_classes"].tolist(),
                                               e["groundtruth_boxes"].tolist())]
    return out


def _prepare(source, tmp_path, name="c", **kwargs) -> dict:
    return prepare_dataset(source, name, fmt="cvat", out_root=tmp_path / "data",
                           label_map_dir=tmp_path / "maps", plots=False, workers=1, **kwargs)


def test_task_export_prepares_into_records_of_its_boxes(tmp_path):
    source = _task_export(tmp_path / "task")
    result = _prepare(source, tmp_path, split={"train": 0.5, "val": 0.5})
    assert result["manifest"]["classes"] == ["zebra", "ant"]  # declared order; unused left out
    assert _decoded(result) == EXPECTED
    report = result["report"]
    assert report["problems"] == {"polygon left out": 1, **LEFT_OUT}
    (example,) = report["examples"]["polygon left out"]
    xml = source / "annotations.xml"
    assert example.startswith(f"{xml}:") and "image 'b.jpg'" in example
    assert "--polygons-as-boxes" in example
    assert "image 'sub/c.jpg'" in report["examples"]["mask left out (not a box)"][0]
    assert report["notes"]["CVAT tag (a label of the whole image, not a box) not used"] == 1
    assert "declared class without boxes left out of the label map: unused" in report["notes"]


def test_occluded_and_source_forms(tmp_path):
    source = _task_export(tmp_path / "task")
    report = Report()
    records = {r.image_path.name: r for r in read_cvat(source / "annotations.xml", report)}
    assert [b.occluded for b in records["a.jpg"].boxes] == [False, True]
    assert records["c.jpg"].image_path == source / "images" / "sub" / "c.jpg"
    assert (records["a.jpg"].width, records["a.jpg"].height) == SIZE
    assert report.classes == [*LABELS, "body"]
    assert all(r.split is None for r in records.values())  # subset "default" is no split
    by_folder = Report()
    assert [r.image_path for r in read_cvat(source, by_folder)] == \
        [r.image_path for r in records.values()]
    assert by_folder.as_dict() == report.as_dict()
    # images beside the XML (no images/ folder), or in a folder named by image_dir
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.jpg", "b.jpg", "d.jpg"):
        shutil.copy(source / "images" / name, flat / name)
    shutil.copy(source / "annotations.xml", flat / "annotations.xml")
    assert {r.image_path for r in read_cvat(flat, Report()) if r.image_path.exists()} == \
        {flat / n for n in ("a.jpg", "b.jpg", "d.jpg")}
    shutil.copytree(source / "images", tmp_path / "pictures")
    elsewhere = read_cvat(flat / "annotations.xml", Report(), image_dir=tmp_path / "pictures")
    assert {r.image_path.parent for r in elsewhere} == {tmp_path / "pictures",
                                                         tmp_path / "pictures" / "sub"}


def test_polygons_as_boxes_use_the_polygon_bounds(tmp_path):
    source = _task_export(tmp_path / "task")
    result = _prepare(source, tmp_path, split={"train": 0.5, "val": 0.5},
                      polygons_as_boxes=True)
    assert _decoded(result) == {**EXPECTED, "b.jpg": EXPECTED["b.jpg"] + [POLYGON_BOX]}
    assert result["report"]["problems"] == LEFT_OUT
    assert result["report"]["notes"]["polygon used as its bounding box (--polygons-as-boxes)"] \
        == 1
    (record,) = [r for r in read_cvat(source, Report(), polygons_as_boxes=True)
                 if r.image_path.name == "b.jpg"]
    assert record.boxes[1].occluded  # the polygon's occluded flag goes with its box


def test_project_export_keeps_its_subsets_as_splits(tmp_path):
    """A project export writes ``subset`` on each <image> and its images to
    images/<subset>/; the same file name in two subsets is two images."""
    root = tmp_path / "project"
    for subset, colour in (("Train", 20), ("Validation", 90), ("Test", 150)):
        _image(root / "images" / subset / "x.jpg", colour)
    _image(root / "images" / "batch7" / "y.jpg", 200)
    tasks = "".join(f"<task><id>{i}</id><name>t{i}</name><subset>{s}</subset></task>"
                    for i, s in enumerate(("Train", "Validation", "Test", "batch7")))
    meta = f"<project><id>3</id><name>p</name>{_labels()}<tasks>{tasks}</tasks></project>"
    (root / "annotations.xml").write_text(_xml(
        [_img(i, "x.jpg", _box("ant", 1, 1, 9, 9), attrs=f' subset="{s}" task_id="{i}"')
         for i, s in enumerate(("Train", "Validation", "Test"))]
        + [_img(3, "y.jpg", _box("ant", 1, 1, 9, 9), attrs=' subset="batch7" task_id="3"')],
        meta=meta))
    report = Report()
    records = read_cvat(root, report)
    assert [(r.image_path.relative_to(root).as_posix(), r.split) for r in records] == [
        ("images/Train/x.jpg", "train"), ("images/Validation/x.jpg", "val"),
        ("images/Test/x.jpg", "test"), ("images/batch7/y.jpg", None)]
    assert report.classes == [*LABELS, "body"]  # from <project><labels>
    assert report.notes == {"CVAT subset that names no split, not used as a split: batch7": 1}
    assert not report.problems
    # a task export's <subset> is every image's split
    task = _task_export(tmp_path / "task")
    xml = task / "annotations.xml"
    xml.write_text(xml.read_text().replace("<subset>default</subset>", "<subset>Test</subset>"))
    assert {r.split for r in read_cvat(task, Report())} == {"test"}


def test_rotated_box_tracks_and_what_is_not_a_cvat_export(tmp_path):
    root = tmp_path / "r"
    _image(root / "a.jpg", 5)
    rotated = _box("ant", 20, 20, 40, 30, extra=' rotation="90.00"')
    (root / "annotations.xml").write_text(_xml([_img(0, "a.jpg", rotated)]).replace(
        "</annotations>", '<track id="0" label="ant" source="manual"><box frame="0" '
        'keyframe="1" outside="0" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5" z_order="0"/>'
        "</track></annotations>"))
    report = Report()
    (record,) = read_cvat(root, report)
    b = record.boxes[0]
    assert [round(v, 6) for v in (b.xmin, b.ymin, b.xmax, b.ymax)] == [25, 15, 35, 35]
    assert report.notes == {"rotated CVAT box (its axis-aligned bounds used)": 1}
    assert report.problems == {"track left out": 1}
    assert "'CVAT for images 1.1'" in report.examples["track left out"][0]
    video = tmp_path / "video.xml"  # CVAT for video: tracks only
    video.write_text(_xml([]).replace("</annotations>", '<track id="0" label="ant"/>'
                                                        "</annotations>"))
    with pytest.raises(DatasetError, match="CVAT for video export .1 tracks.*CVAT for images"):
        read_cvat(video)
    voc = tmp_path / "voc.xml"
    voc.write_text("<annotation><filename>a.jpg</filename></annotation>")
    with pytest.raises(DatasetError, match=r"voc.xml: root element is <annotation>, not CVAT"):
        read_cvat(voc)
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.xml").write_text(_xml([]))
    (two / "b.xml").write_text(_xml([]))
    with pytest.raises(DatasetError, match="expected one CVAT .xml file in the folder, found "
                                           "a.xml, b.xml; pass the annotations.xml"):
        read_cvat(two)
    with pytest.raises(DatasetError, match="not found"):
        read_cvat(tmp_path / "nowhere")


def test_video_task_frames_are_found_by_the_png_cvat_saves(tmp_path):
    """A task made from a video, exported as CVAT for images: ``name="frame_000000"`` and
    the picture saved as images/frame_000000.PNG."""
    root = tmp_path / "video-task"
    _image(root / "images" / "frame_000000.PNG", 5)
    (root / "annotations.xml").write_text(_xml([_img(0, "frame_000000", _box("ant", 1, 1, 9, 9)),
                                                _img(1, "frame_000001", "")]))
    records = read_cvat(root, Report())
    assert [r.image_path.name for r in records] == ["frame_000000.PNG", "frame_000001"]
    assert not records[1].image_path.exists()  # the checks report it missing, by its name


def test_bad_images_and_shapes_are_counted_and_the_rest_read(tmp_path):
    root = tmp_path / "bad"
    _image(root / "images" / "a.jpg", 5)
    (root / "annotations.xml").write_text(_xml([
        _img(0, "a.jpg", _box("ant", 1, 1, 9, 9)
             + '<box label="ant" occluded="0" xtl="nan" ytl="1" xbr="9" ybr="9"/>'
             + '<box label="" occluded="0" xtl="1" ytl="1" xbr="9" ybr="9"/>'
             + '<box label="ant" occluded="2" xtl="1" ytl="1" xbr="9" ybr="9"/>'
             + '<box label="ant" xtl="1" ytl="1" xbr="9"/>'),
        _img(1, "", ""), _img(2, "b.jpg", "", size=("wide", 4)),
    ]))
    report = Report()
    (record,) = read_cvat(root, report, polygons_as_boxes=True)
    assert len(record.boxes) == 1
    assert report.problems == {"unreadable annotation": 6}
    text = "\n".join(report.examples["unreadable annotation"])
    for part in ("xtl is 'nan', not a finite number", "no label", "occluded='2' is not 0 or 1",
                 "ybr is None", "<image> without a name", "width='wide' height='4' is not a size"):
        assert part in text
    assert all(line.startswith(f"{root / 'annotations.xml'}:")
               for line in report.examples["unreadable annotation"])


def _secret(path: Path) -> bytes:
    return _image(path, 33, size=(50, 40)).read_bytes()


def test_image_paths_leaving_the_export_are_refused(tmp_path):
    """``../../outside.jpg``, an absolute path and a symlink in images/ pointing out are each
    refused (the files exist: checked against the filesystem); allow_outside reads them."""
    outside = tmp_path / "outside.jpg"
    secret = _secret(outside)
    root = tmp_path / "exports" / "task"
    _image(root / "images" / "ok.jpg", 70)
    os.symlink(outside, root / "images" / "link.jpg")
    escape = "../../outside.jpg"
    assert (root / escape).resolve() == outside.resolve()  # it does lead there
    (root / "annotations.xml").write_text(_xml([
        _img(0, "ok.jpg", _box("ant", 1, 1, 9, 9)), _img(1, escape, _box("ant", 1, 1, 9, 9)),
        _img(2, str(outside), _box("ant", 1, 1, 9, 9)),
        _img(3, "link.jpg", _box("ant", 1, 1, 9, 9))]))
    report = Report()
    records = read_cvat(root, report)
    assert [r.image_path for r in records] == [root / "images" / "ok.jpg"]
    assert report.problems == {"image path outside the dataset": 3}
    examples = report.examples["image path outside the dataset"]
    assert "through a symlink" in examples[2] and "--allow-outside-paths" in examples[0]
    allowed = read_cvat(root, Report(), allow_outside=True)
    assert [r.image_path.resolve() for r in allowed[1:]] == [outside.resolve()] * 3
    result = _prepare(root, tmp_path, split={"train": 1.0})
    assert result["report"]["problems"] == {"image path outside the dataset": 3}
    written = b"".join(p.read_bytes() for p in Path(result["dir"]).rglob("*") if p.is_file())
    assert secret not in written
    # the XML itself through a symlink leading out
    private = tmp_path / "private"
    private.mkdir()
    (private / "annotations.xml").write_text(_xml([_img(0, "ok.jpg", "")]))
    linked = tmp_path / "linked"
    (linked / "images").mkdir(parents=True)
    os.symlink(private / "annotations.xml", linked / "annotations.xml")
    _image(linked / "images" / "ok.jpg", 70)
    with pytest.raises(DatasetError, match="annotation file 'annotations.xml' leads outside "
                                           "the dataset folder through a symlink"):
        read_cvat(linked)
    for record in (read_cvat(linked, allow_outside=True)[0],  # the user's choice, like
                   read_cvat(linked / "annotations.xml")[0]):  # naming the file itself
        assert record.image_path == linked / "images" / "ok.jpg"  # images: beside the link


def test_xml_external_entity_is_refused_and_never_leaks(tmp_path, capsys, caplog):
    from tfod.cli import main

    token = "TOKEN-4f2a-never-to-be-read"
    (tmp_path / "secret.txt").write_text(token)
    root = tmp_path / "xxe"
    _image(root / "images" / "a.jpg", 5)
    head = f'<!DOCTYPE annotations [<!ENTITY s SYSTEM "file://{tmp_path / "secret.txt"}">]>\n'
    for variant in ("label", "name"):  # an entity in an attribute, in an element's text
        xml = _xml([_img(0, "a.jpg", _box("&s;" if variant == "label" else "ant", 1, 1, 9, 9))],
                   head=head)
        if variant == "name":
            xml = xml.replace("<name>zebra</name>", "<name>&s;</name>")
        (root / "annotations.xml").write_text(xml)
        with pytest.raises(DatasetError) as caught:
            read_cvat(root)
        assert str(root / "annotations.xml") in str(caught.value)
        assert token not in str(caught.value)
        code = main(["prepare", str(root), "--format", "cvat", "--name", "x",
                     "--out-root", str(tmp_path / "data"), "--label-maps", str(tmp_path / "lm")])
        assert code == 1
        out = capsys.readouterr()
        assert token not in out.out + out.err + caplog.text
        assert "annotations.xml" in out.err + caplog.text
    assert not (tmp_path / "data" / "x").exists()
    # /etc/passwd as the brief names it: the same clear error
    (root / "annotations.xml").write_text(_xml(
        [_img(0, "a.jpg", _box("&e;", 1, 1, 9, 9))],
        head='<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n'))
    with pytest.raises(DatasetError, match="entit"):
        read_cvat(root)


def test_billion_laughs_is_a_clear_error_at_once(tmp_path):
    lol = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol%s;" % ("" if i == 1 else i - 1)) * 10}">' for i in range(1, 10))
    (tmp_path / "annotations.xml").write_text(_xml(
        [_img(0, "a.jpg", _box("&lol9;", 1, 1, 9, 9))], head=f"<!DOCTYPE annotations [{lol}]>\n"))
    start = time.perf_counter()
    with pytest.raises(DatasetError) as caught:
        read_cvat(tmp_path)
    assert time.perf_counter() - start < 2
    assert str(tmp_path / "annotations.xml") in str(caught.value)
    assert "lollol" not in str(caught.value)
    # internal entities that expand harmlessly are refused all the same: CVAT writes none
    (tmp_path / "annotations.xml").write_text(_xml(
        [_img(0, "a.jpg", _box("&x;", 1, 1, 9, 9))], head='<!DOCTYPE a [<!ENTITY x "ant">]>\n'))
    with pytest.raises(DatasetError, match="declares XML entities"):
        read_cvat(tmp_path)


# --------------------------------------------------------------------------- #
# Fuzz: records, or an error naming the file
# --------------------------------------------------------------------------- #
attr = st.one_of(st.text(max_size=12), st.sampled_from(
    ["", "nan", "1e400", "-inf", "0", "1", "12.5", "1,2;3,4", "1,2;3", "a,b", ";", "../x.jpg",
     "/etc/hostname", "Train", "default"])).map(
    lambda t: "".join(c for c in t if c.isprintable()).replace("&", "").replace('"', "")
    .replace("<", ""))
TEMPLATE = ('<image id="0" name="{name}" width="{w}" height="{h}" subset="{subset}">'
            '<box label="{label}" occluded="{occ}" xtl="{x0}" ytl="{y0}" xbr="{x1}" ybr="{y1}" '
            'rotation="{rot}"/><polygon label="{label}" points="{points}"/>'
            '<{other} label="{label}" points="{points}"/></image>')


VALID = {"name": "a.jpg", "w": "80", "h": "60", "subset": "Train", "label": "ant", "occ": "1",
         "x0": "1.5", "y0": "2", "x1": "30", "y1": "40.25", "rot": "0", "points": "1,2;30,4;9,9"}


@FUZZ
@given(changed=st.dictionaries(st.sampled_from(sorted(VALID)), attr, max_size=4),
       other=st.sampled_from(["polyline", "points", "tag", "mask", "box", "polygon", "image",
                              "track"]),
       as_boxes=st.booleans())
def test_fuzz_fields(changed, other, as_boxes):
    """A valid image with up to four of its attributes replaced."""
    with fuzz_folder() as folder:
        _image(folder / "images" / "a.jpg", 1)
        (folder / "annotations.xml").write_text(_xml([TEMPLATE.format(
            other=other, **{**VALID, **changed})]))
        _expect_records_or_named_error(
            lambda target, report: read_cvat(target, report, polygons_as_boxes=as_boxes),
            folder, folder)


@FUZZ
@given(raw=st.one_of(st.just(b""), st.binary(max_size=300)), cut=st.integers(0, 700))
def test_fuzz_bytes(raw, cut):
    with fuzz_folder() as folder:
        valid = _xml([_img(0, "a.jpg", _box("ant", 1, 1, 9, 9) + POLYGON)]).encode()
        (folder / "annotations.xml").write_bytes(valid[:cut] + raw)
        _expect_records_or_named_error(read_cvat, folder / "annotations.xml", folder)
