"""User values into proto fields: ``--set key=value`` overrides, ``--augment`` steps,
``--quantize`` options, ``--freeze``; each refused with the field's own names as
suggestions when it does not exist."""

from __future__ import annotations

import difflib
from typing import Any, Sequence

from tfod.errors import ConfigError


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _assign(message, name: str, value: Any, where: str) -> None:
    """Set one scalar field (appends to a repeated one) with the types protobuf 7 wants."""
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.message_type is not None:
        raise ConfigError(f"{name!r} is a message, not a value", where=where,
                          fix="set one of its fields, or edit this block in the config")
    value = _parse_value(value) if isinstance(value, str) else value
    try:
        if field.enum_type is not None and isinstance(value, str):
            if value not in field.enum_type.values_by_name:
                raise ConfigError(f"{name} has no value {value!r}", where=where,
                                  fix=f"use one of {', '.join(field.enum_type.values_by_name)}")
            value = field.enum_type.values_by_name[value].number
        elif field.type in (field.TYPE_INT32, field.TYPE_INT64, field.TYPE_UINT32,
                            field.TYPE_UINT64):
            value = int(value)  # protobuf 7 refuses bool/float for integer fields
        elif field.type in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
            value = float(value)
        elif field.type == field.TYPE_STRING:
            value = str(value)
        if field.is_repeated:
            getattr(message, name).append(value)
        else:
            setattr(message, name, value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value {value!r} for {name} ({exc})", where=where,
                          fix="give a value of the field's type") from None


def _unknown_field(message, name: str, where: str, what: str) -> ConfigError:
    fields = list(message.DESCRIPTOR.fields_by_name)
    close = difflib.get_close_matches(name, fields, n=3)
    return ConfigError(f"{what} {name!r}", where=where,
                       fix=f"did you mean {', '.join(close)}?" if close else
                       f"valid: {', '.join(sorted(fields)) or '(no options)'}")


def augmentation_names() -> list[str]:
    """Every preprocessing step the OD API knows (the PreprocessingStep oneof).

    Example:
        >>> "ssd_random_crop" in augmentation_names()
        True
    """
    from object_detection.protos import preprocessor_pb2

    oneof = preprocessor_pb2.PreprocessingStep.DESCRIPTOR.oneofs_by_name["preprocessing_step"]
    return sorted(field.name for field in oneof.fields)


def parse_augment(spec: str | Sequence[str]) -> list:
    """``PreprocessingStep`` messages from a named list.

    Steps are separated by commas; options follow the name after ``:`` as
    ``key=value`` pairs (several separated by ``:``; a repeated field takes one
    pair per value).

    Example:
        >>> parse_augment("random_horizontal_flip,random_adjust_brightness:max_delta=0.2")
    """
    from object_detection.protos import preprocessor_pb2

    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = augmentation_names()
    steps = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, *options = item.split(":")
        name = name.strip()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            raise ConfigError(f"unknown augmentation {name!r}", where="--augment",
                              fix=(f"did you mean {', '.join(close)}? " if close else "")
                              + "see `tfod.config.augmentation_names()` for all of them")
        step = preprocessor_pb2.PreprocessingStep()
        options_message = getattr(step, name)
        options_message.SetInParent()
        for option in options:
            key, sep, value = option.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"option {option!r} of {name} has no value", where="--augment",
                                  fix=f"write {name}:KEY=VALUE")
            if key not in options_message.DESCRIPTOR.fields_by_name:
                raise _unknown_field(options_message, key, "--augment",
                                     f"{name} has no option")
            _assign(options_message, key, value.strip(), f"--augment {name}")
        steps.append(step)
    return steps


def parse_quantize(spec: str | dict | None) -> Any:
    """A ``GraphRewriter`` message with its quantization block from ``delay=..,weight_bits=..``.

    Example:
        >>> parse_quantize("delay=1800,weight_bits=8,activation_bits=8")
    """
    from object_detection.protos import graph_rewriter_pb2

    rewriter = graph_rewriter_pb2.GraphRewriter()
    quantization = rewriter.quantization
    quantization.SetInParent()
    if isinstance(spec, str):
        pairs = [p.partition("=") for p in spec.split(",") if p.strip()]
        bad = [k for k, sep, _ in pairs if not sep]
        if bad:
            raise ConfigError(f"quantization option {bad[0]!r} has no value", where="--quantize",
                              fix="write delay=1800,weight_bits=8,activation_bits=8")
        spec = {k.strip(): v.strip() for k, _, v in pairs}
    for key, value in (spec or {}).items():
        if key not in quantization.DESCRIPTOR.fields_by_name:
            raise _unknown_field(quantization, key, "--quantize", "quantization has no option")
        _assign(quantization, key, value, "--quantize")
    for key in ("delay", "weight_bits", "activation_bits"):  # write them out explicitly
        setattr(quantization, key, getattr(quantization, key))
    return rewriter


def set_dotted(configs: dict, key: str, value: Any) -> None:
    """``train_config.batch_size=4`` style override on the proto messages."""
    parts = key.split(".")
    if parts[0] not in configs:
        close = difflib.get_close_matches(parts[0], list(configs), n=3)
        raise ConfigError(f"unknown key {key!r}", where="--set",
                          fix=f"start with one of {', '.join(configs)}"
                          + (f" (did you mean {', '.join(close)}?)" if close else ""))
    message = configs[parts[0]]
    for i, part in enumerate(parts[1:], 1):
        fields = message.DESCRIPTOR.fields_by_name
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=3)
            raise ConfigError(
                f"unknown key {key!r}: {'.'.join(parts[:i])} has no field {part!r}",
                where="--set", fix=f"did you mean {', '.join(close)}?" if close else
                f"fields: {', '.join(sorted(fields))}")
        if i == len(parts) - 1:
            descriptor = fields[part]
            if descriptor.is_repeated:
                del getattr(message, part)[:]  # a --set replaces a repeated field
            _assign(message, part, value, f"--set {key}")
        else:
            message = getattr(message, part)


FREEZE_CHOICES = ("feature_extractor", "none")


# Box predictor variables of an SSD model ("BoxPredictor/..." and
# "WeightSharedConvolutionalBoxPredictor/..."). The Keras backbones carry no common scope
# (MobileNetV2's are "block_1_expand/kernel", ...), so freezing the feature extractor is
# written as "train only these" (update_trainable_variables), not as a list to freeze.
SSD_BOX_PREDICTOR_VARIABLES = r"BoxPredictor/"


def set_freeze(configs: dict, what: str) -> None:
    """Which variables training updates: ``feature_extractor`` freezes the feature
    extractor (backbone and FPN) and trains the box predictor; ``none`` trains all.

    Writes ``train_config.update_trainable_variables`` / ``freeze_variables`` (regexes
    searched in variable names, as in the OD API; both replaced, not appended to).
    TF2's ``model_lib_v2`` ignores these fields (tensorflow/models#10167):
    :func:`freeze_model` applies them to the model that training builds.

    Example:
        >>> configs = load_configs("runs/pets/pipeline.config")
        >>> set_freeze(configs, "feature_extractor")
    """
    if what not in FREEZE_CHOICES:
        close = difflib.get_close_matches(str(what), FREEZE_CHOICES, n=1)
        raise ConfigError(f"unknown freeze choice {what!r}", where="--freeze",
                          fix=(f"did you mean {close[0]}? " if close else "")
                          + f"use one of: {', '.join(FREEZE_CHOICES)}")
    train_config = configs["train_config"]
    del train_config.update_trainable_variables[:]
    del train_config.freeze_variables[:]
    if what == "none":
        return
    arch = configs["model"].WhichOneof("model")
    if arch != "ssd":
        raise ConfigError(f"--freeze feature_extractor is defined for SSD models, not {arch}",
                          where="model", fix="list the variables to freeze yourself in "
                          "train_config.freeze_variables (regexes of variable names)")
    train_config.update_trainable_variables.append(SSD_BOX_PREDICTOR_VARIABLES)
