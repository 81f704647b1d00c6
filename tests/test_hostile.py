"""Hostile and broken input: XML entities, decompression bombs, paths that leave the
dataset, awkward file names, and commands killed half-way. docs/RELIABILITY.md maps each
case to its test here."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tfod import data
from tfod.cli import main
from tfod.data import checks, prepare
from tfod.data.annotations import Report
from tfod.data.synth import synthesize
from tfod.errors import DatasetError

VOC = """<annotation><filename>{filename}</filename>
<size><width>64</width><height>48</height><depth>3</depth></size>
<object><name>{name}</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>30</xmax><ymax>30</ymax>
</bndbox></object></annotation>"""


def _image(path: Path, size=(64, 48), colour=(120, 30, 200)) -> Path:
    Image.new("RGB", size, colour).save(path, quality=90)
    return path


def _all_text(*roots: Path) -> bytes:
    out = b""
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file():
                out += path.read_bytes()
    return out


# --------------------------------------------------------------------------- #
# XML
# --------------------------------------------------------------------------- #
def test_xml_external_entity_never_reaches_any_output(tmp_path, capsys, caplog):
    secret = tmp_path / "secret.txt"
    token = "TOKEN-7c1d9e-never-to-be-read"
    secret.write_text(token)
    voc = tmp_path / "voc"
    voc.mkdir()
    _image(voc / "a.jpg")
    _image(voc / "b.jpg", colour=(10, 200, 30))
    (voc / "a.xml").write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE annotation [<!ENTITY s SYSTEM "file://{secret}">]>\n'
        + VOC.format(filename="a.jpg", name="&s;"))
    (voc / "b.xml").write_text(VOC.format(filename="b.jpg", name="cat"))
    code = main(["prepare", str(voc), "--name", "x", "--out-root", str(tmp_path / "data"),
                 "--label-maps", str(tmp_path / "lm"), "--split", "train=0.5,val=0.5"])
    assert code == 0
    manifest = json.loads((tmp_path / "data" / "x" / "manifest.json").read_text())
    assert manifest["problems"] == {"unreadable annotation": 1}  # a.xml: no usable <name>
    captured = capsys.readouterr()
    everything = (_all_text(tmp_path / "data", tmp_path / "lm") + captured.out.encode()
                  + captured.err.encode() + caplog.text.encode())
    assert token.encode() not in everything
    assert b"a.xml" in everything  # the problem is reported, by file


def test_billion_laughs_is_not_expanded(tmp_path):
    corpus = Path(__file__).parent / "data" / "broken" / "voc_billion_laughs.xml"
    (tmp_path / "a.xml").write_bytes(corpus.read_bytes())
    report = Report()
    assert data.read_voc(tmp_path, report) == []
    assert report.problems == {"unreadable annotation": 1}
    assert "lollol" not in "\n".join(report.lines())


# --------------------------------------------------------------------------- #
# Images: bombs and limits
# --------------------------------------------------------------------------- #
def _png_declaring(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def _jpeg_declaring(path: Path, width: int, height: int) -> Path:
    _image(path, (16, 16))
    raw = bytearray(path.read_bytes())
    sof = raw.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    raw[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(raw))
    return path


def _peak_rss_mb(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code + "\nimport resource\n"
                          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


@pytest.mark.parametrize("make", [_png_declaring, _jpeg_declaring], ids=["png", "jpeg"])
def test_decompression_bomb_is_refused_without_memory(tmp_path, make):
    bomb = make(tmp_path / ("bomb.png" if make is _png_declaring else "bomb.jpg"), 60000, 60000)
    assert bomb.stat().st_size < 2000
    report = Report()
    kept = checks.check_records([data.Record(bomb, 0, 0, source="bomb.xml")], report)
    assert kept == [] and report.problems == {"unreadable image": 1}
    assert "3,600,000,000 pixels" in report.lines()[1] and "--max-pixels" in report.lines()[1]
    base = _peak_rss_mb("from tfod.data import checks")
    peak = _peak_rss_mb(f"from tfod.data import checks\nchecks.inspect_image({str(bomb)!r})")
    assert peak - base < 50  # decoding it would need 10 GB


def test_pixel_limit_is_configurable(tmp_path):
    img = _image(tmp_path / "a.jpg")  # 64x48 = 3072 pixels
    assert isinstance(checks.inspect_image(img, max_pixels=3000), str)
    assert isinstance(checks.inspect_image(img, max_pixels=3072), checks.ImageInfo)


def test_truncated_images_are_counted_per_file(tmp_path):
    full = _image(tmp_path / "full.jpg", (300, 200)).read_bytes()
    for i, cut in enumerate((200, len(full) // 2, len(full) - 10)):
        (tmp_path / f"cut{i}.jpg").write_bytes(full[:cut])
    records = [data.Record(tmp_path / f"cut{i}.jpg", 0, 0, source=f"cut{i}") for i in range(3)]
    report = Report()
    assert checks.check_records(records, report) == []
    assert report.problems == {"unreadable image": 3}


# --------------------------------------------------------------------------- #
# Paths
# --------------------------------------------------------------------------- #
def test_paths_leaving_the_dataset_are_refused_unless_allowed(tmp_path):
    outside = _image(tmp_path / "outside.jpg")
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "abs.xml").write_text(VOC.format(filename=str(outside), name="cat"))
    (voc / "dots.xml").write_text(VOC.format(filename="../outside.jpg", name="cat"))
    report = Report()
    assert data.read_voc(voc, report) == []
    assert report.problems == {"image path outside the dataset": 2}
    assert "--allow-outside-paths" in report.lines()[1]
    records = data.read_voc(voc, Report(), allow_outside=True)
    assert [r.image_path.resolve() for r in records] == [outside.resolve()] * 2
    # same for CSV and COCO
    (voc / "labels.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n"
                                    f"{outside},64,48,cat,1,1,9,9\n")
    report = Report()
    assert data.read_csv(voc / "labels.csv", report) == []
    assert report.problems == {"image path outside the dataset": 1}
    (voc / "ann").mkdir()  # COCO: ../../ from ann/ leaves the JSON's folder (and voc/)
    (voc / "ann" / "coco.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "../../outside.jpg"}], "annotations": [],
        "categories": []}))
    report = Report()
    assert data.read_coco(voc / "ann" / "coco.json", report) == []
    assert report.problems == {"image path outside the dataset": 1}


def test_unicode_spaces_long_names_and_symlinked_folders(tmp_path):
    """Unicode and long names work. A symlinked images/ folder leads outside the dataset,
    so it is refused by default (with the fix in the message) and works once named by
    --images (the user's own choice, resolved as given)."""
    real_images = tmp_path / "elsewhere" / "pictures"
    real_images.mkdir(parents=True)
    root = tmp_path / "my data set ü"
    root.mkdir()
    os.symlink(real_images, root / "images")
    names = ["raton laveur 🦝.jpg", "café.jpg", "x" * 200 + ".jpg"]
    lines = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i, name in enumerate(names):
        _image(real_images / name, colour=(i * 60, 100, 100))
        lines.append(f'"{name}",64,48,chat noir,2,2,30,30')
    (root / "train_labels.csv").write_text("\n".join(lines) + "\n")
    report = Report()
    assert data.read_csv(root / "train_labels.csv", report) == []
    assert report.problems == {"image path outside the dataset": 3}
    assert "through a symlink" in report.lines()[1] and "--images" in report.lines()[1]
    result = data.prepare_dataset(root / "train_labels.csv", "ünï", fmt="csv",
                                  out_root=tmp_path / "dätä", label_map_dir=tmp_path / "lm",
                                  split={"train": 0.5, "val": 0.5}, plots=False,
                                  image_dir=root / "images")
    assert not result["report"]["problems"]
    import tensorflow as tf

    files = tf.io.gfile.glob(str(Path(result["dir"]) / "*.tfrecord"))
    written = {tf.train.Example.FromString(r.numpy()).features.feature["image/filename"]
               .bytes_list.value[0].decode() for r in tf.data.TFRecordDataset(files)}
    assert written == set(names)
    assert data.read_label_map(tmp_path / "lm" / "ünï.pbtxt") == ["chat noir"]


def _voc_dataset(root: Path, images: dict[str, str]) -> Path:
    """A plain VOC folder: ``{xml stem: <filename> text}``, one image per stem in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for i, (stem, filename) in enumerate(images.items()):
        if not (root / filename).exists() and "/" not in filename:
            _image(root / filename, colour=(40 * i, 90, 160))
        (root / f"{stem}.xml").write_text(VOC.format(filename=filename, name="cat"))
    return root


def _secret_image(path: Path) -> bytes:
    """A private JPEG whose bytes must never reach tfod's output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _image(path, colour=(7, 77, 177))
    return path.read_bytes()


def test_coco_dataset_is_the_json_folder_not_its_parent(tmp_path):
    """``../private/secret.jpg`` next to downloads/coco/ann.json was read (the grandparent
    counted as the dataset): now refused, and its bytes are in no output file."""
    secret = _secret_image(tmp_path / "downloads" / "private" / "secret.jpg")
    coco = tmp_path / "downloads" / "coco"
    coco.mkdir()
    _image(coco / "ok.jpg")
    _image(coco / "ok2.jpg", colour=(9, 9, 9))
    images = [{"id": 1, "file_name": "../private/secret.jpg", "width": 64, "height": 48},
              {"id": 2, "file_name": "ok.jpg", "width": 64, "height": 48},
              {"id": 3, "file_name": "ok2.jpg", "width": 64, "height": 48}]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 20, 20]} for i in (2, 3)]
    (coco / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "cat"}]}))
    result = data.prepare_dataset(coco / "ann.json", "c", fmt="coco", out_root=tmp_path / "data",
                                  label_map_dir=tmp_path / "lm", plots=False,
                                  split={"train": 0.5, "val": 0.5})
    assert result["report"]["problems"] == {"image path outside the dataset": 1}
    assert secret not in _all_text(tmp_path / "data")
    assert data.read_coco(coco / "ann.json", Report(), allow_outside=True)[0].image_path \
        .resolve() == (tmp_path / "downloads" / "private" / "secret.jpg").resolve()


def test_coco_annotations_folder_beside_images_still_works(tmp_path):
    """COCO's own layout (annotations/x.json, images/) needs no --images: the images/ folder
    beside the JSON's folder is part of the dataset; the parent folder itself is not."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    _image(root / "images" / "a.jpg")
    secret = _secret_image(root / "other" / "b.jpg")
    (root / "annotations" / "train.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "../other/b.jpg"}],
        "annotations": [], "categories": []}))
    report = Report()
    records = data.read_coco(root / "annotations" / "train.json", report)
    assert [r.image_path for r in records] == [root / "images" / "a.jpg"]
    assert report.problems == {"image path outside the dataset": 1}
    assert secret != (root / "images" / "a.jpg").read_bytes()


def test_voc_does_not_look_beside_its_folder(tmp_path):
    """VOC's dataset is the folder given: an image in ``<root>/../images`` is not read (it
    was, as a fallback); ``--images`` names it explicitly."""
    root = tmp_path / "ds" / "annotations"
    root.mkdir(parents=True)
    (root / "a.xml").write_text(VOC.format(filename="a.jpg", name="cat"))
    secret = _secret_image(tmp_path / "ds" / "images" / "a.jpg")
    (record,) = data.read_voc(root, Report())
    assert not record.image_path.exists()  # reported as missing by the checks, never read
    kept = checks.check_records([record], report := Report())
    assert kept == [] and "missing image" in "".join(report.problems)
    (record,) = data.read_voc(root, Report(), image_dir=tmp_path / "ds" / "images")
    assert record.image_path.read_bytes() == secret


@pytest.mark.parametrize("kind", ["voc-image", "voc-xml", "voc-folder", "coco", "csv", "yolo",
                                  "yolo-label"])
def test_symlinks_inside_the_dataset_leading_out_are_refused(tmp_path, kind):
    """Paths are resolved by the filesystem before the containment check, so a symlink
    inside the dataset (an image, an annotation file, an image folder) that points outside
    is refused unless allow_outside, and the private bytes reach no output."""
    secret_path = tmp_path / "private" / "secret.jpg"
    secret = _secret_image(secret_path)
    root = tmp_path / "ds"
    root.mkdir()
    _image(root / "ok.jpg")
    _image(root / "ok2.jpg", colour=(1, 200, 1))
    fmt, source = kind.split("-")[0], root
    if kind == "voc-image":
        os.symlink(secret_path, root / "link.jpg")
        _voc_dataset(root, {"ok": "ok.jpg", "ok2": "ok2.jpg", "link": "link.jpg"})
    elif kind == "voc-xml":  # the private file is the XML itself: its class must not leak
        (tmp_path / "private" / "link.xml").write_text(VOC.format(filename="ok.jpg",
                                                                  name="private-class"))
        os.symlink(tmp_path / "private" / "link.xml", root / "link.xml")
        _voc_dataset(root, {"ok": "ok.jpg", "ok2": "ok2.jpg"})
    elif kind == "voc-folder":
        os.symlink(tmp_path / "private", root / "JPEGImages")
        _voc_dataset(root, {"ok": "ok.jpg", "ok2": "ok2.jpg"})
        (root / "link.xml").write_text(VOC.format(filename="secret.jpg", name="cat"))
    elif kind in ("coco", "csv"):
        os.symlink(secret_path, root / "link.jpg")
        names = ["ok.jpg", "ok2.jpg", "link.jpg"]
        if kind == "coco":
            source = root / "ann.json"
            source.write_text(json.dumps({
                "images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
                "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 9, 9]}
                                for i in range(2)], "categories": [{"id": 1, "name": "cat"}]}))
        else:
            source = root / "labels.csv"
            source.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n" + "".join(
                f"{n},64,48,cat,2,2,20,20\n" for n in names))
    elif kind == "yolo-label":  # a label file linked to a private text file: no line of it
        (root / "classes.txt").write_text("cat\n")  # may be quoted in the report
        _image(root / "link.jpg", colour=(3, 3, 3))
        (tmp_path / "private" / "notes.txt").write_text("private-class 0.5 0.5 0.2 0.2\n")
        os.symlink(tmp_path / "private" / "notes.txt", root / "link.txt")
        for stem in ("ok", "ok2"):
            (root / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    else:  # yolo
        (root / "classes.txt").write_text("cat\n")
        os.symlink(secret_path, root / "link.jpg")
        for stem in ("ok", "ok2"):  # (a label for link.jpg would add "label without image")
            (root / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    report = Report()
    records = data.READERS[fmt](source, report)
    assert report.problems == {"image path outside the dataset": 1}, report.lines()
    assert len(records) == 2
    result = data.prepare_dataset(source, "s", fmt=fmt, out_root=tmp_path / "data",
                                  label_map_dir=tmp_path / "lm", plots=False,
                                  split={"train": 0.5, "val": 0.5})
    assert result["report"]["problems"] == {"image path outside the dataset": 1}
    assert secret not in _all_text(tmp_path / "data", tmp_path / "lm")
    assert b"private-class" not in _all_text(tmp_path / "data", tmp_path / "lm")
    allowed = data.READERS[fmt](source, Report(), allow_outside=True)
    if kind in ("voc-xml", "yolo-label"):
        report = Report()
        allowed = data.READERS[fmt](source, report, allow_outside=True)
        assert "private-class" in {b.name for r in allowed for b in r.boxes} | {
            "private-class" for line in report.lines() if "private-class" in line}
    else:
        assert secret_path.resolve() in {r.image_path.resolve() for r in allowed}


# --------------------------------------------------------------------------- #
# Names and folders tfod replaces
# --------------------------------------------------------------------------- #
def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders): the filesystem as it is."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def sentinel(tmp_path):
    """tmp_path/victim/keep.txt: a user's folder that no hostile name may touch."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("the user's own file")
    return victim


@pytest.mark.parametrize("name", ["/../../{victim}", "../../victim", "../escape", "a/b", ".hidden",
                                  "..", "", "x" * 101, "-rf", "bad name"])
def test_prepare_name_never_becomes_a_path(tmp_path, sentinel, name, capsys):
    """``--name`` is a plain name, checked before anything touches the disk: exit 1, a
    clear error, no traceback, and the filesystem exactly as it was (sentinel included)."""
    voc = _voc_dataset(tmp_path / "voc", {"a": "a.jpg", "b": "b.jpg"})
    name = name.format(victim=sentinel)
    before = _tree(tmp_path)
    code = main(["prepare", str(voc), f"--name={name}", "--out-root", str(tmp_path / "w" / "data"),
                 "--label-maps", str(tmp_path / "w" / "lm"), "--split", "train=0.5,val=0.5"])
    err = capsys.readouterr().err
    assert code == 1 and "is not a valid name" in err and "--name" in err
    assert "Traceback" not in err
    assert _tree(tmp_path) == before


def test_prepare_name_with_absolute_path_as_a_user_runs_it(tmp_path, sentinel):
    """The reported case, as a process: ``--name "/../../<folder>"`` exits 1 without a
    traceback and the folder keeps its file."""
    voc = _voc_dataset(tmp_path / "voc", {"a": "a.jpg", "b": "b.jpg"})
    done = subprocess.run(
        [sys.executable, "-m", "tfod.cli", "prepare", str(voc), "--name", f"/../..{sentinel}",
         "--out-root", str(tmp_path / "data"), "--label-maps", str(tmp_path / "lm"),
         "--split", "train=0.5,val=0.5"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert (sentinel / "keep.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in sentinel.iterdir()) == ["keep.txt"]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("target", ["folder", "symlink", "file"])
def test_prepare_never_replaces_what_it_did_not_write(tmp_path, sentinel, target, capsys):
    """A folder (or a symlink to one, or a file) already at data/<name> that tfod did not
    write is refused with a clear error; nothing in it is deleted."""
    voc = _voc_dataset(tmp_path / "voc", {"a": "a.jpg", "b": "b.jpg"})
    out = tmp_path / "data"
    out.mkdir()
    if target == "folder":
        sentinel.rename(out / "pets")
        sentinel = out / "pets"
    elif target == "symlink":
        os.symlink(sentinel, out / "pets")
    else:
        (out / "pets").write_text("a file")
    before = _tree(tmp_path)
    code = main(["prepare", str(voc), "--name", "pets", "--out-root", str(out),
                 "--label-maps", str(tmp_path / "lm"), "--split", "train=0.5,val=0.5"])
    err = capsys.readouterr().err
    assert code == 1 and "not written by tfod" in err and "Traceback" not in err
    assert _tree(tmp_path) == before


def test_prepare_replaces_its_own_output_marked(tmp_path):
    """What prepare wrote carries the marker and is replaced by the next run; a folder
    from before the marker (its manifest names it) is replaced too."""
    voc = _voc_dataset(tmp_path / "voc", {"a": "a.jpg", "b": "b.jpg"})
    args = dict(out_root=tmp_path / "data", label_map_dir=tmp_path / "lm", plots=False,
                split={"train": 0.5, "val": 0.5})
    first = Path(data.prepare_dataset(voc, "pets", **args)["dir"])
    assert (first / data.MARKER).is_file()
    (first / data.MARKER).unlink()  # as written by an earlier tfod
    (first / "stale.txt").write_text("gone after the replace")
    data.prepare_dataset(voc, "pets", seed=1, **args)
    assert (first / data.MARKER).is_file() and not (first / "stale.txt").exists()


def test_replace_refuses_a_folder_that_appeared_meanwhile(tmp_path, sentinel):
    """The swap itself checks again: a folder created at the final name after the early
    check (another process, the user) is not moved or deleted; the new folder stays."""
    new = tmp_path / ".new"
    new.mkdir()
    (new / data.MARKER).write_text("")
    with pytest.raises(DatasetError, match="not written by tfod"):
        prepare._replace_dir(new, sentinel)
    assert (sentinel / "keep.txt").read_text() == "the user's own file"
    assert new.is_dir()


def test_stale_work_folders_are_removed_only_when_marked(tmp_path):
    """Leftovers of a killed run (dead pid) are removed if they hold the marker (or are
    empty); a same-named folder without it is the user's and stays."""
    dead = 2**22 + 17  # above Linux's pid_max: no such process
    ours = tmp_path / f".pets.partial-{dead}-abc"
    empty = tmp_path / f".pets.partial-{dead}-def"
    theirs = tmp_path / f".pets.old-{dead}"
    for folder in (ours, empty, theirs):
        folder.mkdir()
    (ours / data.MARKER).write_text("")
    (theirs / "keep.txt").write_text("mine")
    prepare._remove_stale_partials(tmp_path, "pets")
    assert not ours.exists() and not empty.exists()
    assert (theirs / "keep.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
    """A valid tiny pipeline.config over a prepared dataset (no training)."""
    from tfod.config import patch_pipeline_for_dataset

    root = tmp_path_factory.mktemp("cfg")
    synthesize(root / "raw", num_train=4, num_val=2, seed=2)
    prepared = data.prepare_dataset(root / "raw", "cfg", out_root=root / "data",
                                    label_map_dir=root / "lm", plots=False)
    return patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", root / "cfg" / "pipeline.config",
                                      data_dir=prepared["dir"], num_steps=1, batch_size=2)


@pytest.mark.parametrize("extra", [[], ["--early-stop", "2"]], ids=["train", "early-stop"])
@pytest.mark.parametrize("run", ["../x", "/../..{victim}", ".hidden"])
def test_train_run_never_becomes_a_path(tmp_path, sentinel, small_config, run, extra, capsys):
    """``tfod train --run`` is a plain name too: exit 1, no traceback, nothing written."""
    runs = tmp_path / "w" / "runs"
    before = _tree(tmp_path)
    code = main(["train", str(small_config), "--run", run.format(victim=sentinel),
                 "--runs-root", str(runs), "--steps", "1", *extra])
    err = capsys.readouterr().err
    assert code == 1 and "is not a valid name" in err and "--run" in err
    assert "Traceback" not in err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("via", ["dotdot", "space"])
def test_export_folder_name_is_checked(tiny_run, tmp_path, monkeypatch, via):
    """export's default folder exports/<run name> takes the run folder's name: one that is
    not a plain name (``..`` from ``runs/tiny/train/..``, or ``my run``) is refused before
    anything is written (``exports/..`` would be the working folder itself)."""
    from tfod.errors import ExportError
    from tfod.exporter import export

    run = tiny_run["run_dir"] / "train" / ".."
    if via == "space":
        run = tmp_path / "my run"
        os.symlink(tiny_run["run_dir"], run)
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(ExportError, match="not a valid name.*--out DIR"):
        export(run, formats=["saved_model"], evaluate=False)
    assert _tree(tmp_path) == before


# --------------------------------------------------------------------------- #
# Folders and files tfod empties, replaces or deletes: only what it marked
# --------------------------------------------------------------------------- #
def _fake_run(root: Path, config: Path) -> Path:
    """A run folder as ``tfod train`` leaves it, without training: the config and an
    (empty) checkpoint that ``export`` resolves."""
    run = root / "run"
    run.mkdir()
    shutil.copy(config, run / "pipeline.config")
    (run / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    (run / "ckpt-1.index").write_bytes(b"")
    (run / "ckpt-1.data-00000-of-00001").write_bytes(b"")
    return run


def _users_export_like_folder(folder: Path) -> Path:
    """A folder of the user's holding exactly the names export cleans up."""
    folder.mkdir(parents=True)
    for name in ("report.md", "report.json", "export.json", "keep.txt"):
        (folder / name).write_text(f"the user's {name}")
    (folder / ".partial-notes").mkdir()
    (folder / ".partial-notes" / "draft.txt").write_text("the user's draft")
    return folder


@pytest.mark.parametrize("target", ["folder", "symlink"])
def test_export_never_empties_a_folder_it_did_not_write(tmp_path, small_config, target, capsys):
    """``tfod export --out DIR`` into an existing non-empty folder without the export mark
    (or a symlink to one): exit 1, a clear error naming the folder and ``--out``, no
    traceback; report.md, report.json, export.json and .partial-* are all still there."""
    run = _fake_run(tmp_path, small_config)
    victim = _users_export_like_folder(tmp_path / "victim")
    out = victim
    if target == "symlink":
        out = tmp_path / "exports"
        os.symlink(victim, out)
    before = _tree(tmp_path)
    code = main(["export", str(run), "--out", str(out), "--formats", "saved_model",
                 "--no-eval"])
    err = capsys.readouterr().err
    assert code == 1 and "not written by tfod" in err and "--out" in err
    assert "Traceback" not in err
    assert _tree(tmp_path) == before


def test_export_marks_the_folder_it_creates_and_cleans_only_that(tmp_path, small_config):
    """A new (or empty) export folder gets the mark; a marked folder's stale report and
    work folders are removed by the next export (here one whose fake checkpoint then fails
    to load: the clean-up is what this checks)."""
    from tfod.exporter import _claim_export_dir, export
    from tfod.files import is_owned

    fresh = tmp_path / "exports" / "new"
    _claim_export_dir(fresh)
    assert is_owned(fresh, "export")
    empty = tmp_path / "empty"
    empty.mkdir()
    _claim_export_dir(empty)
    assert is_owned(empty, "export")
    run = _fake_run(tmp_path, small_config)
    ours = _users_export_like_folder(tmp_path / "ours")
    (ours / ".tfod-export").write_text("")
    with pytest.raises(Exception):  # noqa: B017  the empty checkpoint does not load
        export(run, out_dir=ours, formats=["saved_model"], evaluate=False)
    left = {p.name for p in ours.iterdir()}
    assert {"report.md", "report.json", "export.json", ".partial-notes"}.isdisjoint(left)
    assert {"keep.txt", ".tfod-export"} <= left


@pytest.mark.parametrize("which", ["runs", "exports"])
def test_demo_never_removes_folders_it_did_not_write(tmp_path, which):
    """``tfod demo`` starts fresh by deleting runs/demo and exports/demo: a folder there
    without tfod's mark is refused (TfodError naming it) and keeps every file."""
    from tfod.demonstration import demo
    from tfod.errors import TfodError

    victim = tmp_path / which / "demo"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("the user's own file")
    before = _tree(tmp_path)
    with pytest.raises(TfodError, match="not written by tfod") as info:
        demo(tmp_path, num_train=-1)  # stops at synth if the guard is gone
    assert str(victim) in str(info.value)
    assert _tree(tmp_path) == before


def test_demo_replaces_the_folders_tfod_marked(tmp_path):
    """A previous demo's marked run and export folders are deleted; the new run folder is
    marked before anything is written into it. (num_train=-1 stops the demo at synth.)"""
    from tfod.demonstration import demo
    from tfod.files import is_owned, mark_owned

    for which, kind in (("runs", "run"), ("exports", "export")):
        old = tmp_path / which / "demo"
        old.mkdir(parents=True)
        mark_owned(old, kind)
        (old / "old.txt").write_text("from the last demo")
    with pytest.raises(DatasetError, match="num_train"):
        demo(tmp_path, num_train=-1)
    assert not (tmp_path / "exports" / "demo").exists()
    assert is_owned(tmp_path / "runs" / "demo", "run")
    assert not (tmp_path / "runs" / "demo" / "old.txt").exists()


def test_train_marks_the_run_folder_it_writes(tmp_path, small_config):
    """``tfod train`` marks its run folder (so ``tfod demo`` may replace it later); a
    negative step count stops it right after the folder is made, without training."""
    from tfod.errors import TrainError
    from tfod.files import is_owned
    from tfod.training import train

    with pytest.raises(TrainError):
        train(small_config, run="r", runs_root=tmp_path / "runs", num_steps=-1)
    assert is_owned(tmp_path / "runs" / "r", "run")


@pytest.mark.parametrize("target", ["folder", "symlink", "voc-lookalike"])
def test_synth_overwrite_never_removes_what_it_did_not_write(tmp_path, sentinel, target):
    """``tfod synth DIR --overwrite`` replaces DIR only when synth wrote it: a user's
    folder, a symlink to one, or a VOC folder whose files are not synth's is refused and
    keeps everything."""
    out = tmp_path / "voc"
    if target == "folder":
        sentinel.rename(out)
    elif target == "symlink":
        os.symlink(sentinel, out)
    else:
        for sub in ("JPEGImages", "Annotations", "ImageSets"):
            (out / sub).mkdir(parents=True)
        _image(out / "JPEGImages" / "holiday.jpg")
    before = _tree(tmp_path)
    with pytest.raises(DatasetError, match="not written by tfod") as info:
        synthesize(out, num_train=2, num_val=1, image_size=64, overwrite=True)
    assert "out_dir" in info.value.fix
    assert _tree(tmp_path) == before


def test_synth_overwrite_replaces_its_own_output(tmp_path):
    """synth's output carries the mark and is replaced; one from before the mark (only
    synth_NNNNNN files in the three VOC folders) is replaced too."""
    out = tmp_path / "voc"
    synthesize(out, num_train=2, num_val=1, image_size=64)
    assert (out / ".tfod-synth").is_file()
    (out / "JPEGImages" / "synth_000099.jpg").write_bytes(b"stale")
    synthesize(out, num_train=2, num_val=1, image_size=64, overwrite=True)
    assert not (out / "JPEGImages" / "synth_000099.jpg").exists()
    (out / ".tfod-synth").unlink()  # as written by an earlier tfod
    synthesize(out, num_train=1, num_val=1, image_size=64, overwrite=True)
    assert len(list((out / "JPEGImages").iterdir())) == 2


@pytest.mark.parametrize("target", ["own text", "symlink"])
def test_prepare_never_overwrites_a_label_map_it_did_not_write(tmp_path, sentinel, target,
                                                               capsys):
    """label_maps/<name>.pbtxt that tfod did not write (a hand-written label map, or a
    symlink to a user's file) is refused before anything is written: exit 1, the fix
    names --label-map and --name, no traceback, every file as it was."""
    voc = _voc_dataset(tmp_path / "voc", {"a": "a.jpg", "b": "b.jpg"})
    lm = tmp_path / "lm"
    lm.mkdir()
    if target == "symlink":
        os.symlink(sentinel / "keep.txt", lm / "pets.pbtxt")
    else:
        (lm / "pets.pbtxt").write_text("# my classes\nitem { id: 1 name: 'cat' }\n")
    before = _tree(tmp_path)
    code = main(["prepare", str(voc), "--name", "pets", "--out-root", str(tmp_path / "data"),
                 "--label-maps", str(lm), "--split", "train=0.5,val=0.5"])
    err = capsys.readouterr().err
    assert code == 1 and "label map exists and was not written by tfod" in err
    assert "--label-map FILE" in err and "--name" in err and "Traceback" not in err
    assert _tree(tmp_path) == before


def test_prepare_overwrites_its_own_label_map_and_keeps_a_given_one(tmp_path):
    """prepare overwrites label_maps/<name>.pbtxt it wrote (header line; or, from before the
    header, the same text as the dataset's copy); ``--label-map`` that file itself is
    used and left byte for byte."""
    voc = _voc_dataset(tmp_path / "voc", {"a": "a.jpg", "b": "b.jpg"})
    args = dict(out_root=tmp_path / "data", label_map_dir=tmp_path / "lm", plots=False,
                split={"train": 0.5, "val": 0.5})
    path = Path(data.prepare_dataset(voc, "pets", **args)["label_map"])
    assert path.read_text().startswith(data.LABEL_MAP_HEADER)
    old = path.read_text()[len(data.LABEL_MAP_HEADER):]
    path.write_text(old)  # as an earlier tfod wrote it, without the header ...
    (tmp_path / "data" / "pets" / "label_map.pbtxt").write_text(old)  # ... and its copy
    data.prepare_dataset(voc, "pets", seed=1, **args)
    assert path.read_text().startswith(data.LABEL_MAP_HEADER)
    mine = "# mine\n" + old
    path.write_text(mine)
    data.prepare_dataset(voc, "pets", label_map=path, **args)
    assert path.read_text() == mine


@pytest.mark.parametrize("name", ["ssd\n", "../x", ".x", "a/b", "x" * 101])
def test_zoo_names_are_checked_like_every_folder_name(name):
    """A zoo model name becomes a folder under --dest: it follows tfod.files.check_name
    (the old pattern let "ssd\\n" through); every registry name stays valid."""
    from tfod import zoo

    for valid in zoo.REGISTRY:
        assert zoo._source(valid, None, None)[0].startswith("https://")
    with pytest.raises(zoo.ZooError, match="is not a valid name"):
        zoo._source(name, "https://example.org/x.tar.gz", None)


# --------------------------------------------------------------------------- #
# Interruption
# --------------------------------------------------------------------------- #
def _complete(folder: Path) -> bool:
    """A prepared folder is complete: a manifest whose shards all exist, none partial."""
    manifest = json.loads((folder / "manifest.json").read_text())
    shards = [folder / s for split in manifest["splits"].values() for s in split["shards"]]
    hidden = [p for p in folder.glob(".*") if p.name != data.MARKER]
    return all(s.is_file() for s in shards) and not hidden and (folder / data.MARKER).is_file()


@pytest.fixture(scope="module")
def big_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("big") / "voc"
    synthesize(root, num_train=300, num_val=60, image_size=256, seed=5)
    return root


def _state(pid: int) -> str:
    """The process state letter from /proc (``T`` stopped, ``Z`` exited), ``Z`` if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def _interrupt(cmd: list[str], out: Path, sig: int, delay: float) -> int | None:
    """Start prepare, wait for its hidden partial folder (the writing has begun), let it
    run ``delay`` s more, freeze it (SIGSTOP) and, while it is frozen mid-run, send
    ``sig``: the signal cannot arrive after the end. Returns the exit code, or None
    when prepare finished within ``delay`` (nothing was interrupted)."""
    # SIGINT back to its default in the child: a job started in the background by a script
    # inherits an ignored SIGINT, and Python would keep ignoring it
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(out.glob(".big.partial-*")) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGSTOP)  # a process that just ended stays unreaped: no reuse
    while proc.poll() is None and _state(proc.pid) not in ("T", "Z"):
        time.sleep(0.005)  # SIGSTOP lands asynchronously; a process already exiting ends
    if proc.poll() is not None or _state(proc.pid) == "Z":
        assert proc.wait() == 0, "prepare failed before it was interrupted"
        return None
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    return proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGINT,
                                                                marks=pytest.mark.slow)],
                         ids=["kill", "int"])
def test_killed_prepare_leaves_previous_output_or_nothing(big_voc, tmp_path, sig):
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "tfod.cli", "prepare", str(big_voc), "--name", "big",
           "--out-root", str(out), "--label-maps", str(tmp_path / "lm"), "--no-plots"]
    previous = None
    rng = random.Random(sig)
    for attempt in range(2):  # once with no earlier output, once over a complete one
        for delay in (rng.uniform(0, 0.3), 0.0, 0.0, 0.0):  # in the writing, else its start
            code = _interrupt(cmd, out, sig, delay)
            if code in (0, -signal.SIGINT) and (out / "big" / "manifest.json").is_file() \
                    and _complete(out / "big") \
                    and not list(out.glob(".big.*")):
                # exit -2 (ended by the signal) or 0 with the output complete and nothing
                # partial: the Ctrl-C came after prepare's work was done, while the
                # interpreter was exiting; nothing was interrupted, try again
                code = None
            if code is not None:
                break
            if attempt == 0:  # prepare finished first: back to no earlier output
                shutil.rmtree(out / "big")
        assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL), \
            f"prepare was not interrupted (exit {code})"
        final = out / "big"
        if final.exists():
            assert _complete(final)
            if previous is not None:
                assert (final / "manifest.json").read_text() == previous
        else:  # absent: never there, or killed between the two renames of the swap
            assert previous is None or list(out.glob(".big.old-*"))
        if sig == signal.SIGINT:
            assert not list(out.glob(".big.*"))  # cleaned up on Ctrl-C
        if attempt == 0:  # re-running finishes the job and removes what the kill left
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            assert _complete(final) and not list(out.glob(".big.*"))
            previous = (final / "manifest.json").read_text()
