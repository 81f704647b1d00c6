#!/usr/bin/env python
"""Diagnostic: where an int8 TFLite file departs from the checkpoint it came from, layer by
layer (issue 17).

The checkpoint (a QAT run evaluates with its fake quantization on) runs in TensorFlow on
``--images`` val images with every Keras layer's output recorded; the TFLite file runs on
the same images with all its tensors kept (``experimental_preserve_all_tensors``). Each
Keras layer is matched with the first not yet matched TFLite tensor of the same shape whose
name holds the layer's name. The table gives, in the order the layers ran, the mean and the
largest absolute difference of the two, in units of the TFLite tensor's quantization step.
The rows to read are the tensors the int8 file holds: after ReLU6, after a projection's
batch norm, after ``Add``, the heads' outputs. A conv or batch norm that the converter fused
with its activation is matched with the fused tensor and differs by construction.
Last come the post-processing op's inputs (float): box encodings and class scores, in
absolute units. Measured on the hard QAT run of ``tools/bench/qat.py``: activations
0.3-1.2 steps on average (errors grow slowly with depth), the last class heads up to 5;
box encodings 0.037 and scores 0.0013 apart, as a PTQ file is from its float checkpoint.

Usage: .venv/bin/python tools/bench/qat_layers.py RUN_DIR MODEL.tflite [--images 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _keras_outputs(run: Path, images: list[np.ndarray], normalisation) -> tuple[list, dict]:
    """(layer names in call order, name -> list of outputs per image), and the raw
    prediction tensors under ``box_encodings`` / ``class_scores``."""
    import tfod  # noqa: F401  (compat hook)
    import tensorflow as tf
    from object_detection.builders import model_builder

    from tfod.compat import qat
    from tfod.config import load_configs
    from tfod.layout import RunDir

    configs = load_configs(run / "pipeline.config")
    model = model_builder.build(configs["model"], is_training=False)
    qat.install_from(model, configs)
    checkpoint = RunDir(run).pick_checkpoint(None)
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    order, outputs = [], {}
    leaves = [m for m in model.submodules if isinstance(m, tf.keras.layers.Layer)
              and not list(m._flatten_layers(include_self=False, recursive=False))]
    for i, layer in enumerate(leaves):
        base = layer.call

        def call(*args, _base=base, _name=f"{layer.name}#{i}", **kwargs):
            out = _base(*args, **kwargs)
            if isinstance(out, tf.Tensor):
                if _name not in outputs:
                    order.append(_name)
                outputs.setdefault(_name, []).append(out.numpy())
            return out

        layer.call = call
    scale, offset = normalisation
    for image in images:
        x = tf.constant(image[None].astype(np.float32) * scale + offset)
        prediction = model.predict(x, tf.constant([[*image.shape]]))
        outputs.setdefault("box_encodings", []).append(
            prediction["box_encodings"].numpy())
        logits = prediction["class_predictions_with_background"]
        outputs.setdefault("class_scores", []).append(tf.sigmoid(logits).numpy())
    return order, outputs


def _tflite_tensors(model: Path, images: list[np.ndarray]) -> tuple[list, list, dict]:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(str(model), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    details = interpreter.get_tensor_details()
    source = interpreter.get_input_details()[0]
    post = [op for op in interpreter._get_ops_details()
            if op["op_name"] == "TFLite_Detection_PostProcess"][0]
    values = {d["index"]: [] for d in details}
    for image in images:
        interpreter.set_tensor(source["index"], image[None].astype(np.uint8))
        interpreter.invoke()
        for d in details:
            try:
                values[d["index"]].append(interpreter.get_tensor(d["index"]))
            except ValueError:
                pass
    return details, list(post["inputs"]), values


def _dequantized(detail: dict, value: np.ndarray) -> np.ndarray:
    scale, zero = detail["quantization"]
    if value.dtype in (np.int8, np.uint8, np.int32) and scale:
        return (value.astype(np.float32) - zero) * scale
    return value.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    import json

    from tfod.config import load_configs

    meta = json.loads((args.model.parent / "tflite.json").read_text())[args.model.name]
    normalisation = (meta["input_scale"], meta["input_offset"])
    images = _val_images(load_configs(args.run / "pipeline.config"), args.images)
    order, ours = _keras_outputs(args.run, images, normalisation)
    details, post_inputs, theirs = _tflite_tensors(args.model, images)
    by_index = {d["index"]: d for d in details}
    print("| layer | TFLite tensor | step | mean abs diff (steps) | max (steps) |")
    print("|---|---|---:|---:|---:|")
    rows = [(name, None) for name in order] + [("box_encodings", post_inputs[0]),
                                               ("class_scores", post_inputs[1])]
    taken = set()
    for key, index in rows:
        ref = ours[key]
        name = key.split("#")[0]
        if index is None:  # the first tensor of that name and shape not matched yet
            shape = tuple(ref[0].shape)
            match = [d for d in details if f"/{name}/" in d["name"] + "/"
                     and tuple(d["shape"]) == shape and theirs[d["index"]]
                     and d["index"] not in taken]
            if not match:
                continue
            # a fused conv + batch norm + activation is one tensor: its last name
            detail = match[-1] if len({m["name"] for m in match}) == 1 else match[0]
            taken.add(detail["index"])
        else:
            detail = by_index[index]
        got = [_dequantized(detail, v).reshape(ref[0].shape) for v in theirs[detail["index"]]]
        step = detail["quantization"][0]
        diff = np.abs(np.stack(got) - np.stack(ref))
        if step:
            print(f"| {name} | `{detail['name'][-60:]}` | {step:.4g} | "
                  f"{diff.mean() / step:.2f} | {diff.max() / step:.1f} |")
        else:  # a float tensor (the post-processing's inputs): absolute differences
            print(f"| {name} | `{detail['name'][-60:]}` | float | {diff.mean():.4f} (abs) | "
                  f"{diff.max():.3f} (abs) |")


def _val_images(configs: dict, count: int) -> list[np.ndarray]:
    """The first ``count`` val images, decoded by the OD API's own decoder (the demo
    template's images are already at the model's input size)."""
    from tfod.exporter.records import _decoded_records, _record_files

    files = _record_files(configs["eval_input_configs"][0], "val")
    images = []
    for example in _decoded_records(files):
        images.append(example["image"][..., :3])
        if len(images) >= count:
            break
    return images


if __name__ == "__main__":
    main()
