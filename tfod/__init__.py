"""tfod: fine-tune TensorFlow Object Detection API models, from data to TFLite.

Importing tfod is cheap: it installs the compat import hook (no TensorFlow
import). The stage functions are loaded on first use; modules are nouns
(``tfod.training``) and their public functions verbs (``tfod.train``), so the
two never shadow each other.

Example:
    >>> import tfod
    >>> tfod.prepare_dataset("data/raw/voc", name="pets")
    >>> tfod.train("runs/pets/pipeline.config", run="pets")
"""

# no `from __future__ import annotations` here: it would bind the name `annotations` in
# this package and shadow the submodule (`from tfod import annotations`)
import importlib

from tfod import compat
from tfod.errors import ConfigError, DatasetError, ExportError, TfodError, TrainError

__version__ = "0.1.0"

compat.install()

# public name -> module that defines it
_LAZY = {
    "synthesize": "tfod.data.synth",
    "prepare_dataset": "tfod.data.prepare",
    "patch_pipeline": "tfod.config",
    "train": "tfod.training",
    "evaluate": "tfod.evaluation",
    "export": "tfod.exporter",
    "export_saved_model": "tfod.exporter",
    "export_tflite": "tfod.exporter",
    "export_frozen_graph": "tfod.exporter",
    "predict": "tfod.inference",
    "doctor": "tfod.diagnostics",
    "demo": "tfod.demonstration",
    "tensorboard": "tfod.dashboard",
    "list_runs": "tfod.runs",
    "diff_runs": "tfod.runs",
    "plot_run": "tfod.plots",
    "patch_pipeline_for_dataset": "tfod.config",
    "check_pipeline": "tfod.config",
    "write_tfrecords": "tfod.data.shards",
    "write_label_map": "tfod.data.labelmap",
    "load_detector": "tfod.inference",
}

__all__ = ["ConfigError", "DatasetError", "ExportError", "TfodError", "TrainError",
           "compat", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfod' has no attribute {name!r}")
