"""``tfod doctor``: is this installation able to train and export?

Prints versions, the protobuf backend, devices, which compat shims applied, and
builds a tiny SSD from ``pipelines/ssd_mobilenet_v2_tiny.config`` and runs it
once. Also probes TensorFlow 2.20's oneDNN empty-convolution bug (see
docs/COMPAT.md), which only matters for models that can produce empty feature maps.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)


def _check(name: str, fn, results: list) -> object:
    t0 = time.time()
    try:
        value = fn()
    except Exception as exc:  # doctor reports every failure instead of stopping
        results.append((name, False, f"{type(exc).__name__}: {exc}"))
        return None
    results.append((name, True, f"{value} ({time.time() - t0:.1f}s)" if value is not None
                    else f"ok ({time.time() - t0:.1f}s)"))
    return value


def _odapi_imports() -> str:
    import object_detection.protos.pipeline_pb2  # noqa: F401
    from object_detection import (  # noqa: F401
        export_tflite_graph_lib_tf2, exporter_lib_v2, inputs, model_lib_v2)
    from object_detection.utils import visualization_utils  # noqa: F401

    return "model_lib_v2, exporter_lib_v2, export_tflite_graph_lib_tf2 import"


def _tiny_model() -> str:
    import tensorflow as tf
    from object_detection.builders import model_builder
    from tfod.config import image_size, load_configs, resolve_template

    configs = load_configs(resolve_template("ssd_mobilenet_v2_tiny"))
    model = model_builder.build(configs["model"], is_training=False)
    h, w = image_size(configs)
    images, shapes = model.preprocess(tf.zeros([1, h, w, 3]))
    detections = model.postprocess(model.predict(images, shapes), shapes)
    n = int(detections["num_detections"].numpy().reshape(-1)[0])
    params = sum(int(tf.size(v)) for v in model.trainable_variables)
    return f"tiny SSD MobileNet V2 builds and runs ({params:,} parameters, {n} detections)"


#: tfod's pinned stacks: name -> constraints file (in the checkout; `make setup STACK=name`)
STACKS = {"tf2.20": "constraints.txt", "tf2.21": "constraints-tf2.21.txt"}


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def stack_check(versions: dict, root=None) -> tuple[str | None, bool, str]:
    """(stack name or None, ok, detail) of the installed TensorFlow / tf-keras pair.

    Not ok when the two do not share major.minor (tf-keras X.Y only works with
    TensorFlow X.Y). A pair outside :data:`STACKS` is reported as untested; a pinned
    stack whose versions differ from its constraints file (in ``root``, the checkout) is
    flagged too.

    Example:
        >>> stack_check({"tensorflow": "2.21.0", "tf-keras": "2.20.1"})[1]
        False
    """
    from pathlib import Path

    tf, keras = versions.get("tensorflow", "not installed"), versions.get("tf-keras",
                                                                         "not installed")
    if "not installed" in (tf, keras):
        return None, False, (f"TensorFlow {tf}, tf-keras {keras}: both are needed; "
                             "run `make setup` (or `make setup STACK=tf2.21`)")
    if _minor(tf) != _minor(keras):
        return None, False, (f"TensorFlow {tf} with tf-keras {keras} do not match (tf-keras "
                             f"{_minor(keras)} needs TensorFlow {_minor(keras)}): "
                             f"pip install 'tf-keras=={_minor(tf)}.*', or make setup "
                             f"STACK=tf{_minor(tf)} for a pinned stack")
    name = f"tf{_minor(tf)}"
    if name not in STACKS:
        return None, True, (f"TensorFlow {tf} / tf-keras {keras} is not one of tfod's tested "
                            f"stacks ({', '.join(STACKS)}); `make setup` installs one")
    detail = f"{name} (TensorFlow {tf}, tf-keras {keras})"
    pins = Path(root or Path(__file__).resolve().parent.parent) / STACKS[name]
    if pins.is_file():
        pinned = {}
        for line in pins.read_text().splitlines():
            pkg, _, version = line.partition("==")
            pinned[pkg.strip().lower().replace("_", "-")] = version.strip()
        differ = [f"{pkg} {versions[pkg]} (pinned {pinned[pkg]})" for pkg in
                  ("tensorflow", "tf-keras") if pinned.get(pkg, versions[pkg]) != versions[pkg]]
        if differ:
            return name, True, detail + f"; differs from {pins.name}: " + ", ".join(differ)
        detail += f", as pinned in {pins.name}"
    return name, True, detail


def onednn_empty_conv_ok() -> bool:
    """False when a Conv2D whose output should be empty returns garbage (TF 2.20 oneDNN)."""
    import tensorflow as tf

    out = tf.nn.conv2d(tf.zeros([1, 2, 2, 8]), tf.zeros([3, 3, 8, 4]), 2, "VALID")
    return tuple(out.shape) == (1, 0, 0, 4)


def doctor() -> dict:
    """Run every check, print a report, return ``{"ok": bool, "checks": [...]}``.

    Example:
        >>> doctor()["ok"]
        True
    """
    import platform

    results: list = []
    from tfod import compat
    from tfod.training import package_versions

    versions = package_versions()
    lines = [f"python {platform.python_version()} ({platform.machine()})"]
    lines += [f"{k} {v}" for k, v in versions.items() if k != "python"]
    _, stack_ok, stack_detail = stack_check(versions)
    results.append(("stack", stack_ok, stack_detail))
    import tensorflow as tf
    from google.protobuf.internal import api_implementation

    backend = api_implementation.Type()
    results.append(("protobuf backend", backend != "python",
                     backend + ("" if backend != "python" else
                                " (slow; unset PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION)")))
    results.append(("tf.keras is tf_keras", tf.keras.__name__.startswith("tf_keras"),
                     tf.keras.__name__ + ("" if os.environ.get("TF_USE_LEGACY_KERAS") == "1"
                                          else " (set TF_USE_LEGACY_KERAS=1)")))
    gpus = tf.config.list_physical_devices("GPU")
    results.append(("devices", True, f"{len(tf.config.list_physical_devices('CPU'))} CPU, "
                    f"{len(gpus)} GPU" + ("" if gpus else " (training runs on the CPU)")))
    _check("OD API", _odapi_imports, results)
    _check("tiny model", _tiny_model, results)
    onednn = _check("oneDNN empty conv", onednn_empty_conv_ok, results)
    if onednn is False:
        results[-1] = ("oneDNN empty conv", True,
                       "TF 2.20 bug present (garbage for empty conv outputs); harmless for "
                       "SSD/CenterNet; set TF_ENABLE_ONEDNN_OPTS=0 for DeepMAC or "
                       "Inception-ResNet on tiny inputs")
    shims = compat.report()
    active = [k for k, v in shims.items() if v != "inactive" and not v.startswith("not ")]
    results.append(("compat shims active", True, ", ".join(active) or "none"))
    print("tfod doctor")
    for line in lines:
        print(f"  {line}")
    ok = True
    for name, passed, detail in results:
        ok &= passed
        print(f"  [{'ok' if passed else 'FAIL'}] {name}: {detail}")
    print("tfod doctor: all checks passed" if ok else
          "tfod doctor: some checks FAILED; run `make setup` again, then see docs/COMPAT.md")
    return {"ok": ok, "checks": results, "versions": versions}
