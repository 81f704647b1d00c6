"""tfod.config.anchors and tfod.config.fitting: the anchors of a config in pixels, the
training boxes of a prepared dataset against them (`tfod config --check`), and
`tfod config --fit-data`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfod.cli import main
from tfod.config import anchors, fitting, patch, templates, validate
from tfod.data import tfrecord, write_label_map
from tfod.data.annotations import Box, Record
from tfod.data.stats import box_shape_table, dataset_stats
from tfod.errors import ConfigError

#: box sides (pixels, square boxes) per class in 640x640 images: 'dot' has 30% specks of
#: 20 px (5 px at the tiny template's 160 px input: below its smallest anchor, 24 px, and
#: below its finest stride, 16 px; 16 px at 512) and 70% of 96 px (24 px at 160: the
#: smallest anchor); 'blob' is all 200 px (50 px at 160)
SIDES = {"dot": [20] * 3 + [96] * 7, "blob": [200] * 2}
IMAGES = 20


def _dataset(folder: Path, sides=SIDES, size=(640, 640)) -> Path:
    """A prepared-dataset folder as `tfod prepare` leaves it, without images: stats.json
    from tfod's own dataset_stats over records of known boxes, empty TFRecords, manifest
    and label map."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    records = []
    for i in range(IMAGES):
        boxes, x = [], 1.0
        for name, values in sides.items():
            for side in values:
                boxes.append(Box(name, x, 1.0, x + side, 1.0 + side))
                x = (x + side + 1) % (width - 210)
        records.append(Record(Path(f"{i}.jpg"), width, height, boxes))
    splits = {"train": records, "val": records[:2]}
    (folder / "stats.json").write_text(json.dumps(dataset_stats(splits, list(sides))))
    manifest = {}
    for split, items in splits.items():
        shard = f"{split}-00000-of-00001.tfrecord"
        with tfrecord.TFRecordWriter(folder / shard) as writer:
            for _ in items:
                writer.write(tfrecord.example({}))
        manifest[split] = {"images": len(items), "shards": [shard],
                           "pattern": f"{split}-?????-of-00001.tfrecord"}
    (folder / "manifest.json").write_text(json.dumps({"splits": manifest}))
    write_label_map(list(sides), folder / "label_map.pbtxt")
    return folder


@pytest.fixture
def small_data(tmp_path):
    return _dataset(tmp_path / "data")


def _config(tmp_path, data, template="ssd_mobilenet_v2_tiny", name="p.config", **kwargs):
    return patch.patch_pipeline_for_dataset(template, tmp_path / name, data_dir=data,
                                            batch_size=4, **kwargs)


def _kinds(findings):
    return {f.where.rsplit(".", 1)[-1]: f for f in findings if not f.error}


# --- geometry: what the OD API builds ---------------------------------------------------------

@pytest.mark.parametrize("template,size", [("ssd_mobilenet_v2_tiny", 160),
                                           ("ssd_mobilenet_v2_tiny", 150),
                                           ("ssd_mobilenet_v2_fpnlite_320", 320)])
def test_geometry_is_the_models_own(template, size):
    """Feature maps and anchors computed without building the model equal those of the
    model the OD API builds and runs (SSDMetaArch.predict), also at a size that is no
    multiple of the strides."""
    import numpy as np
    import tensorflow as tf
    from object_detection.builders import anchor_generator_builder, model_builder

    configs = templates.load_configs(templates.resolve_template(template))
    patch._set_image_size(configs, size)
    patch.set_num_classes(configs, 2)
    model = model_builder.build(configs["model"], is_training=False)
    images, shapes = model.preprocess(tf.zeros([1, size, size, 3]))
    predicted = model.predict(images, shapes)
    maps = anchors.feature_maps(configs, size, size)
    assert maps == [tuple(f.shape[1:3]) for f in predicted["feature_maps"]]
    generated = anchor_generator_builder.build(configs["model"].ssd.anchor_generator).generate(
        maps, im_height=size, im_width=size)
    assert np.allclose(np.concatenate([b.get().numpy() for b in generated]),
                       predicted["anchors"].numpy())
    geometry = anchors.anchor_geometry(configs)
    assert [layer.grid for layer in geometry.layers] == maps
    if template.endswith("tiny"):  # min_scale 0.15 of the side; stride = side / cells
        assert geometry.sides()[0] == pytest.approx(0.15 * size, rel=1e-3)
        assert geometry.finest_stride == pytest.approx(size / maps[0][0], rel=1e-3)
    else:  # anchor_scale 4 at level 3: 32 px, 8 px apart
        assert geometry.sides()[0] == pytest.approx(32, rel=1e-3) and geometry.finest_stride == 8


@pytest.mark.parametrize("template,edit", [
    ("ssd_mobilenet_v2_tiny", {}),
    ("ssd_mobilenet_v2_320", {}),  # reduce_boxes_in_lowest_layer, 5 aspect ratios
    ("ssd_mobilenet_v2_tiny", {"min_scale": 0.03, "max_scale": 0.4,
                               "interpolated_scale_aspect_ratio": 2.0,
                               "base_anchor_height": 0.5})])
def test_fast_ssd_anchor_shapes_equal_the_generated_ones(template, edit):
    """--fit-data sizes ssd_anchor_generator candidates from the generator's box specs
    (no TensorFlow ops); they equal the anchors the OD API generates."""
    configs = templates.load_configs(templates.resolve_template(template))
    patch._set_image_size(configs, (300, 200))
    generator = configs["model"].ssd.anchor_generator.ssd_anchor_generator
    for field, value in edit.items():
        setattr(generator, field, value)
    fast, made = ({(round(w, 2), round(h, 2)) for w, h in shapes(configs)}
                  for shapes in (fitting._ssd_shapes, fitting._shapes))
    assert fast == made and len(fast) > 6


def test_which_templates_the_check_supports():
    supported = {name for name in templates.available_templates()
                 if anchors.unsupported(templates.load_configs(
                     templates.resolve_template(name))) is None}
    assert supported == {"ssd_mobilenet_v2_tiny", "ssd_mobilenet_v2_320",
                         "ssd_mobilenet_v2_fpnlite_320", "ssd_mobilenet_v2_fpnlite_640",
                         "ssd_mobilenet_v1_fpn_640", "ssd_resnet50_v1_fpn_640",
                         "efficientdet_d0_512"}


# --- the check ---------------------------------------------------------------------------------

def test_prepare_records_box_shapes_per_class(tmp_path):
    """stats.json's box_shapes give every box back per class, within the cell width."""
    stats = json.loads((_dataset(tmp_path / "d", size=(640, 480)) / "stats.json").read_text())
    table = box_shape_table(stats, "train")
    assert sorted(table) == ["blob", "dot"]
    assert sum(n for *_, n in table["dot"]) == 10 * IMAGES
    widths = sorted({w * 640 for w, _, _, _ in table["dot"]})
    heights = sorted({h * 480 for _, h, _, _ in table["dot"]})
    for values in (widths, heights):  # cell centres: within 2.2% of the sides
        assert values == [pytest.approx(20, rel=0.022), pytest.approx(96, rel=0.022)]
    assert {round(a, 2) for *_, a, _ in table["blob"]} == {1.33}
    assert box_shape_table({"splits": {}}) is None  # an older stats.json


def test_check_reports_the_small_box_share_per_class(tmp_path, small_data):
    config = _config(tmp_path, small_data)
    configs = templates.load_configs(config)
    fits = anchors.coverage(anchors.anchor_geometry(configs),
                            anchors.resize_boxes(configs, anchors.training_boxes(configs)[0]))
    assert fits["dot"].small == pytest.approx(0.3) and fits["dot"].below_stride == pytest.approx(0.3)
    assert fits["dot"].covered == pytest.approx(0.7)
    assert (fits["blob"].small, fits["blob"].below_stride, fits["blob"].covered) == (0, 0, 1)
    found = _kinds(validate.find_problems(config))
    assert set(found) == {"image_resizer", "min_scale"}
    assert "'dot' 30% (median side 5.1 px)" in found["min_scale"].what
    assert "smallest anchor (24 px)" in found["min_scale"].what
    assert "blob" not in found["min_scale"].what
    assert "lower min_scale to 0.03" in found["min_scale"].fix  # 5 px of 160
    assert "--fit-data" in found["min_scale"].fix
    stride = found["image_resizer"]
    assert "'dot' 30%" in stride.what and "stride (16 px at 160x160)" in stride.what
    # 5 px at 160 reaches 16 px at 512 (a multiple of 32); a finer template is named
    assert "raise the input size to 512" in stride.fix and "fpnlite" in stride.fix
    assert not any(f.error for f in validate.find_problems(config))  # warnings only


def test_no_findings_when_the_boxes_fit(tmp_path):
    data = _dataset(tmp_path / "big", sides={"blob": [200, 120]})
    assert [f for f in validate.find_problems(_config(tmp_path, data))
            if "anchor" in f.where or "resizer" in f.where] == []


def test_old_stats_json_asks_for_a_new_prepare(tmp_path, small_data):
    stats = json.loads((small_data / "stats.json").read_text())
    del stats["box_shapes"]
    (small_data / "stats.json").write_text(json.dumps(stats))
    found = [f for f in validate.find_problems(_config(tmp_path, small_data)) if not f.error]
    assert any("re-run `tfod prepare`" in f.fix for f in found)
    with pytest.raises(ConfigError, match="re-run `tfod prepare`"):
        fitting.fit_data(templates.load_configs(tmp_path / "p.config"))


def test_check_does_not_apply_to_other_models(tmp_path, small_data):
    config = _config(tmp_path, small_data, "faster_rcnn_resnet50_v1_640")
    found = [f for f in validate.find_problems(config) if "does not apply" in f.what]
    assert len(found) == 1 and not found[0].error
    with pytest.raises(ConfigError, match="cannot fit this model"):
        fitting.fit_data(templates.load_configs(config))


def test_check_without_a_prepared_dataset_says_nothing(tmp_path, small_data):
    (small_data / "stats.json").unlink()
    assert anchors.data_findings(templates.load_configs(_config(tmp_path, small_data))) == []


# --- fitting -------------------------------------------------------------------------------------

def test_fitted_anchors_cover_the_generated_sizes(tmp_path, small_data):
    configs = templates.load_configs(_config(tmp_path, small_data))
    result = fitting.fit_data(configs, max_size=640)
    assert result["input_size"] == 512  # the 20 px specks reach the 16 px stride at 512
    assert templates.image_size(configs) == (512, 512)
    geometry = anchors.anchor_geometry(configs)
    boxes = anchors.resize_boxes(configs, anchors.training_boxes(configs)[0])
    fits = anchors.coverage(geometry, boxes, threshold=0.5 + fitting.MARGIN)
    assert {name: fit.covered for name, fit in fits.items()} == {"dot": 1.0, "blob": 1.0}
    assert result["covered"] == {"blob": [1.0, 1.0], "dot": [0.7, 1.0]}
    # each generated side has an anchor of about its size (square boxes: aspect 1 first)
    assert result["aspect_ratios"][0] == 1.0
    for side in (20, 96, 200):  # at 512: 16, 77, 160 px
        assert min(abs(w - side * 0.8) / side for w, h in geometry.anchor_shapes()) < 0.25


def test_fit_keeps_within_max_size_and_a_given_image_size(tmp_path, small_data):
    configs = templates.load_configs(_config(tmp_path, small_data))
    assert fitting.fit_data(configs, max_size=330)["input_size"] == 320  # a multiple of 32
    configs = templates.load_configs(_config(tmp_path, small_data, image_size=256))
    assert fitting.fit_data(configs, keep_size=True)["input_size"] == 256
    assert templates.image_size(configs) == (256, 256)


def test_fit_of_a_multiscale_template(tmp_path, small_data):
    configs = templates.load_configs(_config(tmp_path, small_data,
                                             "ssd_mobilenet_v2_fpnlite_320"))
    result = fitting.fit_data(configs, max_size=640)
    # stride 8: the 20 px specks reach it at 320 already (10 px; the template's size)
    assert result["input_size"] == 320
    assert result["anchor_scale"] < 4.0  # 32 px anchors were too big for 8 px specks
    assert len(result["aspect_ratios"]) == 3  # the box predictor keeps its shape
    assert result["covered"]["dot"][1] == 1.0


def test_cli_fit_data_writes_a_config_that_passes_the_check(tmp_path, small_data, capsys):
    plain, fitted = tmp_path / "plain.config", tmp_path / "fitted.config"
    assert main(["config", "ssd_mobilenet_v2_tiny", "--data", str(small_data), "--out",
                 str(plain)]) == 0
    assert main(["config", "--check", str(plain), "--json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert any("smallest anchor" in w for w in warnings)
    assert main(["config", "ssd_mobilenet_v2_tiny", "--data", str(small_data), "--fit-data",
                 "--out", str(fitted)]) == 0
    assert main(["config", "--check", str(fitted), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []
    diff = Path(f"{fitted}.diff").read_text()
    for line in ("+        height: 512", "-        min_scale: 0.15", "+        min_scale: "):
        assert line in diff, line
    again = tmp_path / "again.config"  # deterministic: the same data, the same config
    main(["config", "ssd_mobilenet_v2_tiny", "--data", str(small_data), "--fit-data",
          "--out", str(again)])
    assert again.read_text() == fitted.read_text()


def test_synth_and_prepare_then_check(tmp_path):
    """The real path: tfod synth (shapes 15-45% of 160 px) and tfod prepare; the tiny
    template's anchors (24-152 px at 160) cover every class."""
    from tfod.data import prepare_dataset
    from tfod.data.synth import synthesize

    synthesize(tmp_path / "raw", num_train=12, num_val=3, seed=2)
    prepared = prepare_dataset(tmp_path / "raw", "s", out_root=tmp_path / "data",
                               label_map_dir=tmp_path / "lm", plots=False)
    configs = templates.load_configs(_config(tmp_path, prepared["dir"]))
    fits = anchors.coverage(anchors.anchor_geometry(configs),
                            anchors.resize_boxes(configs, anchors.training_boxes(configs)[0]))
    assert sorted(fits) == ["circle", "square", "triangle"]
    assert all(fit.covered == 1.0 and fit.below_stride == 0 for fit in fits.values())


def test_check_names_the_aspect_ratio_no_anchor_fits(tmp_path):
    """Rods of 400x40 px (100x10 at 160: within the anchors' sizes, w/h 10) match none of
    the tiny template's anchors (w/h 0.5-2): the finding names w/h near 10; fitted aspect
    ratios cover them."""
    data = _dataset(tmp_path / "rods", sides={"blob": [200]})
    records_stats = json.loads((data / "stats.json").read_text())
    rods = [Record(Path(f"{i}.jpg"), 640, 640, [Box("rod", 10, 10, 410, 50)])
            for i in range(IMAGES)]
    stats = dataset_stats({"train": rods, "val": rods[:2]}, ["rod"])
    records_stats["box_shapes"]["splits"]["train"]["rod"] = stats["box_shapes"]["splits"][
        "train"]["rod"]
    (data / "stats.json").write_text(json.dumps(records_stats))
    found = _kinds(validate.find_problems(_config(tmp_path, data)))
    assert "'rod' 100%" in found["aspect_ratios"].what
    assert "add aspect ratios near 9.9" in found["aspect_ratios"].fix  # cell centres
    configs = templates.load_configs(tmp_path / "p.config")
    result = fitting.fit_data(configs)
    assert result["covered"]["rod"] == [0.0, 1.0] and max(result["aspect_ratios"]) > 5


def test_config_and_its_check_leave_the_thread_pools_settable(tmp_path):
    """Patching a config with its data check and ``--fit-data`` (anchors made by the OD
    API's generator) leaves a training later in the same process (``tfod demo``, a
    notebook) its thread pools: it does not start TensorFlow's eager runtime, and the
    session it runs the generator in has the pools ``--threads auto`` asks for (the first
    device of a process fixes the intra-op pool of all: with TensorFlow's defaults there,
    the demo trained at 17-20 steps/s instead of 31). Run in a fresh process (this one's
    runtime runs already). Caught: the anchors made eagerly (pools no longer settable);
    the session made with TensorFlow's defaults."""
    import subprocess
    import sys

    script = f"""
import tfod
import tensorflow as tf
made = []
init = tf.compat.v1.Session.__init__
def spy(self, target="", graph=None, config=None):
    made.append((config.intra_op_parallelism_threads, config.inter_op_parallelism_threads)
                if config is not None else (0, 0))
    init(self, target, graph, config)
tf.compat.v1.Session.__init__ = spy
from tfod.config import patch_pipeline_for_dataset
from tfod.data import prepare_dataset
from tfod.data.synth import synthesize
from tfod.distribute import configure_threads
root = {str(tmp_path)!r}
synthesize(root + "/raw", num_train=8, num_val=4, seed=0)
data = prepare_dataset(root + "/raw", "d", out_root=root + "/data",
                       label_map_dir=root + "/maps", plots=False)["dir"]
patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", root + "/a.config", data_dir=data,
                           num_steps=10, batch_size=2)
patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", root + "/b.config", data_dir=data,
                           num_steps=10, batch_size=2, fit_data=True, max_size=320)
print("SESSIONS", sorted(set(made)))
print("POOLS", configure_threads("1,2"))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600)
    assert "POOLS (1, 2)" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
    from tfod.distribute import parse_threads

    assert f"SESSIONS {[parse_threads('auto') or (0, 0)]}" in out.stdout, out.stdout
