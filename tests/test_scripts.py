"""scripts/: the upstream entry points run unchanged (same flags, upstream main) on TF 2.20."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _run(script: str, *flags: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / script), *flags],
                          capture_output=True, text=True, timeout=timeout)


def test_model_main_tf2_trains(tiny_run, tmp_path):
    # Upstream quirks kept: it runs whole iterations of 100 steps, and writes a
    # checkpoint only every --checkpoint_every_n steps.
    out = _run("model_main_tf2.py", f"--pipeline_config_path={tiny_run['config']}",
               f"--model_dir={tmp_path}", "--num_train_steps=1", "--checkpoint_every_n=100")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "ckpt-2.index").is_file()  # ckpt-1 is upstream's step-0 save
    assert list((tmp_path / "train").glob("events.out.tfevents.*"))


def test_model_main_tf2_requires_flags():
    out = _run("model_main_tf2.py")
    assert out.returncode != 0
    assert "model_dir" in out.stderr


def test_exporter_main_v2(tiny_run, tmp_path):
    out = _run("exporter_main_v2.py", "--input_type=image_tensor",
               f"--pipeline_config_path={tiny_run['config']}",
               f"--trained_checkpoint_dir={tiny_run['run_dir']}",
               f"--output_directory={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    assert (tmp_path / "pipeline.config").is_file()


def test_export_tflite_graph_tf2(tiny_run, tmp_path):
    out = _run("export_tflite_graph_tf2.py", f"--pipeline_config_path={tiny_run['config']}",
               f"--trained_checkpoint_dir={tiny_run['run_dir']}",
               f"--output_directory={tmp_path}", "--max_detections=5")
    assert out.returncode == 0, out.stderr[-3000:]
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved_model"))
    assert len(converter.convert()) > 100_000


@pytest.mark.parametrize("script", ["exporter_main_v2.py", "export_tflite_graph_tf2.py"])
def test_export_scripts_require_flags(script):
    out = _run(script)
    assert out.returncode != 0
    assert "pipeline_config_path" in out.stderr
