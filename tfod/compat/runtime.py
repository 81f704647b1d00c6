"""OD API runtime patches: behaviour tfod changes in the OD API's objects while one of
its functions runs. Nothing under site-packages is edited; each patch is undone when the
call ends, and names the upstream behaviour it changes. (Import-time fixes are the shims
of :mod:`tfod.compat`.)

- **Chunked train loop** (:class:`LoopPatch`, used by :func:`tfod.train`): upstream's
  ``model_lib_v2.train_loop`` takes a fixed ``num_steps_per_iteration`` and saves only
  between calls, every ``checkpoint_every_n`` steps. tfod passes two small objects in place
  of those integers. ``num_steps_per_iteration`` reads its chunk size from a ``tf.Variable``
  inside upstream's ``tf.function`` (``tf.range`` of a tensor is a dynamic loop, so one
  trace serves every chunk size). ``checkpoint_every_n`` is compared once at the end of
  every call, after upstream wrote that call's summaries; that comparison runs tfod's
  hook, which saves a checkpoint at multiples of N, sets the next chunk size, ends the
  loop at ``num_steps`` (:class:`Finished`) and answers "no" so upstream itself never
  saves after step 0. (The loop also calls ``learning_rate_fn()`` once per call, but
  before it writes the call's loss summaries: ending the loop there would drop the last
  call's losses.)
- **Builder hooks** (:meth:`Captured.hooks`): the model, optimizer and step variable the
  loop builds are recorded through ``MODEL_BUILD_UTIL_MAP``, ``optimizer_builder.build``
  and ``load_fine_tune_checkpoint``, so tfod can save them like upstream does.
- **Freezing** (:func:`freeze_model`): TF2's ``model_lib_v2`` ignores
  ``train_config.freeze_variables`` / ``update_trainable_variables``
  (tensorflow/models#10167); the model's ``trainable_variables`` honours them.
- **Box-predictor restore** (:func:`restore_box_predictor`): for a ``detection``
  fine-tune checkpoint the OD API restores only an SSD's feature extractor
  (``SSDMetaArch.restore_from_objects``); the box predictor's tower and box-encoding head,
  which do not depend on the class count, are restored too (as the OD API's few-shot
  colab does by hand); only the class head starts fresh.
- **Per-class COCO AP** (:func:`keep_coco_eval`): with the released pycocotools,
  ``include_metrics_per_category`` raises "Category stats do not exist" (the
  ``category_stats`` of Google's fork are missing); ``COCOEvalWrapper.summarize`` computes
  them (:func:`category_stats`) and keeps the finished COCOeval for PR curves and the
  confusion matrix.
- **No AutoGraph for the OD API** (:func:`odapi_without_autograph`): AutoGraph converts
  every OD API function the loops call (half of the tiny template's 56 s graph build);
  the OD API's code needs no conversion (written for TF1 graph mode), so while tfod runs
  its loops AutoGraph leaves the ``object_detection`` package alone, as it does
  ``tensorflow`` and ``tf_keras``.
- **SavedModels without layer traces** (:func:`without_layer_traces`): the OD API's
  exporters (``exporter_lib_v2``, ``export_tflite_graph_lib_tf2``) save a ``tf.Module``
  that holds the Keras detection model with ``tf.saved_model.save``, and tf-keras then
  traces every layer's own call functions into the file (Keras' ``save_traces``), which
  the serving signature never uses. Exported with Keras' own option
  ``save_traces=False``: the signature, variables and outputs are the same, saving and
  loading take a fraction of the time; the file cannot be revived as Keras layers
  (``tf.keras.models.load_model``), which an OD API export never could.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Sequence

from tfod.errors import TrainError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def odapi_without_autograph():
    """While active, AutoGraph calls the OD API's functions as they are written instead of
    converting them (a ``DoNotConvert('object_detection')`` rule first in its rules, as it
    has for ``tensorflow`` and ``tf_keras``); the ``tf.function`` that the loop itself
    decorates is still converted (its ``for _ in tf.range(...)``). Functions that branch
    in Python on a tensor would raise a graph-mode error here, never compute differently.
    ``TFOD_ODAPI_AUTOGRAPH=1`` in the environment keeps upstream's conversion."""
    from tensorflow.python.autograph.core import config

    if os.environ.get("TFOD_ODAPI_AUTOGRAPH") == "1":
        yield
        return
    rules = config.CONVERSION_RULES
    config.CONVERSION_RULES = (config.DoNotConvert("object_detection"), *rules)
    try:
        yield
    finally:
        config.CONVERSION_RULES = rules


@contextlib.contextmanager
def without_layer_traces():
    """``tf.saved_model.save`` calls inside skip the Keras layers' call traces (the
    ``save_traces=False`` of ``tf.keras.Model.save``). Without tf-keras' legacy saving
    module (another Keras) nothing changes."""
    try:
        from tf_keras.src.saving.legacy.saved_model import utils
    except ImportError:  # pragma: no cover  (tf-keras is pinned)
        log.debug("compat: tf_keras' saved_model utils not found; layer traces kept")
        yield False
        return
    with utils.keras_option_scope(save_traces=False, in_tf_saved_model_scope=False):
        yield True


#: Most steps in one ``tf.function`` call: upstream's ``NUM_STEPS_PER_ITERATION``. Fewer
#: steps per call cost time per step (1.11x upstream's at 20, ``tools/bench/train.py``).
CHUNK_CAP = 100


def chunk_size(step: int, total: int, every: int, cap: int = CHUNK_CAP) -> int:
    """Steps of the next ``tf.function`` call from ``step``: ``cap``, or fewer where the
    next multiple of ``every`` (a checkpoint) or ``total`` (the end) comes first.

    Example:
        >>> [chunk_size(s, 197, 1000) for s in (0, 100)]
        [100, 97]
        >>> [chunk_size(s, 40, 10) for s in (0, 10, 20, 30)]
        [10, 10, 10, 10]
    """
    return max(1, min(cap, every - step % every, total - step))


class Finished(Exception):
    """Raised by :class:`LoopPatch` to end upstream's loop at exactly ``num_steps``."""


class _StepsPerCall:
    """Stands in for ``train_loop``'s ``num_steps_per_iteration`` (see :class:`LoopPatch`).

    Upstream uses it as ``n > 1`` (true), ``tf.range(n - 1)`` inside its
    ``tf.function`` (here a tensor read from :attr:`steps`), ``range(start, total, n)``
    (step 1: enough iterations, :class:`Finished` ends the loop),
    ``global_step % n == 0`` as the summary condition (true at the first step of a
    call and after it, as upstream's is with whole chunks), and ``n * 1.0`` /
    ``t / n`` for its steps/s summary and log (the chunk just run)."""

    def __init__(self, cap: int):
        import tensorflow as tf

        self.cap, self.size = cap, 1
        # created outside any strategy scope: plain variables, set from Python between calls
        self.steps = tf.Variable(1, dtype=tf.int64, trainable=False, name="tfod_chunk_size")
        self.first = tf.Variable(0, dtype=tf.int64, trainable=False, name="tfod_chunk_start")

    def plan(self, step: int, size: int) -> None:
        self.size = size
        self.steps.assign(size)
        self.first.assign(step)

    def __gt__(self, other):
        return self.cap > other

    def __sub__(self, other):
        return self.steps - other

    def __index__(self):
        return 1

    def __mul__(self, other):
        return self.size * other

    def __rtruediv__(self, other):
        return other / self.size

    def __rmod__(self, global_step):
        return (global_step - self.first) % self.steps


class _AfterEachCall:
    """Stands in for ``train_loop``'s ``checkpoint_every_n``: upstream tests
    ``steps_since_its_save >= checkpoint_every_n`` once after every call; Python asks
    this object (``__le__``), which runs the hook and answers False."""

    def __init__(self, hook):
        self.hook = hook

    def __le__(self, _steps_since_save):
        self.hook()
        return False


class LoopPatch:
    """OD API runtime patch of ``model_lib_v2.train_loop``: chunked calls and
    checkpoints at every multiple of ``every``, through the loop's own arguments
    (:meth:`arguments`); after each call :meth:`after_call` saves at a multiple of
    ``every``, ends the loop at ``total`` and sets the next chunk size."""

    def __init__(self, total: int, every: int, cap: int = CHUNK_CAP):
        self.total, self.every = total, every
        self.chunks = _StepsPerCall(cap)
        self.captured = self.save = None

    def arguments(self, start: int, captured: Captured, save) -> dict:
        """``train_loop`` keyword arguments for a pass from ``start``; ``save()`` writes
        a checkpoint of ``captured``."""
        self.captured, self.save = captured, save
        self.chunks.plan(start, chunk_size(start, self.total, self.every, self.chunks.cap))
        return {"num_steps_per_iteration": self.chunks,
                "checkpoint_every_n": _AfterEachCall(self.after_call)}

    def after_call(self) -> None:
        step = self.captured.step()
        if step >= self.total:
            raise Finished  # train() saves the last step, on every worker alike
        if step % self.every == 0:
            self.save()
        self.chunks.plan(step, chunk_size(step, self.total, self.every, self.chunks.cap))


class Captured:
    """The objects ``train_loop`` builds, recorded through its builder hooks."""

    def __init__(self, train_config=None, configs: dict | None = None):
        self.model = None
        self.optimizer = None
        self.global_step = None
        self.train_config = train_config
        self.configs = configs  # for quantization-aware training (compat.qat)

    @contextlib.contextmanager
    def hooks(self):
        """Record the model, optimizer and step; apply the config's freeze fields to the
        model (model_lib_v2 ignores them, tensorflow/models#10167); after upstream's
        detection fine-tune restore, also restore the box predictor's class-count
        independent parts (upstream restores only the feature extractor)."""
        from object_detection import model_lib_v2

        build_model = model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"]
        build_optimizer = model_lib_v2.optimizer_builder.build
        load_fine_tune = model_lib_v2.load_fine_tune_checkpoint

        def model_fn(*args, **kwargs):
            self.model = build_model(*args, **kwargs)
            if self.configs is not None:
                from tfod.compat import qat

                qat.install_from(self.model, self.configs)
            if self.train_config is not None:
                self.model = freeze_model(self.model, self.train_config)
            return self.model

        def fine_tune_fn(model, checkpoint_path, checkpoint_type, *args, **kwargs):
            load_fine_tune(model, checkpoint_path, checkpoint_type, *args, **kwargs)
            if checkpoint_type == "detection":
                restored = restore_box_predictor(model, checkpoint_path)
                if restored:
                    log.info("train: restored box predictor %s from %s",
                             ", ".join(restored), checkpoint_path)

        def optimizer_fn(config, global_step=None):
            self.global_step = global_step
            if getattr(self.model, "_tfod_qat", None) is not None:  # QAT follows the step
                self.model._tfod_qat.global_step = global_step
            self.optimizer, extra = build_optimizer(config, global_step=global_step)
            return self.optimizer, extra

        model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"] = model_fn
        model_lib_v2.optimizer_builder.build = optimizer_fn
        model_lib_v2.load_fine_tune_checkpoint = fine_tune_fn
        try:
            yield self
        finally:
            model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"] = build_model
            model_lib_v2.optimizer_builder.build = build_optimizer
            model_lib_v2.load_fine_tune_checkpoint = load_fine_tune

    def step(self) -> int:
        return int(self.global_step.numpy()) if self.global_step is not None else 0

    def save(self, model_dir: Path, strategy, max_to_keep: int) -> str | None:
        """Save like the upstream loop does: same object graph, next ckpt-N."""
        import tensorflow as tf
        from object_detection import model_lib_v2

        if self.model is None or not _has_weights(self.model):
            return None
        ckpt = tf.train.Checkpoint(step=self.global_step, model=self.model,
                                   optimizer=self.optimizer)
        directory = model_lib_v2.get_filepath(strategy, str(model_dir))
        manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep)
        # Upstream numbers checkpoints by save, not by step (ckpt-1 is its step-0 save);
        # continue that numbering so no earlier checkpoint is overwritten.
        taken = [int(p.rsplit("-", 1)[-1]) for p in manager.checkpoints]
        path = manager.save(checkpoint_number=max(taken, default=0) + 1)
        model_lib_v2.clean_temporary_directories(strategy, directory)
        return path


def _has_weights(model) -> bool:
    """Whether the model has built its weights (not yet when training is interrupted
    while its first step is traced: Keras then raises instead of listing none)."""
    try:
        return bool(model.variables)
    except ValueError:  # "Weights for model ... have not yet been created"
        return False


def trainable_filter(variables: Sequence, train_config) -> list:
    """``variables`` minus those frozen by ``train_config``: kept if a name matches an
    ``update_trainable_variables`` regex (when any) and no ``freeze_variables`` regex
    (``re.search`` on the name without ``:0``, like the OD API's TF1 loop)."""
    import re

    include = [re.compile(p) for p in train_config.update_trainable_variables]
    exclude = [re.compile(p) for p in train_config.freeze_variables]

    def kept(variable) -> bool:
        name = variable.name.split(":")[0]
        return ((not include or any(p.search(name) for p in include))
                and not any(p.search(name) for p in exclude))

    return [v for v in variables if kept(v)]


def freeze_model(model, train_config):
    """Make ``model.trainable_variables`` (what ``model_lib_v2``'s train step
    differentiates and updates) honour the config's freeze fields. Returns the model.

    Batch-norm moving statistics of frozen layers still update in training mode; set
    ``model.ssd.freeze_batchnorm: true`` to keep them too.

    Example:
        >>> model = freeze_model(model_builder.build(configs["model"], is_training=True),
        ...                      configs["train_config"])
    """
    if not (train_config.update_trainable_variables or train_config.freeze_variables):
        return model
    base = type(model)
    logged = []

    def trainable_variables(self):
        everything = base.trainable_variables.fget(self)
        kept = trainable_filter(everything, train_config)
        if everything and not logged:
            logged.append(True)
            log.info("freeze: training %d of %d trainable variables", len(kept),
                     len(everything))
        return kept

    model.__class__ = type(base.__name__, (base,), {
        "trainable_variables": property(trainable_variables), "__module__": base.__module__})
    return model


def box_predictor_restore_map(model) -> dict:
    """The parts of an SSD box predictor that do not depend on ``num_classes``
    (attribute name -> trackable), empty for other models."""
    predictor = getattr(model, "_box_predictor", None)
    parts: dict = {}
    if hasattr(predictor, "_base_tower_layers_for_heads"):  # weight-shared (FPN models)
        parts["_base_tower_layers_for_heads"] = predictor._base_tower_layers_for_heads
        parts["_box_prediction_head"] = predictor._box_prediction_head
        if any(predictor._additional_projection_layers):
            parts["_additional_projection_layers"] = predictor._additional_projection_layers
    elif hasattr(predictor, "_shared_nets"):  # convolutional (SSD MobileNet V2 320)
        import tensorflow as tf

        if any(predictor._shared_nets):
            parts["_shared_nets"] = predictor._shared_nets
        parts["_prediction_heads"] = tf.train.Checkpoint(
            box_encodings=predictor._prediction_heads["box_encodings"])
    return parts


def restore_box_predictor(model, checkpoint: str) -> list[str]:
    """Restore an SSD model's box-predictor tower and box head from a detection
    checkpoint (model variables must exist). Returns the restored attribute names.

    Example:
        >>> model_lib_v2.load_fine_tune_checkpoint(model, ckpt, "detection", ...)
        >>> restore_box_predictor(model, ckpt)
        ['_prediction_heads']
    """
    import tensorflow as tf

    parts = box_predictor_restore_map(model)
    if not parts:
        return []
    root = tf.train.Checkpoint(model=tf.train.Checkpoint(
        _box_predictor=tf.train.Checkpoint(**parts)))
    try:
        root.restore(checkpoint).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as exc:
        raise TrainError(f"the checkpoint's box predictor does not fit this model ({exc})"[:600],
                         where=checkpoint, fix="use the checkpoint of the zoo model the "
                         "template was made for, or fine_tune_checkpoint_type "
                         "\"classification\"") from None
    log.info("fine-tune: restored box predictor %s from %s", ", ".join(parts), checkpoint)
    return list(parts)


def category_stats(coco_eval):
    """The 12 COCO summary numbers per category, shape ``(12, K)`` (-1: no data).

    Same layout as ``COCOeval.stats`` (AP, AP50, AP75, AP S/M/L, AR 1/10/100,
    AR S/M/L), read from the accumulated ``coco_eval.eval`` arrays.
    """
    import numpy as np

    p = coco_eval.params
    precision, recall = coco_eval.eval["precision"], coco_eval.eval["recall"]
    areas = {name: i for i, name in enumerate(p.areaRngLbl)}
    big = len(p.maxDets) - 1

    def mean(values):
        values = values[values > -1]
        return float(values.mean()) if values.size else -1.0

    def ap(k, iou=None, area="all"):
        s = precision[:, :, k, areas[area], big]
        if iou is not None:
            s = s[np.isclose(p.iouThrs, iou)]
        return mean(s)

    def ar(k, max_det_index=big, area="all"):
        return mean(recall[:, k, areas[area], max_det_index])

    rows = []
    for k in range(len(p.catIds)):
        rows.append([ap(k), ap(k, .5), ap(k, .75), ap(k, area="small"), ap(k, area="medium"),
                     ap(k, area="large"), ar(k, 0), ar(k, 1), ar(k, big), ar(k, area="small"),
                     ar(k, area="medium"), ar(k, area="large")])
    return np.array(rows, dtype=float).T.reshape(12, len(p.catIds))


@contextlib.contextmanager
def keep_coco_eval():
    """While active, the OD API's COCO evaluations gain ``category_stats`` and are kept."""
    from object_detection.metrics import coco_tools

    cls = coco_tools.COCOEvalWrapper
    own = cls.__dict__.get("summarize")
    base = cls.summarize  # its own, or pycocotools' COCOeval.summarize
    kept = []

    def summarize(self):
        base(self)
        if not hasattr(self, "category_stats"):
            self.category_stats = category_stats(self)
        if self.params.useCats and self.params.iouType == "bbox":
            kept.append(self)

    cls.summarize = summarize
    try:
        yield kept
    finally:
        if own is None:
            del cls.summarize
        else:
            cls.summarize = own
