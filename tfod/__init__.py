"""tfod: fine-tune TensorFlow Object Detection API models, from data to TFLite.

Importing tfod is cheap: it installs the compat import hook (no TensorFlow
import). The stage functions are loaded on first use.
"""

from __future__ import annotations

import importlib

from tfod import compat
from tfod.errors import ConfigError, DatasetError, ExportError, TfodError, TrainError

__version__ = "0.1.0"

compat.install()

# public name -> module that defines it
_LAZY = {
    "synthesize": "tfod.synth",
    "prepare_dataset": "tfod.data",
    "patch_pipeline": "tfod.pipeline",
    "train": "tfod.train",
    "evaluate": "tfod.evaluate",
    "export": "tfod.export",
    "export_saved_model": "tfod.export",
    "export_tflite": "tfod.export",
    "predict": "tfod.predict",
    "doctor": "tfod.doctor",
}

__all__ = ["ConfigError", "DatasetError", "ExportError", "TfodError", "TrainError",
           "compat", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfod' has no attribute {name!r}")
