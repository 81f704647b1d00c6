"""Fine-tuning transfers: a detection checkpoint trained on 3 classes initialises a model
for another class count through the OD API's own restore path, and --freeze keeps the
feature extractor fixed while the box predictor trains."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tfod.config import options, patch, templates
from tfod.compat import runtime
from tfod.errors import ConfigError


def _latest(run_dir: Path) -> str:
    index = max(Path(run_dir).glob("ckpt-*.index"), key=lambda p: int(p.stem.split("-")[1]))
    return str(index.with_suffix(""))


def _built_model(configs: dict):
    """A training model with all variables created, by one forward pass on a blank image
    (what model_lib_v2's dummy computation does with a real batch)."""
    import tensorflow as tf
    from object_detection.builders import model_builder

    model = model_builder.build(configs["model"], is_training=True)
    height, width = templates.image_size(configs)
    images, shapes = model.preprocess(tf.zeros([1, height, width, 3]))
    model.predict(images, shapes)
    return model


def _by_kind(model) -> dict[str, list]:
    kinds = {"feature_extractor": model._feature_extractor.variables, "class_head": [],
             "box_head": []}
    for v in model._box_predictor.variables:
        if "ClassPredictor" in v.name:
            kinds["class_head"].append(v)
        elif "BoxEncodingPredictor" in v.name:
            kinds["box_head"].append(v)
    return kinds


def test_detection_checkpoint_restores_feature_extractor_for_new_class_count(tiny_run):
    import tensorflow as tf
    from object_detection import model_lib_v2
    from object_detection.protos import train_pb2

    checkpoint = _latest(tiny_run["run_dir"])
    source_configs = templates.load_configs(tiny_run["config"])
    assert source_configs["model"].ssd.num_classes == 3
    # the checkpoint's values, read through a model of its own architecture
    source = _built_model(source_configs)
    tf.train.Checkpoint(model=source).restore(checkpoint).assert_existing_objects_matched()

    configs = templates.load_configs(tiny_run["config"])
    configs["model"].ssd.num_classes = 5
    train_config = configs["train_config"]
    train_config.fine_tune_checkpoint = checkpoint
    train_config.fine_tune_checkpoint_type = "detection"
    target = _built_model(configs)
    fresh = [v.numpy().copy() for v in _by_kind(target)["feature_extractor"]]
    model_lib_v2.load_fine_tune_checkpoint(
        target, checkpoint, train_config.fine_tune_checkpoint_type,
        train_pb2.CheckpointVersion.V2, run_model_on_dummy_input=False, input_dataset=None,
        unpad_groundtruth_tensors=False)

    src, dst = _by_kind(source), _by_kind(target)
    assert len(dst["feature_extractor"]) == len(src["feature_extractor"]) > 100
    for a, b in zip(src["feature_extractor"], dst["feature_extractor"]):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.name)
    changed = sum(not np.array_equal(f, v.numpy())
                  for f, v in zip(fresh, dst["feature_extractor"]))
    assert changed > len(fresh) // 2  # the restore really replaced initial values
    # the class head is new: its output depth follows the new class count
    assert len(dst["class_head"]) == len(src["class_head"]) > 0
    assert all(a.shape[-1] != b.shape[-1] for a, b in zip(src["class_head"], dst["class_head"])
               if a.name.split("/")[-1].startswith(("kernel", "bias")))
    # upstream's 'detection' restores the feature extractor only: the box head (this
    # template has no tower: num_layers_before_predictor 0) starts fresh ...
    assert not any(np.array_equal(a.numpy(), b.numpy())
                   for a, b in zip(src["box_head"], dst["box_head"])
                   if "kernel" in a.name.split("/")[-1])
    # ... until tfod restores the class-independent part of the box predictor
    assert runtime.restore_box_predictor(target, checkpoint) == ["_prediction_heads"]
    assert len(dst["box_head"]) == len(src["box_head"]) > 0
    for a, b in zip(src["box_head"], dst["box_head"]):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.name)
    assert all(a.shape != b.shape for a, b in zip(src["class_head"], dst["class_head"])
               if a.name.split("/")[-1].startswith(("kernel", "bias")))


def _weight_shared_configs(tiny_config) -> dict:
    """The tiny template with an FPN feature extractor and a weight-shared box predictor
    with a 2-layer tower (the layout of the zoo's FPN and FPNLite models)."""
    from google.protobuf import text_format

    configs = templates.load_configs(tiny_config)
    ssd = configs["model"].ssd
    ssd.feature_extractor.type = "ssd_mobilenet_v2_fpn_keras"
    text_format.Merge("fpn { min_level: 3 max_level: 5 additional_layer_depth: 32 }",
                      ssd.feature_extractor)
    ssd.anchor_generator.Clear()
    text_format.Merge("multiscale_anchor_generator { min_level: 3 max_level: 5 "
                      "anchor_scale: 4.0 aspect_ratios: 1.0 scales_per_octave: 1 }",
                      ssd.anchor_generator)
    ssd.box_predictor.Clear()
    text_format.Merge("""weight_shared_convolutional_box_predictor {
        depth: 32 num_layers_before_predictor: 2 kernel_size: 3
        conv_hyperparams { activation: RELU_6
          regularizer { l2_regularizer { weight: 4e-05 } }
          initializer { random_normal_initializer { stddev: 0.01 } }
          batch_norm { scale: true decay: 0.97 epsilon: 0.001 } } }""", ssd.box_predictor)
    return configs


def test_weight_shared_tower_and_box_head_restored(tiny_run, tmp_path):
    import tensorflow as tf
    from object_detection import model_lib_v2
    from object_detection.protos import train_pb2

    configs = _weight_shared_configs(tiny_run["config"])
    source = _built_model(configs)
    for v in source.variables:  # distinct values everywhere (BN ones/zeros included)
        v.assign(tf.random.stateless_normal(v.shape, seed=[1, len(v.name)]))
    checkpoint = tf.train.Checkpoint(model=source).save(str(tmp_path / "ckpt"))

    configs["model"].ssd.num_classes = 5
    target = _built_model(configs)
    model_lib_v2.load_fine_tune_checkpoint(
        target, checkpoint, "detection", train_pb2.CheckpointVersion.V2,
        run_model_on_dummy_input=False, input_dataset=None, unpad_groundtruth_tensors=False)
    restored = runtime.restore_box_predictor(target, checkpoint)
    assert restored == ["_base_tower_layers_for_heads", "_box_prediction_head"]

    def named(model, scope):
        return {v.name.split("/", 1)[1]: v.numpy() for v in model._box_predictor.variables
                if scope in v.name}

    for scope in ("PredictionTower/", "BoxPredictor/WeightSharedConvolutionalBoxHead/"):
        src, dst = named(source, scope), named(target, scope)
        assert src and src.keys() == dst.keys(), scope
        for key in src:
            np.testing.assert_array_equal(src[key], dst[key], err_msg=key)
    src, dst = named(source, "ClassHead/"), named(target, "ClassHead/")
    assert src.keys() == dst.keys() and all(src[k].shape != dst[k].shape for k in src)
    for a, b in zip(source._feature_extractor.variables, target._feature_extractor.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.name)


def test_set_freeze_writes_config_fields(tiny_run):
    configs = templates.load_configs(tiny_run["config"])
    options.set_freeze(configs, "feature_extractor")
    train_config = configs["train_config"]
    assert list(train_config.update_trainable_variables) == ["BoxPredictor/"]
    options.set_freeze(configs, "feature_extractor")  # replaced, not appended
    assert list(train_config.update_trainable_variables) == ["BoxPredictor/"]
    options.set_freeze(configs, "none")
    assert not train_config.update_trainable_variables and not train_config.freeze_variables
    with pytest.raises(ConfigError, match="did you mean feature_extractor"):
        options.set_freeze(configs, "feature_extractors")
    configs["model"].faster_rcnn.num_classes = 3  # switches the model oneof
    with pytest.raises(ConfigError, match="freeze_variables"):
        options.set_freeze(configs, "feature_extractor")


@pytest.mark.slow
def test_freeze_trains_head_only(tiny_run, tmp_path):
    """Resume the tiny run 2 more steps with the feature extractor frozen."""
    import tensorflow as tf

    from tfod.training import train

    run_dir = tmp_path / "frozen"
    shutil.copytree(tiny_run["run_dir"], run_dir)
    before = tf.train.load_checkpoint(_latest(run_dir))
    config = run_dir / "pipeline.config"
    configs = templates.load_configs(config)
    options.set_freeze(configs, "feature_extractor")
    # 2 more steps with a learning rate above 0 (the cosine schedule ended at step 6)
    configs["train_config"].num_steps = 8
    cosine = configs["train_config"].optimizer.adam_optimizer.learning_rate \
        .cosine_decay_learning_rate
    cosine.total_steps, cosine.warmup_steps = 8, 1
    templates.save_configs(configs, config)

    result = train(config, run_dir=run_dir, resume=True, num_steps=8, seed=0)
    assert result["step"] == 8
    after = tf.train.load_checkpoint(result["checkpoint"])

    def values(prefix: str) -> dict[str, np.ndarray]:
        return {k: after.get_tensor(k) for k in after.get_variable_to_shape_map()
                if k.startswith(prefix) and k.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
                and ".OPTIMIZER_SLOT" not in k and "/moving_" not in k}

    frozen, head = values("model/_feature_extractor/"), values("model/_box_predictor/")
    assert len(frozen) > 100 and len(head) > 10
    for key, value in frozen.items():
        np.testing.assert_array_equal(value, before.get_tensor(key), err_msg=key)
    changed = [k for k, v in head.items() if not np.array_equal(v, before.get_tensor(k))]
    assert len(changed) > len(head) // 2


@pytest.mark.slow
def test_train_fine_tunes_from_a_detection_checkpoint(tiny_run, tmp_path, caplog):
    """tfod.train with a 3-class detection checkpoint into a 5-class model: upstream's
    restore plus tfod's box-predictor restore run inside the real training loop."""
    import logging

    from tfod.training import train

    caplog.set_level(logging.INFO)
    labels = tmp_path / "five.pbtxt"
    labels.write_text("".join(f"item {{ id: {i} name: 'c{i}' }}\n" for i in range(1, 6)))
    config = patch.patch_pipeline(
        tiny_run["config"], tmp_path / "five.config", label_map=labels, num_steps=2,
        fine_tune_checkpoint=_latest(tiny_run["run_dir"]))
    result = train(config, run_dir=tmp_path / "run", seed=0)
    assert result["step"] == 2
    assert "restored box predictor" in caplog.text
