"""Run the OD API's own TF2 unit tests from the installed package under tfod's compat layer.

Usage::

    python tools/odapi_selftest.py                 # everything, 2 workers
    python tools/odapi_selftest.py --only core/    # files whose path contains "core/"
    python tools/odapi_selftest.py --list          # show the selection and exit

Each test file runs in its own ``pytest`` process (``--jobs`` at a time, a
``--timeout`` each), so a hang or a crash costs one file, not the run. The
last line printed is ``N passed, M failed, K skipped``; the exit code is 0
when passed / (passed + failed) reaches ``--min-pass-rate`` (98%), else 1.
A JSON summary (per file, every failure with its message) goes to ``--json``.

This file is also the pytest plugin loaded into every test process
(``-p odapi_selftest``). The plugin imports :mod:`tfod` before anything else
(so the compat import hook is in place) and adds the adaptations that only the
OD API's *tests* need; library fixes belong in ``tfod/compat/``:

* test data the sdist does not ship (``test_data/``, ``data/*.pbtxt``,
  ``samples/configs/``, ``test_images/``): tiny stand-ins are generated in the
  run's work folder and ``tf.resource_loader.get_data_files_path()`` points
  there for callers inside ``object_detection``;
* CenterNet's MobileNetV2 backbones ask for ImageNet weights (a download):
  built with ``weights=None`` instead;
* TensorFlow 2.20 findings: test processes get ``TF_ENABLE_ONEDNN_OPTS=0``
  (oneDNN returns garbage for a Conv2D whose output is empty), and files that
  use ``MirroredStrategy`` over ``/cpu:1`` get two logical CPU devices
  (otherwise TF deadlocks). Both are set here only, never for tfod users.

Nothing under site-packages is written: tests run with the work folder as the
current directory, no bytecode and no pytest cache.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# --------------------------------------------------------------------------- #
# Selection
# --------------------------------------------------------------------------- #
#: Folders / files left out, with the reason (paths relative to object_detection/).
EXCLUDED: dict[str, str] = {
    "nets/": "TF-Slim's own model tests, bundled by the sdist; they import the top-level "
             "packages `nets`/`preprocessing` that do not exist in the installed layout, "
             "and are TF1 graph-mode slim code",
    "deployment/": "TF-Slim's TF1 multi-GPU deployment helper (imports the top-level "
                   "package `deployment`); TF1 only",
    "builders/model_builder_test.py": "an abstract base test class (its hooks raise "
        "NotImplementedError); every test in it runs through the subclass in "
        "builders/model_builder_tf2_test.py",
}

#: Single tests that cannot run from the sdist: (missing file, reason). They are
#: skipped with the reason "not runnable: ..." (and run if the file appears).
NOT_RUNNABLE: dict[str, tuple[str, str]] = {
    "core/densepose_ops_test.py::DensePoseOpsTest::test_horizontal_flip": (
        "dataset_tools/densepose/UV_symmetry_transforms.mat",
        "needs DensePose's UV_symmetry_transforms.mat (24 x 256 x 256 U/V lookup tables "
        "from the DensePose project), which the sdist does not ship; densepose_ops.py:268 "
        "reads it next to the package, so no stand-in can be given"),
}

#: Environment for every test process (the selftest only; tfod users are unaffected).
TEST_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_USE_LEGACY_KERAS": "1",
    # TF 2.20 oneDNN bug: a Conv2D whose output should be empty returns a tensor
    # shaped like its input, filled with uninitialised memory (DeepMAC mask head
    # with 0 instances, Inception-ResNet-v2 on small inputs).
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "MPLBACKEND": "Agg",
}

_ENV_DATA_ROOT = "ODAPI_SELFTEST_DATA_ROOT"
_ENV_REPORT = "ODAPI_SELFTEST_REPORT"
_ENV_LOGICAL_CPUS = "ODAPI_SELFTEST_LOGICAL_CPUS"


def odapi_dir() -> Path:
    """The installed ``object_detection`` package folder (without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("object_detection")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("object_detection is not installed in this Python; run `make setup`")
    return Path(list(spec.submodule_search_locations)[0])


def select_test_files(root: Path) -> tuple[list[Path], dict[str, str]]:
    """The TF2-relevant test files under ``root`` and the excluded ones with reasons."""
    selected, excluded = [], {}
    for path in sorted(root.rglob("*_test.py")):
        rel = path.relative_to(root).as_posix()
        if rel.endswith("_tf1_test.py"):
            continue  # TF1-only by name; not counted
        reason = next((why for prefix, why in EXCLUDED.items() if rel.startswith(prefix)), None)
        if reason is None and "import apache_beam" in path.read_text(errors="replace") \
                and not _has_module("apache_beam"):
            reason = ("needs apache_beam (Context R-CNN dataset tools), which is not part of "
                      "tfod's stack; the test module cannot even be collected without it")
        if reason:
            excluded[rel] = reason
        else:
            selected.append(path)
    return selected, excluded


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def needs_logical_cpus(path: Path) -> bool:
    """Files that place work on ``/cpu:1`` deadlock unless two CPU devices exist."""
    text = path.read_text(errors="replace")
    return "MirroredStrategy" in text or "/cpu:1" in text


# --------------------------------------------------------------------------- #
# Stand-in test data (the sdist ships none)
# --------------------------------------------------------------------------- #
_PET_CLASSES = ("Abyssinian american_bulldog american_pit_bull_terrier basset_hound beagle "
                "Bengal Birman Bombay boxer British_Shorthair chihuahua Egyptian_Mau "
                "english_cocker_spaniel english_setter german_shorthaired great_pyrenees "
                "havanese japanese_chin keeshond leonberger Maine_Coon miniature_pinscher "
                "newfoundland Persian pomeranian pug Ragdoll Russian_Blue saint_bernard samoyed "
                "scottish_terrier shiba_inu Siamese Sphynx staffordshire_bull_terrier "
                "wheaten_terrier yorkshire_terrier").split()

# A small SSD MobileNetV2 (Keras) pipeline with the facts model_lib_tf2_test relies
# on: 37 pet classes, the Keras feature extractor, paths filled in by the test.
_SSD_MOBILENET_V2_PETS_KERAS = """
model {
  ssd {
    num_classes: 37
    box_coder { faster_rcnn_box_coder { y_scale: 10.0 x_scale: 10.0 height_scale: 5.0 width_scale: 5.0 } }
    matcher { argmax_matcher { matched_threshold: 0.5 unmatched_threshold: 0.5
                               ignore_thresholds: false negatives_lower_than_unmatched: true
                               force_match_for_each_row: true } }
    similarity_calculator { iou_similarity { } }
    anchor_generator { ssd_anchor_generator { num_layers: 6 min_scale: 0.2 max_scale: 0.95
        aspect_ratios: 1.0 aspect_ratios: 2.0 aspect_ratios: 0.5
        aspect_ratios: 3.0 aspect_ratios: 0.3333 } }
    image_resizer { fixed_shape_resizer { height: 300 width: 300 } }
    box_predictor { convolutional_box_predictor {
        min_depth: 0 max_depth: 0 num_layers_before_predictor: 0 use_dropout: false
        dropout_keep_probability: 0.8 kernel_size: 1 box_code_size: 4
        apply_sigmoid_to_scores: false
        conv_hyperparams { activation: RELU_6
          regularizer { l2_regularizer { weight: 0.00004 } }
          initializer { truncated_normal_initializer { stddev: 0.03 mean: 0.0 } }
          batch_norm { train: true scale: true center: true decay: 0.9997 epsilon: 0.001 } } } }
    feature_extractor {
      type: "ssd_mobilenet_v2_keras"
      min_depth: 16
      depth_multiplier: 1.0
      conv_hyperparams { activation: RELU_6
        regularizer { l2_regularizer { weight: 0.00004 } }
        initializer { truncated_normal_initializer { stddev: 0.03 mean: 0.0 } }
        batch_norm { train: true scale: true center: true decay: 0.9997 epsilon: 0.001 } }
      override_base_feature_extractor_hyperparams: true
    }
    loss {
      classification_loss { weighted_sigmoid { } }
      localization_loss { weighted_smooth_l1 { } }
      hard_example_miner { num_hard_examples: 3000 iou_threshold: 0.99 loss_type: CLASSIFICATION
                           max_negatives_per_positive: 3 min_negatives_per_image: 3 }
      classification_weight: 1.0
      localization_weight: 1.0
    }
    normalize_loss_by_num_matches: true
    post_processing {
      batch_non_max_suppression { score_threshold: 1e-8 iou_threshold: 0.6
                                  max_detections_per_class: 100 max_total_detections: 100 }
      score_converter: SIGMOID
    }
  }
}
train_config {
  batch_size: 24
  optimizer { rms_prop_optimizer {
      learning_rate { exponential_decay_learning_rate {
          initial_learning_rate: 0.004 decay_steps: 800720 decay_factor: 0.95 } }
      momentum_optimizer_value: 0.9 decay: 0.9 epsilon: 1.0 } }
  num_steps: 200000
  data_augmentation_options { random_horizontal_flip { } }
  data_augmentation_options { ssd_random_crop { } }
  max_number_of_boxes: 50
}
train_input_reader {
  tf_record_input_reader { input_path: "PATH_TO_BE_CONFIGURED/pet_faces_train.record-?????-of-00010" }
  label_map_path: "PATH_TO_BE_CONFIGURED/pet_label_map.pbtxt"
}
eval_config {
  metrics_set: "coco_detection_metrics"
  num_examples: 1101
}
eval_input_reader {
  tf_record_input_reader { input_path: "PATH_TO_BE_CONFIGURED/pet_faces_val.record-?????-of-00010" }
  label_map_path: "PATH_TO_BE_CONFIGURED/pet_label_map.pbtxt"
  shuffle: false
  num_epochs: 1
}
"""


def _label_map_text(names) -> str:
    return "".join(f"item {{\n  id: {i}\n  name: '{name}'\n}}\n"
                   for i, name in enumerate(names, start=1))


def _write_images(folder: Path) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, size in (("image1.jpg", (480, 640)), ("image2.jpg", (360, 480))):
        pixels = rng.integers(0, 255, size + (3,), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=90)


def _write_pets_record(path: Path, count: int = 6) -> None:
    """A few tf.train.Examples in the OD API's standard format (pet faces)."""
    import io

    import numpy as np
    from PIL import Image
    import tensorflow as tf

    def feat(values, kind):
        if kind == "bytes":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if kind == "int":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    rng = np.random.default_rng(1)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            height, width = 120 + 8 * i, 160
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
                buf, format="JPEG")
            label = 1 + i % len(_PET_CLASSES)
            example = tf.train.Example(features=tf.train.Features(feature={
                "image/height": feat([height], "int"),
                "image/width": feat([width], "int"),
                "image/filename": feat([f"pet_{i}.jpg".encode()], "bytes"),
                "image/source_id": feat([f"pet_{i}.jpg".encode()], "bytes"),
                "image/key/sha256": feat([f"{i:064d}".encode()], "bytes"),
                "image/encoded": feat([buf.getvalue()], "bytes"),
                "image/format": feat([b"jpeg"], "bytes"),
                "image/object/bbox/xmin": feat([0.2], "float"),
                "image/object/bbox/xmax": feat([0.7], "float"),
                "image/object/bbox/ymin": feat([0.1], "float"),
                "image/object/bbox/ymax": feat([0.8], "float"),
                "image/object/class/text": feat([_PET_CLASSES[label - 1].encode()], "bytes"),
                "image/object/class/label": feat([label], "int"),
                "image/object/difficult": feat([0], "int"),
                "image/object/truncated": feat([0], "int"),
                "image/object/view": feat([b"Frontal"], "bytes"),
            }))
            writer.write(example.SerializeToString())


def make_test_data(root: Path) -> Path:
    """Write the stand-in data tree ``root/object_detection/...``; returns ``root``."""
    od = root / "object_detection"
    (od / "data").mkdir(parents=True, exist_ok=True)
    (od / "data" / "pet_label_map.pbtxt").write_text(_label_map_text(_PET_CLASSES))
    (od / "samples" / "configs").mkdir(parents=True, exist_ok=True)
    (od / "samples" / "configs" / "ssd_mobilenet_v2_pets_keras.config").write_text(
        _SSD_MOBILENET_V2_PETS_KERAS)
    (od / "test_data").mkdir(parents=True, exist_ok=True)
    _write_pets_record(od / "test_data" / "pets_examples.record")
    _write_images(od / "test_images")
    return root


# --------------------------------------------------------------------------- #
# Running one file
# --------------------------------------------------------------------------- #
def _final_outcomes(report_path: Path, prefix: str) -> tuple[dict[str, str], dict[str, str], str | None]:
    """Per test id: passed/failed/skipped, failure messages, and the test running last."""
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    running = None
    if not report_path.exists():
        return outcomes, messages, running
    for line in report_path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        nodeid = rec["nodeid"]
        if nodeid.startswith("::"):  # the file lies outside rootdir: the id lacks it
            nodeid = prefix + nodeid
        elif nodeid in ("", "<collection>"):
            nodeid = prefix + "::<collection>"
        if rec["kind"] == "start":
            running = nodeid
            continue
        if rec["kind"] == "end":
            running = None
            continue
        outcome = rec["outcome"]
        if rec["kind"] == "collect" or outcome == "failed":
            outcomes[nodeid] = "failed"
            messages[nodeid] = rec.get("message", "")
        elif outcome == "skipped":
            if outcomes.get(nodeid) != "failed":
                outcomes[nodeid] = "skipped"
                messages.setdefault(nodeid, rec.get("message", ""))
        elif rec["when"] == "call" and outcomes.get(nodeid) is None:
            outcomes[nodeid] = "passed"
    return outcomes, messages, running


def run_file(path: Path, rel: str, workdir: Path, timeout: float) -> dict:
    """Run one test file in its own pytest process; returns its result record."""
    safe = rel.replace("/", "__")
    report = workdir / "reports" / f"{safe}.jsonl"
    log_path = workdir / "logs" / f"{safe}.log"
    report.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(TEST_ENV)
    env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)  # upb + tfod's rebuilt protos
    env[_ENV_REPORT] = str(report)
    env[_ENV_DATA_ROOT] = str(workdir / "data")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent)] + env.get("PYTHONPATH", "").split(os.pathsep))
    if needs_logical_cpus(path):
        env[_ENV_LOGICAL_CPUS] = "2"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "odapi_selftest",
           "-p", "no:cacheprovider", "-c", str(workdir / "pytest.ini"),
           "--rootdir", str(workdir), "-o", "console_output_style=classic",
           "-W", "ignore::DeprecationWarning", "--tb=short", str(path)]
    start = time.monotonic()
    status = "ok"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir / "data", env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started for this file
            returncode = proc.wait()
            status = "timeout"
    seconds = time.monotonic() - start
    outcomes, messages, running = _final_outcomes(report, rel)
    if status == "timeout" and running:
        outcomes[running] = "failed"
        messages[running] = f"timeout: file killed after {timeout:.0f}s while this test ran"
    elif status == "timeout":
        outcomes[rel] = "failed"
        messages[rel] = f"timeout: file killed after {timeout:.0f}s"
    elif returncode not in (0, 1, 5):  # 5 = nothing collected
        status = f"crash (exit {returncode})"
        if running:
            outcomes[running] = "failed"
            messages[running] = f"process died (exit {returncode}) while this test ran"
        elif not outcomes:
            outcomes[rel] = "failed"
            messages[rel] = f"pytest exited with {returncode}; see {log_path}"
    counts = {k: sum(1 for v in outcomes.values() if v == k)
              for k in ("passed", "failed", "skipped")}
    return {"file": rel, "status": status, "returncode": returncode,
            "seconds": round(seconds, 1), "log": str(log_path), **counts,
            "failures": {n: messages.get(n, "") for n, v in outcomes.items() if v == "failed"},
            "skips": {n: messages.get(n, "") for n, v in outcomes.items() if v == "skipped"}}


# --------------------------------------------------------------------------- #
# The whole run
# --------------------------------------------------------------------------- #
def run_selftest(jobs: int = 2, timeout: float = 1800, only: list[str] | None = None,
                 json_path: Path | None = None, min_pass_rate: float = 0.98,
                 workdir: Path | None = None) -> dict:
    """Run the selected OD API test files and return the summary (also written as JSON).

    Example:
        >>> summary = run_selftest(only=["box_coders/"])
        >>> summary["passed"] > 0
        True
    """
    root = odapi_dir()
    files, excluded = select_test_files(root)
    if only:
        files = [f for f in files if any(s in f.relative_to(root).as_posix() for s in only)]
    if not files:
        raise SystemExit(f"no test file matches {only}")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="odapi_selftest_"))
    for sub in ("reports", "logs"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    (workdir / "pytest.ini").write_text("[pytest]\n")
    print(f"odapi-selftest: {len(files)} test files from {root}, {jobs} workers, "
          f"{timeout:.0f}s per file; work folder {workdir}", flush=True)
    os.environ.update({k: v for k, v in TEST_ENV.items() if k != "TF_ENABLE_ONEDNN_OPTS"})
    make_test_data(workdir / "data")

    # Longest first (file size is a fair proxy) so the two workers end together.
    files.sort(key=lambda f: -f.stat().st_size)
    results, lock, done = [], threading.Lock(), [0]
    start = time.monotonic()

    def one(path: Path) -> dict:
        rel = path.relative_to(root).as_posix()
        res = run_file(path, rel, workdir, timeout)
        with lock:
            done[0] += 1
            note = "" if res["status"] == "ok" else f"  [{res['status']}]"
            print(f"[{done[0]:3d}/{len(files)}] {rel:<62} {res['passed']:4d} passed "
                  f"{res['failed']:3d} failed {res['skipped']:3d} skipped "
                  f"{res['seconds']:7.1f}s{note}", flush=True)
            for nodeid, msg in res["failures"].items():
                print(f"        FAILED {nodeid}: {msg.splitlines()[-1] if msg else ''}"[:220],
                      flush=True)
        return res

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, files))
    wall = time.monotonic() - start

    passed = sum(r["passed"] for r in results)
    failed = sum(r["failed"] for r in results)
    skipped = sum(r["skipped"] for r in results)
    rate = passed / (passed + failed) if passed + failed else 0.0
    summary = {
        "passed": passed, "failed": failed, "skipped": skipped,
        "pass_rate": round(rate, 4), "min_pass_rate": min_pass_rate, "ok": rate >= min_pass_rate,
        "wall_seconds": round(wall, 1), "jobs": jobs, "timeout": timeout,
        "odapi": str(root), "python": sys.version.split()[0], "test_env": TEST_ENV,
        "excluded": excluded, "workdir": str(workdir),
        "failed_tests": {n: m for r in results for n, m in r["failures"].items()},
        "not_runnable": {n: m for r in results for n, m in r["skips"].items()
                         if "not runnable:" in m},
        "files": sorted(results, key=lambda r: r["file"]),
    }
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="parallel test processes (2)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds per test file before it is killed (1800)")
    parser.add_argument("--only", action="append", metavar="SUBSTRING",
                        help="run only files whose path contains this (repeatable)")
    parser.add_argument("--json", type=Path, default=Path("build/odapi_selftest.json"),
                        help="where to write the JSON summary (build/odapi_selftest.json)")
    parser.add_argument("--workdir", type=Path, help="keep logs and stand-in data here")
    parser.add_argument("--min-pass-rate", type=float, default=0.98)
    parser.add_argument("--list", action="store_true", help="print the selection and exit")
    args = parser.parse_args(argv)
    if args.list:
        root = odapi_dir()
        files, excluded = select_test_files(root)
        for f in files:
            print(f.relative_to(root).as_posix())
        for rel, why in excluded.items():
            print(f"excluded {rel}: {why}")
        return 0
    summary = run_selftest(args.jobs, args.timeout, args.only, args.json,
                           args.min_pass_rate, args.workdir)
    minutes, seconds = divmod(int(summary["wall_seconds"]), 60)
    print(f"pass rate {summary['pass_rate']:.1%} (need {args.min_pass_rate:.0%}), "
          f"wall time {minutes}m{seconds:02d}s, summary in {args.json}")
    print(f"{summary['passed']} passed, {summary['failed']} failed, "
          f"{summary['skipped']} skipped", flush=True)
    return 0 if summary["ok"] else 1


# --------------------------------------------------------------------------- #
# The pytest plugin (loaded in each test process with ``-p odapi_selftest``)
# --------------------------------------------------------------------------- #
def _write(rec: dict) -> None:
    path = os.environ.get(_ENV_REPORT)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")


def _configure_logical_cpus() -> None:
    count = int(os.environ.get(_ENV_LOGICAL_CPUS, "0") or 0)
    if count < 2:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def _redirect_data_files_path() -> None:
    """``get_data_files_path()`` for OD API callers -> the stand-in data tree."""
    import tensorflow as tf
    from tensorflow.python.platform import resource_loader

    data_root = os.environ.get(_ENV_DATA_ROOT)
    if not data_root:
        return
    package_parent = odapi_dir().parent
    original = resource_loader.get_data_files_path

    def get_data_files_path():
        caller = Path(sys._getframe(1).f_code.co_filename).resolve().parent
        try:
            rel = caller.relative_to(package_parent)
        except ValueError:
            return original()
        return str(Path(data_root) / rel)

    resource_loader.get_data_files_path = get_data_files_path
    tf.compat.v1.resource_loader.get_data_files_path = get_data_files_path


def _no_imagenet_download() -> None:
    """CenterNet's MobileNetV2 extractors ask for ImageNet weights (network)."""
    from object_detection.models.keras_models import mobilenet_v2

    original = mobilenet_v2.mobilenet_v2

    def without_pretrained(*args, **kwargs):
        kwargs["weights"] = None
        return original(*args, **kwargs)

    mobilenet_v2.mobilenet_v2 = without_pretrained


def _old_pillow_fromarray() -> None:
    """Tests build images with ``fromarray(float_array, 'RGB')``, which Pillow < 11.3
    accepted (the bytes were reinterpreted) and Pillow 11.3+ refuses; e.g.
    create_coco_tf_record_test.py:56. Only that refused case takes the old path."""
    from PIL import Image

    original = Image.fromarray
    if getattr(original, "_selftest", False):
        return

    def fromarray(obj, mode=None, *args, **kwargs):
        try:
            return original(obj, mode, *args, **kwargs)
        except TypeError:
            if mode is None or getattr(obj, "ndim", 0) < 2:
                raise
            import numpy as np

            data = np.ascontiguousarray(obj)
            return Image.frombuffer(mode, (data.shape[1], data.shape[0]), data.tobytes(),
                                    "raw", mode, 0, 1)

    fromarray._selftest = True
    Image.fromarray = fromarray


def _assert_all_equal_structured() -> None:
    """TF 2.20's ``assertAllEqual`` turns the dtype into a TF dtype first, which fails
    for numpy structured arrays (oid_vrd_challenge_evaluation_utils_test.py:72,125);
    those are compared with numpy instead."""
    import numpy as np
    from tensorflow.python.framework import test_util

    cls = test_util.TensorFlowTestCase
    original = cls.assertAllEqual
    if getattr(original, "_selftest", False):
        return

    def assertAllEqual(self, a, b, msg=None):  # noqa: N802 (unittest naming)
        if any(isinstance(x, np.ndarray) and x.dtype.names for x in (a, b)):
            np.testing.assert_array_equal(a, b, err_msg=msg or "")
            return
        original(self, a, b, msg)

    assertAllEqual._selftest = True
    cls.assertAllEqual = assertAllEqual


def pytest_configure(config):
    if not os.environ.get(_ENV_REPORT):
        return  # imported by something else: stay inert
    import tfod  # noqa: F401  (the compat import hook, before any OD API import)

    _configure_logical_cpus()  # before TensorFlow initialises its devices
    _redirect_data_files_path()
    _no_imagenet_download()
    _old_pillow_fromarray()
    _assert_all_equal_structured()


def pytest_collection_modifyitems(session, config, items):
    """Test modules use np.float & co. too: same proxy as tfod gives OD API modules."""
    if not os.environ.get(_ENV_REPORT):
        return
    from tfod import compat

    import pytest

    for item in items:
        for (suffix, why) in NOT_RUNNABLE.items():
            path, _, test = suffix.partition("::")
            if str(item.path).endswith(path) and item.nodeid.endswith("::" + test) \
                    and not (odapi_dir() / why[0]).exists():
                item.add_marker(pytest.mark.skip(reason=f"not runnable: {why[1]}"))
    for module in {getattr(item, "module", None) for item in items} - {None}:
        compat.shims._numpy_aliases(module)
        if module.__name__.rpartition(".")[2] in _SIZE_ONE_INT_MODULES:
            module.int = _SizeOneInt  # int(tensor of shape [1]) as before numpy 2.4


#: Test modules that call int() on rank-1 size-1 tensors (numpy 2.4 refuses).
_SIZE_ONE_INT_MODULES = {"center_net_meta_arch_tf2_test"}


class _IntType(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, int)

    def __subclasscheck__(cls, sub):
        return issubclass(sub, int)


class _SizeOneInt(metaclass=_IntType):
    """``int`` for test modules: numpy 2.4 (and so ``EagerTensor.__int__``) refuses
    size-1 arrays of rank > 0, e.g. ``int(detections['num_detections'])`` in
    center_net_meta_arch_tf2_test.py:2452,2524. Everything else goes to ``int``."""

    def __new__(cls, value=0, *args, **kwargs):
        if not args and not kwargs and getattr(value, "shape", None):
            import numpy as np

            if np.size(value) == 1:
                value = np.asarray(value).item()
        return int(value, *args, **kwargs)


def pytest_collectreport(report):
    if report.failed:
        _write({"kind": "collect", "nodeid": report.nodeid or "<collection>",
                "outcome": "failed", "when": "collect",
                "message": str(report.longrepr)[-2000:]})


def pytest_runtest_logstart(nodeid, location):
    _write({"kind": "start", "nodeid": nodeid})


def pytest_runtest_logreport(report):
    message = ""
    if report.failed:
        message = str(report.longrepr)[-2000:]
    elif report.skipped and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2])
    _write({"kind": "report", "nodeid": report.nodeid, "when": report.when,
            "outcome": report.outcome, "message": message})


def pytest_runtest_logfinish(nodeid, location):
    _write({"kind": "end", "nodeid": nodeid})


if __name__ == "__main__":
    sys.exit(main())
