"""Quantization-aware training (QAT) of the OD API's Keras SSD MobileNet models.

The break: a pipeline config's ``graph_rewriter { quantization { delay weight_bits
activation_bits } }`` is TF1's contrib graph rewrite; the TF2 loop (``model_lib_v2``)
never reads it, so the model trains in float and the block is silently ignored
(tensorflow/models#8935, #10628, #9835).

What tfod does instead, on the Keras layers the OD API builds (no upstream file edited):
:func:`install` gives every ``Conv2D`` / ``DepthwiseConv2D`` of the feature extractor and
the box predictor a fake-quantized kernel, and every activation the int8 TFLite model
will hold as a tensor (after ReLU6, after a batch norm that no activation follows, after
``Add``, the heads' outputs) a fake-quantized output with a range learned as a moving
average, the way TF1's rewrite placed them. Both are TensorFlow's own
``fake_quant_with_min_max_vars*`` ops: the forward pass rounds to the int8 grid, the
backward pass is the straight-through estimator.

- **Delay.** Ranges are tracked from the first step; quantization switches on when the
  training step reaches ``delay``. The switch is a variable of the model
  (``model/qat/active``), so checkpoints carry it: a run resumed before or after the delay goes
  on as it was, and eval / export of a QAT checkpoint quantize exactly when it did.
- **Weights.** Per output channel (symmetric, narrow range, as TFLite's int8 kernels) by
  default. Per output channel, quantizing the kernel and quantizing the kernel with the
  following batch norm folded into it give the same grid (the fold scales a channel), so
  the learned weights survive the converter's folding unchanged. Per tensor
  (``per_channel=False``, for accelerators that need it) the fold changes which channel
  sets the range, so the kernel is quantized *folded*, with the batch norm's moving
  statistics: ``fq(w * k) / k`` with ``k = gamma / sqrt(moving_variance + epsilon)``.
- **What stays float.** The model input is calibrated at export (the representative
  images), as are the reshape/concatenate of the heads' outputs; anchor decoding and
  non-maximum suppression are TFLite's float ``TFLite_Detection_PostProcess``.
- **Supported.** SSD with the Keras MobileNet V1 / V2 feature extractors, plain or FPN
  (:data:`SUPPORTED`); other architectures are refused by ``tfod config --check``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: feature extractor types QAT supports (SSD meta-architecture)
SUPPORTED = ("ssd_mobilenet_v1_keras", "ssd_mobilenet_v2_keras",
             "ssd_mobilenet_v1_fpn_keras", "ssd_mobilenet_v2_fpn_keras")
#: moving-average decay of the activation ranges (TF1's rewrite used 0.999)
EMA_DECAY = 0.999


@dataclass(frozen=True)
class Settings:
    """The config's quantization block, as tfod applies it."""

    delay: int = 0
    weight_bits: int = 8
    activation_bits: int = 8
    per_channel: bool = True


def settings(configs: dict, per_channel: bool = True) -> Settings | None:
    """The QAT settings of a config dict (``config_util`` form), or None without a
    ``graph_rewriter.quantization`` block."""
    rewriter = configs.get("graph_rewriter_config")
    if rewriter is None or not rewriter.HasField("quantization"):
        return None
    q = rewriter.quantization
    return Settings(delay=int(q.delay), weight_bits=int(q.weight_bits or 8),
                    activation_bits=int(q.activation_bits or 8), per_channel=per_channel)


def unsupported(model_config) -> str | None:
    """Why QAT cannot apply to this model config (None when it can)."""
    kind = model_config.WhichOneof("model")
    if kind != "ssd":
        return f"meta-architecture {kind!r}"
    extractor = model_config.ssd.feature_extractor.type
    if extractor not in SUPPORTED:
        return f"feature extractor {extractor!r}"
    return None


class _State:
    """What the installed layers share: the settings, the switch and the step."""

    def __init__(self, model, qat: Settings, export: str | None = None):
        import tensorflow as tf

        self.qat = qat
        self.model = model
        #: None (training, eval), or export with weights "per-channel", "per-tensor" or
        #: as the checkpoint was trained ("checkpoint")
        self.export = export
        self.global_step = None  # the training loop's step, once the optimizer is built
        # QAT's variables live in one module of their own (checkpoint: model/qat/...), not
        # in the Keras layers: a weight added to a backbone layer renumbers the functional
        # model's `layer_with_weights-N` names, and float and zoo checkpoints would no
        # longer restore into it
        self.store = tf.Module(name="qat")
        self.store.active = _variable(0.0)
        # how the weights were quantized, kept in the checkpoint for eval and export
        self.store.per_channel = _variable(1.0 if qat.per_channel else 0.0)
        self.store.ranges = []
        model.qat = self.store

    @property
    def active(self):
        return self.store.active

    @property
    def per_channel_flag(self):
        return self.store.per_channel

    def new_range(self) -> tuple:
        """The (min, max) variables of one more quantized activation."""
        pair = (_variable(0.0), _variable(0.0))
        self.store.ranges.append(pair)
        return pair

    @property
    def training(self) -> bool:
        return bool(getattr(self.model, "_is_training", False))

    def _restored(self, variable) -> bool:
        import tensorflow as tf

        with tf.init_scope():  # the value now (a restored checkpoint's), also while tracing
            return float(variable.numpy()) > 0.5

    @property
    def exporting_qat(self) -> bool:
        """Exporting a checkpoint trained with QAT on (read while tracing)."""
        return self.export is not None and self._restored(self.active)

    @property
    def export_per_channel(self) -> bool:
        if self.export == "checkpoint":
            return self._restored(self.per_channel_flag)
        return self.export == "per-channel"

    @property
    def per_channel(self) -> bool:
        """Training: as the settings say; eval and export: as the checkpoint was trained."""
        return self.qat.per_channel if self.training else self._restored(self.per_channel_flag)

    def switch(self):
        """Called at the start of each forward pass: in training, the switch follows the
        step (on from ``delay``)."""
        import tensorflow as tf

        if self.training and self.global_step is not None:
            on = tf.cast(self.global_step >= self.qat.delay, tf.float32)
            self.active.assign(on)
            # as this run trains (a resumed checkpoint may have been trained otherwise)
            self.per_channel_flag.assign(1.0 if self.qat.per_channel else 0.0)

    def blend(self, x, quantized):
        """``quantized`` when QAT is on, ``x`` before. Outside training (eval, export) the
        switch's value is read once, so an exported graph holds the bare fake-quant op
        the TFLite converter takes its ranges from."""
        if not self.training:
            return quantized if self._restored(self.active) else x
        return x + self.active * (quantized - x)


def _quantize_kernel(state: _State, kernel, depthwise: bool, fold=None):
    """The kernel rounded to the weight grid: per output channel, or per tensor (with the
    following batch norm's scale ``fold`` folded in when known)."""
    import tensorflow as tf

    bits = state.qat.weight_bits
    if state.per_channel:
        shape = kernel.shape
        flat = tf.reshape(kernel, [shape[0], shape[1], 1, -1]) if depthwise else kernel
        limit = tf.reduce_max(tf.abs(flat), axis=[0, 1, 2])
        limit = tf.maximum(limit, 1e-8)
        quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            flat, -limit, limit, num_bits=bits, narrow_range=True)
        return tf.reshape(quantized, shape) if depthwise else quantized
    scale = None
    if fold is not None:
        scale = tf.stop_gradient(fold())
        if depthwise:
            scale = tf.reshape(scale, [kernel.shape[2], kernel.shape[3]])
        kernel = kernel * scale
    limit = tf.maximum(tf.reduce_max(tf.abs(kernel)), 1e-8)
    quantized = tf.quantization.fake_quant_with_min_max_vars(
        kernel, -limit, limit, num_bits=bits, narrow_range=True)
    return quantized / scale if scale is not None else quantized


def _quantize_output(state: _State, layer_range: tuple, x):
    """An activation rounded to the activation grid of its moving-average range."""
    import tensorflow as tf

    low, high = layer_range
    if state.training:
        batch_low = tf.minimum(tf.reduce_min(x), 0.0)
        batch_high = tf.maximum(tf.reduce_max(x), 0.0)
        fresh = tf.equal(low, high)  # first step: take the batch's range
        decay = EMA_DECAY
        low.assign(tf.where(fresh, batch_low, decay * low + (1 - decay) * batch_low))
        high.assign(tf.where(fresh, batch_high, decay * high + (1 - decay) * batch_high))
    quantized = tf.quantization.fake_quant_with_min_max_vars(
        x, low, high, num_bits=state.qat.activation_bits, narrow_range=False)
    return state.blend(x, quantized)


def _variable(value: float):
    """A scalar QAT variable: not trained, written by the first replica."""
    import tensorflow as tf

    return tf.Variable(value, dtype=tf.float32, trainable=False,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def _swap_class(layer, methods: dict) -> None:
    """Give one layer object its own subclass with ``methods`` (the layer's class, its
    weights and its checkpoint names are unchanged)."""
    cls = type(layer)
    layer.__class__ = type(f"Qat{cls.__name__}", (cls,), methods)


def _fold_of(bn):
    """The per-channel scale a batch norm multiplies by at inference."""
    def fold():
        import tensorflow as tf

        gamma = bn.gamma if bn.gamma is not None else 1.0
        return gamma * tf.math.rsqrt(bn.moving_variance + bn.epsilon)
    return fold


def _depthwise(layer, inputs, kernel):
    """What ``DepthwiseConv2D.call`` computes, with ``kernel`` in place of its own."""
    from tf_keras import backend

    outputs = backend.depthwise_conv2d(
        inputs, kernel, strides=layer.strides, padding=layer.padding,
        dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    if layer.use_bias:
        outputs = backend.bias_add(outputs, layer.bias, data_format=layer.data_format)
    return layer.activation(outputs) if layer.activation is not None else outputs


def _wrap_conv(state: _State, layer, bn) -> None:
    """Training and eval: the kernel fake-quantized (per channel, or per tensor folded) while
    QAT is on. Export: see :func:`_wrap_folded`."""
    import tensorflow as tf

    if state.export is not None:
        _wrap_folded(state, layer, bn)
        return
    fold = _fold_of(bn) if bn is not None else None
    if isinstance(layer, tf.keras.layers.DepthwiseConv2D):
        def call(self, inputs):
            kernel = _quantize_kernel(state, self.depthwise_kernel, True, fold)
            return _depthwise(self, inputs, state.blend(self.depthwise_kernel, kernel))

        _swap_class(layer, {"call": call})
        return
    base = type(layer).convolution_op

    def convolution_op(self, inputs, kernel):
        quantized = state.blend(kernel, _quantize_kernel(state, kernel, False, fold))
        return base(self, inputs, quantized)

    _swap_class(layer, {"convolution_op": convolution_op})


def _folded_kernel(state: _State, kernel, depthwise: bool, bn):
    """Export: the kernel with its batch norm folded in, fake-quantized with constant
    ranges (per channel or per tensor, :attr:`_State.export_per_channel`), as TF1's
    rewrite wrote it for the TFLite converter."""
    import numpy as np
    import tensorflow as tf

    with tf.init_scope():  # the restored values, as constants of the traced graph
        value = kernel.numpy()
        if bn is not None:
            scale = _fold_of(bn)().numpy()
            value = value * (scale.reshape(value.shape[2], value.shape[3]) if depthwise
                             else scale)
    bits = state.qat.weight_bits
    if state.export_per_channel:
        flat = value.reshape(value.shape[0], value.shape[1], 1, -1) if depthwise else value
        limit = np.maximum(np.abs(flat).max(axis=(0, 1, 2)), 1e-8).astype(np.float32)
        quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            tf.constant(flat), -limit, limit, num_bits=bits, narrow_range=True)
        return tf.reshape(quantized, value.shape) if depthwise else quantized
    limit = np.float32(max(float(np.abs(value).max()), 1e-8))
    return tf.quantization.fake_quant_with_min_max_vars(
        tf.constant(value), -limit, limit, num_bits=bits, narrow_range=True)


def _wrap_folded(state: _State, layer, bn) -> None:
    """Export of a QAT checkpoint: the batch norm folded into the kernel before its
    fake quantization (the batch norm becomes its bias), so the converter finds each
    weight tensor's range, per channel or per tensor, in the graph. A checkpoint trained
    with QAT off exports as it is (post-training quantization)."""
    import tensorflow as tf

    depthwise = isinstance(layer, tf.keras.layers.DepthwiseConv2D)
    conv_base = type(layer).call

    def call(self, inputs):
        if not state.exporting_qat:
            return conv_base(self, inputs)
        kernel = self.depthwise_kernel if depthwise else self.kernel
        quantized = _folded_kernel(state, kernel, depthwise, bn)
        if depthwise:
            return _depthwise(self, inputs, quantized)
        outputs = self.convolution_op(inputs, quantized)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    _swap_class(layer, {"call": call})
    if bn is None:
        return
    bn_base = type(bn).call

    def bn_call(self, inputs, *args, **kwargs):
        if not state.exporting_qat:
            return bn_base(self, inputs, *args, **kwargs)
        scale = _fold_of(self)()
        shift = self.beta if self.beta is not None else 0.0
        return inputs + (shift - self.moving_mean * scale)

    _swap_class(bn, {"call": bn_call})


def _wrap_output(state: _State, layer) -> None:
    layer_range = state.new_range()  # in the closure, not on the layer (see _State)
    base = type(layer).call

    def call(self, *args, **kwargs):
        return _quantize_output(state, layer_range, base(self, *args, **kwargs))

    _swap_class(layer, {"call": call})


def _plan(model) -> tuple[list, list]:
    """(conv layers with the batch norm that follows each, or None; layers whose output is
    quantized), from the order the OD API's containers list their layers (conv, batch
    norm, activation), checked on the built model's shapes."""
    import tensorflow as tf

    convs = (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D)
    layers = [m for m in model.submodules if isinstance(m, tf.keras.layers.Layer)
              and not list(m._flatten_layers(include_self=False, recursive=False))]
    pairs, outputs = [], []
    for i, layer in enumerate(layers):
        after = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, convs):
            bn = after if _is_norm(after) and _channels(after) == _out_channels(
                layer) else None
            pairs.append((layer, bn))
            if bn is None:  # a head's output, or a conv whose output feeds on directly
                outputs.append(layer)
        elif _is_norm(layer):
            if not isinstance(after, tf.keras.layers.Lambda) and not _is_activation(after):
                outputs.append(layer)
        elif isinstance(layer, (tf.keras.layers.Lambda, tf.keras.layers.ReLU,
                                tf.keras.layers.Add)) or _is_activation(layer):
            outputs.append(layer)
    return pairs, outputs


def _is_norm(layer) -> bool:
    """A batch norm (the OD API's FreezableBatchNorm derives from Keras' V1 class, which
    ``tf.keras.layers.BatchNormalization`` is not a base of)."""
    return getattr(layer, "moving_variance", None) is not None


def _is_activation(layer) -> bool:
    import tensorflow as tf

    return isinstance(layer, (tf.keras.layers.ReLU, tf.keras.layers.Activation))


def _channels(bn) -> int | None:
    return int(bn.moving_variance.shape[-1]) if getattr(bn, "moving_variance", None) \
        is not None else None


def _out_channels(conv) -> int | None:
    import tensorflow as tf

    if isinstance(conv, tf.keras.layers.DepthwiseConv2D):
        kernel = getattr(conv, "depthwise_kernel", None)
        return int(kernel.shape[2] * kernel.shape[3]) if kernel is not None else None
    return int(conv.filters)


def install(model, qat: Settings, image_shape: tuple[int, int, int],
            export: str | None = None) -> _State:
    """Make ``model`` (an OD API Keras SSD, freshly built) train and run with fake
    quantization (module docstring). The model is built once on a blank batch of
    ``image_shape`` (height, width, channels) so its layers have their shapes.
    ``export`` (``"per-channel"``, ``"per-tensor"``, ``"checkpoint"``) builds the graph an
    exporter traces instead (:func:`_wrap_folded`). Returns the shared state (its
    ``global_step`` is set by the training loop's hook)."""
    import tensorflow as tf

    was = getattr(model, "_is_training", False)
    model._is_training = False  # build without moving any batch-norm statistic
    try:
        images, shapes = model.preprocess(tf.zeros([1, *image_shape]))
        model.predict(images, shapes)
    finally:
        model._is_training = was
    state = _State(model, qat, export)
    pairs, outputs = _plan(model)
    for conv, bn in pairs:
        _wrap_conv(state, conv, bn)
    for layer in outputs:
        _wrap_output(state, layer)
    predict = model.predict

    def predict_with_switch(*args, **kwargs):
        state.switch()
        return predict(*args, **kwargs)

    model.predict = predict_with_switch
    model._tfod_qat = state
    log.info("qat: %d conv kernels (%d folded with their batch norm%s) and %d activations "
             "fake-quantized to %d/%d bits from step %d", len(pairs),
             sum(bn is not None for _, bn in pairs),
             "" if not qat.per_channel else ", per channel", len(outputs), qat.weight_bits,
             qat.activation_bits, qat.delay)
    return state


def install_from(model, configs: dict) -> _State | None:
    """:func:`install` when ``configs`` has a quantization block (else nothing); weights
    per channel unless ``configs["tfod_qat_per_channel"]`` is False (``tfod train
    --qat-per-tensor``)."""
    qat = settings(configs, configs.get("tfod_qat_per_channel", True))
    if qat is None:
        return None
    why = unsupported(configs["model"])
    if why is not None:
        from tfod.errors import ConfigError

        raise ConfigError(f"graph_rewriter.quantization: quantization-aware training does not "
                          f"support the {why}", where="graph_rewriter",
                          fix=f"use an SSD with one of {', '.join(SUPPORTED)}, or remove the "
                              "quantization block (int8 export then uses post-training "
                              "quantization)")
    return install(model, qat, image_shape(configs["model"]))


def image_shape(model_config) -> tuple[int, int, int]:
    """(height, width, 3) of an SSD config's fixed-shape resizer (320x320 otherwise)."""
    resizer = model_config.ssd.image_resizer
    if resizer.WhichOneof("image_resizer_oneof") == "fixed_shape_resizer":
        return (resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width, 3)
    if resizer.WhichOneof("image_resizer_oneof") == "keep_aspect_ratio_resizer":
        side = resizer.keep_aspect_ratio_resizer.max_dimension
        return (side, side, 3)
    return (320, 320, 3)


@contextlib.contextmanager
def building(configs: dict, weights: str = "checkpoint"):
    """While open, ``model_builder.build`` installs QAT's export graph (:func:`install`
    with ``export=weights``) on the SSD it builds when ``configs`` asks for QAT (the
    exporters build their own model)."""
    qat = settings(configs)
    if qat is None:
        yield None
        return
    from object_detection import exporter_lib_v2
    from object_detection.builders import model_builder

    build = model_builder.build
    table = exporter_lib_v2.INPUT_BUILDER_UTIL_MAP

    def build_with_qat(model_config, is_training, *args, **kwargs):
        model = build(model_config, is_training, *args, **kwargs)
        install(model, qat, image_shape(model_config), export=weights)
        return model

    model_builder.build = table["model_build"] = build_with_qat
    try:
        yield qat
    finally:
        model_builder.build = table["model_build"] = build
