"""Each export format from a checkpoint: SavedModel (``exporter_lib_v2``), frozen graph
(the SavedModel's serving function with its variables folded into constants), TFLite
(``export_tflite_graph_lib_tf2`` traced once, then one converter run per variant:
float32, float16, dynamic range, int8 calibrated on training images).

To add a format: write ``export_<format>(configs, checkpoint, out_dir)`` here, name it in
:data:`tfod.exporter.FORMATS` and call it from :func:`tfod.exporter.export`
(docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from tfod.config.templates import (TFLITE_ARCHS, image_size, load_configs,
                                   meta_architecture)
from tfod.compat import qat, runtime
from tfod.errors import ExportError
from tfod.exporter.records import _decoded_records, _record_files
from tfod.files import write_text_atomic
from tfod.layout import ExportDir, native_output_to_log

log = logging.getLogger(__name__)

INPUT_TYPES = ("image_tensor", "float_image_tensor", "encoded_image_string_tensor",
               "tf_example")
TFLITE_FILES = ExportDir.TFLITE_FILES


def _configs(config: str | Path | dict) -> dict:
    return config if isinstance(config, dict) else load_configs(config)


def _checkpoint_dir(checkpoint: str, workdir: Path) -> str:
    """A folder whose latest checkpoint is ``checkpoint`` (the OD API exporters take a dir)."""
    import tensorflow as tf

    ckpt_dir = workdir / "checkpoint_ref"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tf.compat.v1.train.update_checkpoint_state(str(ckpt_dir), str(Path(checkpoint).resolve()))
    return str(ckpt_dir)


def check_input_type(input_type: str) -> None:
    """Refuse an input type ``exporter_lib_v2`` does not know."""
    if input_type not in INPUT_TYPES:
        raise ExportError(f"unknown input type {input_type!r}", where="--input-type",
                          fix=f"use one of: {', '.join(INPUT_TYPES)}")


def check_tflite_arch(configs: dict, where: str) -> None:
    """Refuse TFLite for a meta-architecture ``export_tflite_graph_lib_tf2`` cannot trace."""
    arch = meta_architecture(configs)
    if arch not in TFLITE_ARCHS:
        raise ExportError(f"the OD API cannot export a {arch} model to TFLite "
                          f"(only {' and '.join(TFLITE_ARCHS)})", where=f"{where} model.{arch}",
                          fix="use an SSD or CenterNet template, or export "
                              "saved_model,frozen_graph only")


def export_saved_model(config: str | Path | dict, checkpoint: str, out_dir: str | Path,
                       input_type: str = "image_tensor") -> Path:
    """SavedModel with the OD API's ``exporter_lib_v2``; returns ``out_dir/saved_model``.

    ``config`` is a pipeline.config path or an already parsed config dict.

    Example:
        >>> export_saved_model("runs/demo/pipeline.config", "runs/demo/ckpt-3", "exports/demo")
    """
    from object_detection import exporter_lib_v2
    from object_detection.utils import config_util

    check_input_type(input_type)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = _configs(config)
    proto = config_util.create_pipeline_proto_from_configs(configs)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".partial-") as t:
        work = Path(t)
        with runtime.without_layer_traces(), runtime.odapi_without_autograph(), \
                qat.building(configs):
            exporter_lib_v2.export_inference_graph(input_type, proto,
                                                   _checkpoint_dir(checkpoint, work),
                                                   str(work / "out"))
        final = ExportDir(out_dir).saved_model
        if final.exists():
            shutil.rmtree(final)
        os.replace(work / "out" / "saved_model", final)
    return final


def write_tf_formats(configs: dict, checkpoint: str, out_dir: Path, formats: Sequence[str],
                     input_type: str, work: Path, ready=None) -> dict[str, Path]:
    """``saved_model`` and/or ``frozen_graph`` (from that SavedModel, kept in ``work`` when it
    is not asked for) into ``out_dir``; ``ready(name, path)`` as each is complete."""
    artefacts: dict[str, Path] = {}
    saved = export_saved_model(configs, checkpoint,
                               out_dir if "saved_model" in formats else work, input_type)
    if "saved_model" in formats:
        artefacts["saved_model"] = saved
    if "frozen_graph" in formats:
        artefacts["frozen_graph"] = export_frozen_graph(saved, out_dir)
    for name, path in artefacts.items():
        if ready is not None:
            ready(name, path)
    return artefacts


def export_frozen_graph(saved_model: str | Path, out_dir: str | Path) -> Path:
    """``frozen_graph.pb``: the SavedModel's ``serving_default`` function with its
    variables folded into constants, plus ``frozen_graph.json`` naming the input
    and output tensors. Load it with ``tf.compat.v1.import_graph_def`` (or
    :func:`tfod.inference.load_detector`).

    Example:
        >>> export_frozen_graph("exports/demo/saved_model", "exports/demo")
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    out_dir = Path(out_dir)
    loaded = tf.saved_model.load(str(saved_model))  # keeps the variables alive
    fn = loaded.signatures["serving_default"]
    frozen = convert_variables_to_constants_v2(fn)
    specs = fn.structured_input_signature[1]
    placeholders = [t for t in frozen.inputs if t.dtype != tf.resource]
    if len(specs) != 1 or len(placeholders) != 1:
        raise ExportError(f"expected one image input, found {sorted(specs)}",
                          where=str(saved_model), fix="export without side inputs")
    (key, spec), = specs.items()
    meta = {"inputs": {key: {"name": placeholders[0].name, "dtype": spec.dtype.name,
                             "shape": [-1 if d is None else int(d) for d in spec.shape]}},
            "outputs": {k: v.name for k, v in sorted(tf.nest.pack_sequence_as(
                fn.structured_outputs, frozen.outputs).items())}}
    final = ExportDir(out_dir).frozen_graph
    tmp = out_dir / f".frozen_graph.pb.tmp-{os.getpid()}"
    tmp.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    os.replace(tmp, final)
    ExportDir(out_dir).frozen_graph_meta.write_text(json.dumps(meta, indent=2))
    return final


def _input_normalisation(configs: dict) -> tuple[float, float]:
    """(scale, offset) such that TFLite input = pixel * scale + offset.

    The SSD graph of ``export_tflite_graph_lib_tf2`` calls ``model.predict``
    only, so its input must already be normalised: measured by running the
    model's own ``preprocess`` on two flat images. The CenterNet graph calls
    ``preprocess`` itself and takes raw pixels (scale 1, offset 0).
    """
    import tensorflow as tf
    from object_detection.builders import model_builder

    if meta_architecture(configs) == "center_net":
        return 1.0, 0.0
    model = model_builder.build(configs["model"], is_training=False)
    h, w = image_size(configs)
    probe = tf.stack([tf.zeros([h, w, 3]), tf.fill([h, w, 3], 255.0)])
    processed, _ = model.preprocess(probe)
    low = float(tf.reduce_mean(processed[0]))
    high = float(tf.reduce_mean(processed[1]))
    return (high - low) / 255.0, low


def calibration_images(configs: dict, count: int = 100) -> list[np.ndarray]:
    """Up to ``count`` RGB uint8 images from the training TFRecords, decoded by the
    OD API's ``TfExampleDecoder`` (for int8 calibration).

    Example:
        >>> images = calibration_images(load_configs("runs/demo/pipeline.config"))
    """
    files = _record_files(configs["train_input_config"], "training")
    images = []
    for example in _decoded_records(files):
        images.append(example["image"][..., :3])
        if len(images) >= count:
            break
    if len(images) < count:
        log.warning("export: only %d training images for int8 calibration (asked for %d)",
                    len(images), count)
    return images


#: the full-integer variants: uint8 input, int8 kernels, calibrated (or QAT ranges)
INT8_VARIANTS = ("int8", "int8_per_tensor", "edgetpu")
#: the int8 variants whose weights have one scale per tensor whatever the checkpoint
PER_TENSOR_VARIANTS = ("int8_per_tensor", "edgetpu")
#: a checkpoint not trained with QAT on: post-training quantization
PTQ = {"source": "ptq", "weights": "per-channel"}


def quantization_of(checkpoint: str) -> dict:
    """How a checkpoint's int8 file is made: ``{"source": "qat" | "ptq", "weights":
    "per-channel" | "per-tensor"}``. QAT when the checkpoint was trained with fake
    quantization switched on (:mod:`tfod.compat.qat` keeps the switch in the checkpoint),
    with the weight granularity it was trained with."""
    import tensorflow as tf

    try:
        names = dict(tf.train.list_variables(checkpoint))
        active = "model/qat/active/.ATTRIBUTES/VARIABLE_VALUE"
        if active in names and float(tf.train.load_variable(checkpoint, active)) > 0.5:
            per_channel = float(tf.train.load_variable(
                checkpoint, "model/qat/per_channel/.ATTRIBUTES/VARIABLE_VALUE")) > 0.5
            return {"source": "qat", "weights": "per-channel" if per_channel else "per-tensor"}
    except (tf.errors.OpError, ValueError):
        pass
    return dict(PTQ)


def trace_groups(variants: Sequence[str], checkpoint_quantization: dict) -> dict:
    """The traces an export needs: weights mode -> its variants. One, unless a QAT
    checkpoint trained per channel is also exported per tensor (its kernels' fake
    quantization is part of the traced graph)."""
    per_tensor = [v for v in variants if v in PER_TENSOR_VARIANTS]
    if checkpoint_quantization["source"] != "qat" or not per_tensor or \
            checkpoint_quantization["weights"] == "per-tensor":
        return {"checkpoint": list(variants)}
    rest = [v for v in variants if v not in per_tensor]
    return {**({"checkpoint": rest} if rest else {}), "per-tensor": per_tensor}


def _int8_plan(variant: str, checkpoint_quantization: dict) -> dict:
    """The int8 file's quantization: QAT ranges when the checkpoint has them; weights per
    tensor for ``int8_per_tensor`` and ``edgetpu``, or when QAT trained them so."""
    per_tensor = variant in PER_TENSOR_VARIANTS or \
        checkpoint_quantization["weights"] == "per-tensor"
    return {"source": checkpoint_quantization["source"],
            "weights": "per-tensor" if per_tensor else "per-channel"}


def _convert(graph_dir: Path, variant: str, representative=None,
             plan: dict | None = None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(graph_dir))
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant in INT8_VARIANTS:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # a QAT graph carries its activation ranges in FakeQuant ops, which the converter
        # takes; the representative images calibrate only the tensors QAT did not cover
        converter.representative_dataset = representative
        # integer kernels everywhere they exist; the detection post-processing stays float
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        if variant == "edgetpu":  # integer-only builtins; the post-processing op is custom
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        if (plan or {}).get("weights") == "per-tensor":
            # one scale per weight tensor (the converter's own switch for it)
            converter._experimental_disable_per_channel = True
    return converter.convert()


def trace_tflite_graph(configs: dict, checkpoint: str, work: Path,
                       max_detections: int = 10, weights: str = "checkpoint",
                       regular_nms: bool = False) -> Path:
    """The OD API's TFLite-ready graph (``export_tflite_graph_lib_tf2``) of a checkpoint,
    traced once into ``work/tflite_graph``; returns its SavedModel folder. A file
    ``work/tflite_graph/.traced`` appears when it is complete. For a QAT checkpoint
    ``weights`` says how its kernels are fake-quantized in the graph
    (:func:`tfod.compat.qat.building`)."""
    from object_detection import export_tflite_graph_lib_tf2
    from object_detection.utils import config_util

    proto = config_util.create_pipeline_proto_from_configs(configs)
    t0 = time.time()
    with runtime.without_layer_traces(), runtime.odapi_without_autograph(), \
            qat.building(configs, weights):
        export_tflite_graph_lib_tf2.export_tflite_model(
            proto, _checkpoint_dir(checkpoint, work), str(work / "tflite_graph"),
            max_detections, use_regular_nms=regular_nms)
    # the mark says how the graph ends (what each file converted from it will do); written
    # whole at once, as the other lane starts converting when it appears
    write_text_atomic(work / "tflite_graph" / TRACED, json.dumps(
        {"max_detections": max_detections, "nms": "regular" if regular_nms else "fast"}))
    log.info("export: TFLite graph traced in %.0fs", time.time() - t0)
    return work / "tflite_graph" / "saved_model"


#: written into the traced graph's folder once it is complete, with its post-processing
TRACED = ".traced"


def _traced(graph: Path) -> dict:
    """The post-processing a traced graph (its ``saved_model`` folder) was traced with."""
    mark = Path(graph).parent / TRACED
    return json.loads(mark.read_text() or "{}") if mark.is_file() else {}


def convert_tflite(configs: dict, graph: Path, out_dir: Path, variant: str,
                   max_detections: int, calibration_count: int = 100,
                   normalisation: tuple[float, float] | None = None,
                   checkpoint_quantization: dict | None = None) -> tuple[Path, dict]:
    """One TFLite variant of a traced graph into ``out_dir`` (atomically); returns the
    file and its ``tflite.json`` entry (input size, normalisation, dtype; for the int8
    variants whether it came from QAT or PTQ, see :func:`quantization_of`).
    ``normalisation``: the model's (scale, offset), measured when not given."""
    from tfod.inference import tflite_input

    scale, offset = normalisation or _input_normalisation(configs)
    size = image_size(configs)
    int8 = variant in INT8_VARIANTS
    calibration = calibration_images(configs, calibration_count) if int8 else []
    plan = _int8_plan(variant, checkpoint_quantization or PTQ)

    def representative():
        for image in calibration:
            yield [tflite_input(image, size, scale, offset)]

    t0 = time.time()
    with native_output_to_log(log, f"export: the TFLite converter's output ({variant})"):
        model_bytes = _convert(graph, variant, representative, plan if int8 else None)
    final = ExportDir(out_dir).tflite(variant)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.write_bytes(model_bytes)
    os.replace(tmp, final)
    meta = {"input_size": list(size), "input_scale": scale, "input_offset": offset,
            "input_dtype": "uint8" if int8 else "float32",
            "variant": variant, "max_detections": max_detections,
            # the detection op's NMS, as traced (:func:`trace_tflite_graph`)
            "nms": _traced(graph).get("nms", "fast")}
    if int8:
        meta["calibration_images"] = len(calibration)
        meta["quantization"] = plan
        log.info("export: %s from %s, weights %s", final.name,
                 "quantization-aware training (its learned ranges)"
                 if plan["source"] == "qat" else "post-training quantization (calibrated)",
                 plan["weights"])
    if variant == "edgetpu":
        meta["edgetpu_compiled"] = compile_edgetpu(final)
    log.info("export: %s (%.2f MB) in %.0fs", final.name, len(model_bytes) / 2**20,
             time.time() - t0)
    return final, meta


def compile_edgetpu(model: Path) -> bool:
    """Run Coral's ``edgetpu_compiler`` on ``model`` when it is on PATH (it writes
    ``<name>_edgetpu.tflite`` and a log beside it); False, with the reason logged, when it
    is not (it is not installable from the package registries: the model is still made to
    the Edge TPU's rules, :func:`_convert`'s ``edgetpu`` variant)."""
    import shutil
    import subprocess

    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        log.warning("export: edgetpu_compiler is not on PATH: %s meets the Edge TPU's "
                    "requirements (integer-only, uint8 input, static shape, weights per "
                    "tensor); compile it with `edgetpu_compiler %s` where the compiler is "
                    "installed", model.name, model.name)
        return False
    done = subprocess.run([compiler, "-s", "-o", str(model.parent), str(model)],
                          capture_output=True, text=True)
    (model.parent / f"{model.stem}_compiler.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise ExportError(f"edgetpu_compiler failed (exit {done.returncode})",
                          where=str(model), fix=f"see {model.stem}_compiler.log")
    log.info("export: edgetpu_compiler wrote %s_edgetpu.tflite", model.stem)
    return True


def write_tflite_meta(out_dir: Path, meta: dict) -> None:
    """``tflite.json``: the entries of ``meta`` over those already there."""
    meta_path = ExportDir(out_dir).tflite_meta
    if meta_path.is_file():
        meta = {**json.loads(meta_path.read_text()), **meta}
    write_text_atomic(meta_path, json.dumps(meta, indent=2))


def check_variants(variants: Sequence[str]) -> None:
    unknown = [v for v in variants if v not in TFLITE_FILES]
    if unknown:
        raise ExportError(f"unknown TFLite variant(s) {', '.join(unknown)}", where="variants",
                          fix=f"use some of: {', '.join(TFLITE_FILES)}")


def export_tflite(config: str | Path | dict, checkpoint: str, out_dir: str | Path,
                  max_detections: int = 10, variants: Sequence[str] = ("float32",),
                  calibration_images_count: int = 100, *,
                  regular_nms: bool = False) -> dict[str, Path]:
    """TFLite files through ``export_tflite_graph_lib_tf2`` (traced once) and the
    converter (once per variant: ``float32``, ``float16``, ``dynamic``, ``int8``).

    The SSD models take a [1,H,W,3] image normalised as written in
    ``tflite.json`` (float32) or its uint8 quantisation (int8: raw pixels); the
    post-processing is the TFLite detection op. int8 is calibrated with
    ``calibration_images_count`` training images resized and normalised exactly
    as :class:`tfod.inference.TFLiteDetector` feeds them.

    Example:
        >>> export_tflite("runs/demo/pipeline.config", "runs/demo/ckpt-3", "exports/demo",
        ...               variants=["float32", "int8"])
    """
    configs = _configs(config)
    check_tflite_arch(configs, str(config) if not isinstance(config, dict) else "config")
    check_variants(variants)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, meta = {}, {}
    quantization = quantization_of(checkpoint)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".partial-") as t:
        normalisation = _input_normalisation(configs)
        for weights, group in trace_groups(variants, quantization).items():
            graph = trace_tflite_graph(configs, checkpoint, Path(t) / weights,
                                       max_detections, weights, regular_nms)
            for variant in group:
                written[variant], meta[written[variant].name] = convert_tflite(
                    configs, graph, out_dir, variant, max_detections,
                    calibration_images_count, normalisation, quantization)
    write_tflite_meta(out_dir, meta)
    return written
