"""Run an exported model (SavedModel, frozen graph or TFLite) on images:
annotated PNGs, detections as COCO-results JSON and as CSV.

:func:`load_detector` gives one interface over every exported format: call it
with an RGB uint8 image and get normalised boxes ``[ymin, xmin, ymax, xmax]``,
1-based class ids and scores, best first. :meth:`Detector.detect_batch` runs
several images per call where the model's input allows it (SavedModels and
frozen graphs exported with ``float_image_tensor`` for same-size images, or
``encoded_image_string_tensor`` for any); ``image_tensor`` models and TFLite
take one image per call.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from tfod.errors import ExportError
from tfod.files import write_text_atomic
from tfod.layout import IMAGE_SUFFIXES, LABEL_MAP, ExportDir, stage_log

log = logging.getLogger(__name__)


class Detector:
    """An exported model behind one call signature."""

    kind = "?"
    input_size: tuple[int, int] | None = None
    #: largest number of images one call takes (None: any)
    max_batch: int | None = 1

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def detect_batch(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Detections of several images, batched where the model allows it."""
        return [self(image) for image in images]


class _GraphDetector(Detector):
    """A TensorFlow function with the OD API's serving inputs and outputs."""

    input_dtype = "uint8"

    def _setup(self, fn, input_dtype: str, batch_dim) -> None:
        import tensorflow as tf

        self._fn, self._tf = fn, tf
        self.input_dtype = input_dtype
        if input_dtype == "string" or batch_dim is None:
            self.max_batch = None

    def _feed(self, images: list[np.ndarray]):
        tf = self._tf
        if self.input_dtype == "uint8":
            return tf.constant(np.stack(images).astype(np.uint8))
        if self.input_dtype == "float32":
            return tf.constant(np.stack(images).astype(np.float32))
        return tf.stack([tf.io.encode_png(image) for image in images])

    def _run(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        try:
            out = self._fn(self._feed(images))
        except self._tf.errors.InvalidArgumentError as exc:
            raise ExportError(f"the model rejects images fed as {self.input_dtype} "
                              f"({str(exc).splitlines()[0]})", where=str(self.path),
                              fix="export with --input-type image_tensor, float_image_tensor "
                                  "or encoded_image_string_tensor (tf_example needs "
                                  "serialized tf.Examples)") from None
        counts = out["num_detections"].numpy().reshape(-1).astype(int)
        return [{"boxes": out["detection_boxes"].numpy()[i, :n],
                 "classes": out["detection_classes"].numpy()[i, :n].astype(int),
                 "scores": out["detection_scores"].numpy()[i, :n]}
                for i, n in enumerate(counts)]

    def __call__(self, image):
        return self._run([image])[0]

    def detect_batch(self, images):
        if self.max_batch == 1 or len(images) == 1:
            return [self(image) for image in images]
        if self.input_dtype == "string":
            return self._run(images)
        # a float batch needs one image size: batch each size group
        results: list = [None] * len(images)
        groups: dict = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape, []).append(i)
        for indices in groups.values():
            for i, out in zip(indices, self._run([images[i] for i in indices])):
                results[i] = out
        return results


class SavedModelDetector(_GraphDetector):
    kind = "saved_model"

    def __init__(self, path: Path):
        import tensorflow as tf

        self.path = path
        self._loaded = tf.saved_model.load(str(path))  # keeps the variables alive
        fn = self._loaded.signatures["serving_default"]
        (key, spec), = fn.structured_input_signature[1].items()
        self._key = key
        self._setup(lambda x: fn(**{key: x}), spec.dtype.name, spec.shape[0])


class FrozenGraphDetector(_GraphDetector):
    """``frozen_graph.pb`` imported with ``tf.compat.v1.import_graph_def``; the
    tensor names come from ``frozen_graph.json`` beside it."""

    kind = "frozen_graph"

    def __init__(self, path: Path):
        import tensorflow as tf

        self.path = path
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            raise ExportError("no tensor names recorded for this frozen graph",
                              where=str(meta_path), fix="re-export with `tfod export "
                              "--formats frozen_graph`")
        meta = json.loads(meta_path.read_text())
        (spec,) = meta["inputs"].values()
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(path.read_bytes())
        wrapped = tf.compat.v1.wrap_function(
            lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        graph = wrapped.graph
        fn = wrapped.prune(graph.as_graph_element(spec["name"]),
                           {k: graph.as_graph_element(v) for k, v in meta["outputs"].items()})
        self._setup(fn, spec["dtype"], None if spec["shape"][0] == -1 else spec["shape"][0])


def _tflite_interpreter(path: Path, threads: int | None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - older stacks
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path), num_threads=threads)


class TFLiteDetector(Detector):
    """TFLite SSD/CenterNet as written by ``tfod export``: it needs the image
    resized and normalised as recorded in ``tflite.json`` beside it."""

    kind = "tflite"

    def __init__(self, path: Path, threads: int | None = None):
        self.path = path
        meta_path = ExportDir(path.parent).tflite_meta
        meta = json.loads(meta_path.read_text()).get(path.name) if meta_path.is_file() else None
        if meta is None:
            raise ExportError("no input normalisation recorded for this model",
                              where=str(meta_path), fix="re-export with `tfod export`")
        self.meta = meta
        if meta.get("nms") == "regular" and threads != 1:
            # TFLite's detection op run with per-class NMS on 2+ threads leaves out the
            # last class(es) (tensorflow/tensorflow#56058, measured on TF 2.20: mAP 0.69
            # -> 0.49 on the demo): such a file runs on one thread
            log.info("predict: %s uses per-class NMS, run on one thread "
                     "(tensorflow/tensorflow#56058)", path.name)
            threads = 1
        self.threads = threads
        self.interpreter = _tflite_interpreter(path, threads)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self.input_size = tuple(int(v) for v in self._input["shape"][1:3])
        self._outputs = self.interpreter.get_output_details()

    def _prepare(self, image):
        x = tflite_input(image, self.input_size, self.meta["input_scale"],
                         self.meta["input_offset"])
        if self._input["dtype"] != np.float32:
            scale, zero = self._input["quantization"]
            info = np.iinfo(self._input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
            x = x.astype(self._input["dtype"])
        return x

    def __call__(self, image):
        self.interpreter.set_tensor(self._input["index"], self._prepare(image))
        self.interpreter.invoke()
        values = [self.interpreter.get_tensor(d["index"]) for d in self._outputs]
        # TFLite_Detection_PostProcess: boxes [1,N,4], classes [1,N], scores [1,N], count [1]
        boxes = next(v for v in values if v.ndim == 3)
        count_arr = next(v for v in values if v.size == 1)
        flat = [v for v in values if v.ndim == 2]
        n = int(count_arr.reshape(-1)[0])
        classes, scores = _classes_and_scores(flat[0][0, :n], flat[1][0, :n])
        classes, scores = classes[None], scores[None]
        # the detection op does not clip to the image, the OD API's SavedModel does
        return {"boxes": np.clip(boxes[0, :n], 0.0, 1.0),
                "classes": classes[0, :n].astype(int) + 1,
                "scores": scores[0, :n]}


def tflite_input(image: np.ndarray, size: tuple[int, int], scale: float,
                 offset: float) -> np.ndarray:
    """A [1,H,W,3] float32 TFLite input: ``image`` resized (bilinear) to ``size``
    and mapped to ``pixel * scale + offset``. Inference and int8 calibration
    both use it, so calibration sees exactly what the model will be fed.

    Example:
        >>> tflite_input(np.zeros((90, 120, 3), np.uint8), (160, 160), 2 / 255, -1.0).shape
        (1, 160, 160, 3)
    """
    from PIL import Image

    h, w = size
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image[..., :3]))
                         .resize((w, h), Image.BILINEAR), np.float32)
    return (resized * scale + offset)[None]


def _classes_and_scores(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tell the detection op's class and score outputs apart (their tensor names
    carry no meaning): scores come sorted best first and are not whole numbers."""
    def looks_like_scores(v):
        return bool(np.all(np.diff(v) <= 1e-6)) and not np.allclose(v, np.round(v))

    if looks_like_scores(a) and not looks_like_scores(b):
        return b, a
    return a, b


def load_detector(path: str | Path, threads: int | None = None) -> Detector:
    """A SavedModel folder, a frozen graph ``.pb`` or a ``.tflite`` file as a
    :class:`Detector` (``threads``: TFLite interpreter threads).

    Example:
        >>> detector = load_detector("exports/demo/saved_model")
        >>> detector(np.zeros((160, 160, 3), np.uint8))["scores"].shape
    """
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return SavedModelDetector(path)
    if path.is_dir() and (path / "saved_model" / "saved_model.pb").is_file():
        return SavedModelDetector(path / "saved_model")
    if path.name == "saved_model.pb" and path.is_file():
        return SavedModelDetector(path.parent)
    if path.suffix == ".pb" and path.is_file():
        return FrozenGraphDetector(path)
    if path.suffix == ".tflite" and path.is_file():
        return TFLiteDetector(path, threads)
    raise ExportError("not an exported model", where=str(path),
                      fix="give a saved_model folder, a frozen_graph.pb or a .tflite file "
                          "from `tfod export`")


def list_images(source: str | Path | Iterable[str]) -> list[Path]:
    """Images of a file, folder (recursive) or glob, sorted."""
    if not isinstance(source, (str, Path)):
        return sorted(p for s in source for p in list_images(s))
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    matches = sorted(Path(p) for p in glob.glob(str(source), recursive=True)
                     if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not matches:
        raise ExportError("no images found", where=str(source),
                          fix="give an image file, a folder or a glob like 'imgs/*.jpg'")
    return matches


def _category_index(label_map: str | Path | None) -> dict:
    """{id: {"id", "name"}} of a ``label_map.pbtxt`` (read with the OD API's
    label_map_util, which imports TensorFlow) or of a ``labels.txt`` (one class per line
    in id order, as ``tfod export`` writes it; read without TensorFlow)."""
    if not label_map or not Path(label_map).is_file():
        return {}
    label_map = Path(label_map)
    if label_map.suffix == ".txt":
        return _labels_txt(label_map)
    try:
        from object_detection.utils import label_map_util
    except ImportError as exc:  # a TFLite-only install: no TensorFlow, no OD API
        raise ExportError(f"reading a label_map.pbtxt needs the full install ({exc})",
                          where=str(label_map),
                          fix="give --label-map labels.txt (one class per line, in id order; "
                              "tfod export writes it beside the model)") from None
    return label_map_util.create_category_index_from_labelmap(str(label_map))


def _labels_txt(path: Path) -> dict:
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or "" in names or len(set(names)) != len(names):
        raise ExportError("labels.txt must hold one distinct class name per line",
                          where=str(path), fix="write the class names in id order (id 1 first)")
    return {i: {"id": i, "name": name} for i, name in enumerate(names, 1)}


def _find_label_map(model: Path) -> Path | None:
    """The label map beside an exported model: for a ``.tflite``, the ``labels.txt`` of its
    export folder first (so a TFLite prediction needs no TensorFlow), else the nearest
    ``label_map.pbtxt``."""
    if model.suffix == ".tflite" and ExportDir(model.parent).labels.is_file():
        return ExportDir(model.parent).labels
    for folder in (model if model.is_dir() else model.parent, model.parent, model.parent.parent):
        if (folder / LABEL_MAP).is_file():
            return folder / LABEL_MAP
    return None


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ExportError(f"cannot read the image ({exc})", where=str(path),
                          fix="remove or replace the file") from None


def _detections(path: Path, rgb, out: dict, threshold: float, max_detections: int,
                categories: dict) -> tuple:
    """(indices kept, COCO results, CSV rows) of one image's detector output: boxes
    above ``threshold`` from normalised [ymin, xmin, ymax, xmax] to pixels."""
    keep = np.flatnonzero(out["scores"] >= threshold)[:max_detections]
    h, w = rgb.shape[:2]
    results, rows = [], []
    for i in keep:
        ymin, xmin, ymax, xmax = (float(v) for v in out["boxes"][i])
        cls = int(out["classes"][i])
        name = categories.get(cls, {}).get("name", str(cls))
        score = float(out["scores"][i])
        results.append({"image_id": path.name, "category_id": cls, "category": name,
                        "bbox": [xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h],
                        "score": score})
        rows.append([path.name, w, h, name, f"{score:.4f}", f"{xmin * w:.1f}",
                     f"{ymin * h:.1f}", f"{xmax * w:.1f}", f"{ymax * h:.1f}"])
    return keep, results, rows


def _draw(rgb, out: dict, keep, categories: dict, threshold: float, max_detections: int,
          target: Path) -> None:
    """The image with its kept boxes as PNG: drawn by the OD API's visualization_utils
    when TensorFlow is loaded anyway (SavedModel, frozen graph), else (a TFLite model,
    which must run without TensorFlow) by :func:`_draw_with_pillow`."""
    import sys

    from PIL import Image

    if "tensorflow" not in sys.modules:
        _draw_with_pillow(rgb, out, keep, categories, target)
        return
    from object_detection.utils import visualization_utils as vu

    canvas = rgb.copy()
    vu.visualize_boxes_and_labels_on_image_array(
        canvas, out["boxes"][keep], out["classes"][keep], out["scores"][keep],
        categories or {c: {"id": c, "name": str(c)} for c in set(out["classes"][keep])},
        use_normalized_coordinates=True, min_score_thresh=threshold,
        max_boxes_to_draw=max_detections, line_thickness=2)
    Image.fromarray(canvas).save(target)


#: box colours of the Pillow drawer, by class id
_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
            "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#000075")


def _draw_with_pillow(rgb, out: dict, keep, categories: dict, target: Path) -> None:
    """Kept boxes and ``name: score%`` labels drawn with Pillow only (no TensorFlow)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    h, w = rgb.shape[:2]
    for i in keep:
        ymin, xmin, ymax, xmax = (float(v) for v in out["boxes"][i])
        cls = int(out["classes"][i])
        colour = _COLOURS[cls % len(_COLOURS)]
        box = (xmin * w, ymin * h, xmax * w, ymax * h)
        draw.rectangle(box, outline=colour, width=2)
        text = f"{categories.get(cls, {}).get('name', str(cls))}: {out['scores'][i]:.0%}"
        left, top, right, bottom = draw.textbbox((box[0], box[1]), text)
        up = bottom - top + 2
        y = box[1] - up if box[1] >= up else box[1]
        draw.rectangle((box[0], y, box[0] + right - left + 4, y + up), fill=colour)
        draw.text((box[0] + 2, y), text, fill="black")
    image.save(target)


def _write_csv(rows: list, csv_path: Path) -> None:
    import csv

    csv_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv_path.with_name(f".{csv_path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "width", "height", "class", "score",
                         "xmin", "ymin", "xmax", "ymax"])
        writer.writerows(rows)
    os.replace(tmp, csv_path)


def _open_model(model, batch: int, label_map, threads):
    """(detector, category index) of an exported model and its label map."""
    detector = load_detector(model, threads=threads)
    if batch > 1 and detector.max_batch == 1:
        log.info("predict: %s takes one image per call; --batch %d runs them one by one "
                 "(export with --input-type float_image_tensor or "
                 "encoded_image_string_tensor to batch)", model, batch)
    label_map = Path(label_map) if label_map else _find_label_map(Path(model))
    if label_map and not label_map.is_file():
        raise ExportError("label map not found", where=str(label_map),
                          fix="give the label_map.pbtxt written next to the exported model")
    return detector, _category_index(label_map)


def predict(source, model: str | Path, out_dir: str | Path = "predictions",
            threshold: float = 0.5, max_detections: int = 100,
            label_map: str | Path | None = None, draw: bool = True, batch: int = 1,
            csv_path: str | Path | None = None, threads: int | None = None) -> dict:
    """Detect objects in images with an exported model (SavedModel folder, frozen
    graph ``.pb`` or ``.tflite``); write annotated PNGs, ``detections.json``
    (COCO results format, ``image_id`` = file name) and ``detections.csv``
    (filename,width,height,class,score,xmin,ymin,xmax,ymax in pixels); the log goes to
    ``predict.log`` in ``out_dir``.

    ``batch`` images go into one call when the model takes batches (see
    :meth:`Detector.detect_batch`); ``image_tensor`` SavedModels and TFLite run
    one image per call whatever ``batch`` says.

    Example:
        >>> predict("data/demo/voc/JPEGImages", "exports/demo/saved_model", "predictions")
    """
    from tqdm import tqdm

    if batch < 1:
        raise ExportError(f"batch must be at least 1, got {batch}", where="--batch",
                          fix="use --batch 8, for example")
    images = list_images(source)
    detector, categories = _open_model(model, batch, label_map, threads)
    out_dir = Path(out_dir)
    csv_path = Path(csv_path) if csv_path else out_dir / "detections.csv"
    results, rows, per_image = [], [], {}
    with stage_log(out_dir, "predict"):
        t0 = time.time()
        with tqdm(total=len(images), unit="img", desc="predict", disable=None) as bar:
            for start in range(0, len(images), batch):
                chunk = images[start:start + batch]
                arrays = [_read_rgb(path) for path in chunk]
                for path, rgb, out in zip(chunk, arrays, detector.detect_batch(arrays)):
                    keep, found, lines = _detections(path, rgb, out, threshold,
                                                     max_detections, categories)
                    per_image[path.name] = int(len(keep))
                    results += found
                    rows += lines
                    if draw:
                        _draw(rgb, out, keep, categories, threshold, max_detections,
                              out_dir / f"{path.stem}.png")
                bar.update(len(chunk))
        seconds = time.time() - t0
        write_text_atomic(out_dir / "detections.json", json.dumps(results, indent=1))
        _write_csv(rows, csv_path)
        log.info("predict: %d images, %d detections >= %.2f with %s (%s) in %.1fs -> %s",
                 len(images), len(results), threshold, model, detector.kind, seconds, out_dir)
    return {"images": len(images), "detections": len(results), "per_image": per_image,
            "out_dir": str(out_dir), "csv": str(csv_path), "seconds": seconds,
            "images_per_second": len(images) / seconds if seconds else None}
