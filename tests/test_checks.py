"""tfod.checks: every check on images and boxes, with small fixtures made here."""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from tfod import checks, data
from tfod.annotations import Box, Record, Report


def _jpeg(path, size=(64, 48), mode="RGB", exif_orientation=None, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    kwargs = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    img.save(path, format="PNG" if path.suffix == ".png" else "JPEG", **kwargs)
    return path


def _record(path, boxes, size=None):
    w, h = size if size else (0, 0)
    return Record(path, w, h, [Box(*b) for b in boxes], source=f"{path.name}.xml")


def test_box_checks_each_counted_with_file_and_reason(tmp_path):
    img = _jpeg(tmp_path / "a.jpg")  # 64x48
    record = _record(img, [
        ("cat", 10, 10, 30, 30),        # good
        ("cat", -1.5, 0, 20, 49.5),     # within the clip tolerance: clipped
        ("cat", 10, 10, 90, 30),        # far outside
        ("cat", 30, 10, 10, 30),        # inverted
        ("cat", 10, 10, 10, 30),        # zero width
        ("cat", 10.2, 10, 30, 30.1),    # the first box drawn again
        ("dog", 10, 10, 30, 30),        # same place, other class: kept
        ("bird", 1, 1, 5, 5),           # not in the label map
    ], size=(64, 48))
    report = Report()
    [good] = checks.check_records([record], report, classes=["cat", "dog"])
    assert [(b.name, b.xmin, b.ymin, b.xmax, b.ymax) for b in good.boxes] == [
        ("cat", 10, 10, 30, 30), ("cat", 0.0, 0, 20, 48.0), ("dog", 10, 10, 30, 30)]
    assert dict(report.problems) == {"box outside image": 1, "inverted box": 1,
                                     "zero-area box": 1, "duplicate box": 1,
                                     "class not in the label map": 1}
    text = "\n".join(report.lines())
    assert "a.jpg.xml: box 3 (cat at 10,10,90,30)" in text
    assert "add 'bird' to the label map" in text


def test_broken_and_missing_images_are_dropped(tmp_path):
    good = _jpeg(tmp_path / "good.jpg", size=(200, 150))
    raw = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    _jpeg(tmp_path / "full.png", size=(200, 150))
    (tmp_path / "truncated.png").write_bytes((tmp_path / "full.png").read_bytes()[:300])
    (tmp_path / "text.jpg").write_text("not an image")
    names = ["good.jpg", "truncated.jpg", "truncated.png", "text.jpg", "missing.jpg"]
    report = Report()
    kept = checks.check_records([_record(tmp_path / n, []) for n in names], report)
    assert [r.image_path.name for r in kept] == ["good.jpg"]
    assert report.problems == {"unreadable image": 3, "missing image": 1}
    assert any("truncated.jpg" in line for line in report.lines())


def test_duplicate_image_files_keep_the_first(tmp_path):
    a = _jpeg(tmp_path / "a.jpg")
    shutil.copy(a, tmp_path / "b.jpg")
    _jpeg(tmp_path / "c.jpg", seed=1)
    report = Report()
    kept = checks.check_records([_record(tmp_path / n, []) for n in ("b.jpg", "c.jpg", "a.jpg")],
                                report)
    assert [r.image_path.name for r in kept] == ["a.jpg", "c.jpg"]
    assert report.problems == {"duplicate image": 1}
    assert "b.jpg: same bytes as" in report.lines()[1] and "a.jpg" in report.lines()[1]


def test_annotation_size_mismatch_is_reported_and_real_size_used(tmp_path):
    img = _jpeg(tmp_path / "a.jpg", size=(64, 48))
    report = Report()
    [record] = checks.check_records([_record(img, [("cat", 1, 1, 60, 40)], (640, 480))],
                                    report)
    assert (record.width, record.height) == (64, 48)
    assert report.problems == {"annotation size differs from the image": 1}


@pytest.mark.parametrize("mode,suffix,note,passthrough", [
    ("L", ".jpg", "greyscale JPEG (passed through; decoded as RGB)", True),
    ("CMYK", ".jpg", "CMYK image (converted to RGB)", False),
    ("RGBA", ".png", "RGBA image (converted to RGB, transparency dropped)", False),
    ("RGB", ".png", "PNG image (encoded once as JPEG)", False),
])
def test_colour_modes_become_rgb_jpeg(tmp_path, mode, suffix, note, passthrough):
    img = _jpeg(tmp_path / f"a{suffix}", mode=mode)
    report = Report()
    [record] = checks.check_records([_record(img, [("cat", 1, 1, 20, 20)])], report)
    assert report.notes[note] == 1 and not report.problems
    encoded, width, height = data._encoded_image(record)
    assert (encoded == img.read_bytes()) == passthrough
    with Image.open(io.BytesIO(encoded)) as decoded:
        assert decoded.format == "JPEG" and decoded.mode in ("RGB", "L")
        assert decoded.size == (width, height) == (64, 48)


def test_exif_rotation_follows_what_the_annotator_saw(tmp_path):
    # stored 64x48, orientation 6: viewers show it turned, 48x64
    img = _jpeg(tmp_path / "a.jpg", size=(64, 48), exif_orientation=6)
    report = Report()
    [shown] = checks.check_records([_record(img, [("cat", 1, 1, 40, 60)], (48, 64))], report)
    assert shown.image.rotate and (shown.width, shown.height) == (48, 64)
    assert not report.problems  # the box 40x60 fits the turned picture
    encoded, w, h = data._encoded_image(shown)
    assert (w, h) == (48, 64) and encoded != img.read_bytes()

    report = Report()
    [stored] = checks.check_records([_record(img, [("cat", 1, 1, 60, 40)], (64, 48))], report)
    assert not stored.image.rotate and (stored.width, stored.height) == (64, 48)
    assert report.notes == {"EXIF orientation ignored (annotation has the stored size)": 1}
    encoded, w, h = data._encoded_image(stored)
    assert encoded == img.read_bytes() and (w, h) == (64, 48)


def test_pool_gives_the_same_result_as_one_process(tmp_path):
    paths = [_jpeg(tmp_path / f"{i}.jpg", seed=i) for i in range(12)]
    serial = list(checks.map_images(checks.inspect_image, [str(p) for p in paths], 1))
    pooled = list(checks.map_images(checks.inspect_image, [str(p) for p in paths], 2,
                                    chunksize=2))
    assert serial == pooled and len({i.sha256 for i in serial}) == 12


def test_prepare_check_only_writes_nothing_and_strict_fails(tmp_path):
    _jpeg(tmp_path / "a.jpg")
    _jpeg(tmp_path / "b.jpg", seed=1)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        w.writerow(["a.jpg", 64, 48, "cat", 1, 1, 20, 20])
        w.writerow(["b.jpg", 64, 48, "cat", 1, 1, 200, 20])
    result = data.prepare_dataset(tmp_path / "labels.csv", "x", fmt="csv",
                                  out_root=tmp_path / "data", label_map_dir=tmp_path / "lm",
                                  check_only=True)
    assert result["report"]["problems"] == {"box outside image": 1} and not result["ok"]
    assert result["stats"]["splits"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "lm").exists()
    from tfod.cli import main

    assert main(["prepare", str(tmp_path / "labels.csv"), "--format", "csv", "--name", "x",
                 "--out-root", str(tmp_path / "data"), "--label-maps", str(tmp_path / "lm"),
                 "--strict"]) == 1
    assert not (tmp_path / "data" / "x").exists()
    assert main(["prepare", str(tmp_path / "labels.csv"), "--format", "csv", "--name", "x",
                 "--out-root", str(tmp_path / "data"), "--check-only"]) == 1


@pytest.mark.parametrize("options", [{}, {"progressive": True},
                                     {"restart_marker_blocks": 1}, {"quality": 100}],
                         ids=["baseline", "progressive", "restart-markers", "q100"])
def test_jpeg_structure_check_accepts_valid_and_refuses_every_cut(tmp_path, options):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **options)
    raw = buf.getvalue()
    assert checks.jpeg_structure_error(raw) is None
    assert checks.jpeg_structure_error(raw + b"trailing bytes") is None
    cut = [k for k in range(len(raw) - 1) if checks.jpeg_structure_error(raw[:k]) is None]
    assert cut == []


def test_structure_check_agrees_with_tensorflows_decoder(tmp_path):
    """What the cheap check refuses is what tf.io.decode_jpeg (the OD API's decoder)
    fails on, and what it accepts TensorFlow decodes."""
    import tensorflow as tf

    path = _jpeg(tmp_path / "a.jpg", size=(64, 48))
    raw = path.read_bytes()
    scan, frame = raw.index(b"\xff\xda"), raw.index(b"\xff\xc0")
    zeros = bytearray(raw)
    zeros[scan + 20:scan + 40] = bytes(20)  # noise inside the coded data
    header = bytearray(raw)
    header[frame + 9] = 7  # a frame header with 7 colour components
    length = bytearray(raw)
    length[frame + 2:frame + 4] = b"\xff\xf0"  # a segment longer than the file
    variants = {"valid": raw, "zeros": bytes(zeros), "header": bytes(header),
                "length": bytes(length), "cut": raw[: len(raw) * 2 // 3]}
    for name, data_ in variants.items():
        target = tmp_path / f"{name}.jpg"
        target.write_bytes(data_)
        ours = isinstance(checks.inspect_image(target), checks.ImageInfo)
        try:
            tf.io.decode_jpeg(data_)
            theirs = True
        except tf.errors.InvalidArgumentError:
            theirs = False
        assert ours == theirs, name
        assert ours == isinstance(checks.inspect_image(target, decode="always"),
                                  checks.ImageInfo), name
