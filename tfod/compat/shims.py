"""The shims: each one fixes one break of the 2022 OD API (or a library it uses) on this
stack, bound to the module whose import triggers it (:class:`tfod.compat.Shim`).

Each checks that what it replaces is really missing before it acts, and names the
upstream file and line that break. ``docs/COMPAT.md`` describes them all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import types
from pathlib import Path
from typing import Callable

from tfod.compat import Shim, _mark, _proxy_global, _register


class _ModeKeys:
    """tf.estimator.ModeKeys: the only part of estimator the TF2 path uses."""

    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "infer"


def _estimator_missing() -> bool:
    try:
        from tensorflow.compat.v1 import estimator  # noqa: F401
    except ImportError:
        return True
    return False


@contextlib.contextmanager
def _estimator_stub():
    """Break: ``tf.compat.v1.estimator`` was removed in TF 2.16."""
    if not _estimator_missing():
        yield
        return
    import tensorflow.compat.v1 as tf_v1

    stub = types.ModuleType("tensorflow.compat.v1.estimator")
    stub.__doc__ = "tfod stand-in: only ModeKeys (estimator was removed in TF 2.16)."
    stub.ModeKeys = _ModeKeys

    def _gone(name):
        raise AttributeError(
            f"tf.compat.v1.estimator.{name} was removed in TensorFlow 2.16; it is only "
            "used by the OD API's TF1 (estimator) path, which tfod does not support")

    stub.__getattr__ = _gone
    sys.modules[stub.__name__] = stub
    try:
        setattr(tf_v1, "estimator", stub)
    except Exception:  # pragma: no cover - lazy loader refuses attributes
        pass
    _mark("estimator", "tf.compat.v1.estimator removed in TF 2.16 (inputs.py:24, "
          "model_lib.py:26); ModeKeys stand-in installed")
    yield


def _tf_slim_control_flow(module) -> bool:
    """Break: tf_slim tfexample_decoder uses control_flow_ops.case/cond (gone)."""
    from tensorflow.python.ops import cond as cond_lib
    from tensorflow.python.ops import control_flow_case

    return _proxy_global(module, "control_flow_ops", case=control_flow_case.case,
                         cond=cond_lib.cond)


def _pillow_getsize(_module) -> bool:
    """Break: Pillow 10 removed ``FreeTypeFont.getsize`` (visualization_utils:219,229)."""
    from PIL import ImageFont

    def getsize_bbox(self, text, *args, **kwargs):
        # Old getsize returned (width, height incl. the ascent offset): the box
        # from the origin, which is what getbbox's right/bottom give.
        _, _, right, bottom = self.getbbox(text, *args, **kwargs)
        return right, bottom

    applied = False
    for cls_name in ("FreeTypeFont", "TransposedFont", "ImageFont"):
        cls = getattr(ImageFont, cls_name, None)
        if cls is not None and not hasattr(cls, "getsize") and hasattr(cls, "getbbox"):
            cls.getsize = getsize_bbox
            applied = True
    return applied


def _figure_canvas_tostring_rgb(_module) -> bool:
    """Break: matplotlib 3.10 removed ``FigureCanvasAgg.tostring_rgb``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        return False
    if hasattr(FigureCanvasAgg, "tostring_rgb"):
        return False
    import numpy as np

    def tostring_rgb(self):
        rgba = np.asarray(self.buffer_rgba())
        return rgba[..., :3].tobytes()

    FigureCanvasAgg.tostring_rgb = tostring_rgb
    return True


def _numpy_extras() -> dict:
    import numpy as np

    def fromstring(string, dtype=float, count=-1, *, sep="", **kwargs):
        if sep == "":
            return np.frombuffer(string, dtype=dtype, count=count).copy()
        return np.fromstring(string, dtype=dtype, count=count, sep=sep, **kwargs)

    return {"float": float, "int": int, "bool": bool, "NAN": np.nan,
            "string_": np.bytes_, "fromstring": fromstring}


def _binary_fromstring_removed() -> bool:
    import numpy as np

    try:
        np.fromstring(b"\x00", dtype=np.uint8)
    except (ValueError, DeprecationWarning, AttributeError):
        return True
    return False


def _numpy_aliases(module) -> bool:
    """Break: numpy 2 removed np.float/np.int/np.NAN/np.string_; 2.4 binary fromstring."""
    replace = ("fromstring",) if _binary_fromstring_removed() else ()
    return _proxy_global(module, "np", replace=replace, **_numpy_extras())


def _resnet_builder(module) -> bool:
    """Break: ``keras.applications.resnet`` is Keras 3 (no ``ResNet`` builder that
    mixes with tf_keras models); resnet_v1.py:28 imports it."""
    resnet = getattr(module, "resnet", None)
    if resnet is not None and hasattr(resnet, "ResNet") \
            and getattr(resnet, "__name__", "").startswith("tf_keras"):
        return False
    # The public tf_keras.applications.resnet exports only ResNet50/101/152;
    # the generic ``ResNet`` builder lives in the module behind it.
    from tf_keras.src.applications import resnet as tfk_resnet

    if not hasattr(tfk_resnet, "ResNet"):  # pragma: no cover - tf_keras layout changed
        return False
    module.resnet = tfk_resnet
    return True


class _MissingOptional(types.ModuleType):
    def __init__(self, name: str, needed_for: str, pip_name: str | None = None):
        super().__init__(name)
        self.__dict__["_needed_for"] = needed_for
        self.__dict__["_pip_name"] = pip_name or name.replace("_", "-")

    def __getattr__(self, attr):
        if attr.startswith("__"):  # the import system's probes (__path__, ...)
            raise AttributeError(attr)
        raise ImportError(f"{self.__name__} is not installed; it is needed for "
                          f"{self.__dict__['_needed_for']} "
                          f"(pip install {self.__dict__['_pip_name']})")


@contextlib.contextmanager
def _stand_in(package: str, make: Callable[[], dict[str, types.ModuleType]], shim: str,
              detail: str):
    """While the module a shim is bound to executes, the stand-ins ``make()`` returns (module
    name -> module) are in ``sys.modules``, if ``package`` is not installed; removed again
    afterwards, so nothing else sees them. Marks ``shim`` active when it applied."""
    if package in sys.modules or importlib.util.find_spec(package):
        yield
        return
    stand_ins = make()
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    _mark(shim, detail)


def _missing_function(name: str, package: str, needed_for: str):
    def missing(*_args, **_kwargs):
        raise ImportError(f"{package} is not installed; {name} is needed for {needed_for} "
                          f"(pip install {package})")

    missing.__name__ = name.rsplit(".", 1)[-1]
    return missing


def _scipy_stand_ins() -> dict[str, types.ModuleType]:
    needed = "DETR's Hungarian matcher and DensePose's UV data"
    scipy = _MissingOptional("scipy", needed)
    optimize = _MissingOptional("scipy.optimize", needed, "scipy")
    io = _MissingOptional("scipy.io", needed, "scipy")
    optimize.__dict__["linear_sum_assignment"] = _missing_function(
        "scipy.optimize.linear_sum_assignment", "scipy", "DETR's Hungarian matcher")
    io.__dict__["loadmat"] = _missing_function("scipy.io.loadmat", "scipy",
                                               "DensePose's UV data")
    scipy.__dict__.update(optimize=optimize, io=io)
    return {"scipy": scipy, "scipy.optimize": optimize, "scipy.io": io}


def _lazy_scipy():
    """Break: core/target_assigner.py:48,54, which every model imports, imports
    matchers/hungarian_matcher.py:19 (``from scipy.optimize import
    linear_sum_assignment``: DETR's matcher) and core/densepose_ops.py:30 (``import
    scipy.io``: DensePose's UV data), so every model needs SciPy (143 MB) for two
    features no tfod template uses. tfod's install leaves SciPy out; those two functions
    then say what to install when called."""
    return _stand_in("scipy", _scipy_stand_ins, "scipy_lazy",
                     "hungarian_matcher.py:19, densepose_ops.py:30: scipy imported lazily")


def _lvis_without_opencv():
    """Break: lvis/__init__.py:5 imports its visualiser (lvis/vis.py:1 ``import cv2``),
    so ``from lvis import LVISEval`` needs OpenCV (153 MB) although the OD API's LVIS
    metrics (metrics/lvis_evaluation.py:23, imported by every eval through
    eval_util.py:36) never draw. tfod's install leaves OpenCV out; the visualiser then
    says what to install when used."""
    return _stand_in("cv2", lambda: {"cv2": _MissingOptional(
        "cv2", "lvis.LVISVis (LVIS visualisation)", "opencv-python-headless")},
        "lvis_without_opencv", "lvis/vis.py:1: cv2 imported lazily")


def _lazy_tensorflow_io():
    """Break: deepmac_meta_arch.py:28 imports tensorflow_io at import time, which
    is not installable with TF 2.20; only DeepMAC's LAB colour option needs it."""
    return _stand_in("tensorflow_io", lambda: {"tensorflow_io": _MissingOptional(
        "tensorflow_io", "DeepMAC's LAB colour space (rgb_to_lab)")},
        "tensorflow_io", "deepmac_meta_arch.py:28: tensorflow_io imported lazily")


def _keras_weights_cached(pattern: str) -> bool:
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return any(cache.glob(pattern))


def _offline_imagenet_weights(module) -> bool:
    """Break (offline only): center_net_mobilenet_v2_fpn_feature_extractor.py:156 asks
    Keras for ImageNet weights when the model is built, which downloads them. Without
    the cached file the backbone starts from random weights instead, with a warning;
    fine-tuning from a zoo checkpoint restores it anyway."""
    if _keras_weights_cached("mobilenet_v2_weights_*_no_top.h5"):
        return False
    builder = module.mobilenetv2.mobilenet_v2

    def mobilenet_v2(*args, **kwargs):
        if kwargs.get("weights") == "imagenet":
            logging.getLogger("tfod.compat").warning(
                "CenterNet MobileNetV2 FPN: ImageNet weights are not cached (~/.keras/models) "
                "and are not downloaded; the backbone starts from random weights. Fine-tune "
                "from a zoo checkpoint (tfod zoo install) to start from trained ones.")
            kwargs["weights"] = None
        return builder(*args, **kwargs)

    return _proxy_global(module, "mobilenetv2", replace=("mobilenet_v2",),
                         mobilenet_v2=mobilenet_v2)


_register(Shim("estimator", ("object_detection.inputs", "object_detection.model_lib"),
               "tf.compat.v1.estimator removed in TF 2.16 (inputs.py:24, model_lib.py:26)",
               before=_estimator_stub))
_register(Shim("tf_slim_control_flow", ("tf_slim.data.tfexample_decoder",),
               "control_flow_ops.case/cond removed from TF (tf_slim "
               "data/tfexample_decoder.py:278,439,453)",
               after=_tf_slim_control_flow))
_register(Shim("pillow_getsize", ("object_detection.utils.visualization_utils",),
               "Pillow 10 removed FreeTypeFont.getsize (visualization_utils.py:219,229)",
               after=_pillow_getsize))
_register(Shim("matplotlib_tostring_rgb", ("object_detection.utils.visualization_utils",),
               "matplotlib 3.10 removed FigureCanvasAgg.tostring_rgb "
               "(visualization_utils.py:1303,1331)",
               after=_figure_canvas_tostring_rgb))
_register(Shim("numpy_removed_names",
               ("object_detection.utils.visualization_utils",
                "object_detection.utils.metrics",
                "object_detection.metrics.tf_example_parser"),
               "numpy 2 removed np.float/np.int/np.NAN/np.string_ and 2.4 binary "
               "np.fromstring (utils/metrics.py:45,93,98, metrics/tf_example_parser.py:36, "
               "visualization_utils.py:1303,1331); the module's np becomes a proxy",
               after=_numpy_aliases))
_register(Shim("keras_resnet", ("object_detection.models.keras_models.resnet_v1",),
               "Keras 3 keras.applications.resnet cannot build tf_keras models "
               "(resnet_v1.py:28,505,534)",
               after=_resnet_builder))
_register(Shim("tensorflow_io", ("object_detection.meta_architectures.deepmac_meta_arch",),
               "tensorflow_io imported at import time (deepmac_meta_arch.py:28)",
               before=_lazy_tensorflow_io))
_register(Shim("offline_imagenet_weights",
               ("object_detection.models.center_net_mobilenet_v2_fpn_feature_extractor",),
               "ImageNet weights downloaded at model build "
               "(center_net_mobilenet_v2_fpn_feature_extractor.py:156); offline they are "
               "skipped with a warning unless cached",
               after=_offline_imagenet_weights))


# --------------------------------------------------------------------------- #
# Shims added with the OD API selftest (tools/odapi_selftest.py)
# --------------------------------------------------------------------------- #
def _ndarray_ne_empty_raises() -> bool:
    import numpy as np

    try:
        bool(np.zeros((1, 4)) != [])
    except ValueError:
        return True
    return False


def _seq_example_boxes(module) -> bool:
    """Break: seq_example_util.py:152 tests ``bbox != []`` on numpy arrays, which
    raises ValueError on numpy >= 1.25 (elementwise compare with shape (0,))."""
    original = getattr(module, "boxes_to_box_components", None)
    if original is None or getattr(original, "_tfod_fixed", False) \
            or not _ndarray_ne_empty_raises():
        return False
    np = module.np

    def boxes_to_box_components(bboxes):
        # Same as upstream, with an explicit emptiness test.
        ymin_list, xmin_list, ymax_list, xmax_list = [], [], [], []
        for bbox in bboxes:
            if np.size(bbox) > 0:
                bbox = np.array(bbox).astype(np.float32)
                ymin, xmin, ymax, xmax = np.split(bbox, 4, axis=1)
            else:
                ymin, xmin, ymax, xmax = [], [], [], []
            ymin_list.append(np.reshape(ymin, [-1]))
            xmin_list.append(np.reshape(xmin, [-1]))
            ymax_list.append(np.reshape(ymax, [-1]))
            xmax_list.append(np.reshape(xmax, [-1]))
        return ymin_list, xmin_list, ymax_list, xmax_list

    boxes_to_box_components.__doc__ = original.__doc__
    boxes_to_box_components._tfod_fixed = True
    module.boxes_to_box_components = boxes_to_box_components
    return True


_register(Shim("seq_example_empty_boxes", ("object_detection.dataset_tools.seq_example_util",),
               "`ndarray != []` raises on numpy >= 1.25 (dataset_tools/seq_example_util.py:152)",
               after=_seq_example_boxes))


def _rgb_to_lab(image, illuminant: str = "D65", observer: str = "2", name=None):
    """sRGB in [0, 1] -> CIE LAB, the formula of ``tfio.experimental.color.rgb_to_lab``
    (sRGB -> linear RGB -> XYZ with the sRGB/D65 matrix -> LAB, default D65 / 2 deg)."""
    import tensorflow as tf

    white = {("D65", "2"): (0.95047, 1.0, 1.08883), ("D65", "10"): (0.94809667673716, 1.0,
                                                                      1.0730513595166162),
             ("D50", "2"): (0.96422, 1.0, 0.82521)}
    if (illuminant.upper(), str(observer)) not in white:
        raise ValueError(f"rgb_to_lab: illuminant {illuminant!r} / observer {observer!r} is not "
                         f"supported by tfod's stand-in; supported: {sorted(white)}")
    with tf.name_scope(name or "rgb_to_lab"):
        image = tf.convert_to_tensor(image)
        linear = tf.where(image > 0.04045, tf.pow((image + 0.055) / 1.055, 2.4), image / 12.92)
        matrix = tf.constant([[0.412453, 0.357580, 0.180423],
                              [0.212671, 0.715160, 0.072169],
                              [0.019334, 0.119193, 0.950227]], image.dtype)
        xyz = tf.tensordot(linear, tf.transpose(matrix), axes=((-1,), (0,)))
        xyz = xyz / tf.constant(white[(illuminant.upper(), str(observer))], image.dtype)
        xyz = tf.where(xyz > 0.008856, tf.pow(xyz, 1.0 / 3.0), xyz * 7.787 + 16.0 / 116.0)
        x, y, z = tf.unstack(xyz, axis=-1)
        return tf.stack([116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)], axis=-1)


def _deepmac_lab(module) -> bool:
    """Break: deepmac_meta_arch.py:1795 converts to LAB with tensorflow_io, which has
    no build for TF 2.20; without it DeepMAC's colour-consistency loss cannot run.
    Only ``DeepMACMetaArch._get_lab_image`` is replaced; ``module.tfio`` stays the
    lazy stand-in, so anything else from tensorflow_io still says it is missing."""
    cls = getattr(module, "DeepMACMetaArch", None)
    if cls is None or not isinstance(getattr(module, "tfio", None), _MissingOptional) \
            or getattr(cls._get_lab_image, "_tfod_fixed", False):
        return False  # the real tensorflow_io is installed, or already patched

    def _get_lab_image(self, preprocessed_image):
        raw_image = self._feature_extractor.preprocess_reverse(preprocessed_image)
        return _rgb_to_lab(raw_image / 255.0)

    _get_lab_image._tfod_fixed = True
    cls._get_lab_image = _get_lab_image
    return True


_register(Shim("deepmac_rgb_to_lab", ("object_detection.meta_architectures.deepmac_meta_arch",),
               "tensorflow_io (not built for TF 2.20) used for rgb_to_lab "
               "(meta_architectures/deepmac_meta_arch.py:28,1795)",
               after=_deepmac_lab))


def _protobuf_rejects_bool_for_int() -> bool:
    from google.protobuf import descriptor_pb2

    try:
        descriptor_pb2.FieldDescriptorProto(number=True)
    except TypeError:
        return True
    return False


def _as_int(value):
    import numpy as np

    return int(value) if isinstance(value, (bool, np.bool_)) else value


def _int64_features_accept_bools(module) -> bool:
    """Break: protobuf 7 rejects ``bool`` for integer fields ("Expected an int, got a
    boolean"); dataset_util.py:26,30 put caller values (e.g. COCO ``iscrowd``
    read as JSON ``false`` in create_coco_tf_record.py:223,321) into Int64List."""
    if getattr(module.int64_list_feature, "_tfod_fixed", False) \
            or not _protobuf_rejects_bool_for_int():
        return False
    original_one, original_list = module.int64_feature, module.int64_list_feature

    def int64_feature(value):
        return original_one(_as_int(value))

    def int64_list_feature(value):
        return original_list([_as_int(v) for v in value])

    for fixed, original in ((int64_feature, original_one), (int64_list_feature, original_list)):
        fixed.__doc__ = original.__doc__
        fixed._tfod_fixed = True
    module.int64_feature, module.int64_list_feature = int64_feature, int64_list_feature
    return True


_register(Shim("int64_feature_bools", ("object_detection.utils.dataset_util",),
               "protobuf 7 rejects bool for int64 fields (utils/dataset_util.py:26,30; "
               "e.g. dataset_tools/create_coco_tf_record.py:223,321 with iscrowd=false)",
               after=_int64_features_accept_bools))


_register(Shim("scipy_lazy", ("object_detection.matchers.hungarian_matcher",
                             "object_detection.core.densepose_ops"),
               "matchers/hungarian_matcher.py:19 and core/densepose_ops.py:30 import scipy at "
               "import time (via core/target_assigner.py:48,54, imported by every model); "
               "only DETR's matcher and DensePose's UV data use it",
               before=_lazy_scipy))
_register(Shim("lvis_without_opencv", ("lvis.vis",),
               "lvis/__init__.py:5 imports lvis/vis.py, which imports cv2 at import time; "
               "the OD API's LVIS metrics (metrics/lvis_evaluation.py:23) never draw",
               before=_lvis_without_opencv))

# LVIS metrics (metrics/lvis_tools.py:111 -> lvis.eval.LVISEval.accumulate).
_register(Shim("lvis_numpy_float", ("lvis.eval",),
               "numpy 2 removed np.float, used by the lvis package's eval.py:361,362 "
               "(LVISEval.accumulate), which the OD API's LVIS metrics call "
               "(metrics/lvis_tools.py:111); lvis.eval's np becomes a proxy",
               after=_numpy_aliases))
