"""Hostile and broken input: XML entities, decompression bombs, paths that leave the
dataset, awkward file names, and commands killed half-way. docs/RELIABILITY.md maps each
case to its test here."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tfod import checks, data
from tfod.annotations import Report
from tfod.cli import main
from tfod.synth import synthesize

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
    base = _peak_rss_mb("from tfod import checks")
    peak = _peak_rss_mb(f"from tfod import checks\nchecks.inspect_image({str(bomb)!r})")
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
    (voc / "ann").mkdir()  # COCO: the folder above annotations/ is the dataset's
    (voc / "ann" / "coco.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "../../outside.jpg"}], "annotations": [],
        "categories": []}))
    report = Report()
    assert data.read_coco(voc / "ann" / "coco.json", report) == []
    assert report.problems == {"image path outside the dataset": 1}


def test_unicode_spaces_long_names_and_symlinked_folders(tmp_path):
    real_images = tmp_path / "elsewhere" / "pictures"
    real_images.mkdir(parents=True)
    root = tmp_path / "my data set ü"
    root.mkdir()
    os.symlink(real_images, root / "images")  # a symlinked folder works
    names = ["raton laveur 🦝.jpg", "café.jpg", "x" * 200 + ".jpg"]
    lines = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i, name in enumerate(names):
        _image(real_images / name, colour=(i * 60, 100, 100))
        lines.append(f'"{name}",64,48,chat noir,2,2,30,30')
    (root / "train_labels.csv").write_text("\n".join(lines) + "\n")
    result = data.prepare_dataset(root / "train_labels.csv", "ünï", fmt="csv",
                                  out_root=tmp_path / "dätä", label_map_dir=tmp_path / "lm",
                                  split={"train": 0.5, "val": 0.5}, plots=False)
    assert not result["report"]["problems"]
    import tensorflow as tf

    files = tf.io.gfile.glob(str(Path(result["dir"]) / "*.tfrecord"))
    written = {tf.train.Example.FromString(r.numpy()).features.feature["image/filename"]
               .bytes_list.value[0].decode() for r in tf.data.TFRecordDataset(files)}
    assert written == set(names)
    assert data.read_label_map(tmp_path / "lm" / "ünï.pbtxt") == ["chat noir"]


# --------------------------------------------------------------------------- #
# Interruption
# --------------------------------------------------------------------------- #
def _complete(folder: Path) -> bool:
    """A prepared folder is complete: a manifest whose shards all exist, none partial."""
    manifest = json.loads((folder / "manifest.json").read_text())
    shards = [folder / s for split in manifest["splits"].values() for s in split["shards"]]
    return all(s.is_file() for s in shards) and not list(folder.glob(".*"))


@pytest.fixture(scope="module")
def big_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("big") / "voc"
    synthesize(root, num_train=300, num_val=60, image_size=256, seed=5)
    return root


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
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not list(out.glob(".big.partial-*")) and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))  # somewhere in the writing
        proc.send_signal(sig)
        code = proc.wait()
        final = out / "big"
        if final.exists():
            assert _complete(final)
            if previous is not None and code != 0:
                assert (final / "manifest.json").read_text() == previous
        else:  # absent: never there, or killed between the two renames of the swap
            assert previous is None or list(out.glob(".big.old-*"))
        if sig == signal.SIGINT and code != 0:
            assert code == 130 and not list(out.glob(".big.*"))  # cleaned up on Ctrl-C
        if attempt == 0:  # re-running finishes the job and removes what the kill left
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            assert _complete(final) and not list(out.glob(".big.*"))
            previous = (final / "manifest.json").read_text()
