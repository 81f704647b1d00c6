"""Property-based tests: every reader and the label-map parser, fed random and mutated
input, ends in records (problems counted in the report) or a DatasetError naming the file;
never another exception. A seed corpus of broken files lives in tests/data/broken/."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfod import data
from tfod.data import checks
from tfod.data.readers import CSV_COLUMNS
from tfod.errors import DatasetError

CORPUS = Path(__file__).parent / "data" / "broken"
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

VOC_TEMPLATE = """<annotation><filename>{filename}</filename>
<size><width>{width}</width><height>{height}</height><depth>3</depth></size>
<object><name>{name}</name><difficult>{difficult}</difficult><truncated>0</truncated>
<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>
</object></annotation>"""

numbers = st.one_of(st.integers(-10**30, 10**30).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["", "1e400", "nan", "-inf", "0x10", " 12 ", "1,5", "NaN"]),
                    st.text(max_size=8))
xml_text = st.text(max_size=20).map(lambda t: t.replace("<", "").replace("&", ""))


def _expect_records_or_named_error(read, target: Path, folder: Path):
    """The property: records, or a DatasetError whose message names the file/folder;
    then the checks run on whatever was read, without an exception either."""
    report = data.Report()
    try:
        records = read(target, report)
    except DatasetError as exc:
        assert str(target) in str(exc) or str(folder) in str(exc), str(exc)
        return
    assert all(isinstance(r, data.Record) for r in records)
    for line in report.lines(examples=1000):
        if not line.startswith("  "):
            continue
        assert str(folder) in line, line
    checks.check_records(records, report, workers=1)


def _tmp():
    return Path(tempfile.mkdtemp(prefix="tfod-fuzz-"))


@contextlib.contextmanager
def fuzz_folder():
    """A fresh folder for one example (hypothesis runs many in one test), removed after."""
    folder = _tmp()
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@FUZZ
@given(filename=xml_text, width=numbers, height=numbers, name=xml_text, difficult=numbers,
       xmin=numbers, ymin=numbers, xmax=numbers, ymax=numbers)
def test_voc_fields(**fields):
    with fuzz_folder() as folder:
        (folder / "a.xml").write_text(VOC_TEMPLATE.format(**fields))
        _expect_records_or_named_error(data.read_voc, folder, folder)


@FUZZ
@given(raw=st.binary(max_size=400), cut=st.integers(0, 600))
def test_voc_bytes(raw, cut):
    with fuzz_folder() as folder:
        valid = VOC_TEMPLATE.format(filename="a.jpg", width=10, height=10, name="x",
                                    difficult=0, xmin=1, ymin=1, xmax=5, ymax=5).encode()
        (folder / "a.xml").write_bytes(valid[:cut] + raw)
        _expect_records_or_named_error(data.read_voc, folder, folder)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20)
coco_images = st.lists(st.fixed_dictionaries(
    {"id": json_values, "file_name": json_values},
    optional={"width": json_values, "height": json_values}), max_size=3)
coco_anns = st.lists(st.fixed_dictionaries(
    {"image_id": json_values, "category_id": json_values, "bbox": json_values},
    optional={"iscrowd": json_values}), max_size=3)
coco_cats = st.lists(st.fixed_dictionaries({"id": json_values, "name": json_values}),
                     max_size=3)


@FUZZ
@given(doc=st.one_of(json_values, st.fixed_dictionaries(
    {"images": st.one_of(coco_images, json_values),
     "annotations": st.one_of(coco_anns, json_values),
     "categories": st.one_of(coco_cats, json_values)})))
def test_coco(doc):
    with fuzz_folder() as folder:
        path = folder / "instances.json"
        path.write_text(json.dumps(doc))
        _expect_records_or_named_error(data.read_coco, path, folder)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_coco_bytes(raw):
    with fuzz_folder() as folder:
        (folder / "instances.json").write_bytes(raw)
        _expect_records_or_named_error(data.read_coco, folder / "instances.json", folder)


csv_cells = st.one_of(numbers, st.text(max_size=10), st.just(""))


@FUZZ
@given(rows=st.lists(st.lists(csv_cells, min_size=0, max_size=9), max_size=5),
       header=st.booleans(), raw=st.binary(max_size=60))
def test_csv(rows, header, raw):
    with fuzz_folder() as folder:
        import csv

        path = folder / "labels.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            if header:
                w.writerow(CSV_COLUMNS)
            w.writerows(rows)
        with open(path, "ab") as f:
            f.write(raw)
        _expect_records_or_named_error(data.read_csv, path, folder)


@FUZZ
@given(label=st.one_of(st.text(max_size=80), st.binary(max_size=80).map(
    lambda b: b.decode("latin-1"))), classes=st.text(max_size=40),
    yaml_text=st.one_of(st.none(), st.text(max_size=60),
                        st.sampled_from(["names: {1: a, x: b}", "names: 3", "names: [a, [b]]",
                                         "- 1", "names:\n  0: a\n  1: b\n"])),
    raw_label=st.binary(max_size=40))
def test_yolo(label, classes, yaml_text, raw_label):
    with fuzz_folder() as folder:
        from PIL import Image

        (folder / "images").mkdir()
        (folder / "labels").mkdir()
        Image.new("RGB", (16, 12)).save(folder / "images" / "a.jpg")
        Image.new("RGB", (16, 12)).save(folder / "images" / "b.jpg")
        (folder / "labels" / "a.txt").write_text(label, errors="surrogateescape")
        (folder / "labels" / "b.txt").write_bytes(raw_label)
        (folder / "classes.txt").write_text(classes, errors="surrogateescape")
        if yaml_text is not None:
            (folder / "data.yaml").write_text(yaml_text, errors="surrogateescape")
        _expect_records_or_named_error(data.read_yolo, folder, folder)


VALID_MAP = "item { id: 1 name: 'cat' }\nitem { id: 2 name: 'dog' display_name: 'Dog' }\n"


@FUZZ
@given(text=st.one_of(st.text(max_size=120), st.binary(max_size=120).map(
    lambda b: b.decode("latin-1")), st.integers(0, len(VALID_MAP)).flatmap(
    lambda cut: st.text(max_size=10).map(lambda t: VALID_MAP[:cut] + t + VALID_MAP[cut:]))))
def test_label_map_parser(text):
    with fuzz_folder() as folder:
        path = folder / "label_map.pbtxt"
        path.write_text(text, errors="surrogateescape")
        try:
            names = data.read_label_map(path)
        except DatasetError as exc:
            assert str(path) in str(exc)
        else:
            assert len(names) == len(set(names)) and all(isinstance(n, str) for n in names)


# --------------------------------------------------------------------------- #
# The seed corpus: real broken files, each read without a traceback
# --------------------------------------------------------------------------- #
READERS = {".xml": data.read_voc, ".json": data.read_coco, ".csv": data.read_csv,
           ".pbtxt": None}


@pytest.mark.parametrize("path", sorted(p for p in CORPUS.rglob("*") if p.is_file()
                                        and p.suffix in READERS), ids=lambda p: p.name)
def test_seed_corpus(path, tmp_path):
    if path.suffix == ".pbtxt":
        with pytest.raises(DatasetError, match=path.name):
            data.read_label_map(path)
        return
    target = tmp_path / path.name
    shutil.copy(path, target)
    read = READERS[path.suffix]
    _expect_records_or_named_error(read, tmp_path if path.suffix == ".xml" else target,
                                   tmp_path)
