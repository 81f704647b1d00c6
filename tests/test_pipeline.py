"""tfod.config: templates, patching through the protos, checks before any graph work."""

from __future__ import annotations

import json
import logging

import pytest

from tfod.data import tfrecord
from tfod.config import options, patch, schedule, templates, validate
from tfod.layout import RunDir
from tfod.compat import runtime
from tfod.cli import main
from tfod.data import write_label_map
from tfod.errors import ConfigError

ZOO_TEMPLATES = ["centernet_mobilenetv2_fpn_512", "efficientdet_d0_512",
                 "faster_rcnn_resnet50_v1_640", "ssd_mobilenet_v1_fpn_640",
                 "ssd_mobilenet_v2_320", "ssd_mobilenet_v2_fpnlite_320",
                 "ssd_mobilenet_v2_fpnlite_640", "ssd_resnet50_v1_fpn_640"]


def _write_records(path, count):
    """Empty tf.train.Examples, written by tfod.tfrecord (no TensorFlow: the mutation run
    forks workers from a process that must not have run TensorFlow)."""
    with tfrecord.TFRecordWriter(path) as writer:
        for _ in range(count):
            writer.write(tfrecord.example({}))
    return path


def _write_manifest(folder, counts):
    """manifest.json as `tfod prepare` writes it: images and shards of each split."""
    (folder / "manifest.json").write_text(json.dumps({"splits": {
        split: {"images": n, "shards": [f"{split}-00000-of-00001.tfrecord"]}
        for split, n in counts.items()}}))


@pytest.fixture
def inputs(tmp_path):
    """Label map and TFRecords (5 train, 2 val) with their manifest.json, so that
    check_pipeline counts records from the manifest (no tf.data)."""
    label_map = write_label_map(["a", "b"], tmp_path / "lm.pbtxt")
    train = _write_records(tmp_path / "train-00000-of-00001.tfrecord", 5)
    val = _write_records(tmp_path / "val-00000-of-00001.tfrecord", 2)
    _write_manifest(tmp_path, {"train": 5, "val": 2})
    return label_map, train, val


def _patch(tmp_path, inputs, template="ssd_mobilenet_v2_tiny", name="p.config", **kwargs):
    label_map, train, val = inputs
    kwargs = {"batch_size": 4, "label_map": label_map, "train_input": str(train),
              "eval_input": str(val), **kwargs}
    return patch.patch_pipeline(template, tmp_path / name, **kwargs)


def _edit(path, change):
    configs = templates.load_configs(path)
    change(configs)
    templates.save_configs(configs, path)
    return path


def _resolve_run(path, error=ConfigError):
    """(config, run folder path) as RunDir.of gives them."""
    config, run = RunDir.of(path, error)
    return config, run.root


def _fails(path, *needles):
    """check_pipeline raises one ConfigError whose text names every needle."""
    with pytest.raises(ConfigError) as info:
        validate.check_pipeline(path)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    return info.value


def _cosine(configs):
    return configs["train_config"].optimizer.adam_optimizer.learning_rate \
        .cosine_decay_learning_rate


# --- templates -------------------------------------------------------------------------------

def test_templates_listed_and_unknown_suggests():
    assert set(ZOO_TEMPLATES + ["ssd_mobilenet_v2_tiny"]) <= set(templates.available_templates())
    with pytest.raises(ConfigError, match="did you mean ssd_mobilenet_v2_tiny"):
        templates.resolve_template("ssd_mobilenet_v2_tiyn")


@pytest.mark.parametrize("name", ZOO_TEMPLATES)
def test_zoo_template_parses_with_single_gpu_settings(name):
    configs = templates.load_configs(templates.resolve_template(name))
    train_config = configs["train_config"]
    assert 4 <= train_config.batch_size <= 16
    assert train_config.fine_tune_checkpoint_type == "detection"
    assert templates.PLACEHOLDER in train_config.fine_tune_checkpoint
    assert not train_config.use_bfloat16
    _, kind, lr = schedule.lr_schedule(train_config)
    assert kind == "cosine_decay_learning_rate"
    assert lr.total_steps == train_config.num_steps and 0 < lr.warmup_steps < lr.total_steps
    assert lr.warmup_learning_rate < lr.learning_rate_base
    # nothing but placeholders and paths stands between a template and a valid config
    assert validate._size_findings(configs) == [] and validate._schedule_findings(configs) == []


def test_every_template_builds_with_model_builder():
    from object_detection.builders import model_builder

    # offline, the CenterNet backbone's ImageNet weights are skipped by the compat shim
    built = {}
    for name in templates.available_templates():
        configs = templates.load_configs(templates.resolve_template(name))
        patch.set_num_classes(configs, 3)
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

    configs = templates.load_configs(templates.resolve_template(name))
    patch.set_num_classes(configs, 3)
    model = model_builder.build(configs["model"], is_training=False)
    height, width = templates.image_size(configs)
    images, shapes = model.preprocess(tf.zeros([1, height, width, 3]))
    detections = model.postprocess(model.predict(images, shapes), shapes)
    assert detections["detection_boxes"].shape[0] == 1


# --- patching --------------------------------------------------------------------------------

def test_patch_writes_config_and_diff(tmp_path, inputs):
    label_map, train, val = inputs
    out = _patch(tmp_path, inputs, num_steps=300, image_size=128,
                 overrides={"train_config.max_number_of_boxes": "7"})
    configs = templates.load_configs(out)
    assert configs["model"].ssd.num_classes == 2
    assert configs["train_config"].batch_size == 4
    assert configs["train_config"].num_steps == 300
    cosine = _cosine(configs)
    assert cosine.total_steps == 300 and 0 < cosine.warmup_steps < 300
    assert cosine.learning_rate_base == pytest.approx(0.007)  # no --scale-lr: unchanged
    assert templates.image_size(configs) == (128, 128)
    assert configs["train_config"].max_number_of_boxes == 7
    # repeated input paths are replaced, not appended to
    assert list(configs["train_input_config"].tf_record_input_reader.input_path) == \
        [str(train.resolve())]
    assert validate.check_pipeline(out) == []
    diff = (tmp_path / "p.config.diff").read_text()
    assert "-  batch_size: 8\n" in diff and "+  batch_size: 4\n" in diff
    assert "+    total_steps: 300\n" in diff.replace("      ", "")  # indentation aside
    assert "-  label_map_path: \"PATH_TO_BE_CONFIGURED\"" in diff


def test_scale_lr_scales_every_rate_of_each_schedule(tmp_path, inputs):
    out = _patch(tmp_path, inputs, batch_size=16, scale_lr=True)
    cosine = _cosine(templates.load_configs(out))
    assert cosine.learning_rate_base == pytest.approx(0.014)
    assert cosine.warmup_learning_rate == pytest.approx(0.0014)

    def manual(configs):
        lr = configs["train_config"].optimizer.adam_optimizer.learning_rate
        lr.manual_step_learning_rate.initial_learning_rate = 0.01
        lr.manual_step_learning_rate.schedule.add(step=1000, learning_rate=0.001)
    source = _edit(_patch(tmp_path, inputs, name="manual.config", batch_size=8), manual)
    out = patch.patch_pipeline(source, tmp_path / "m2.config", batch_size=2, scale_lr=True,
                                  num_steps=1000)
    lr = templates.load_configs(out)["train_config"].optimizer.adam_optimizer.learning_rate \
        .manual_step_learning_rate
    assert lr.initial_learning_rate == pytest.approx(0.0025)
    assert lr.schedule[0].learning_rate == pytest.approx(0.00025)
    assert lr.schedule[0].step == 500  # 2000 -> 1000 steps halves the boundaries

    def exponential(configs):
        lr = configs["train_config"].optimizer.adam_optimizer.learning_rate
        lr.exponential_decay_learning_rate.initial_learning_rate = 0.01
        lr.exponential_decay_learning_rate.min_learning_rate = 0.001
    source = _edit(_patch(tmp_path, inputs, name="exp.config", batch_size=8), exponential)
    out = patch.patch_pipeline(source, tmp_path / "e2.config", batch_size=32, scale_lr=True)
    lr = templates.load_configs(out)["train_config"].optimizer.adam_optimizer.learning_rate \
        .exponential_decay_learning_rate
    assert lr.initial_learning_rate == pytest.approx(0.04)
    assert lr.min_learning_rate == pytest.approx(0.004)


def test_augment_replaces_the_template_list(tmp_path, inputs):
    out = _patch(tmp_path, inputs, augment="random_horizontal_flip,ssd_random_crop,"
                 "random_adjust_brightness:max_delta=0.2,"
                 "random_absolute_pad_image:pad_color=0.5:pad_color=0.5:pad_color=0.5")
    steps = templates.load_configs(out)["train_config"].data_augmentation_options
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
    assert "random_jpeg_quality" in options.augmentation_names()  # from the descriptors
    assert not (tmp_path / "p.config").exists()


def test_quantize_writes_graph_rewriter_and_says_qat_applies(tmp_path, inputs, caplog):
    """The block is quantization-aware training now (tests/test_qat.py trains it): config
    says so, and --check has nothing against it on a MobileNet SSD."""
    with caplog.at_level(logging.INFO, logger="tfod.config"):
        out = _patch(tmp_path, inputs, quantize="delay=1800,weight_bits=8,activation_bits=8")
    assert "quantization-aware training from step 1800 (8-bit weights, 8-bit activations)" \
        in caplog.text
    quantization = templates.load_configs(out)["graph_rewriter_config"].quantization
    assert (quantization.delay, quantization.weight_bits, quantization.activation_bits) == \
        (1800, 8, 8)
    assert "graph_rewriter" in out.read_text()
    assert not [w for w in validate.check_pipeline(out) if "quantiz" in w]
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
    assert patch.checkpoint_type(detection) == "detection"
    classification = _classification_checkpoint(tmp_path / "backbone" / "ckpt-1")
    assert patch.checkpoint_type(classification) == "classification"

    out = _patch(tmp_path, inputs, fine_tune_checkpoint=tiny_run["run_dir"])  # a folder
    train_config = templates.load_configs(out)["train_config"]
    assert train_config.fine_tune_checkpoint == detection
    assert train_config.fine_tune_checkpoint_type == "detection"
    out = _patch(tmp_path, inputs, name="c.config", fine_tune_checkpoint=classification)
    assert templates.load_configs(out)["train_config"].fine_tune_checkpoint_type == \
        "classification"
    validate.check_pipeline(out)

    # finding: the type does not match the checkpoint's variables
    _edit(out, lambda c: setattr(c["train_config"], "fine_tune_checkpoint_type", "detection"))
    _fails(out, "train_config.fine_tune_checkpoint_type", "classification checkpoint",
           'set fine_tune_checkpoint_type: "classification"')


# --- findings, one config each ---------------------------------------------------------------

def test_finding_placeholders_left():
    error = _fails(templates.resolve_template("ssd_mobilenet_v2_fpnlite_320"),
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


def test_eval_and_export_checks_skip_what_only_training_reads(tmp_path, inputs):
    """Scope eval/export: a missing fine-tune checkpoint, missing training records, a
    placeholder left in a training-only field, a schedule that does not fit and a batch
    larger than the training set are training's problems only; the eval records, the label
    map, num_classes and the input size are checked for every stage."""
    out = _edit(_patch(tmp_path, inputs, batch_size=8), lambda c: (
        setattr(c["train_config"], "fine_tune_checkpoint", str(tmp_path / "ckpt-9")),
        setattr(c["train_config"], "num_steps", 123)))
    inputs[1].unlink()  # the training records
    configs = templates.load_configs(out)
    with pytest.raises(ConfigError) as info:
        validate.check_configs(configs, out, scope="train")
    text = str(info.value)
    assert "fine_tune_checkpoint" in text and "train_input_reader" in text and \
        "total_steps" in text
    for scope in ("eval", "export"):
        assert validate.check_configs(configs, out, scope=scope) == []
    configs["train_input_config"].tf_record_input_reader.input_path[:] = [
        templates.PLACEHOLDER]
    assert validate.check_configs(configs, out, scope="eval") == []
    configs["eval_input_configs"][0].label_map_path = str(tmp_path / "gone.pbtxt")
    with pytest.raises(ConfigError, match="eval_input_reader.label_map_path"):
        validate.check_configs(configs, out, scope="eval")
    configs["eval_input_configs"][0].label_map_path = str(inputs[0])
    patch.set_num_classes(configs, 5)
    with pytest.raises(ConfigError, match="num_classes is 5"):
        validate.check_configs(configs, out, scope="export")
    with pytest.raises(ValueError, match="scope 'predict'"):
        validate.find_problems(out, scope="predict")


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
    assert validate.find_problems(out) == []


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
    out = _patch(tmp_path, inputs, batch_size=8)  # 5 records, by the fixture's manifest
    _fails(out, "train_config.batch_size", "batch_size 8 is larger than the training set "
           "(5 records, by manifest.json)", "--batch-size 5 or less")
    validate.check_pipeline(_patch(tmp_path, inputs, name="five.config", batch_size=5))
    # the manifest's count is used, not the records in the files
    _write_manifest(tmp_path, {"train": 3, "val": 2})
    out = _patch(tmp_path, inputs, name="m.config", batch_size=4)
    _fails(out, "(3 records, by manifest.json)")


def test_records_without_a_manifest_counted_with_tf_data(tmp_path, inputs):
    """Records that `tfod prepare` did not write (no manifest.json beside them) are counted
    with tf.data; empty ones are an error of their own."""
    label_map = inputs[0]
    folder = tmp_path / "own"
    folder.mkdir()
    train = _write_records(folder / "train-00000-of-00001.tfrecord", 5)
    val = _write_records(folder / "val-00000-of-00001.tfrecord", 2)
    own = (label_map, train, val)
    out = _patch(tmp_path, own, batch_size=8)
    _fails(out, "train_config.batch_size", "batch_size 8 is larger than the training set "
           "(5 records, by tf.data count)", "--batch-size 5 or less")
    _write_records(train, 0)
    _fails(_patch(tmp_path, own, name="e.config"),
           "the training TFRecords hold no records (by tf.data count)")


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
    frcnn = templates.load_configs(templates.resolve_template("faster_rcnn_resnet50_v1_640"))
    with pytest.raises(ConfigError, match="cannot export a faster_rcnn model to tflite.*"
                                          "export saved_model only"):
        validate.check_exportable(frcnn, "tflite")
    validate.check_exportable(frcnn, "saved_model")
    validate.check_exportable(templates.resolve_template("centernet_mobilenetv2_fpn_512"),
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
    configs = templates.load_configs(out)
    assert configs["model"].ssd.num_classes == 2
    lr = configs["train_config"].optimizer.momentum_optimizer.learning_rate \
        .cosine_decay_learning_rate
    assert lr.learning_rate_base == pytest.approx(0.02 * 4 / 16)
    assert len(configs["train_config"].data_augmentation_options) == 2
    assert (tmp_path / "run" / "pipeline.config.diff").read_text().startswith("---")
    assert validate.check_pipeline(out) == []
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
        patch.patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", tmp_path / "p.config",
                                            data_dir=tmp_path)


# --- the patching and validation pieces on hand-built messages (no template, no files) ------

def _train_config(kind=None, **fields):
    from object_detection.protos import train_pb2

    train_config = train_pb2.TrainConfig(num_steps=1000)
    if kind:
        lr = getattr(train_config.optimizer.adam_optimizer.learning_rate, kind)
        for key, value in fields.items():
            if key == "schedule":
                for step, rate in value:
                    lr.schedule.add(step=step, learning_rate=rate)
            else:
                setattr(lr, key, value)
    return train_config


def test_parse_value_types():
    assert [options._parse_value(t) for t in ("true", "False", "3", "-2", "2.5", "1e3", "abc",
                                                "")] == [True, False, 3, -2, 2.5, 1000.0, "abc", ""]
    assert type(options._parse_value("3")) is int


def test_set_steps_rescales_each_schedule_kind():
    """cosine: warmup and hold scale with the steps (warmup at least 1, at most half);
    manual: boundaries scale and stay in 1..num_steps; exponential: decay and burn-in."""
    configs = {"train_config": _train_config("cosine_decay_learning_rate", total_steps=1000,
                                             warmup_steps=100, hold_base_rate_steps=200)}
    schedule.set_steps(configs, 500)
    lr = schedule.lr_schedule(configs["train_config"])[2]
    assert (configs["train_config"].num_steps, lr.total_steps, lr.warmup_steps,
            lr.hold_base_rate_steps) == (500, 500, 50, 100)
    schedule.set_steps(configs, 10)   # 50 * 10/500 = 1
    assert (lr.total_steps, lr.warmup_steps, lr.hold_base_rate_steps) == (10, 1, 2)
    schedule.set_steps(configs, 3)    # warmup at least 1, hold at most steps - warmup
    assert (lr.warmup_steps, lr.hold_base_rate_steps) == (1, 1)
    schedule.set_steps(configs, 1)
    assert (lr.total_steps, lr.warmup_steps, lr.hold_base_rate_steps) == (1, 0, 0)
    configs = {"train_config": _train_config("cosine_decay_learning_rate", total_steps=0,
                                             warmup_steps=300)}
    schedule.set_steps(configs, 400)  # total_steps 0: scaled from num_steps 1000
    lr = schedule.lr_schedule(configs["train_config"])[2]
    assert (lr.total_steps, lr.warmup_steps, lr.hold_base_rate_steps) == (400, 120, 0)
    schedule.set_steps(configs, 100)  # 120 * 100/400
    assert lr.warmup_steps == 30
    configs = {"train_config": _train_config("cosine_decay_learning_rate", total_steps=100,
                                             warmup_steps=90)}
    schedule.set_steps(configs, 100)
    assert schedule.lr_schedule(configs["train_config"])[2].warmup_steps == 50  # half at most

    configs = {"train_config": _train_config("manual_step_learning_rate",
                                             schedule=[(1, 0.1), (500, 0.01), (999, 0.001)])}
    schedule.set_steps(configs, 100)
    assert [s.step for s in schedule.lr_schedule(configs["train_config"])[2].schedule] == \
        [1, 50, 99]
    configs["train_config"].num_steps = 0  # unset: taken as the new count (scale 1)
    schedule.set_steps(configs, 100)
    assert [s.step for s in schedule.lr_schedule(configs["train_config"])[2].schedule] == \
        [1, 50, 99]

    configs = {"train_config": _train_config("exponential_decay_learning_rate",
                                             decay_steps=300, burnin_steps=400)}
    schedule.set_steps(configs, 100)
    lr = schedule.lr_schedule(configs["train_config"])[2]
    assert (lr.decay_steps, lr.burnin_steps) == (30, 40)
    schedule.set_steps(configs, 20)
    assert (lr.decay_steps, lr.burnin_steps) == (6, 8)
    schedule.set_steps(configs, 2)
    assert (lr.decay_steps, lr.burnin_steps) == (1, 1)
    configs = {"train_config": _train_config("exponential_decay_learning_rate",
                                             decay_steps=300)}
    schedule.set_steps(configs, 100)
    assert schedule.lr_schedule(configs["train_config"])[2].burnin_steps == 0  # stays unset
    configs = {"train_config": _train_config("constant_learning_rate", learning_rate=0.1)}
    schedule.set_steps(configs, 7)
    assert configs["train_config"].num_steps == 7
    assert schedule.lr_schedule(_train_config()) == ("", "", None)


def test_set_steps_with_total_steps_unset_scales_warmup_from_num_steps():
    """A cosine schedule without total_steps (the proto reads 4,000,000 then) was meant
    for train_config.num_steps: warmup scales by new / old num_steps (it became 1)."""
    configs = {"train_config": _train_config("cosine_decay_learning_rate", warmup_steps=300,
                                             hold_base_rate_steps=100)}
    assert not _cosine(configs).HasField("total_steps")
    schedule.set_steps(configs, 400)  # num_steps 1000 -> 400
    lr = _cosine(configs)
    assert (lr.total_steps, lr.warmup_steps, lr.hold_base_rate_steps) == (400, 120, 40)
    configs["train_config"].ClearField("num_steps")  # neither set: nothing to scale from
    lr.ClearField("total_steps")
    schedule.set_steps(configs, 200)
    assert (lr.total_steps, lr.warmup_steps) == (200, 100)  # 120, at most half


def test_scale_learning_rate_multiplies_every_rate():
    configs = {"train_config": _train_config("cosine_decay_learning_rate",
                                             learning_rate_base=0.1, warmup_learning_rate=0.01)}
    schedule.scale_learning_rate(configs, 2.0)
    lr = schedule.lr_schedule(configs["train_config"])[2]
    assert (lr.learning_rate_base, lr.warmup_learning_rate) == pytest.approx((0.2, 0.02))
    configs = {"train_config": _train_config("exponential_decay_learning_rate",
                                             initial_learning_rate=0.1, burnin_learning_rate=0.2,
                                             min_learning_rate=0.3)}
    schedule.scale_learning_rate(configs, 0.5)
    lr = schedule.lr_schedule(configs["train_config"])[2]
    assert (lr.initial_learning_rate, lr.burnin_learning_rate, lr.min_learning_rate) == \
        pytest.approx((0.05, 0.1, 0.15))
    configs = {"train_config": _train_config("constant_learning_rate", learning_rate=0.1)}
    schedule.scale_learning_rate(configs, 3.0)
    assert schedule.lr_schedule(configs["train_config"])[2].learning_rate == pytest.approx(0.3)
    configs = {"train_config": _train_config("manual_step_learning_rate",
                                             initial_learning_rate=0.1,
                                             schedule=[(10, 0.01), (20, 0.001)])}
    schedule.scale_learning_rate(configs, 10.0)
    lr = schedule.lr_schedule(configs["train_config"])[2]
    assert lr.initial_learning_rate == pytest.approx(1.0)
    assert [s.learning_rate for s in lr.schedule] == pytest.approx([0.1, 0.01])
    schedule.scale_learning_rate({"train_config": _train_config()}, 2.0)  # no optimizer: no-op


def _model(arch="ssd", resizer=None):
    from object_detection.protos import model_pb2

    model = model_pb2.DetectionModel()
    message = getattr(model, arch)
    if resizer:
        getattr(message.image_resizer, resizer).SetInParent()
    else:
        message.SetInParent()
    return {"model": model}


def test_set_image_size_on_each_resizer():
    configs = _model(resizer="fixed_shape_resizer")
    patch._set_image_size(configs, (96, 160))
    fixed = configs["model"].ssd.image_resizer.fixed_shape_resizer
    assert (fixed.height, fixed.width) == (96, 160)
    patch._set_image_size(configs, 128)
    assert (fixed.height, fixed.width) == (128, 128)
    configs = _model("faster_rcnn", "keep_aspect_ratio_resizer")
    patch._set_image_size(configs, (600, 400))
    keep = configs["model"].faster_rcnn.image_resizer.keep_aspect_ratio_resizer
    assert (keep.min_dimension, keep.max_dimension) == (400, 600)
    patch._set_image_size(configs, (300, 500))
    assert (keep.min_dimension, keep.max_dimension) == (300, 500)
    with pytest.raises(ConfigError, match="cannot set the image size of a identity_resizer"):
        patch._set_image_size(_model(resizer="identity_resizer"), 64)


def test_assign_casts_to_the_field_type():
    from object_detection.protos import preprocessor_pb2, train_pb2

    config = train_pb2.TrainConfig()
    options._assign(config, "batch_size", "3.0", "w")       # int field from a float text
    options._assign(config, "num_steps", True, "w")         # bool is refused by protobuf 7
    options._assign(config, "fine_tune_checkpoint", 12, "w")  # string field
    options._assign(config, "gradient_clipping_by_norm", "2", "w")  # float field
    options._assign(config, "use_bfloat16", "true", "w")
    options._assign(config, "fine_tune_checkpoint_version", "V2", "w")  # enum by name
    options._assign(config, "freeze_variables", "a", "w")   # repeated: appended
    options._assign(config, "freeze_variables", "b", "w")
    assert (config.batch_size, config.num_steps, config.fine_tune_checkpoint,
            config.gradient_clipping_by_norm, config.use_bfloat16,
            config.fine_tune_checkpoint_version, list(config.freeze_variables)) == \
        (3, 1, "12", 2.0, True, 2, ["a", "b"])
    assert isinstance(config.gradient_clipping_by_norm, float)
    with pytest.raises(ConfigError, match="'optimizer' is a message, not a value") as info:
        options._assign(config, "optimizer", "1", "--set x")
    assert str(info.value).startswith("--set x:")
    with pytest.raises(ConfigError, match="fine_tune_checkpoint_version has no value 'V3'.*"
                                          "use one of UNKNOWN, V1, V2"):
        options._assign(config, "fine_tune_checkpoint_version", "V3", "w")
    with pytest.raises(ConfigError, match=r"bad value 'many' for batch_size \("):
        options._assign(config, "batch_size", "many", "w")
    with pytest.raises(ConfigError, match="bad value 'x' for gradient_clipping_by_norm"):
        options._assign(config, "gradient_clipping_by_norm", "x", "w")
    flip = preprocessor_pb2.RandomHorizontalFlip()
    options._assign(flip, "probability", 1, "w")
    assert flip.probability == 1.0


def test_unknown_field_suggests_or_lists():
    from object_detection.protos import preprocessor_pb2

    error = options._unknown_field(preprocessor_pb2.RandomAdjustBrightness(), "max_delt", "w",
                                    "brightness has no option")
    assert str(error) == "w: brightness has no option 'max_delt'; did you mean max_delta?"
    error = options._unknown_field(preprocessor_pb2.RandomAdjustBrightness(), "zzz", "w", "x")
    assert str(error) == "w: x 'zzz'; valid: max_delta"
    error = options._unknown_field(preprocessor_pb2.RandomRGBtoGray(), "zzz", "w", "x")
    assert str(error).endswith("valid: probability")
    error = options._unknown_field(preprocessor_pb2.RandomVerticalFlip(), "zzz", "w", "x")
    assert str(error).endswith("valid: keypoint_flip_permutation, probability")


def test_parse_augment_steps_and_options():
    steps = options.parse_augment([" random_horizontal_flip ", "",
                                    "random_adjust_brightness: max_delta = 0.25 ",
                                    "random_horizontal_flip:keypoint_flip_permutation=1:"
                                    "keypoint_flip_permutation=0"])
    assert [s.WhichOneof("preprocessing_step") for s in steps] == [
        "random_horizontal_flip", "random_adjust_brightness", "random_horizontal_flip"]
    assert steps[0].HasField("random_horizontal_flip")
    assert steps[1].random_adjust_brightness.max_delta == 0.25
    assert list(steps[2].random_horizontal_flip.keypoint_flip_permutation) == [1, 0]
    assert options.parse_augment("random_horizontal_flip,,") == steps[:1]
    assert options.parse_augment("") == []
    with pytest.raises(ConfigError, match="option 'max_delta' of random_adjust_brightness has "
                                          "no value.*write random_adjust_brightness:KEY=VALUE"):
        options.parse_augment("random_adjust_brightness:max_delta")
    with pytest.raises(ConfigError, match=r"unknown augmentation 'zzzz'; see `tfod\.config"):
        options.parse_augment("zzzz")
    with pytest.raises(ConfigError, match="did you mean ssd_random_crop"):
        options.parse_augment("ssd_random_crp")
    names = options.augmentation_names()
    assert names == sorted(names) and len(names) > 30 and "random_horizontal_flip" in names


def test_parse_quantize_text_dict_and_defaults():
    rewriter = options.parse_quantize(" delay = 10 , weight_bits=4,")
    q = rewriter.quantization
    assert (q.delay, q.weight_bits, q.activation_bits) == (10, 4, 8)
    assert rewriter.HasField("quantization")
    assert options.parse_quantize({"activation_bits": 4}).quantization.activation_bits == 4
    default = options.parse_quantize(None)
    from google.protobuf import text_format
    text = text_format.MessageToString(default)
    assert "delay: 500000" in text and "weight_bits: 8" in text and "activation_bits: 8" in text
    with pytest.raises(ConfigError, match="quantization option 'delay' has no value") as info:
        options.parse_quantize("weight_bits=8,delay")
    assert str(info.value).startswith("--quantize:")
    with pytest.raises(ConfigError, match="quantization has no option 'bits'"):
        options.parse_quantize({"bits": 8})


def test_set_num_classes_of_each_architecture():
    for arch in ("ssd", "faster_rcnn", "center_net"):
        configs = _model(arch)
        patch.set_num_classes(configs, 7)
        assert getattr(configs["model"], arch).num_classes == 7
    with pytest.raises(ConfigError, match="experimental_model has no num_classes") as info:
        patch.set_num_classes(_model("experimental_model"), 3)
    assert str(info.value).startswith("model.experimental_model:")


def test_dotted_overrides_walk_messages_and_replace_repeated():
    from object_detection.protos import input_reader_pb2

    configs = {"train_config": _train_config(), "model": _model()["model"],
               "train_input_config": input_reader_pb2.InputReader()}
    reader = configs["train_input_config"].tf_record_input_reader
    reader.input_path.extend(["old1", "old2"])
    options.set_dotted(configs, "train_input_config.tf_record_input_reader.input_path", "new")
    assert list(reader.input_path) == ["new"]
    options.set_dotted(configs, "model.ssd.num_classes", "5")
    options.set_dotted(configs, "train_config.batch_size", 12)
    assert (configs["model"].ssd.num_classes, configs["train_config"].batch_size) == (5, 12)
    with pytest.raises(ConfigError, match=r"unknown key 'train_confg\.x'.*start with one of "
                                          r"train_config, model, train_input_config \(did you "
                                          r"mean train_config"):
        options.set_dotted(configs, "train_confg.x", "1")
    with pytest.raises(ConfigError) as info:
        options.set_dotted(configs, "zzz", "1")
    assert "did you mean" not in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown key 'model\.ssd\.num_clases': model\.ssd has "
                                          r"no field 'num_clases'.*did you mean num_classes"):
        options.set_dotted(configs, "model.ssd.num_clases", "1")
    with pytest.raises(ConfigError, match=r"model has no field 'qqqqqq'.*fields: center_net, "
                                          r"experimental_model, faster_rcnn, ssd"):
        options.set_dotted(configs, "model.qqqqqq.x", "1")


def test_placeholder_fields_are_found_once_each_in_nested_and_repeated_fields():
    from object_detection.protos import pipeline_pb2

    proto = pipeline_pb2.TrainEvalPipelineConfig()
    reader = proto.train_input_reader
    reader.label_map_path = "PATH_TO_BE_CONFIGURED/lm.pbtxt"
    reader.tf_record_input_reader.input_path.extend(["x/PATH_TO_BE_CONFIGURED", "ok",
                                                     "PATH_TO_BE_CONFIGURED"])
    proto.eval_input_reader.add().label_map_path = "fine"
    proto.eval_input_reader.add().label_map_path = "PATH_TO_BE_CONFIGURED"
    proto.train_config.fine_tune_checkpoint = "ok"
    assert validate._placeholder_fields(proto) == [
        "train_input_reader.label_map_path",
        "train_input_reader.tf_record_input_reader.input_path",
        "eval_input_reader.label_map_path"]


def test_required_multiple_and_nearest_sizes():
    configs = _model()
    extractor = configs["model"].ssd.feature_extractor
    assert validate.required_multiple(configs) is None  # no FPN
    extractor.fpn.max_level = 7
    assert validate.required_multiple(configs) == (32, "the FPN top-down path adds the stride-32 "
                                                   "map, upsampled x2, to the next finer one")
    extractor.fpn.max_level = 4
    assert validate.required_multiple(configs)[0] == 16
    extractor.pad_to_multiple = 32
    assert validate.required_multiple(configs) is None  # pads itself to a multiple of 16
    extractor.pad_to_multiple = 8
    assert validate.required_multiple(configs)[0] == 16
    extractor.use_explicit_padding = True
    assert validate.required_multiple(configs) is None
    configs = _model()
    configs["model"].ssd.feature_extractor.bifpn.max_level = 6
    assert validate.required_multiple(configs) == (64, (
        "model.ssd.feature_extractor.bifpn.max_level is 6: the BiFPN upsamples its stride-2**6 "
        "map back level by level"))
    configs = _model("center_net")
    configs["model"].center_net.feature_extractor.type = "mobilenet_v2_fpn"
    assert validate.required_multiple(configs) == (
        32, "mobilenet_v2_fpn adds stride-32 features upsampled x2 to stride-16 ones")
    configs["model"].center_net.feature_extractor.type = "resnet_v2_50"
    assert validate.required_multiple(configs) is None
    assert validate.required_multiple(_model("faster_rcnn")) is None
    assert [validate._nearest(s, 32) for s in (300, 320, 10, 33)] == \
        ["288 or 320", "320 or 352", "32", "32 or 64"]


def test_size_findings_name_side_and_sizes():
    configs = _model(resizer="fixed_shape_resizer")
    configs["model"].ssd.feature_extractor.fpn.max_level = 5
    fixed = configs["model"].ssd.image_resizer.fixed_shape_resizer
    fixed.height, fixed.width = 320, 300
    (finding,) = validate._size_findings(configs)
    assert finding.where == "model.ssd.image_resizer.fixed_shape_resizer.width"
    assert finding.what.startswith("width 300 is not a multiple of 32 (")
    assert finding.fix == "use 288 or 320 (tfod config --image-size 320)"
    fixed.height = 100
    assert [f.where.rsplit(".", 1)[1] for f in validate._size_findings(configs)] == \
        ["height", "width"]
    fixed.height, fixed.width = 64, 96
    assert validate._size_findings(configs) == []
    configs = _model(resizer="keep_aspect_ratio_resizer")
    configs["model"].ssd.feature_extractor.fpn.max_level = 5
    keep = configs["model"].ssd.image_resizer.keep_aspect_ratio_resizer
    keep.max_dimension, keep.pad_to_max_dimension = 330, True
    (finding,) = validate._size_findings(configs)
    assert (finding.what, finding.where, finding.fix) == (
        "max_dimension 330 is not a multiple of 32 (the FPN top-down path adds the stride-32 "
        "map, upsampled x2, to the next finer one)",
        "model.ssd.image_resizer.keep_aspect_ratio_resizer.max_dimension",
        "use 320 or 352 (tfod config --image-size N)")
    keep.max_dimension = 320
    assert validate._size_findings(configs) == []
    keep.pad_to_max_dimension = False
    (finding,) = validate._size_findings(configs)
    assert finding.where.endswith(".pad_to_max_dimension") and finding.error
    assert "multiple of 32" in finding.fix


def test_schedule_findings_each_message():
    def findings(kind, steps=1000, **fields):
        train_config = _train_config(kind, **fields)
        train_config.num_steps = steps
        return validate._schedule_findings({"train_config": train_config})

    where = "train_config.optimizer.adam_optimizer.learning_rate.cosine_decay_learning_rate"
    (f,) = findings("cosine_decay_learning_rate", total_steps=500, warmup_steps=0,
                    learning_rate_base=0.1)
    assert (f.what, f.where, f.fix) == (
        "total_steps 500 differs from train_config.num_steps 1000 (the learning rate would reach "
        "0 early)", f"{where}.total_steps", "set total_steps: 1000, or run `tfod config FILE "
        "--steps 1000 --out FILE` to make them consistent")
    (f,) = findings("cosine_decay_learning_rate", total_steps=2000, warmup_steps=0,
                    learning_rate_base=0.1)
    assert f.what.endswith("(the learning rate would never decay fully)")
    assert findings("cosine_decay_learning_rate", steps=0, total_steps=2000,
                    warmup_steps=0) == []
    assert findings("cosine_decay_learning_rate", total_steps=1000, warmup_steps=999,
                    warmup_learning_rate=0.1, learning_rate_base=0.1) == []
    (f,) = findings("cosine_decay_learning_rate", total_steps=1000, warmup_steps=1000,
                    learning_rate_base=0.1)
    assert (f.what, f.fix) == ("warmup_steps 1000 is not below total_steps 1000",
                               "set warmup_steps to a small part of total_steps, e.g. 50")
    (f,) = findings("cosine_decay_learning_rate", 10, total_steps=10, warmup_steps=10,
                    learning_rate_base=0.1)
    assert f.fix.endswith("e.g. 1")
    (f,) = findings("cosine_decay_learning_rate", total_steps=1000, warmup_steps=10,
                    warmup_learning_rate=0.2, learning_rate_base=0.1)
    assert (f.what, f.where) == ("warmup_learning_rate 0.2 is above learning_rate_base 0.1",
                                 f"{where}.warmup_learning_rate")
    assert findings("cosine_decay_learning_rate", total_steps=1000, warmup_steps=0,
                    warmup_learning_rate=0.2, learning_rate_base=0.1) == []
    (f,) = findings("manual_step_learning_rate", schedule=[(999, 0.1), (1000, 0.1), (1001, 0.1),
                                                           (5000, 0.1)])
    assert (f.what, f.fix) == ("schedule steps [1001, 5000] lie beyond train_config.num_steps "
                               "1000 (those rates are never used)",
                               "keep every step below 1000, or run `tfod config FILE --steps "
                               "1000 --out FILE` to make them consistent")
    assert findings("manual_step_learning_rate", steps=0, schedule=[(5000, 0.1)]) == []
    assert findings("constant_learning_rate", learning_rate=0.1) == []


def test_on_tpu_from_any_of_its_variables(monkeypatch):
    names = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    import glob as globmodule
    if globmodule.glob("/dev/accel[0-9]*"):
        pytest.skip("this machine has a TPU device")
    assert validate._on_tpu() is False
    for name in names:
        monkeypatch.setenv(name, "x")
        assert validate._on_tpu() is True
        monkeypatch.delenv(name)


def test_finding_text_resolve_run_and_templates(tmp_path):
    finding = validate.Finding("what", "where", "fix")
    assert (str(finding), finding.error) == ("where: what; fix", True)
    assert templates.resolve_template(templates.PIPELINES_DIR / "ssd_mobilenet_v2_tiny.config") \
        == templates.PIPELINES_DIR / "ssd_mobilenet_v2_tiny.config"
    assert templates.resolve_template("ssd_mobilenet_v2_tiny") == \
        templates.PIPELINES_DIR / "ssd_mobilenet_v2_tiny.config"
    with pytest.raises(ConfigError) as info:
        templates.resolve_template("qqqqqqqq")
    assert "did you mean" not in str(info.value)
    assert str(info.value).startswith(f"{templates.PIPELINES_DIR}: unknown template 'qqqqqqqq'")
    assert "available: centernet_mobilenetv2_fpn_512, efficientdet_d0_512" in str(info.value)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ConfigError, match="no pipeline.config in the run folder"):
        _resolve_run(run)
    from tfod.errors import TrainError
    with pytest.raises(TrainError, match="run folder or config not found"):
        _resolve_run(tmp_path / "nope", error=TrainError)
    (run / "pipeline.config").write_text("")
    assert _resolve_run(run) == (run / "pipeline.config", run)
    other = tmp_path / "other.config"
    other.write_text("")
    assert _resolve_run(other) == (other, tmp_path)


def test_freeze_choices_and_the_variables_they_keep():
    from types import SimpleNamespace

    configs = {"model": _model()["model"], "train_config": _train_config()}
    configs["train_config"].freeze_variables.append("old")
    options.set_freeze(configs, "feature_extractor")
    assert list(configs["train_config"].update_trainable_variables) == ["BoxPredictor/"]
    assert list(configs["train_config"].freeze_variables) == []
    options.set_freeze(configs, "feature_extractor")  # replaced, not appended
    assert list(configs["train_config"].update_trainable_variables) == ["BoxPredictor/"]
    options.set_freeze(configs, "none")
    assert list(configs["train_config"].update_trainable_variables) == []
    with pytest.raises(ConfigError, match="unknown freeze choice 'feature_extracter'.*did you mean "
                                          "feature_extractor\\? use one of: feature_extractor, "
                                          "none"):
        options.set_freeze(configs, "feature_extracter")
    with pytest.raises(ConfigError) as info:
        options.set_freeze(configs, "qqq")
    assert "did you mean" not in str(info.value)
    frcnn = {"model": _model("faster_rcnn")["model"], "train_config": _train_config()}
    with pytest.raises(ConfigError, match="defined for SSD models, not faster_rcnn"):
        options.set_freeze(frcnn, "feature_extractor")
    options.set_freeze(frcnn, "none")

    variables = [SimpleNamespace(name=n) for n in (
        "BoxPredictor/kernel:0", "block_1/BoxPredictor/bias:0", "block_1/kernel:0",
        "WeightSharedConvolutionalBoxPredictor/x:0", "head/BoxPredictor:0")]
    config = _train_config()
    assert runtime.trainable_filter(variables, config) == variables
    config.update_trainable_variables.append("^BoxPredictor/")
    config.update_trainable_variables.append("Shared")
    assert [v.name for v in runtime.trainable_filter(variables, config)] == [
        "BoxPredictor/kernel:0", "WeightSharedConvolutionalBoxPredictor/x:0"]
    config.freeze_variables.append("kernel$")
    assert [v.name for v in runtime.trainable_filter(variables, config)] == [
        "WeightSharedConvolutionalBoxPredictor/x:0"]
    del config.update_trainable_variables[:]
    config.freeze_variables.append("BoxPredictor$")  # the name is searched without ":0"
    assert [v.name for v in runtime.trainable_filter(variables, config)] == [
        "block_1/BoxPredictor/bias:0", "WeightSharedConvolutionalBoxPredictor/x:0"]


def test_paths_resolved_except_remote_and_diff_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert patch._paths("a.tfrecord") == [str(tmp_path / "a.tfrecord")]
    assert patch._paths(["gs://b/x", "s3://c/y", tmp_path / "z"]) == \
        ["gs://b/x", "s3://c/y", str(tmp_path / "z")]
    out = patch.write_diff("a\nb\n", "a\nc\n", tmp_path / "p.config", "tmpl.config")
    assert out == tmp_path / "p.config.diff"
    assert out.read_text() == (f"--- tmpl.config\n+++ {tmp_path / 'p.config'}\n"
                               "@@ -1,2 +1,2 @@\n a\n-b\n+c\n")


def test_image_size_and_architecture_of_configs():
    configs = _model(resizer="fixed_shape_resizer")
    fixed = configs["model"].ssd.image_resizer.fixed_shape_resizer
    fixed.height, fixed.width = 96, 160
    assert templates.image_size(configs) == (96, 160)
    assert templates.meta_architecture(configs) == "ssd"
    configs = _model("faster_rcnn", "keep_aspect_ratio_resizer")
    keep = configs["model"].faster_rcnn.image_resizer.keep_aspect_ratio_resizer
    keep.min_dimension, keep.max_dimension, keep.pad_to_max_dimension = 300, 500, True
    assert templates.image_size(configs) == (500, 500)
    keep.pad_to_max_dimension = False
    assert templates.image_size(configs) == (640, 640)  # varying: the default guess
    assert templates.meta_architecture(configs) == "faster_rcnn"


def _text(call, *args, **kwargs) -> str:
    """The whole text of the ConfigError the call raises: what, where and fix."""
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    return str(info.value)


def test_error_texts_in_full(tmp_path):
    """Every part of each message (where, what, fix) is checked, not a fragment."""
    from object_detection.protos import train_pb2

    (tmp_path / "run").mkdir()
    assert _text(_resolve_run, tmp_path / "run") == (
        f"{tmp_path / 'run'}: no pipeline.config in the run folder; pass a run folder made by "
        "`tfod train`, or a config file")
    assert _text(_resolve_run, tmp_path / "nope") == (
        f"{tmp_path / 'nope'}: run folder or config not found; pass runs/<name> or a "
        "pipeline.config")
    frcnn = {"model": _model("faster_rcnn")["model"], "train_config": _train_config()}
    assert _text(options.set_freeze, frcnn, "feature_extracter") == (
        "--freeze: unknown freeze choice 'feature_extracter'; did you mean feature_extractor? "
        "use one of: feature_extractor, none")
    assert _text(options.set_freeze, frcnn, "qqq") == (
        "--freeze: unknown freeze choice 'qqq'; use one of: feature_extractor, none")
    assert _text(options.set_freeze, frcnn, "feature_extractor") == (
        "model: --freeze feature_extractor is defined for SSD models, not faster_rcnn; list the "
        "variables to freeze yourself in train_config.freeze_variables (regexes of variable "
        "names)")
    config = train_pb2.TrainConfig()
    assert _text(options._assign, config, "optimizer", "1", "W") == (
        "W: 'optimizer' is a message, not a value; set one of its fields, or edit this block "
        "in the config")
    assert _text(options._assign, config, "fine_tune_checkpoint_version", "V3", "W") == (
        "W: fine_tune_checkpoint_version has no value 'V3'; use one of UNKNOWN, V1, V2")
    assert _text(options._assign, config, "batch_size", "many", "W") == (
        "W: bad value 'many' for batch_size (invalid literal for int() with base 10: 'many'); "
        "give a value of the field's type")
    assert _text(options.parse_augment, "random_adjust_brightness:max_delta") == (
        "--augment: option 'max_delta' of random_adjust_brightness has no value; write "
        "random_adjust_brightness:KEY=VALUE")
    assert _text(options.parse_augment, "zzzz") == (
        "--augment: unknown augmentation 'zzzz'; see `tfod.config.augmentation_names()` for "
        "all of them")
    assert _text(options.parse_augment, "ssd_random_crp") == (
        "--augment: unknown augmentation 'ssd_random_crp'; did you mean ssd_random_crop, "
        "ssd_random_crop_pad, random_crop_image? see `tfod.config.augmentation_names()` for "
        "all of them")
    assert _text(options.parse_augment, "random_adjust_brightness:max_delt=1") == (
        "--augment: random_adjust_brightness has no option 'max_delt'; did you mean max_delta?")
    assert _text(options.parse_quantize, "weight_bits=8,delay") == (
        "--quantize: quantization option 'delay' has no value; write "
        "delay=1800,weight_bits=8,activation_bits=8")
    assert _text(options.parse_quantize, {"bits": 8}) == (
        "--quantize: quantization has no option 'bits'; valid: activation_bits, delay, "
        "symmetric, weight_bits")
    assert _text(patch.set_num_classes, _model("experimental_model"), 3) == (
        "model.experimental_model: experimental_model has no num_classes; use a detection "
        "template")
    assert _text(patch._set_image_size, _model(resizer="identity_resizer"), 64) == (
        "model.image_resizer: cannot set the image size of a identity_resizer; edit the resizer "
        "in the config by hand")
    configs = {"train_config": _train_config(), "model": _model()["model"]}
    assert _text(options.set_dotted, configs, "train_confg.x", "1") == (
        "--set: unknown key 'train_confg.x'; start with one of train_config, model (did you "
        "mean train_config?)")
    assert _text(options.set_dotted, configs, "zzz", "1") == (
        "--set: unknown key 'zzz'; start with one of train_config, model")
    assert _text(options.set_dotted, configs, "model.ssd.num_clases", "1") == (
        "--set: unknown key 'model.ssd.num_clases': model.ssd has no field 'num_clases'; did "
        "you mean num_classes?")
    assert _text(options.set_dotted, configs, "model.qqqqqq.x", "1") == (
        "--set: unknown key 'model.qqqqqq.x': model has no field 'qqqqqq'; fields: center_net, "
        "experimental_model, faster_rcnn, ssd")
    assert _text(validate.check_exportable, frcnn, "tflite") == (
        "model.faster_rcnn: the OD API cannot export a faster_rcnn model to tflite (TFLite "
        "needs one of ssd, center_net); use an SSD or CenterNet template, or export "
        "saved_model only")
    names = ", ".join(templates.available_templates())
    assert _text(templates.resolve_template, "ssd_mobilenet_v2_tiyn") == (
        f"{templates.PIPELINES_DIR}: unknown template 'ssd_mobilenet_v2_tiyn'; did you mean "
        f"ssd_mobilenet_v2_tiny, ssd_mobilenet_v2_320, ssd_mobilenet_v1_fpn_640? available: "
        f"{names}")
    config_file = tmp_path / "p.config"
    config_file.write_text("model { ssd { } }")
    validate.check_exportable(config_file, "tflite_int8")  # a file path: loaded; ssd passes
    config_file.write_text("model { faster_rcnn { } }")
    assert _text(validate.check_exportable, config_file, "tflite_int8").startswith(
        f"{config_file}: model.faster_rcnn: the OD API cannot export a faster_rcnn model to "
        "tflite_int8")
    assert templates.num_steps(config_file) == 0


def _config_file(tmp_path, name="p.config", *, train="", evaluate="", label_map="",
                 checkpoint="", extra="", num_classes=2):
    text = f"""model {{ ssd {{ num_classes: {num_classes}
  image_resizer {{ fixed_shape_resizer {{ height: 64 width: 64 }} }} }} }}
train_config {{ batch_size: 2 num_steps: 10 fine_tune_checkpoint: "{checkpoint}" {extra} }}
train_input_reader {{ label_map_path: "{label_map}"
  tf_record_input_reader {{ input_path: "{train}" }} }}
eval_input_reader {{ label_map_path: "{label_map}"
  tf_record_input_reader {{ input_path: "{evaluate}" }} }}
"""
    path = tmp_path / name
    path.write_text(text)
    return path


def test_findings_in_full_on_hand_written_configs(tmp_path, monkeypatch):
    for name in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(name, raising=False)
    records = tmp_path / "r.tfrecord"
    records.write_bytes(b"")  # counted from the manifest, as `tfod prepare` writes it
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"splits": {"train": {"images": 3, "shards": ["r.tfrecord"]}}}))
    label_map = write_label_map(["a", "b"], tmp_path / "lm.pbtxt")
    ok = _config_file(tmp_path, train=records, evaluate="gs://bucket/val-*", label_map=label_map)
    assert validate.find_problems(ok) == []
    bad = _config_file(tmp_path, "bad.config", train=tmp_path / "none-*.tfrecord",
                       evaluate="s3://b/x", label_map=tmp_path / "gone.pbtxt",
                       checkpoint=tmp_path / "ckpt-3", extra="use_bfloat16: true")
    assert [(str(f), f.error) for f in validate.find_problems(bad)] == [
        (f"train_input_reader.tf_record_input_reader.input_path: {tmp_path}/none-*.tfrecord "
         "matches no file; point it at existing TFRecords (tfod config --data data/NAME, or "
         "--train/--eval GLOB)", True),
        (f"train_input_reader.label_map_path: {tmp_path}/gone.pbtxt not found; give an "
         "existing label map (tfod config --label-map FILE)", True),
        (f"eval_input_reader.label_map_path: {tmp_path}/gone.pbtxt not found; give an existing "
         "label map (tfod config --label-map FILE)", True),
        (f"train_config.fine_tune_checkpoint: {tmp_path}/ckpt-3.index not found; download the "
         "model (tfod zoo download NAME) or fix the prefix; clear it to train from scratch",
         True),
        ("train_config.use_bfloat16: use_bfloat16 is true but this machine has no TPU (bfloat16 "
         "training is slow or unsupported on CPU/GPU); set use_bfloat16: false", True)]
    folder = _config_file(tmp_path, "folder.config", train=records, evaluate=records,
                          label_map=label_map, checkpoint=tmp_path)
    assert [str(f) for f in validate.find_problems(folder)] == [
        f"train_config.fine_tune_checkpoint: {tmp_path} is a folder, the OD API needs a "
        "checkpoint prefix; give the prefix, e.g. .../checkpoint/ckpt-0 (tfod config "
        "--checkpoint FOLDER finds it)"]
    (tmp_path / "ckpt-3.index").write_bytes(b"")
    remote = _config_file(tmp_path, "remote.config", train=records, evaluate=records,
                          label_map=label_map, checkpoint="gs://b/ckpt-0")
    assert validate.find_problems(remote) == []

    gaps = tmp_path / "gaps.pbtxt"
    gaps.write_text('item { id: 1 name: "a" }\nitem { id: 3 name: "b" }\nitem { id: 4 name: "c" }\n')
    ids = _config_file(tmp_path, "ids.config", train=records, evaluate=records, label_map=gaps)
    assert [str(f) for f in validate.find_problems(ids)] == [
        f"{gaps} item.id: label ids are [1, 3, 4], not 1..3; number the items 1, 2, ... "
        "without gaps (0 is the background)",
        "model.ssd.num_classes: num_classes is 2 but the label map "
        f"{gaps} has 3 classes; set num_classes: 3 (tfod config --label-map sets it from the "
        "map)"]
    broken = tmp_path / "broken.pbtxt"
    broken.write_text("item { id: ")
    unreadable = _config_file(tmp_path, "u.config", train=records, evaluate=records,
                              label_map=broken)
    (finding,) = validate.find_problems(unreadable)
    assert finding.where == str(broken) and finding.what.startswith("label map cannot be read (")
    assert finding.fix == "write it with `tfod prepare` (items with id and name)"

    quantized = _config_file(tmp_path, "q.config", train=records, evaluate=records,
                             label_map=label_map)
    quantized.write_text(quantized.read_text() + "graph_rewriter { quantization { delay: 1 } }\n")
    (error,) = validate.find_problems(quantized)  # an SSD without a MobileNet: no QAT
    assert (str(error), error.error) == (
        "graph_rewriter.quantization: quantization-aware training does not support the "
        "feature extractor ''; use an SSD with a feature extractor of ssd_mobilenet_v1_keras, "
        "ssd_mobilenet_v2_keras, ssd_mobilenet_v1_fpn_keras, ssd_mobilenet_v2_fpn_keras, or "
        "remove the block (int8 export then uses post-training quantization)", True)
    mobile = quantized.read_text().replace(
        "image_resizer", "feature_extractor { type: 'ssd_mobilenet_v2_keras' } image_resizer")
    quantized.write_text(mobile)
    assert validate.find_problems(quantized) == []  # QAT applies: nothing to say
    assert validate.check_pipeline(ok) == []

    one = _config_file(tmp_path, "one.config", train=records, evaluate=records,
                       label_map=label_map, num_classes=5)
    assert _text(validate.check_pipeline, one) == (
        f"{one}: model.ssd.num_classes: num_classes is 5 but the label map {label_map} has 2 "
        "classes; set num_classes: 2 (tfod config --label-map sets it from the map)")
    two = _config_file(tmp_path, "two.config", train=records, evaluate=records,
                       label_map=label_map, num_classes=5, extra="use_bfloat16: true")
    with pytest.raises(ConfigError) as info:
        validate.check_pipeline(two)
    assert str(info.value) == (
        f"{two}: 2 problems:\n"
        f"  - model.ssd.num_classes: num_classes is 5 but the label map {label_map} has 2 "
        "classes; set num_classes: 2 (tfod config --label-map sets it from the map)\n"
        "  - train_config.use_bfloat16: use_bfloat16 is true but this machine has no TPU "
        "(bfloat16 training is slow or unsupported on CPU/GPU); set use_bfloat16: false; "
        "fix them and check again with `tfod config --check FILE`")
    assert [f.where for f in info.value.findings] == ["model.ssd.num_classes",
                                                      "train_config.use_bfloat16"]
    assert _text(validate.find_problems, tmp_path / "missing.config") == (
        f"{tmp_path / 'missing.config'}: pipeline config not found; run `tfod config` first or "
        "give the right path")
