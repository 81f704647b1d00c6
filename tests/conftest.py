"""Shared pytest set-up: tfod's compat hook first, quiet TensorFlow, dataset paths."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tfod  # noqa: E402,F401  (installs the compat hook before any OD API import)

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

import threading  # noqa: E402

import pytest  # noqa: E402
import tqdm  # noqa: E402

# tqdm's default lock includes a multiprocessing lock, shared by every process forked
# after it was made: a forked process killed while holding it (mutmut forks each mutant's
# worker from the process that ran every selected test, `make mutation`, and kills the
# ones that time out) leaves it taken, and every later worker hangs on its first progress
# bar. A thread lock is copied at fork instead of shared; no monitor thread either.
tqdm.tqdm.set_lock(threading.RLock())
tqdm.tqdm.monitor_interval = 0

TINY_STEPS = 6


def dataset_tool(name: str):
    """One of the OD API's ``dataset_tools`` scripts, imported for its functions. Each defines
    absl flags when imported, several of the same names (``data_dir``, ``output_path``,
    ``label_map_path``), and absl refuses a second definition in one process: the tests use
    the functions, not the flags, so the clashing flags are dropped first."""
    import importlib
    import sys

    from absl import flags

    module = f"object_detection.dataset_tools.{name}"
    if module not in sys.modules:
        for flag in ("data_dir", "output_path", "label_map_path"):
            if flag in flags.FLAGS:
                delattr(flags.FLAGS, flag)
    return importlib.import_module(module)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A prepared synthetic dataset and a tiny SSD trained TINY_STEPS steps with tfod.training."""
    from tfod.data import prepare_dataset
    from tfod.config import patch_pipeline_for_dataset
    from tfod.data.synth import synthesize
    from tfod.training import train

    root = tmp_path_factory.mktemp("tiny")
    synthesize(root / "raw", num_train=16, num_val=6, seed=1)
    prepared = prepare_dataset(root / "raw", "tiny", out_root=root / "data",
                               label_map_dir=root / "label_maps")
    config = patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", root / "tiny.config",
                                        data_dir=prepared["dir"], num_steps=TINY_STEPS,
                                        batch_size=2)
    result = train(config, run_dir=root / "runs" / "tiny", seed=0)
    return {"root": root, "data": prepared["dir"], "config": config,
            "run_dir": root / "runs" / "tiny", "train": result}


@pytest.fixture(scope="session")
def tiny_export(tiny_run):
    """tiny_run exported ONCE in every format, each scored (tfod.exporter.export) against
    the checkpoint's own eval: (result dict, export folder). Shared by test_exporter and
    test_inference."""
    import logging

    from tfod.exporter import export

    out = tiny_run["root"] / "exports" / "tiny"
    logger = logging.getLogger("tfod")
    level = logger.level
    logger.setLevel(logging.INFO)  # export.log at the command line's level
    try:
        return export(tiny_run["run_dir"], out_dir=out, formats=["all"],
                      calibration_images=8, evaluate_checkpoint=True), out
    finally:
        logger.setLevel(level)
