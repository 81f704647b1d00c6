"""tfod.pipeline: templates, patching through the protos, cheap checks."""

from __future__ import annotations

import pytest

from tfod import pipeline
from tfod.data import write_label_map
from tfod.errors import ConfigError


@pytest.fixture
def inputs(tmp_path):
    label_map = write_label_map(["a", "b"], tmp_path / "lm.pbtxt")
    train = tmp_path / "train-00000-of-00001.tfrecord"
    val = tmp_path / "val-00000-of-00001.tfrecord"
    train.write_bytes(b"")
    val.write_bytes(b"")
    return label_map, train, val


def test_templates_listed_and_unknown_suggests():
    assert "ssd_mobilenet_v2_tiny" in pipeline.available_templates()
    with pytest.raises(ConfigError, match="did you mean ssd_mobilenet_v2_tiny"):
        pipeline.resolve_template("ssd_mobilenet_v2_tiyn")


def test_patch(tmp_path, inputs):
    label_map, train, val = inputs
    out = pipeline.patch_pipeline("ssd_mobilenet_v2_tiny", tmp_path / "p.config",
                                  label_map=label_map, train_input=str(train),
                                  eval_input=str(val), num_steps=300, batch_size=4,
                                  image_size=128,
                                  overrides={"train_config.max_number_of_boxes": "7"})
    configs = pipeline.load_configs(out)
    assert configs["model"].ssd.num_classes == 2
    assert configs["train_config"].batch_size == 4
    assert configs["train_config"].num_steps == 300
    cosine = configs["train_config"].optimizer.adam_optimizer.learning_rate \
        .cosine_decay_learning_rate
    assert cosine.total_steps == 300 and 0 < cosine.warmup_steps < 300
    assert pipeline.image_size(configs) == (128, 128)
    assert configs["train_config"].max_number_of_boxes == 7
    # repeated input paths are replaced, not appended to
    assert list(configs["train_input_config"].tf_record_input_reader.input_path) == \
        [str(train.resolve())]
    assert pipeline.check_pipeline(out) == []


def test_check_finds_placeholders_and_class_mismatch(tmp_path, inputs):
    with pytest.raises(ConfigError, match="PATH_TO_BE_CONFIGURED"):
        pipeline.check_pipeline(pipeline.resolve_template("ssd_mobilenet_v2_tiny"))
    label_map, train, val = inputs
    out = pipeline.patch_pipeline("ssd_mobilenet_v2_tiny", tmp_path / "p.config",
                                  label_map=label_map, train_input=str(train),
                                  eval_input=str(val), num_classes=5)
    with pytest.raises(ConfigError, match="num_classes is 5 but the label map"):
        pipeline.check_pipeline(out)
    train.unlink()
    with pytest.raises(ConfigError, match="matches no file"):
        pipeline.check_pipeline(out)


def test_set_unknown_key_suggests(tmp_path, inputs):
    label_map, train, val = inputs
    with pytest.raises(ConfigError, match="did you mean batch_size"):
        pipeline.patch_pipeline("ssd_mobilenet_v2_tiny", tmp_path / "p.config",
                                label_map=label_map,
                                overrides={"train_config.bach_size": "3"})
    assert not (tmp_path / "p.config").exists()


def test_patch_for_dataset_needs_manifest(tmp_path):
    with pytest.raises(ConfigError, match="run `tfod prepare` first"):
        pipeline.patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", tmp_path / "p.config",
                                            data_dir=tmp_path)
