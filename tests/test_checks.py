"""tfod.checks: every check on images and boxes, with small fixtures made here."""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from tfod import data
from tfod.data import checks, shards
from tfod.data.annotations import Box, Record, Report


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


def test_a_coordinate_that_is_not_a_number_is_counted(tmp_path):
    """NaN passes every comparison (all are false): a reader that lets one through must not
    get a box with NaN corners into the records."""
    img = _jpeg(tmp_path / "a.jpg")
    record = _record(img, [("cat", float("nan"), 1, 5, 5), ("cat", 1, 1, 5, float("inf")),
                           ("cat", 1, 1, 5, 5)], size=(64, 48))
    report = Report()
    [good] = checks.check_records([record], report)
    assert [(b.xmin, b.ymax) for b in good.boxes] == [(1, 5)]
    assert report.problems == {"box outside image": 2}
    assert "not a finite number" in report.examples["box outside image"][0]


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
    encoded, width, height = shards._encoded_image(record)
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
    encoded, w, h = shards._encoded_image(shown)
    assert (w, h) == (48, 64) and encoded != img.read_bytes()

    report = Report()
    [stored] = checks.check_records([_record(img, [("cat", 1, 1, 60, 40)], (64, 48))], report)
    assert not stored.image.rotate and (stored.width, stored.height) == (64, 48)
    assert report.notes == {"EXIF orientation ignored (annotation has the stored size)": 1}
    encoded, w, h = shards._encoded_image(stored)
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


# --- the pieces of the checks, each with inputs whose answer is known ------------------------

def test_jpeg_structure_names_what_is_wrong():
    sof = b"\xff\xc0\x00\x04\x00\x00"  # a frame header segment (content irrelevant here)
    sos = b"\xff\xda\x00\x02"  # a scan header; entropy-coded data follows
    assert checks.jpeg_structure_error(b"") == "no JPEG start marker"
    assert checks.jpeg_structure_error(b"\xff\xd9") == "no JPEG start marker"
    assert checks.jpeg_structure_error(b"\xff\xd8\x00") == "expected a marker at byte 2"
    assert checks.jpeg_structure_error(b"\xff\xd8\xff\xd9") == "ends before any image data"
    assert checks.jpeg_structure_error(b"\xff\xd8" + sof + b"\xff\xd9") == \
        "ends before any image data"  # a frame but no scan
    assert checks.jpeg_structure_error(b"\xff\xd8" + sos + b"\x12\xff\xd9") == \
        "ends before any image data"  # a scan but no frame
    good = b"\xff\xd8" + sof + sos + b"\x12\xff\x00\x34\xff\xd0\x56\xff\xff\xd9"
    assert checks.jpeg_structure_error(good) is None  # stuffed 00, RST0, a fill byte
    assert checks.jpeg_structure_error(b"\xff\xd8\xff\xff\xff" + sof[1:] + sos + b"\xff\xd9") \
        is None  # fill bytes before a marker
    assert checks.jpeg_structure_error(b"\xff\xd8\xff\x01\xff\xd0" + sof + sos + b"\xff\xd9") \
        is None  # standalone TEM and RST markers have no length
    assert checks.jpeg_structure_error(b"\xff\xd8\xff\xc0\x00\x01") == \
        "segment at byte 2 runs past the end of the file (truncated?)"  # length < 2
    assert checks.jpeg_structure_error(b"\xff\xd8\xff\xc0\x00\x05\x00\x00") == \
        "segment at byte 2 runs past the end of the file (truncated?)"
    assert checks.jpeg_structure_error(b"\xff\xd8\xff\xc0\x00\x04\x00\x00") == \
        "file ends without an end marker (truncated?)"  # a segment that just fits
    assert checks.jpeg_structure_error(b"\xff\xd8\xff\xc0\x00") == \
        "file ends without an end marker (truncated?)"  # no room for the length
    assert checks.jpeg_structure_error(b"\xff\xd8\xff\xff") == \
        "file ends without an end marker (truncated?)"  # fill bytes up to the end
    assert checks.jpeg_structure_error(b"\xff\xd8" + sof + sos + b"\x12\x34") == \
        "image data ends without an end marker (truncated?)"
    assert checks.jpeg_structure_error(b"\xff\xd8" + sof + sos + b"\x12\xff") == \
        "image data ends without an end marker (truncated?)"
    assert checks.jpeg_structure_error(b"\xff\xd8" + sof + sos + b"\x12\xff\x00") == \
        "image data ends without an end marker (truncated?)"


def test_inspect_image_reports_each_failure_by_name(tmp_path):
    import hashlib

    assert checks.inspect_image(tmp_path / "none.jpg") == checks.MISSING == "missing"
    assert checks.inspect_image(tmp_path) == "cannot read (Is a directory)"
    img = _jpeg(tmp_path / "a.jpg", size=(64, 48))
    info = checks.inspect_image(img)
    assert info == checks.ImageInfo(hashlib.sha256(img.read_bytes()).hexdigest(), 64, 48,
                                    "jpeg", "RGB", 1, False)
    assert checks.inspect_image(img, max_pixels=64 * 48) == info  # the limit itself is allowed
    assert checks.inspect_image(img, max_pixels=64 * 48 - 1) == (
        "declares 64x48 = 3,072 pixels, over the limit of 3,071 (a decompression bomb?); "
        "raise --max-pixels if the image is real")
    raw = img.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(raw[:-200])
    assert checks.inspect_image(cut) == \
        "broken JPEG: image data ends without an end marker (truncated?)"
    assert checks.inspect_image(cut, decode="always").startswith("cannot decode (")
    assert checks.inspect_image(_jpeg(tmp_path / "odd.jpg", exif_orientation=9)).orientation == 1
    turned = checks.inspect_image(_jpeg(tmp_path / "t.jpg", exif_orientation=8))
    assert (turned.orientation, turned.rotate, turned.passthrough) == (8, False, True)
    png = tmp_path / "p.png"
    _jpeg(png)
    png.write_bytes(png.read_bytes()[:len(png.read_bytes()) // 2])
    assert checks.inspect_image(png).startswith("cannot decode (")


def test_passthrough_only_for_unrotated_rgb_or_grey_jpeg():
    def info(fmt="jpeg", mode="RGB", rotate=False):
        return checks.ImageInfo("0", 1, 1, fmt, mode, 1, rotate)

    assert [info().passthrough, info(mode="L").passthrough, info(mode="CMYK").passthrough,
            info(fmt="png").passthrough, info(rotate=True).passthrough] == \
        [True, True, False, False, False]


def _settle(info, given=(0, 0)):
    record = Record(checks.Path("x/a.jpg"), *given, source="a.xml")
    report = Report()
    checks._settle_size(record, info, report)
    return (record.width, record.height), info.rotate, report


def test_settle_size_decides_rotation_and_notes_colour_and_format():
    def info(orientation=1, fmt="jpeg", mode="RGB"):
        return checks.ImageInfo("0", 60, 40, fmt, mode, orientation)

    size, rotate, report = _settle(info(6))  # no size given: as viewers show it
    assert (size, rotate, dict(report.notes), dict(report.problems)) == (
        (40, 60), True, {"EXIF-rotated image (pixels rotated as viewers show them)": 1}, {})
    size, rotate, report = _settle(info(6), (40, 60))
    assert (size, rotate) == ((40, 60), True) and not report.problems
    size, rotate, report = _settle(info(6), (60, 40))  # the stored size: labelled as stored
    assert (size, rotate, dict(report.notes)) == (
        (60, 40), False, {"EXIF orientation ignored (annotation has the stored size)": 1})
    size, rotate, report = _settle(info(3), (60, 40))  # upside down: same size either way
    assert (size, rotate) == ((60, 40), True)
    size, rotate, report = _settle(info(1), (61, 40))
    assert (size, rotate) == ((60, 40), False) and not report.notes
    assert report.examples["annotation size differs from the image"] == [
        "a.xml: annotation says 61x40, a.jpg is 60x40; boxes checked against the real size"]
    notes = {mode_fmt: list(_settle(info(1, *mode_fmt))[2].notes) for mode_fmt in [
        ("jpeg", "L"), ("png", "L"), ("jpeg", "CMYK"), ("png", "RGBA"), ("png", "LA"),
        ("png", "PA"), ("gif", "P"), ("tiff", "I;16"), ("", "RGB"), ("jpeg", "RGB")]}
    assert notes == {
        ("jpeg", "L"): ["greyscale JPEG (passed through; decoded as RGB)"],
        ("png", "L"): ["greyscale image (converted to RGB)", "PNG image (encoded once as JPEG)"],
        ("jpeg", "CMYK"): ["CMYK image (converted to RGB)"],
        ("png", "RGBA"): ["RGBA image (converted to RGB, transparency dropped)",
                          "PNG image (encoded once as JPEG)"],
        ("png", "LA"): ["LA image (converted to RGB, transparency dropped)",
                        "PNG image (encoded once as JPEG)"],
        ("png", "PA"): ["PA image (converted to RGB, transparency dropped)",
                        "PNG image (encoded once as JPEG)"],
        ("gif", "P"): ["P image (converted to RGB, transparency dropped)",
                       "GIF image (encoded once as JPEG)"],
        ("tiff", "I;16"): ["I;16 image (converted to RGB)", "TIFF image (encoded once as JPEG)"],
        ("", "RGB"): ["unknown-format image (encoded once as JPEG)"],
        ("jpeg", "RGB"): []}


def test_box_limits_are_inclusive_at_the_tolerance_and_the_duplicate_iou():
    """Boxes on a 100x50 image: 2 px outside is clipped, more is refused; IoU exactly 0.95
    (a 100x10 box against one 95 wide inside it) is a duplicate."""
    record = Record(checks.Path("a.jpg"), 100, 50, [
        Box("a", -2, -2, 102, 52),          # clipped to the image
        Box("b", -2.01, 0, 10, 10),         # outside
        Box("b", 0, -2.01, 10, 10),         # outside
        Box("b", 0, 0, 102.01, 10),         # outside
        Box("b", 0, 0, 10, 52.01),          # outside
        Box("c", 0, 20, 0.000001, 30),      # 1e-6 wide: kept
        Box("c", 10, 20, 30, 20.0000001),   # zero height
        Box("d", 0, 0, 100, 10),
        Box("d", 0, 0, 95, 10),             # IoU 0.95 with the box before: a duplicate
        Box("d", 0, 0, 94, 10),             # IoU 0.94: kept
        Box("e", 5, 5, 5, 1),               # ymax < ymin
    ], source="a.xml")
    report = Report()
    checks._check_boxes(record, report, None)  # no label map: every class accepted
    assert [(b.name, b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes] == [
        ("a", 0.0, 0.0, 100.0, 50.0), ("c", 0, 20, 0.000001, 30), ("d", 0, 0, 100, 10),
        ("d", 0, 0, 94, 10)]
    assert dict(report.problems) == {"box outside image": 4, "zero-area box": 1,
                                     "duplicate box": 1, "inverted box": 1}
    assert report.examples["duplicate box"] == [
        "a.xml: box 9 (d at 0,0,95,10): same class and IoU >= 0.95 with box 3; drawn twice"]
    assert report.examples["box outside image"][0] == \
        "a.xml: box 2 (b at -2.01,0,10,10): image is 100x50; fix the box"
    assert report.examples["inverted box"] == \
        ["a.xml: box 11 (e at 5,5,5,1): max < min; swap the coordinates"]
    assert report.examples["zero-area box"] == \
        ["a.xml: box 7 (c at 10,20,30,20): no width or no height"]


def test_iou_of_known_overlaps():
    def box(*xyxy):
        return Box("a", *xyxy)

    assert checks._iou(box(0, 0, 10, 10), box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert checks._iou(box(0, 0, 10, 10), box(0, 5, 10, 15)) == pytest.approx(50 / 150)
    assert checks._iou(box(0, 0, 10, 10), box(10, 0, 20, 10)) == 0.0  # touching
    assert checks._iou(box(0, 0, 10, 10), box(0, 10, 10, 20)) == 0.0
    assert checks._iou(box(0, 0, 4, 2), box(1, 0, 3, 2)) == 0.5


def test_workers_and_messages_of_check_records(tmp_path):
    import os

    assert checks.default_workers(checks.POOL_MIN_IMAGES - 1) == 1
    assert checks.default_workers(checks.POOL_MIN_IMAGES) == \
        max(1, min(len(os.sched_getaffinity(0)), 8))
    assert checks.POOL_MIN_IMAGES == 200 and checks.DUPLICATE_IOU == 0.95
    assert list(checks.map_images(str.upper, ["a", "b"], 1)) == ["A", "B"]
    a = _jpeg(tmp_path / "a.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    report = Report()
    records = [_record(tmp_path / n, [("x", 1, 1, 5, 5)]) for n in ("missing.jpg", "bad.jpg",
                                                                    "a.jpg")]
    kept = checks.check_records(records, report, classes=["y"], workers=None)
    assert [r.image_path for r in kept] == [a] and kept[0].boxes == []
    assert kept[0].image.sha256 and (kept[0].width, kept[0].height) == (64, 48)
    assert report.examples["missing image"] == [
        f"missing.jpg.xml: {tmp_path / 'missing.jpg'} not found; add the image or remove its "
        "annotation"]
    assert report.examples["unreadable image"][0].startswith(
        f"{tmp_path / 'bad.jpg'}: cannot decode (")
    assert report.examples["unreadable image"][0].endswith("; replace or remove the file")
    assert report.examples["class not in the label map"] == [
        "a.jpg.xml: box 1 (x at 1,1,5,5): add 'x' to the label map or fix the name"]
    report = Report()
    big = checks.check_records([_record(a, [])], report, max_pixels=10)
    assert big == [] and "over the limit of 10" in report.examples["unreadable image"][0]


def test_iou_of_disjoint_and_thin_overlaps():
    def box(*xyxy):
        return Box("a", *xyxy)

    assert checks._iou(box(0, 0, 10, 10), box(20, 0, 30, 10)) == 0.0  # apart in x only
    assert checks._iou(box(0, 0, 10, 10), box(0, 20, 10, 30)) == 0.0  # apart in y only
    assert checks._iou(box(0, 0, 10, 10), box(9.5, 0, 20, 10)) == pytest.approx(5 / 200)
    assert checks._iou(box(0, 0, 10, 10), box(0, 9.5, 10, 20)) == pytest.approx(5 / 200)


def test_box_checks_go_on_after_each_refusal_and_edges_of_zero():
    record = Record(checks.Path("a.jpg"), 100, 50, [
        Box("z", 1, 1, 5, 5),               # not in the label map
        Box("a", 1, 5, 3, 5),               # ymax == ymin: zero area, not inverted
        Box("a", 0, 0, 10, 0.000001),       # 1e-6 high: kept
        Box("a", 20, 20, 30, 30),
    ], source="a.xml")
    report = Report()
    checks._check_boxes(record, report, {"a"})
    assert [(b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes] == [
        (0, 0, 10, 0.000001), (20, 20, 30, 30)]
    assert dict(report.problems) == {"class not in the label map": 1, "zero-area box": 1}


def test_default_workers_follow_the_cpus_up_to_8(monkeypatch):
    """The CPU count is the machine's; faked here to reach 1 and 16 CPUs."""
    for cpus, workers in ((1, 1), (3, 3), (8, 8), (16, 8)):
        monkeypatch.setattr(checks.os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)))
        assert checks.default_workers(checks.POOL_MIN_IMAGES) == workers


def test_check_records_defaults_structure_check_and_no_progress_bar(tmp_path, capsys):
    """By default: the JPEG structure check (not a decode) and no progress bar on stderr."""
    raw = _jpeg(tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[:-200])
    report = Report()
    checks.check_records([_record(tmp_path / "cut.jpg", [])], report)
    assert report.examples["unreadable image"] == [
        f"{tmp_path / 'cut.jpg'}: broken JPEG: image data ends without an end marker "
        "(truncated?); replace or remove the file"]
    assert capsys.readouterr().err == ""
