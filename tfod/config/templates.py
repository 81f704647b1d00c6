"""Templates (``pipelines/*.config``) and pipeline configs read and written as the OD API's
config dict (``model``, ``train_config``, ``train_input_config``, ...), plus the facts
every stage reads from one (input size, meta-architecture, steps).

``pipeline.config`` (text protobuf) stays the single source of truth: it is read with the
OD API's ``config_util`` and written back from the proto messages, never edited as text.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from tfod.errors import ConfigError


REPO_ROOT = Path(__file__).resolve().parents[2]


PIPELINES_DIR = Path(os.environ.get("TFOD_PIPELINES", REPO_ROOT / "pipelines"))


PLACEHOLDER = "PATH_TO_BE_CONFIGURED"


TFLITE_ARCHS = ("ssd", "center_net")  # what export_tflite_graph_lib_tf2 can convert


def available_templates() -> list[str]:
    """Names of the templates in ``pipelines/`` (file names without ``.config``)."""
    return sorted(p.stem for p in PIPELINES_DIR.glob("*.config"))


def resolve_template(name_or_path: str | Path) -> Path:
    """A template name or a path to an existing ``pipeline.config``.

    Example:
        >>> resolve_template("ssd_mobilenet_v2_tiny")
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = PIPELINES_DIR / f"{name_or_path}.config"
    if candidate.is_file():
        return candidate
    names = available_templates()
    close = difflib.get_close_matches(str(name_or_path), names, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"unknown template {str(name_or_path)!r}", where=str(PIPELINES_DIR),
                      fix=f"{hint}available: {', '.join(names)}")


def load_configs(path: str | Path) -> dict:
    """The OD API's config dict (``model``, ``train_config``, ...) of a file."""
    from google.protobuf import text_format
    from object_detection.utils import config_util

    try:
        return config_util.get_configs_from_pipeline_file(str(path))
    except text_format.ParseError as exc:
        raise ConfigError(f"not a valid pipeline config ({exc})", where=str(path),
                          fix="fix the text protobuf syntax at the line shown") from None


def config_text(configs: dict) -> str:
    """The text protobuf of a config dict, as :func:`save_configs` writes it."""
    from google.protobuf import text_format
    from object_detection.utils import config_util

    return text_format.MessageToString(config_util.create_pipeline_proto_from_configs(configs))


def save_configs(configs: dict, path: str | Path) -> Path:
    """Write a config dict as ``pipeline.config`` text, atomically."""
    from tfod.files import write_text_atomic

    return write_text_atomic(path, config_text(configs))


def num_steps(path: str | Path) -> int:
    return int(load_configs(path)["train_config"].num_steps)


def image_size(configs: dict) -> tuple[int, int]:
    """(height, width) the model resizes to."""
    from object_detection.utils import config_util

    h, w = config_util.get_spatial_image_size(config_util.get_image_resizer_config(
        configs["model"]))
    if h < 0 or w < 0:
        return (640, 640)
    return int(h), int(w)


def meta_architecture(configs: dict) -> str:
    return configs["model"].WhichOneof("model")
