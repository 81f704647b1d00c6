"""tfod.pipeline: templates, patching through the protos, checks before any graph work."""

from __future__ import annotations

import json
import logging

import pytest

from tfod import pipeline
from tfod.cli import main
from tfod.data import write_label_map
from tfod.errors import ConfigError

ZOO_TEMPLATES = ["centernet_mobilenetv2_fpn_512", "efficientdet_d0_512",
                 "faster_rcnn_resnet50_v1_640", "ssd_mobilenet_v1_fpn_640",
                 "ssd_mobilenet_v2_320", "ssd_mobilenet_v2_fpnlite_320",
                 "ssd_mobilenet_v2_fpnlite_640", "ssd_resnet50_v1_fpn_640"]


def _write_records(path, count):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(count):
            writer.write(tf.train.Example().SerializeToString())
    return path


@pytest.fixture
def inputs(tmp_path):
    label_map = write_label_map(["a", "b"], tmp_path / "lm.pbtxt")
    train = _write_records(tmp_path / "train-00000-of-00001.tfrecord", 5)
    val = _write_records(tmp_path / "val-00000-of-00001.tfrecord", 2)
    return label_map, train, val


def _patch(tmp_path, inputs, template="ssd_mobilenet_v2_tiny", name="p.config", **kwargs):
    label_map, train, val = inputs
    kwargs = {"batch_size": 4, "label_map": label_map, "train_input": str(train),
              "eval_input": str(val), **kwargs}
    return pipeline.patch_pipeline(template, tmp_path / name, **kwargs)


def _edit(path, change):
    configs = pipeline.load_configs(path)
    change(configs)
    pipeline.save_configs(configs, path)
    return path


def _fails(path, *needles):
    """check_pipeline raises one ConfigError whose text names every needle."""
    with pytest.raises(ConfigError) as info:
        pipeline.check_pipeline(path)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    return info.value


def _cosine(configs):
    return configs["train_config"].optimizer.adam_optimizer.learning_rate \
        .cosine_decay_learning_rate


# --- templates -------------------------------------------------------------------------------

def test_templates_listed_and_unknown_suggests():
    assert set(ZOO_TEMPLATES + ["ssd_mobilenet_v2_tiny"]) <= set(pipeline.available_templates())
    with pytest.raises(ConfigError, match="did you mean ssd_mobilenet_v2_tiny"):
        pipeline.resolve_template("ssd_mobilenet_v2_tiyn")


@pytest.mark.parametrize("name", ZOO_TEMPLATES)
def test_zoo_template_parses_with_single_gpu_settings(name):
    configs = pipeline.load_configs(pipeline.resolve_template(name))
    train_config = configs["train_config"]
    assert 4 <= train_config.batch_size <= 16
    assert train_config.fine_tune_checkpoint_type == "detection"
    assert pipeline.PLACEHOLDER in train_config.fine_tune_checkpoint
    assert not train_config.use_bfloat16
    _, kind, lr = pipeline._schedule(train_config)
    assert kind == "cosine_decay_learning_rate"
    assert lr.total_steps == train_config.num_steps and 0 < lr.warmup_steps < lr.total_steps
    assert lr.warmup_learning_rate < lr.learning_rate_base
    # nothing but placeholders and paths stands between a template and a valid config
    assert pipeline._size_findings(configs) == [] and pipeline._schedule_findings(configs) == []


def test_every_template_builds_with_model_builder():
    from object_detection.builders import model_builder

    # offline, the CenterNet backbone's ImageNet weights are skipped by the compat shim
    built = {}
    for name in pipeline.available_templates():
        configs = pipeline.load_configs(pipeline.resolve_template(name))
        pipeline.set_num_classes(configs, 3)
        model = model_builder.build(configs["model"], is_training=True)
        assert model.num_classes == 3
        built[name] = type(model).__name__
    assert built["faster_rcnn_resnet50_v1_640"] == "FasterRCNNMetaArch"
    assert built["centernet_mobilenetv2_fpn_512"] == "CenterNetMetaArch"
    assert built["efficientdet_d0_512"] == "SSDMetaArch"


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_TEMPLATES)
def test_template_runs_a_forward_pass_at_its_input_size(name):
    import tensorflow as tf
    from object_detection.builders import model_builder

    configs = pipeline.load_configs(pipeline.resolve_template(name))
    pipeline.set_num_classes(configs, 3)
    model = model_builder.build(configs["model"], is_training=False)
    height, width = pipeline.image_size(configs)
    images, shapes = model.preprocess(tf.zeros([1, height, width, 3]))
    detections = model.postprocess(model.predict(images, shapes), shapes)
    assert detections["detection_boxes"].shape[0] == 1


# --- patching --------------------------------------------------------------------------------

def test_patch_writes_config_and_diff(tmp_path, inputs):
    label_map, train, val = inputs
    out = _patch(tmp_path, inputs, num_steps=300, image_size=128,
                 overrides={"train_config.max_number_of_boxes": "7"})
    configs = pipeline.load_configs(out)
    assert configs["model"].ssd.num_classes == 2
    assert configs["train_config"].batch_size == 4
    assert configs["train_config"].num_steps == 300
    cosine = _cosine(configs)
    assert cosine.total_steps == 300 and 0 < cosine.warmup_steps < 300
    assert cosine.learning_rate_base == pytest.approx(0.007)  # no --scale-lr: unchanged
    assert pipeline.image_size(configs) == (128, 128)
    assert configs["train_config"].max_number_of_boxes == 7
    # repeated input paths are replaced, not appended to
    assert list(configs["train_input_config"].tf_record_input_reader.input_path) == \
        [str(train.resolve())]
    assert pipeline.check_pipeline(out) == []
    diff = (tmp_path / "p.config.diff").read_text()
    assert "-  batch_size: 8\n" in diff and "+  batch_size: 4\n" in diff
    assert "+    total_steps: 300\n" in diff.replace("      ", "")  # indentation aside
    assert "-  label_map_path: \"PATH_TO_BE_CONFIGURED\"" in diff


def test_scale_lr_scales_every_rate_of_each_schedule(tmp_path, inputs):
    out = _patch(tmp_path, inputs, batch_size=16, scale_lr=True)
    cosine = _cosine(pipeline.load_configs(out))
    assert cosine.learning_rate_base == pytest.approx(0.014)
    assert cosine.warmup_learning_rate == pytest.approx(0.0014)

    def manual(configs):
        lr = configs["train_config"].optimizer.adam_optimizer.learning_rate
        lr.manual_step_learning_rate.initial_learning_rate = 0.01
        lr.manual_step_learning_rate.schedule.add(step=1000, learning_rate=0.001)
    source = _edit(_patch(tmp_path, inputs, name="manual.config", batch_size=8), manual)
    out = pipeline.patch_pipeline(source, tmp_path / "m2.config", batch_size=2, scale_lr=True,
                                  num_steps=1000)
    lr = pipeline.load_configs(out)["train_config"].optimizer.adam_optimizer.learning_rate \
        .manual_step_learning_rate
    assert lr.initial_learning_rate == pytest.approx(0.0025)
    assert lr.schedule[0].learning_rate == pytest.approx(0.00025)
    assert lr.schedule[0].step == 500  # 2000 -> 1000 steps halves the boundaries

    def exponential(configs):
        lr = configs["train_config"].optimizer.adam_optimizer.learning_rate
        lr.exponential_decay_learning_rate.initial_learning_rate = 0.01
        lr.exponential_decay_learning_rate.min_learning_rate = 0.001
    source = _edit(_patch(tmp_path, inputs, name="exp.config", batch_size=8), exponential)
    out = pipeline.patch_pipeline(source, tmp_path / "e2.config", batch_size=32, scale_lr=True)
    lr = pipeline.load_configs(out)["train_config"].optimizer.adam_optimizer.learning_rate \
        .exponential_decay_learning_rate
    assert lr.initial_learning_rate == pytest.approx(0.04)
    assert lr.min_learning_rate == pytest.approx(0.004)


def test_augment_replaces_the_template_list(tmp_path, inputs):
    out = _patch(tmp_path, inputs, augment="random_horizontal_flip,ssd_random_crop,"
                 "random_adjust_brightness:max_delta=0.2,"
                 "random_absolute_pad_image:pad_color=0.5:pad_color=0.5:pad_color=0.5")
    steps = pipeline.load_configs(out)["train_config"].data_augmentation_options
    assert [s.WhichOneof("preprocessing_step") for s in steps] == [
        "random_horizontal_flip", "ssd_random_crop", "random_adjust_brightness",
        "random_absolute_pad_image"]
    assert steps[2].random_adjust_brightness.max_delta == pytest.approx(0.2)
    assert list(steps[3].random_absolute_pad_image.pad_color) == [0.5, 0.5, 0.5]
    # the result is what the OD API's own preprocessor builder accepts
    from object_detection.builders import preprocessor_builder
    assert [preprocessor_builder.build(s)[0].__name__ for s in steps][:2] == [
        "random_horizontal_flip", "ssd_random_crop"]


def test_augment_bad_names_suggest(tmp_path, inputs):
    with pytest.raises(ConfigError, match="did you mean random_horizontal_flip"):
        _patch(tmp_path, inputs, augment="random_horizontal_flp")
    with pytest.raises(ConfigError, match="random_adjust_brightness has no option 'max_delt'.*"
                                          "did you mean max_delta"):
        _patch(tmp_path, inputs, augment="random_adjust_brightness:max_delt=0.2")
    assert "random_jpeg_quality" in pipeline.augmentation_names()  # from the descriptors
    assert not (tmp_path / "p.config").exists()


def test_quantize_writes_graph_rewriter_and_says_it_is_not_applied(tmp_path, inputs, caplog):
    with caplog.at_level(logging.WARNING, logger="tfod.pipeline"):
        out = _patch(tmp_path, inputs, quantize="delay=1800,weight_bits=8,activation_bits=8")
    assert "does not apply it" in caplog.text and "tflite_int8" in caplog.text
    quantization = pipeline.load_configs(out)["graph_rewriter_config"].quantization
    assert (quantization.delay, quantization.weight_bits, quantization.activation_bits) == \
        (1800, 8, 8)
    assert "graph_rewriter" in out.read_text()
    warnings = pipeline.check_pipeline(out)
    assert len(warnings) == 1 and "tflite_int8" in warnings[0]
    with pytest.raises(ConfigError, match="did you mean weight_bits"):
        _patch(tmp_path, inputs, quantize="wieght_bits=8")


def _classification_checkpoint(path):
    import tensorflow as tf

    backbone = tf.Module()
    backbone.kernel = tf.Variable(tf.zeros([3, 3]))
    return tf.train.Checkpoint(feature_extractor=backbone).write(str(path))


def test_fine_tune_checkpoint_type_from_its_variables(tmp_path, inputs, tiny_run):
    import tensorflow as tf

    detection = tf.train.latest_checkpoint(str(tiny_run["run_dir"]))
    assert pipeline.checkpoint_type(detection) == "detection"
    classification = _classification_checkpoint(tmp_path / "backbone" / "ckpt-1")
    assert pipeline.checkpoint_type(classification) == "classification"

    out = _patch(tmp_path, inputs, fine_tune_checkpoint=tiny_run["run_dir"])  # a folder
    train_config = pipeline.load_configs(out)["train_config"]
    assert train_config.fine_tune_checkpoint == detection
    assert train_config.fine_tune_checkpoint_type == "detection"
    out = _patch(tmp_path, inputs, name="c.config", fine_tune_checkpoint=classification)
    assert pipeline.load_configs(out)["train_config"].fine_tune_checkpoint_type == \
        "classification"
    pipeline.check_pipeline(out)

    # finding: the type does not match the checkpoint's variables
    _edit(out, lambda c: setattr(c["train_config"], "fine_tune_checkpoint_type", "detection"))
    _fails(out, "train_config.fine_tune_checkpoint_type", "classification checkpoint",
           'set fine_tune_checkpoint_type: "classification"')


# --- findings, one config each ---------------------------------------------------------------

def test_finding_placeholders_left():
    error = _fails(pipeline.resolve_template("ssd_mobilenet_v2_fpnlite_320"),
                   "PATH_TO_BE_CONFIGURED", "train_input_reader.label_map_path",
                   "train_config.fine_tune_checkpoint", "tfod config")
    assert len(error.findings) == 5


def test_finding_paths_missing(tmp_path, inputs):
    out = _patch(tmp_path, inputs)
    inputs[1].unlink()
    _fails(out, "train_input_reader.tf_record_input_reader.input_path", "matches no file",
           "--train")
    out = _edit(_patch(tmp_path, inputs, name="q.config", train_input=str(inputs[2])),
                lambda c: setattr(c["eval_input_configs"][0], "label_map_path",
                                  str(tmp_path / "gone.pbtxt")))
    _fails(out, "eval_input_reader.label_map_path", "gone.pbtxt not found", "--label-map")
    _edit(out, lambda c: (setattr(c["eval_input_configs"][0], "label_map_path",
                                  str(inputs[0])),
                          setattr(c["train_config"], "fine_tune_checkpoint",
                                  str(tmp_path / "ckpt-9"))))
    _fails(out, "train_config.fine_tune_checkpoint", "ckpt-9.index not found",
           "tfod zoo download")
    _edit(out, lambda c: setattr(c["train_config"], "fine_tune_checkpoint", str(tmp_path)))
    _fails(out, "is a folder", "checkpoint prefix")


def test_finding_num_classes_differs_from_label_map(tmp_path, inputs):
    out = _patch(tmp_path, inputs, num_classes=5)
    _fails(out, "model.ssd.num_classes", "num_classes is 5 but the label map",
           "set num_classes: 2")


def test_finding_label_ids_not_1_to_n(tmp_path, inputs):
    out = _patch(tmp_path, inputs)
    label_map = tmp_path / "lm.pbtxt"
    label_map.write_text('item { id: 1 name: "a" }\nitem { id: 3 name: "b" }\n')
    _fails(out, "lm.pbtxt item.id", "label ids are [1, 3], not 1..2", "without gaps")


@pytest.mark.parametrize("template,edit,needles", [
    ("ssd_mobilenet_v2_fpnlite_320", {"image_size": 300},
     ["fixed_shape_resizer.height", "not a multiple of 32", "FPN top-down path",
      "use 288 or 320"]),
    ("efficientdet_d0_512", {"image_size": 500},
     ["keep_aspect_ratio_resizer.max_dimension", "not a multiple of 128", "bifpn.max_level is 7",
      "use 384 or 512"]),
    ("efficientdet_d0_512", {"overrides": {
        "model.ssd.image_resizer.keep_aspect_ratio_resizer.pad_to_max_dimension": "false"}},
     ["pad_to_max_dimension", "set pad_to_max_dimension: true"]),
    ("centernet_mobilenetv2_fpn_512", {"image_size": 500},
     ["max_dimension 500 is not a multiple of 32", "use 480 or 512"]),
])
def test_finding_input_size_incompatible_with_fpn(tmp_path, inputs, template, edit, needles):
    out = _patch(tmp_path, inputs, template=template, **edit)
    _fails(out, *needles)


def test_input_size_without_fpn_is_free(tmp_path, inputs):
    out = _patch(tmp_path, inputs, template="ssd_mobilenet_v2_320", image_size=300)
    assert pipeline.find_problems(out) == []


def test_finding_schedule_inconsistent_with_num_steps(tmp_path, inputs):
    out = _patch(tmp_path, inputs, overrides={"train_config.num_steps": "500"})
    _fails(out, "cosine_decay_learning_rate.total_steps", "total_steps 2000 differs from "
           "train_config.num_steps 500", "set total_steps: 500")
    out = _patch(tmp_path, inputs, name="w.config", overrides={
        "train_config.optimizer.adam_optimizer.learning_rate.cosine_decay_learning_rate"
        ".warmup_steps": "2000"})
    _fails(out, "cosine_decay_learning_rate.warmup_steps", "is not below total_steps 2000")

    def manual(configs):
        lr = configs["train_config"].optimizer.adam_optimizer.learning_rate
        lr.manual_step_learning_rate.initial_learning_rate = 0.01
        lr.manual_step_learning_rate.schedule.add(step=5000, learning_rate=0.001)
    out = _edit(_patch(tmp_path, inputs, name="m.config"), manual)
    _fails(out, "manual_step_learning_rate.schedule.step", "[5000] lie beyond",
           "keep every step below 2000")


def test_finding_batch_larger_than_training_set(tmp_path, inputs):
    out = _patch(tmp_path, inputs, batch_size=8)  # 5 records, counted with tf.data
    _fails(out, "train_config.batch_size", "batch_size 8 is larger than the training set "
           "(5 records, by tf.data count)", "--batch-size 5 or less")
    # next to a manifest.json (tfod prepare), the manifest's count is used
    (tmp_path / "manifest.json").write_text(json.dumps({"splits": {
        "train": {"images": 3, "shards": ["train-00000-of-00001.tfrecord"]},
        "val": {"images": 2, "shards": ["val-00000-of-00001.tfrecord"]}}}))
    out = _patch(tmp_path, inputs, name="m.config", batch_size=4)
    _fails(out, "(3 records, by manifest.json)")


def test_finding_bfloat16_off_tpu(tmp_path, inputs, monkeypatch):
    for name in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(name, raising=False)
    out = _patch(tmp_path, inputs, overrides={"train_config.use_bfloat16": "true"})
    _fails(out, "train_config.use_bfloat16", "no TPU", "set use_bfloat16: false")


def test_several_findings_listed_together(tmp_path, inputs):
    out = _patch(tmp_path, inputs, num_classes=4, overrides={"train_config.num_steps": "10"})
    error = _fails(out, "2 problems", "model.ssd.num_classes", "total_steps")
    assert len(error.findings) == 2


def test_check_exportable_tflite_needs_ssd_or_center_net():
    frcnn = pipeline.load_configs(pipeline.resolve_template("faster_rcnn_resnet50_v1_640"))
    with pytest.raises(ConfigError, match="cannot export a faster_rcnn model to tflite.*"
                                          "export saved_model only"):
        pipeline.check_exportable(frcnn, "tflite")
    pipeline.check_exportable(frcnn, "saved_model")
    pipeline.check_exportable(pipeline.resolve_template("centernet_mobilenetv2_fpn_512"),
                              "tflite_int8")


# --- CLI -------------------------------------------------------------------------------------

def test_cli_config_template_with_explicit_inputs_writes_valid_config_and_diff(
        tmp_path, inputs, capsys):
    label_map, train, val = inputs
    out = tmp_path / "run" / "pipeline.config"
    code = main(["config", "--template", "ssd_mobilenet_v2_fpnlite_320", "--label-map",
                 str(label_map), "--train", str(train), "--eval", str(val), "--batch-size",
                 "4", "--scale-lr", "--augment", "random_horizontal_flip,random_adjust_hue",
                 "--out", str(out)])
    assert code == 0
    configs = pipeline.load_configs(out)
    assert configs["model"].ssd.num_classes == 2
    lr = configs["train_config"].optimizer.momentum_optimizer.learning_rate \
        .cosine_decay_learning_rate
    assert lr.learning_rate_base == pytest.approx(0.02 * 4 / 16)
    assert len(configs["train_config"].data_augmentation_options) == 2
    assert (tmp_path / "run" / "pipeline.config.diff").read_text().startswith("---")
    assert pipeline.check_pipeline(out) == []
    assert main(["config", "--check", str(out)]) == 0


def test_cli_config_check_exits_1_with_the_message(tmp_path, inputs, capsys):
    out = _patch(tmp_path, inputs, template="ssd_mobilenet_v2_fpnlite_320", image_size=300)
    capsys.readouterr()
    assert main(["config", "--check", str(out)]) == 1
    err = capsys.readouterr().err
    assert "height 300 is not a multiple of 32" in err and "use 288 or 320" in err


def test_set_unknown_key_suggests(tmp_path, inputs):
    with pytest.raises(ConfigError, match="did you mean batch_size"):
        _patch(tmp_path, inputs, overrides={"train_config.bach_size": "3"})
    assert not (tmp_path / "p.config").exists()


def test_patch_for_dataset_needs_manifest(tmp_path):
    with pytest.raises(ConfigError, match="run `tfod prepare` first"):
        pipeline.patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", tmp_path / "p.config",
                                            data_dir=tmp_path)
