"""tfod.data.readers (voc, coco, csv_table, yolo) and tfod.data.annotations: what each
reader makes of every field, and how each bad input is counted.

The round trips through ``prepare`` are in test_data.py and the hostile paths in
test_hostile.py; here every reader gets small hand-written files whose records are
known exactly, so a changed default, cast, offset or message fails a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tfod.data.annotations import Box, Record, Report, split_from_name
from tfod.data.readers import read_coco, read_csv, read_voc, read_yolo
from tfod.errors import DatasetError


def _image(path: Path, size=(200, 100), exif_orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, (90, 120, 30))
    if exif_orientation is None:
        img.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(path, exif=exif)
    return path


def _boxes(record: Record) -> list[tuple]:
    return [(b.name, b.xmin, b.ymin, b.xmax, b.ymax, b.difficult, b.truncated, b.pose, b.crowd)
            for b in record.boxes]


# --- Report ----------------------------------------------------------------------------------

def test_report_counts_all_keeps_20_examples_and_prints_kinds_sorted():
    report = Report()
    for i in range(25):
        report.add("b kind", f"m{i}")
    report.add("a kind", "only")
    report.note("greyscale")
    report.note("greyscale")
    assert report.problems == {"b kind": 25, "a kind": 1}
    assert report.examples["b kind"] == [f"m{i}" for i in range(20)]
    assert report.lines(2) == ["a kind: 1", "  only", "b kind: 25", "  m0", "  m1"]
    assert report.lines() == ["a kind: 1", "  only", "b kind: 25"] + [f"  m{i}" for i in range(5)]
    assert report.as_dict() == {"problems": {"b kind": 25, "a kind": 1},
                                "examples": {"b kind": [f"m{i}" for i in range(20)],
                                             "a kind": ["only"]},
                                "notes": {"greyscale": 2}}
    assert Report().lines() == [] and Report().classes is None


def test_split_names_from_words_only():
    assert [split_from_name(n) for n in ("TRAINING-set", "validation", "my_testing.csv",
                                         "trainval", "retrain", "x")] == \
        ["train", "val", "test", None, None, None]


# --- Pascal VOC -------------------------------------------------------------------------------

VOC_FULL = """<annotation>
  <filename> a.jpg </filename>
  <size><width>320.7</width><height>240</height><depth>3</depth></size>
  <object>
    <name>cat</name><name>ignored second name</name>
    <!-- a comment between the fields -->
    <difficult>1</difficult><truncated>1</truncated><pose> Left </pose>
    <bndbox><xmin>10.5</xmin><ymin>20</ymin><xmax>100</xmax><ymax>200.25</ymax></bndbox>
  </object>
  <object>
    <name>dog</name>
    <bndbox><xmin>0</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax></bndbox>
  </object>
</annotation>"""


def _voc_xml(name, filename="a.jpg", bndbox="<xmin>0</xmin><ymin>1</ymin><xmax>2</xmax>"
             "<ymax>3</ymax>", size="<size><width>4</width><height>5</height></size>"):
    return (f"<annotation><filename>{filename}</filename>{size}<object><name>{name}</name>"
            f"<bndbox>{bndbox}</bndbox></object></annotation>")


def test_voc_reads_every_field_with_its_default(tmp_path):
    _image(tmp_path / "a.jpg")
    (tmp_path / "a.xml").write_text(VOC_FULL)
    (tmp_path / "nosize.xml").write_text(_voc_xml("x", size=""))
    report = Report()
    records = read_voc(tmp_path, report)
    assert report.problems == {}
    a, nosize = records
    assert (a.image_path, a.width, a.height, a.source, a.split) == \
        (tmp_path / "a.jpg", 320, 240, str(tmp_path / "a.xml"), None)
    assert _boxes(a) == [("cat", 10.5, 20.0, 100.0, 200.25, True, True, "Left", False),
                         ("dog", 0.0, 1.0, 2.0, 3.0, False, False, "Unspecified", False)]
    assert (nosize.width, nosize.height) == (0, 0)


def test_voc_bad_files_are_counted_with_file_object_and_field(tmp_path):
    _image(tmp_path / "a.jpg")
    (tmp_path / "1.xml").write_text(_voc_xml("x", bndbox="<xmin>0</xmin><ymin>1</ymin>"
                                                         "<xmax>2</xmax>"))
    (tmp_path / "2.xml").write_text(_voc_xml("x", bndbox="<xmin>0</xmin><ymin>abc</ymin>"
                                                         "<xmax>2</xmax><ymax>3</ymax>"))
    (tmp_path / "3.xml").write_text(_voc_xml("x", bndbox="<xmin>0</xmin><ymin>1</ymin>"
                                                         "<xmax>inf</xmax><ymax>3</ymax>"))
    (tmp_path / "4.xml").write_text("<annotation><filename>a.jpg</filename>")
    (tmp_path / "5.xml").write_text(_voc_xml("x").replace("<filename>a.jpg</filename>", ""))
    (tmp_path / "6.xml").write_text(_voc_xml("", filename="a.jpg"))
    (tmp_path / "7.xml").write_text(_voc_xml("x", size="<size><width>wide</width></size>"))
    (tmp_path / "8.xml").write_text(VOC_FULL.replace("<difficult>1", "<difficult>yes"))
    report = Report()
    assert read_voc(tmp_path, report) == []
    assert report.problems == {"unreadable annotation": 8}
    lines = report.examples["unreadable annotation"]
    assert lines[0].startswith(f"{tmp_path / '1.xml'} object 1: missing <ymax>")
    assert lines[1].startswith(f"{tmp_path / '2.xml'} object 1: <ymin> is 'abc', not a valid")
    assert lines[2].startswith(f"{tmp_path / '3.xml'} object 1: <xmax> is 'inf', not a valid")
    assert lines[3].startswith(f"{tmp_path / '4.xml'}: cannot parse XML (")
    assert lines[4].startswith(f"{tmp_path / '5.xml'}: missing <filename>")
    assert lines[5].startswith(f"{tmp_path / '6.xml'} object 1: missing <name>")
    assert lines[6].startswith(f"{tmp_path / '7.xml'}: <width> is 'wide', not a valid number")
    assert lines[7].startswith(f"{tmp_path / '8.xml'} object 1: <difficult> is 'yes'")
    assert "add the field or remove the file" in lines[0]


def test_vocdevkit_keeps_its_own_train_and_val_but_not_trainval(tmp_path):
    for stem in ("t", "v", "tv", "none"):
        _image(tmp_path / "JPEGImages" / f"{stem}.jpg")
        (tmp_path / "Annotations").mkdir(exist_ok=True)
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(_voc_xml("x", f"{stem}.jpg"))
    sets = tmp_path / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("t\n")
    (sets / "val.txt").write_text("  v  \n")
    (sets / "trainval.txt").write_text("t\nv\ntv\n")
    records = read_voc(tmp_path)
    assert [(r.image_path.name, r.split) for r in records] == \
        [("none.jpg", None), ("t.jpg", "train"), ("tv.jpg", None), ("v.jpg", "val")]
    assert records[1].image_path == tmp_path / "JPEGImages" / "t.jpg"


def test_voc_image_found_by_the_xml_name_when_filename_is_wrong(tmp_path):
    _image(tmp_path / "b.png")
    (tmp_path / "b.xml").write_text(_voc_xml("x", filename="renamed.jpg"))
    (tmp_path / "c.xml").write_text(_voc_xml("x", filename="gone.jpg"))
    records = read_voc(tmp_path)
    assert [r.image_path for r in records] == [tmp_path / "b.png", tmp_path / "gone.jpg"]


def test_voc_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="annotation folder not found"):
        read_voc(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"no \.xml annotation files found"):
        read_voc(tmp_path)


# --- COCO -------------------------------------------------------------------------------------

def _coco(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_coco_boxes_classes_sizes_and_crowd_exactly(tmp_path):
    _image(tmp_path / "a.jpg")
    doc = {"categories": [{"id": 3, "name": "zebra"}, {"id": 1, "name": "cat"},
                          {"id": 2, "name": 7}, {"id": 9}],
           "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": "100"},
                      {"id": "n", "file_name": "neg.jpg"},
                      {"id": 5, "file_name": "b.jpg", "width": 0, "height": ""}],
           "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1.5, 2, 10, 20]},
                           {"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1],
                            "iscrowd": 1},
                           {"image_id": 1, "category_id": 2, "bbox": [5, 6, 7, 8],
                            "iscrowd": True},
                           {"image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2],
                            "iscrowd": 2}]}
    report = Report()
    a, neg, b = read_coco(_coco(tmp_path / "ann.json", doc), report)
    assert report.classes == ["cat", "7", "zebra"]  # by category id
    assert report.problems == {"unreadable annotation": 1}  # category 9 has no name
    assert "categories[3]" in report.examples["unreadable annotation"][0]
    assert (a.image_path, a.width, a.height, a.source, a.split) == \
        (tmp_path / "a.jpg", 200, 100, f"{tmp_path / 'ann.json'} images[0]", None)
    assert _boxes(a) == [("cat", 1.5, 2.0, 11.5, 22.0, False, False, "Unspecified", False),
                         ("zebra", 0.0, 0.0, 1.0, 1.0, False, False, "Unspecified", True),
                         ("7", 5.0, 6.0, 12.0, 14.0, False, False, "Unspecified", True),
                         ("cat", 0.0, 0.0, 2.0, 2.0, False, False, "Unspecified", False)]
    assert (neg.width, neg.height, neg.boxes) == (0, 0, [])
    assert (b.width, b.height) == (0, 0)


def test_coco_bad_entries_are_counted_one_by_one(tmp_path):
    doc = {"categories": [{"id": 2, "name": "b"}, {"id": "1", "name": "a"},
                          {"id": True, "name": "c"}],
           "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
                      {"id": 2, "file_name": ""},
                      {"id": 3, "file_name": "c.jpg", "width": 12.5},
                      {"id": 4, "file_name": "d.jpg", "height": -3},
                      {"id": 5.0, "file_name": "e.jpg"},
                      {"file_name": "f.jpg"},
                      {"id": 7, "file_name": "g.jpg", "width": "nan"},
                      "not an object"],
           "annotations": [{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3]},
                           {"image_id": 1, "category_id": 2, "bbox": "1,2,3,4"},
                           {"image_id": 1, "category_id": 2, "bbox": [1, "x", 3, 4]},
                           {"image_id": 1, "category_id": 2, "bbox": [1, 2, None, 4]},
                           {"image_id": 1, "category_id": 2, "bbox": [1, 2, float("inf"), 4]},
                           {"image_id": 99, "category_id": 2, "bbox": [1, 2, 3, 4]},
                           {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
                           {"image_id": 1, "bbox": [1, 2, 3, 4]},
                           {"image_id": 1, "category_id": "1", "bbox": [1, 2, 3, 4]},
                           7]}
    report = Report()
    (record,) = read_coco(_coco(tmp_path / "ann.json", doc), report)
    assert report.classes == ["b", "a"]  # ids of mixed types: the file's order
    assert [(b.name, b.xmin, b.xmax) for b in record.boxes] == [("a", 1.0, 4.0)]
    lines = report.examples["unreadable annotation"]
    assert report.problems == {"unreadable annotation": 1 + 7 + 9}
    assert "category id True is not an integer or string id" in lines[0]
    for i in range(1, 8):
        assert f"images[{i}]" in lines[i], (i, lines[i])
    assert "file_name '' is not a file name" in lines[1]
    assert "whole number of pixels" in lines[2] and "whole number of pixels" in lines[3]
    assert "image id 5.0 is not an integer" in lines[4]
    assert "whole number of pixels" in lines[6]
    assert "annotations[0]: bbox [1, 2, 3] is not [x, y, width, height]" in lines[8]
    assert "annotations[1]: bbox '1,2,3,4' is not" in lines[9]
    assert "bbox value is 'x', not a finite number" in lines[10]
    assert "bbox value is None, not a finite number" in lines[11]
    assert "bbox value is inf, not a finite number" in lines[12]
    assert "annotations[5]: unknown or missing 99" in lines[13]
    assert "annotations[6]: unknown or missing 1" in lines[14]  # the id is the string "1"
    assert "annotations[7]: unknown or missing 'category_id'" in lines[15]
    assert "annotations[9]:" in lines[16]


@pytest.mark.parametrize("doc,message", [
    ("{not json", "cannot read COCO JSON"),
    ([1, 2], "no 'images' list"),
    ({"images": {}}, "no 'images' list"),
    ({"images": [], "annotations": {}}, "'annotations' is not a list"),
    ({"images": [], "categories": "x"}, "'categories' is not a list"),
])
def test_coco_file_that_is_not_instances_json(tmp_path, doc, message):
    path = tmp_path / "x.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DatasetError, match=message) as info:
        read_coco(path)
    assert str(path) in str(info.value)


def test_coco_folders_by_split_and_their_errors(tmp_path):
    empty = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], "categories": []}
    _coco(tmp_path / "flat" / "train.json", empty)
    _coco(tmp_path / "flat" / "valid.json", empty)
    _coco(tmp_path / "flat" / "extra.json", empty)
    report = Report()
    records = read_coco(tmp_path / "flat", report)
    assert [r.split for r in records] == ["train", "val"]
    assert report.notes == {"JSON file without a split in its name, not read: extra.json": 1}
    _coco(tmp_path / "roboflow" / "test" / "_annotations.coco.json", empty)
    _coco(tmp_path / "roboflow" / "train" / "_annotations.coco.json", empty)
    assert [r.split for r in read_coco(tmp_path / "roboflow")] == ["test", "train"]
    _coco(tmp_path / "single" / "whatever.json", empty)
    assert [r.split for r in read_coco(tmp_path / "single")] == [None]
    _coco(tmp_path / "unclear" / "a.json", empty)
    _coco(tmp_path / "unclear" / "b.json", empty)
    with pytest.raises(DatasetError, match="2 JSON files and their splits are not clear"):
        read_coco(tmp_path / "unclear")
    _coco(tmp_path / "twice" / "train_a.json", empty)
    _coco(tmp_path / "twice" / "train_b.json", empty)
    with pytest.raises(DatasetError, match="not clear"):
        read_coco(tmp_path / "twice")
    (tmp_path / "none").mkdir()
    with pytest.raises(DatasetError, match=r"no \.json files in the folder"):
        read_coco(tmp_path / "none")
    with pytest.raises(DatasetError, match="COCO file not found"):
        read_coco(tmp_path / "missing.json")


# --- CSV --------------------------------------------------------------------------------------

def test_csv_rows_become_records_in_order(tmp_path):
    _image(tmp_path / "a.jpg")
    path = tmp_path / "labels.csv"
    path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n"
                    " a.jpg ,200,100, cat ,1,2,3,4\n"
                    "a.jpg,999,999,dog,5.5,6,7,8\n"
                    "neg.jpg,,,,,,,\n"
                    ",1,1,cat,1,1,2,2\n"
                    "b.jpg,10,10,cat,1,nan,2,2\n"
                    "c.jpg,ten,10,cat,1,1,2,2\n")
    report = Report()
    records = read_csv(path, report)
    assert [(r.image_path.name, r.width, r.height, r.source, r.split) for r in records] == [
        ("a.jpg", 200, 100, f"{path} (a.jpg)", None), ("neg.jpg", 0, 0, f"{path} (neg.jpg)", None),
        ("b.jpg", 10, 10, f"{path} (b.jpg)", None)]
    assert records[0].image_path == tmp_path / "a.jpg"
    assert _boxes(records[0]) == [
        ("cat", 1.0, 2.0, 3.0, 4.0, False, False, "Unspecified", False),
        ("dog", 5.5, 6.0, 7.0, 8.0, False, False, "Unspecified", False)]
    assert records[1].boxes == [] and records[2].boxes == []
    assert report.problems == {"unreadable annotation": 3}
    first, second, third = report.examples["unreadable annotation"]
    assert first.startswith(f"{path}:5: no file name")
    assert second.startswith(f"{path}:6: ymin is 'nan', not a finite number")
    assert third.startswith(f"{path}:7: width is 'ten', not a finite number")


def test_csv_file_errors(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"filename,class,xmin,ymin,xmax,ymax\nna\xefve.jpg,a,1,1,2,2\n")
    with pytest.raises(DatasetError, match=r"not UTF-8 text \(invalid continuation byte at "
                                            r"byte 37\)") as info:
        read_csv(bad)
    assert str(info.value).startswith(f"{bad}:2: ")
    # past the decoder's first chunk (8 KB): the line and byte are the file's own
    far = tmp_path / "far.csv"
    rows = b"".join(b"img%05d.jpg,a,1,1,2,2\n" % i for i in range(2000))
    far.write_bytes(b"\xef\xbb\xbffilename,class,xmin,ymin,xmax,ymax\n" + rows
                    + b"caf\xe9.jpg,a,1,1,2,2\n")
    offset = 3 + 35 + len(rows) + 3
    with pytest.raises(DatasetError, match=rf"not UTF-8 text \(.* at byte {offset}\)") as info:
        read_csv(far)
    assert str(info.value).startswith(f"{far}:2002: ")
    huge = tmp_path / "huge.csv"
    huge.write_text("filename,class,xmin,ymin,xmax,ymax\n" + "a" * 200_000 + ",a,1,1,2,2\n")
    with pytest.raises(DatasetError, match="not a readable CSV"):
        read_csv(huge)
    with pytest.raises(DatasetError, match="cannot open CSV"):
        read_csv(tmp_path / "missing.csv")
    header = tmp_path / "header.csv"
    header.write_text("file,class,x1,ymin,xmax,ymax\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) filename, xmin; the header is "
                                            r"\['file', 'class', 'x1'"):
        read_csv(header)
    assert read_csv(header, columns={"filename": "file", "xmin": "x1"}) == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no \.csv files in the folder"):
        read_csv(tmp_path / "empty")


def test_csv_folder_keeps_splits(tmp_path):
    tmp_path = tmp_path / "labels"  # a folder name without a split word
    tmp_path.mkdir()
    for name in ("train_labels.csv", "test_labels.csv", "raccoon_labels.csv"):
        (tmp_path / name).write_text(f"filename,class,xmin,ymin,xmax,ymax\n{name}.jpg,a,1,1,2,2\n")
    report = Report()
    records = read_csv(tmp_path, report)
    assert [(r.image_path.name, r.split) for r in records] == \
        [("test_labels.csv.jpg", "test"), ("train_labels.csv.jpg", "train")]
    assert list(report.notes) == ["CSV file without a split in its name, not read: "
                                  "raccoon_labels.csv"]


# --- YOLO -------------------------------------------------------------------------------------

def test_yolo_boxes_in_pixels_and_every_bad_line_counted(tmp_path):
    _image(tmp_path / "images" / "a.jpg", (200, 100))
    _image(tmp_path / "images" / "neg.jpg", (200, 100))
    _image(tmp_path / "images" / "turned.jpg", (200, 100), exif_orientation=6)
    (tmp_path / "labels").mkdir()
    (tmp_path / "data.yaml").write_text("names: {0: cat, 1: 7}\n")
    (tmp_path / "labels" / "a.txt").write_text(
        "1 0.5 0.25 0.2 0.1\n\n   \n"
        "0 0.5 0.5 0.1\n"
        "1.5 0.5 0.5 0.1 0.1\n"
        "2 0.5 0.5 0.1 0.1\n"
        "-1 0.5 0.5 0.1 0.1\n"
        "0 0.5 nan 0.1 0.1\n"
        "x 0.5 0.5 0.1 0.1\n"
        "0.0 0.5 0.5 1 1\n")
    (tmp_path / "labels" / "turned.txt").write_text("0 0.5 0.5 1 1\n")
    (tmp_path / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (tmp_path / "labels" / "classes.txt").write_text("cat\n7\n")
    report = Report()
    records = read_yolo(tmp_path, report)
    assert report.classes == ["cat", "7"]
    a, neg, turned = records
    assert (a.width, a.height, a.source, a.split) == \
        (200, 100, str(tmp_path / "labels" / "a.txt"), None)
    assert _boxes(a) == [("7", 80.0, 20.0, 120.0, 30.0, False, False, "Unspecified", False),
                         ("cat", 0.0, 0.0, 200.0, 100.0, False, False, "Unspecified", False)]
    assert (neg.width, neg.height, neg.boxes, neg.source) == \
        (0, 0, [], str(tmp_path / "images" / "neg.jpg"))
    assert (turned.width, turned.height) == (100, 200)  # as EXIF turns it
    assert _boxes(turned)[0][1:5] == (0.0, 0.0, 100.0, 200.0)
    assert report.problems == {"unreadable annotation": 6, "label without image": 1}
    where = str(tmp_path / "labels" / "a.txt")
    assert [m.split(";")[0] for m in report.examples["unreadable annotation"]] == [
        f"{where}:4: 4 values, expected 5 (class cx cy w h)",
        f"{where}:5: class '1.5' is not a whole number",
        f"{where}:6: class 2 is not in 0..1",
        f"{where}:7: class -1 is not in 0..1",
        f"{where}:8: coordinate is 'nan', not a finite number",
        f"{where}:9: class is 'x', not a finite number"]
    assert report.examples["label without image"] == [
        f"{tmp_path / 'labels' / 'orphan.txt'}: no image orphan.*"]


def test_yolo_split_folders_and_labels_next_to_images(tmp_path):
    _image(tmp_path / "train" / "a.jpg")
    _image(tmp_path / "valid" / "b.png")
    _image(tmp_path / "c.jpg")
    (tmp_path / "train" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "classes.txt").write_text("\n  only  \n\n")
    records = read_yolo(tmp_path)
    assert [(r.image_path.name, r.split, len(r.boxes)) for r in records] == \
        [("c.jpg", None, 0), ("a.jpg", "train", 1), ("b.png", "val", 0)]
    assert records[1].boxes[0].name == "only"
    other = tmp_path / "elsewhere"
    _image(other / "d.jpg")
    assert [r.image_path for r in read_yolo(tmp_path, image_dir=other)] == [other / "d.jpg"]


@pytest.mark.parametrize("files,message", [
    ({"data.yaml": "names: {-1: a, 2: b}\n"}, r"'names' keys \[-1\] are not class ids"),
    ({"data.yaml": "names: [a, b, a]\n"}, r"class names \['a'\] appear more than once"),
    ({"data.yaml": "names: [a, b]\nnc: 3\n"}, r"'nc: 3' but 2 names"),
    ({"data.yaml": "names: {}\n"}, "no 'names' list of class names"),
    ({"data.yaml": "names: a\n"}, "no 'names' list of class names"),
    ({"data.yaml": "names: [a, [b]]\n"}, "no 'names' list of class names"),
    ({"data.yaml": "- just a list\n"}, "no 'names' list of class names"),
    ({"data.yaml": "names: [a\n"}, "cannot parse YAML"),
    ({"dataset.yaml": "names: {0: a, '1': b}\n"}, r"'names' keys \['1'\] are not class ids"),
    ({}, r"no class names found \(data.yaml or classes.txt\)"),
])
def test_yolo_class_names_errors(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_yolo(tmp_path)


def test_yolo_names_files_in_order_of_preference(tmp_path):
    (tmp_path / "dataset.yaml").write_text("names: [from_dataset_yaml]\n")
    (tmp_path / "classes.txt").write_text("from_classes_txt\n")
    report = Report()
    read_yolo(tmp_path, report)
    assert report.classes == ["from_dataset_yaml"]
    (tmp_path / "data.yaml").write_text("names: [1, 2.5, b]\n")
    read_yolo(tmp_path, report)
    assert report.classes == ["1", "2.5", "b"]
    (tmp_path / "data.yaml").write_bytes(b"names: [\xff]\n")
    with pytest.raises(DatasetError, match="not UTF-8 text"):
        read_yolo(tmp_path)
    with pytest.raises(DatasetError, match="dataset folder not found"):
        read_yolo(tmp_path / "nope")


def test_yolo_unreadable_label_and_image_are_reported_or_left_to_the_checks(tmp_path):
    (tmp_path / "classes.txt").write_text("a\n")
    _image(tmp_path / "images" / "a.jpg")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_bytes(b"0 0.5 0.5 0.1 0.1 \xff\n")
    (tmp_path / "labels" / "broken.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    report = Report()
    a, broken = read_yolo(tmp_path, report)
    assert a.boxes == [] and (a.width, a.height) == (200, 100)
    assert (broken.width, broken.height, broken.boxes) == (0, 0, [])
    assert report.problems == {"unreadable annotation": 1}
    assert "not UTF-8 text" in report.examples["unreadable annotation"][0]


def test_box_and_record_defaults():
    box = Box("a", 1, 2, 3, 4)
    assert (box.difficult, box.truncated, box.pose, box.crowd) == (False, False, "Unspecified",
                                                                  False)
    record = Record(Path("x.jpg"), 1, 2)
    assert (record.boxes, record.source, record.split, record.image) == ([], "", None, None)


def _text(call, *args) -> str:
    with pytest.raises(DatasetError) as info:
        call(*args)
    return str(info.value)


def test_folder_and_file_error_texts_in_full(tmp_path):
    (tmp_path / "empty").mkdir()
    empty, nope = tmp_path / "empty", tmp_path / "nope"
    assert _text(read_voc, nope) == \
        f"{nope}: annotation folder not found; pass the folder holding the VOC XML files"
    assert _text(read_voc, empty) == \
        f"{empty}: no .xml annotation files found; check the path and --format"
    assert _text(read_coco, tmp_path / "x.json") == \
        f"{tmp_path / 'x.json'}: COCO file not found; check the path"
    assert _text(read_coco, empty) == \
        f"{empty}: no .json files in the folder; pass the COCO annotation file itself"
    assert _text(read_csv, empty) == \
        f"{empty}: no .csv files in the folder; pass the CSV file itself"
    assert _text(read_csv, tmp_path / "x.csv") == \
        f"{tmp_path / 'x.csv'}: cannot open CSV (No such file or directory); check the path"
    assert _text(read_yolo, nope) == \
        f"{nope}: dataset folder not found; pass the folder holding images/ and labels/ (or " \
        "its dataset .yaml)"
    assert _text(read_yolo, empty) == (
        f"{empty}: no class names found (data.yaml or classes.txt); add a classes.txt with one "
        "class name per line")
    yaml = empty / "data.yaml"
    yaml.write_text("names: {1: a, x: b}\n")
    assert _text(read_yolo, empty) == \
        f"{yaml}: 'names' keys ['x'] are not class ids 0, 1, 2, ...; number the names 0, 1, 2, ..."
    yaml.write_text("names: a\n")
    assert _text(read_yolo, empty) == \
        f"{yaml}: no 'names' list of class names; add names: [class0, class1, ...]"
    yaml.write_text("names: [a\n")
    text = _text(read_yolo, empty)
    assert text.startswith(f"{yaml}: cannot parse YAML (") and text.endswith("; repair the file")
    yaml.write_bytes(b"names: [\xff]\n")
    assert _text(read_yolo, empty) == (f"{yaml}: not UTF-8 text (invalid start byte at byte "
                                       "8); save the file as UTF-8")
    for split in ("a", "b"):
        (empty / f"{split}.json").write_text("{}")
    assert _text(read_coco, empty) == (
        f"{empty}: 2 JSON files and their splits are not clear from their names: "
        f"{empty / 'a.json'}, {empty / 'b.json'}; pass one file, or name them by split "
        "(train/val/test)")
    bad = empty / "a.json"
    bad.write_text("{oops")
    text = _text(read_coco, bad)
    assert text.startswith(f"{bad}: cannot read COCO JSON (") and text.endswith(
        "; check that this is a COCO instances file")
    bad.write_text("[]")
    assert _text(read_coco, bad) == (f"{bad}: no 'images' list; pass a COCO instances file "
                                     "(images, annotations, categories)")
    bad.write_text('{"images": [], "categories": {}}')
    assert _text(read_coco, bad) == (f"{bad}: 'categories' is not a list; pass a COCO "
                                     "instances file (images, annotations, categories)")


def test_row_and_line_error_texts_in_full(tmp_path):
    """The report lines: where (file:line or file object n), what, fix."""
    path = tmp_path / "l.csv"
    path.write_text("filename,class,xmin,ymin,xmax,ymax\n,a,1,1,2,2\nb.jpg,a,1,1,x,2\n")
    report = Report()
    read_csv(path, report)
    assert report.examples["unreadable annotation"] == [
        f"{path}:2: no file name; fill in the filename",
        f"{path}:3: xmax is 'x', not a finite number; correct the value"]
    (tmp_path / "classes.txt").write_text("a\n")
    _image(tmp_path / "i.jpg")
    (tmp_path / "i.txt").write_text("0 1 2\n3 0.5 0.5 0.1 0.1\n0.5 0.5 0.5 0.1 0.1\n")
    report = Report()
    read_yolo(tmp_path, report)
    where = tmp_path / "i.txt"
    assert report.examples["unreadable annotation"] == [
        f"{where}:1: 3 values, expected 5 (class cx cy w h); fix the line",
        f"{where}:2: class 3 is not in 0..0; add the class name or fix the id",
        f"{where}:3: class '0.5' is not a whole number; use the class index, 0 for the first "
        "name"]
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text(_voc_xml("x", bndbox="<xmin>0</xmin>"))
    (voc / "b.xml").write_text(_voc_xml("x", bndbox="<xmin>0</xmin><ymin>z</ymin>"))
    report = Report()
    read_voc(voc, report)
    assert report.examples["unreadable annotation"] == [
        f"{voc / 'a.xml'} object 1: missing <ymin>; add the field or remove the file from the "
        "dataset",
        f"{voc / 'b.xml'} object 1: <ymin> is 'z', not a valid number; correct the value"]


def test_problem_kind_of_reader_errors():
    from tfod.data.annotations import PathOutsideError, problem_kind

    assert problem_kind(PathOutsideError("x")) == "image path outside the dataset"
    assert problem_kind(DatasetError("x")) == "unreadable annotation"


def test_readers_refuse_an_absolute_image_path_outside_unless_allowed(tmp_path):
    """The default of every reader's ``allow_outside`` is False: an annotation naming an
    existing image outside the dataset (here by absolute path) is counted, not read."""
    outside = _image(tmp_path / "private" / "secret.jpg")
    data = tmp_path / "data"
    data.mkdir()
    csv_path = data / "l.csv"
    csv_path.write_text(f"filename,class,xmin,ymin,xmax,ymax\n{outside},a,1,1,2,2\n")
    report = Report()
    assert read_csv(csv_path, report) == []
    assert report.problems == {"image path outside the dataset": 1}
    (record,) = read_csv(csv_path, Report(), allow_outside=True)
    assert record.image_path == outside
    coco = _coco(data / "c.json", {"images": [{"id": 1, "file_name": str(outside)}]})
    report = Report()
    assert read_coco(coco, report) == [] and report.problems == {
        "image path outside the dataset": 1}
    assert [r.image_path for r in read_coco(coco, allow_outside=True)] == [outside]


def test_readers_without_a_report_still_count_nothing_and_go_on(tmp_path):
    """``report`` is optional: a reader called without one makes its own and still skips
    the bad rows instead of failing."""
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("filename,class,xmin,ymin,xmax,ymax\na.jpg,a,1,1,2,2\n,a,1,1,2,2\n")
    assert [r.image_path.name for r in read_csv(csv_path)] == ["a.jpg"]
    coco = _coco(tmp_path / "c.json", {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2}],
                                       "categories": [{"id": 1}]})
    assert [r.image_path.name for r in read_coco(coco)] == ["a.jpg"]
    (tmp_path / "x.xml").write_text("<annotation>")
    (tmp_path / "y.xml").write_text(_voc_xml("x", "a.jpg"))
    assert len(read_voc(tmp_path)) == 1
    (tmp_path / "classes.txt").write_text("a\n")
    _image(tmp_path / "a.jpg")
    (tmp_path / "a.txt").write_text("9 0.5 0.5 0.1 0.1\n")
    (tmp_path / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert [r.boxes for r in read_yolo(tmp_path)] == [[]]


def test_csv_with_bom_quoted_newline_and_image_folder(tmp_path):
    """Excel's BOM before the header; a quoted field keeps its CRLF (the csv module needs
    newline=''); images looked up in ``image_dir`` first."""
    images = tmp_path / "pictures"
    _image(images / "a.jpg")
    path = tmp_path / "l.csv"
    path.write_bytes(b"\xef\xbb\xbffilename,class,xmin,ymin,xmax,ymax\r\n"
                     b'a.jpg,"two\r\nlines",1,1,2,2\r\n')
    (record,) = read_csv(path, Report(), image_dir=images)
    assert record.image_path == images / "a.jpg"
    assert record.boxes[0].name == "two\r\nlines"
    for name in ("a.csv", "b.csv"):
        (tmp_path / "two" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "two" / name).write_text("filename,class,xmin,ymin,xmax,ymax\n")
    assert _text(read_csv, tmp_path / "two") == (
        f"{tmp_path / 'two'}: 2 CSV files and their splits are not clear from their names: "
        f"{tmp_path / 'two' / 'a.csv'}, {tmp_path / 'two' / 'b.csv'}; pass one file, or name "
        "them by split (train/val/test)")


def test_csv_file_error_texts_in_full(tmp_path):
    header = tmp_path / "header.csv"
    header.write_text("file,class,x1,ymin,xmax,ymax\n")
    assert _text(read_csv, header) == (
        f"{header}: missing column(s) filename, xmin; the header is ['file', 'class', 'x1', "
        "'ymin', 'xmax', 'ymax']; rename the columns or map them (--columns class=label)")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert _text(read_csv, empty) == (
        f"{empty}: missing column(s) filename, class, xmin, ymin, xmax, ymax; the header is "
        "None; rename the columns or map them (--columns class=label)")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"filename,class,xmin,ymin,xmax,ymax\nna\xefve.jpg,a,1,1,2,2\n")
    where, _, rest = _text(read_csv, bad).partition(": ")
    assert where == f"{bad}:2" and rest == (
        "not UTF-8 text (invalid continuation byte at byte 37); save the file as UTF-8 CSV")
    huge = tmp_path / "huge.csv"
    huge.write_text("filename,class,xmin,ymin,xmax,ymax\n" + "a" * 200_000 + ",a,1,1,2,2\n")
    where, _, rest = _text(read_csv, huge).partition(": ")
    assert where.startswith(f"{huge}:") and rest == (
        "not a readable CSV (field larger than field limit (131072)); repair the line or "
        "export the CSV again")
