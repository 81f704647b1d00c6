"""Run an exported model (SavedModel or TFLite) on images: annotated PNGs,
COCO-style detections JSON.

:func:`load_detector` gives one interface over every exported format: call it
with an RGB uint8 image and get normalised boxes ``[ymin, xmin, ymax, xmax]``,
1-based class ids and scores, best first.
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

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class Detector:
    """An exported model behind one call signature."""

    kind = "?"
    input_size: tuple[int, int] | None = None

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError


class SavedModelDetector(Detector):
    kind = "saved_model"

    def __init__(self, path: Path):
        import tensorflow as tf

        self.path = path
        self._fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        self.input_size = None
        self._tf = tf

    def __call__(self, image):
        out = self._fn(input_tensor=self._tf.constant(image[None].astype(np.uint8)))
        n = int(out["num_detections"].numpy().reshape(-1)[0])
        return {"boxes": out["detection_boxes"].numpy()[0, :n],
                "classes": out["detection_classes"].numpy()[0, :n].astype(int),
                "scores": out["detection_scores"].numpy()[0, :n]}


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
        meta_path = path.parent / "tflite.json"
        meta = json.loads(meta_path.read_text()).get(path.name) if meta_path.is_file() else None
        if meta is None:
            raise ExportError("no input normalisation recorded for this model",
                              where=str(meta_path), fix="re-export with `tfod export`")
        self.meta = meta
        self.interpreter = _tflite_interpreter(path, threads)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self.input_size = tuple(int(v) for v in self._input["shape"][1:3])
        self._outputs = self.interpreter.get_output_details()

    def _prepare(self, image):
        from PIL import Image

        h, w = self.input_size
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), np.float32)
        x = resized * self.meta["input_scale"] + self.meta["input_offset"]
        if self._input["dtype"] != np.float32:
            scale, zero = self._input["quantization"]
            x = np.round(x / scale + zero).astype(self._input["dtype"])
        return x[None]

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
        return {"boxes": boxes[0, :n], "classes": classes[0, :n].astype(int) + 1,
                "scores": scores[0, :n]}


def _classes_and_scores(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tell the detection op's class and score outputs apart (their tensor names
    carry no meaning): scores come sorted best first and are not whole numbers."""
    def looks_like_scores(v):
        return bool(np.all(np.diff(v) <= 1e-6)) and not np.allclose(v, np.round(v))

    if looks_like_scores(a) and not looks_like_scores(b):
        return b, a
    return a, b


def load_detector(path: str | Path, threads: int | None = None) -> Detector:
    """A SavedModel folder or a ``.tflite`` file as a :class:`Detector`.

    Example:
        >>> detector = load_detector("exports/demo/saved_model")
        >>> detector(np.zeros((160, 160, 3), np.uint8))["scores"].shape
    """
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return SavedModelDetector(path)
    if path.is_dir() and (path / "saved_model" / "saved_model.pb").is_file():
        return SavedModelDetector(path / "saved_model")
    if path.suffix == ".tflite" and path.is_file():
        return TFLiteDetector(path, threads)
    raise ExportError("not an exported model", where=str(path),
                      fix="give a saved_model folder or a .tflite file from `tfod export`")


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
    if label_map and Path(label_map).is_file():
        from object_detection.utils import label_map_util

        return label_map_util.create_category_index_from_labelmap(str(label_map))
    return {}


def _find_label_map(model: Path) -> Path | None:
    for folder in (model if model.is_dir() else model.parent, model.parent, model.parent.parent):
        if (folder / "label_map.pbtxt").is_file():
            return folder / "label_map.pbtxt"
    return None


def predict(source, model: str | Path, out_dir: str | Path = "predictions",
            threshold: float = 0.5, max_detections: int = 100,
            label_map: str | Path | None = None, draw: bool = True) -> dict:
    """Detect objects in images with an exported model; write annotated PNGs and
    ``detections.json`` (COCO results format, ``image_id`` = file name).

    Example:
        >>> predict("data/demo/voc/JPEGImages", "exports/demo/saved_model", "predictions")
    """
    from PIL import Image, ImageOps

    images = list_images(source)
    detector = load_detector(model)
    label_map = Path(label_map) if label_map else _find_label_map(Path(model))
    categories = _category_index(label_map)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, per_image = [], {}
    t0 = time.time()
    for path in images:
        with Image.open(path) as img:
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        out = detector(rgb)
        keep = np.flatnonzero(out["scores"] >= threshold)[:max_detections]
        h, w = rgb.shape[:2]
        per_image[path.name] = int(len(keep))
        for i in keep:
            ymin, xmin, ymax, xmax = (float(v) for v in out["boxes"][i])
            cls = int(out["classes"][i])
            results.append({"image_id": path.name, "category_id": cls,
                            "category": categories.get(cls, {}).get("name", str(cls)),
                            "bbox": [xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h],
                            "score": float(out["scores"][i])})
        if draw:
            from object_detection.utils import visualization_utils as vu

            canvas = rgb.copy()
            vu.visualize_boxes_and_labels_on_image_array(
                canvas, out["boxes"][keep], out["classes"][keep], out["scores"][keep],
                categories or {c: {"id": c, "name": str(c)} for c in set(out["classes"][keep])},
                use_normalized_coordinates=True, min_score_thresh=threshold,
                max_boxes_to_draw=max_detections, line_thickness=2)
            Image.fromarray(canvas).save(out_dir / f"{path.stem}.png")
    tmp = out_dir / f".detections.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out_dir / "detections.json")
    seconds = time.time() - t0
    log.info("predict: %d images, %d detections >= %.2f with %s (%s) in %.1fs -> %s",
             len(images), len(results), threshold, model, detector.kind, seconds, out_dir)
    return {"images": len(images), "detections": len(results), "per_image": per_image,
            "out_dir": str(out_dir), "seconds": seconds}
