"""Each compat shim: it is needed on this stack, it applies, and the OD API works with it.

Tests that a shim is needed check the upstream break itself (the missing name
or the refusal), so when a future stack fixes the break, the matching test says
so and the shim can go.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import tfod
from tfod import compat


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_tfod_is_cheap():
    out = _run("import sys, tfod; print('tensorflow' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_old_protos_fail_without_tfod_under_upb():
    out = _run("""
        from google.protobuf.internal import api_implementation
        assert api_implementation.Type() == 'upb', api_implementation.Type()
        import object_detection.protos.pipeline_pb2
    """)
    assert out.returncode != 0
    assert "Descriptors cannot be created directly" in out.stderr


def test_protos_load_under_upb_with_tfod():
    out = _run("""
        import tfod
        from google.protobuf.internal import api_implementation
        from google.protobuf import text_format
        from object_detection.protos import pipeline_pb2
        cfg = text_format.Parse('model { ssd { num_classes: 3 } }', pipeline_pb2.TrainEvalPipelineConfig())
        print(api_implementation.Type(), cfg.model.ssd.num_classes, cfg.model.WhichOneof('model'))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["upb", "3", "ssd"]


def test_proto_maps_are_real_maps():
    # Under the pure-Python fallback map<> fields came out as repeated fields.
    from object_detection.protos import calibration_pb2

    msg = calibration_pb2.ClassIdFunctionApproximations()
    msg.class_id_xy_pairs_map[7].x_y_pair.add(x=0.5, y=0.25)
    again = calibration_pb2.ClassIdFunctionApproximations.FromString(msg.SerializeToString())
    assert list(again.class_id_xy_pairs_map.keys()) == [7]
    assert again.class_id_xy_pairs_map[7].x_y_pair[0].y == 0.25


def test_every_proto_module_builds():
    import importlib
    import pkgutil

    import object_detection.protos as protos

    names = [m.name for m in pkgutil.iter_modules(protos.__path__) if m.name.endswith("_pb2")]
    assert len(names) > 30
    for name in names:
        module = importlib.import_module(f"object_detection.protos.{name}")
        assert module.DESCRIPTOR.name == f"object_detection/protos/{name[:-4]}.proto"


def test_old_generated_detection():
    assert compat._is_old_generated("x = _descriptor.FileDescriptor(name='a', serialized_pb=b'')")
    assert not compat._is_old_generated(
        "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(b'')")


def test_estimator_shim():
    assert compat.shims._estimator_missing() is False or "estimator" not in compat.ACTIVE
    from object_detection import inputs, model_lib

    assert inputs.tf_estimator.ModeKeys.TRAIN == "train"
    assert model_lib.tf_estimator.ModeKeys.EVAL == "eval"
    assert "estimator" in compat.ACTIVE
    with pytest.raises(AttributeError, match="removed in TensorFlow 2.16"):
        inputs.tf_estimator.export  # noqa: B018


def test_estimator_really_removed_upstream():
    out = _run("from tensorflow.compat.v1 import estimator")
    assert out.returncode != 0


def test_tf_slim_decoder_case_and_cond():
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_ops
    from tf_slim.data import tfexample_decoder

    assert not hasattr(control_flow_ops, "case")  # the upstream break
    assert isinstance(tfexample_decoder.control_flow_ops, compat.ModuleProxy)
    # the decoder path that calls case(): decoding a PNG-encoded image
    png = tf.io.encode_png(tf.zeros([4, 5, 3], tf.uint8))
    handler = tfexample_decoder.Image()
    keys = {"image/encoded": tf.constant(png), "image/format": tf.constant(b"png")}
    img = handler.tensors_to_item(keys)
    assert tuple(img.shape) == (4, 5, 3)


def test_pillow_getsize():
    from object_detection.utils import visualization_utils as vu
    from PIL import Image, ImageFont

    font = ImageFont.load_default()
    width, height = font.getsize("tfod")
    assert width > 0 and height > 0
    image = np.zeros((60, 80, 3), np.uint8)
    vu.draw_bounding_box_on_image_array(image, 0.1, 0.1, 0.9, 0.9, color="red",
                                        display_str_list=["cat: 90%"])
    assert image.any()
    assert isinstance(Image.fromarray(image), Image.Image)


def test_numpy_names_for_odapi_modules_only():
    from object_detection.metrics import tf_example_parser
    from object_detection.utils import metrics, visualization_utils

    # numpy itself is untouched: the removed names stay removed (the upstream break) ...
    for name in ("NAN", "float", "int", "string_"):
        assert not hasattr(np, name), f"np.{name} was put back into numpy for everyone"
    # ... each patched OD API module sees them through a proxy of the real numpy
    for module in (metrics, visualization_utils, tf_example_parser):
        proxy = module.np
        assert isinstance(proxy, compat.ModuleProxy) and proxy.__dict__["_wrapped"] is np
        assert proxy.float is float and proxy.int is int and np.isnan(proxy.NAN)
        assert proxy.string_ is np.bytes_ and proxy.array is np.array
    scores = np.array([0.9, 0.8, 0.1])
    labels = np.array([True, False, True])
    precision, recall = metrics.compute_precision_recall(scores, labels, 2)
    assert recall[-1] == 1.0
    assert np.isnan(metrics.compute_average_precision(None, None))


def test_visualization_plot_summaries():
    # cdf / histogram plots used tostring_rgb + binary fromstring.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from object_detection.utils import visualization_utils as vu

    assert hasattr(FigureCanvasAgg, "tostring_rgb")
    import matplotlib

    matplotlib.use("Agg")
    fig = vu.plt.figure(frameon=False)
    fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
    fig.canvas.draw()
    raw = vu.np.fromstring(fig.canvas.tostring_rgb(), dtype="uint8")
    width, height = (fig.get_size_inches() * fig.get_dpi()).astype(int)
    assert raw.size == width * height * 3


def test_keras_resnet_builder():
    from object_detection.models.keras_models import resnet_v1

    assert resnet_v1.resnet.__name__.startswith("tf_keras")
    model = resnet_v1.resnet_v1_18(weights=None, input_shape=(64, 64, 3), include_top=False)
    assert model.output_shape[-1] == 512


def test_centernet_backbone_builds_offline(caplog):
    from object_detection.models import center_net_mobilenet_v2_fpn_feature_extractor as cn

    if compat.shims._keras_weights_cached("mobilenet_v2_weights_*_no_top.h5"):
        pytest.skip("ImageNet weights are cached here: the shim stays off")
    assert compat.ACTIVE.get("offline_imagenet_weights")
    extractor = cn.mobilenet_v2_fpn(channel_means=(0, 0, 0), channel_stds=(1, 1, 1),
                                    bgr_ordering=False)  # asks for weights='imagenet'
    assert extractor.classification_backbone is not None
    assert "ImageNet weights are not cached" in caplog.text


def test_tensorflow_io_is_lazy():
    from object_detection.meta_architectures import deepmac_meta_arch

    assert "tensorflow_io" not in sys.modules or compat.ACTIVE.get("tensorflow_io") is None
    with pytest.raises(ImportError, match="tensorflow_io is not installed"):
        deepmac_meta_arch.tfio.experimental  # noqa: B018


def test_install_is_idempotent():
    before = list(sys.meta_path)
    compat.install()
    compat.install()
    assert sys.meta_path.count(compat._FINDER) == 1
    assert len(sys.meta_path) == len(before)


def test_report_lists_every_shim():
    report = compat.report()
    assert set(compat.SHIMS) <= set(report)
    assert report["protos"].startswith("object_detection.protos rebuilt")


def test_legacy_keras_is_tf_keras():
    import tensorflow as tf

    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"
    assert tf.keras.__name__.startswith("tf_keras")
    assert tfod.compat is compat


def test_seq_example_util_boxes_from_numpy():
    # dataset_tools/seq_example_util.py:152 compared `bbox != []`, which raises
    # on numpy >= 1.25 when bbox is an array.
    with pytest.raises(ValueError):
        bool(np.zeros((1, 4)) != [])  # the upstream break
    from object_detection.dataset_tools import seq_example_util

    ymin, xmin, ymax, xmax = seq_example_util.boxes_to_box_components(
        [np.array([[0.1, 0.2, 0.3, 0.4]]), np.zeros((0, 4)), []])
    assert [list(v) for v in ymin] == [[np.float32(0.1)], [], []]
    assert xmax[0].dtype == np.float32 and xmax[0][0] == np.float32(0.4)
    assert "seq_example_empty_boxes" in compat.ACTIVE
    example = seq_example_util.make_sequence_example(
        "ds", "vid", [b"a", b"b"], 10, 20, "JPEG", image_source_ids=["0", "1"],
        timestamps=[0, 1], bboxes=[np.array([[0.1, 0.2, 0.3, 0.4]]), np.zeros((0, 4))],
        label_strings=[["cat"], []])
    boxes = example.feature_lists.feature_list["region/bbox/ymin"].feature
    assert [list(f.float_list.value) for f in boxes] == [[np.float32(0.1)], []]


def test_deepmac_lab_without_tensorflow_io():
    # deepmac_meta_arch.py:1795 calls tfio.experimental.color.rgb_to_lab; tensorflow_io
    # has no build for TF 2.20, so the lazy stand-in alone raises ImportError there.
    import importlib.util

    assert importlib.util.find_spec("tensorflow_io") is None  # the upstream break
    import tensorflow as tf
    from object_detection.meta_architectures import deepmac_meta_arch

    assert "deepmac_rgb_to_lab" in compat.ACTIVE
    rgb = tf.constant([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                         [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]]])

    class _Extractor:  # DeepMAC's extractors map [0, 255] RGB to the network range
        @staticmethod
        def preprocess_reverse(image):
            return image * 255.0

    model = types.SimpleNamespace(_feature_extractor=_Extractor())
    lab = deepmac_meta_arch.DeepMACMetaArch._get_lab_image(model, rgb).numpy()
    expected = [[53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86],
                [100.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # CIE LAB, D65 / 2 degrees
    np.testing.assert_allclose(lab[0, 0], expected, atol=0.02)


def test_int64_features_accept_bools():
    # protobuf 7: "Field tensorflow.Int64List.value: Expected an int, got a boolean".
    import tensorflow as tf
    from object_detection.utils import dataset_util

    with pytest.raises(TypeError, match="got a boolean"):
        tf.train.Int64List(value=[True])  # the upstream break
    assert "int64_feature_bools" in compat.ACTIVE
    feature = dataset_util.int64_list_feature([False, True, np.bool_(True), 7])
    assert list(feature.int64_list.value) == [0, 1, 1, 7]
    assert list(dataset_util.int64_feature(True).int64_list.value) == [1]


def test_lvis_eval_numpy_float():
    # lvis/eval.py:361 (LVISEval.accumulate, reached from metrics/lvis_tools.py:111)
    # uses np.float, removed in numpy 2.
    assert not hasattr(np, "float")  # the upstream break
    from lvis import eval as lvis_eval
    from object_detection.metrics import lvis_tools

    assert lvis_eval.np.float is float
    assert "lvis_numpy_float" in compat.ACTIVE
    categories = [{"id": 1, "name": "cat", "frequency": "f"}]
    groundtruth = {
        "images": [{"id": 1, "height": 100, "width": 100, "neg_category_ids": [],
                    "not_exhaustive_category_ids": []}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50],
                         "area": 2500, "segmentation": [[10, 10, 60, 10, 60, 60, 10, 60]]}],
        "categories": categories}
    detections = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9}]
    from lvis import results as lvis_results

    truth = lvis_tools.LVISWrapper(groundtruth)
    evaluator = lvis_tools.LVISEvalWrapper(truth, lvis_results.LVISResults(truth, detections),
                                           iou_type="bbox")
    metrics = evaluator.ComputeMetrics()
    assert metrics["AP"] == pytest.approx(1.0)


def test_lvis_imports_without_opencv():
    """lvis/__init__.py imports its visualiser, which imports cv2; tfod's install has no
    OpenCV. Without the shim `import lvis` (and so every OD API eval) fails."""
    if importlib.util.find_spec("cv2") is not None:
        pytest.skip("OpenCV is installed here: the shim stays off")
    import lvis
    from object_detection.metrics import lvis_evaluation

    assert compat.ACTIVE.get("lvis_without_opencv")
    assert "cv2" not in sys.modules  # nothing else sees the stand-in
    assert lvis_evaluation.LVISMaskEvaluator is not None
    with pytest.raises(ImportError, match="pip install opencv-python-headless"):
        lvis.vis.cv2.imread  # noqa: B018


def test_summary_ops_have_tensorboard(tmp_path):
    """TF 2.21 no longer depends on TensorBoard, and without it every tf.summary op raises
    TBNotInstalledError, first in the OD API's train step (model_lib_v2 writes image
    summaries). requirements.txt lists tensorboard; this fails on an install without it."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        assert tf.summary.image("x", tf.zeros([1, 4, 4, 3]), step=0)
        assert tf.summary.scalar("loss", 1.0, step=0)
    writer.flush()
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_scipy_is_lazy():
    """target_assigner (every model) imports the Hungarian matcher and DensePose ops, which
    import scipy; tfod's install has no SciPy. Without the shim every model import fails;
    with it the two SciPy functions say what to install when called."""
    if importlib.util.find_spec("scipy") is not None:
        pytest.skip("SciPy is installed here (make odapi-selftest adds it): the shim stays off")
    from object_detection.core import densepose_ops, target_assigner  # noqa: F401
    from object_detection.matchers import hungarian_matcher

    assert compat.ACTIVE.get("scipy_lazy")
    assert "scipy" not in sys.modules  # nothing else sees the stand-ins
    with pytest.raises(ImportError, match=r"linear_sum_assignment is needed for DETR.*"
                                          r"pip install scipy"):
        hungarian_matcher.linear_sum_assignment(np.zeros((2, 2)))
    with pytest.raises(ImportError, match="loadmat is needed for DensePose"):
        densepose_ops.scipy.io.loadmat("uv.mat")
