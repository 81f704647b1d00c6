"""Shared pytest set-up: tfod's compat hook first, quiet TensorFlow, dataset paths."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tfod  # noqa: E402,F401  (installs the compat hook before any OD API import)

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
