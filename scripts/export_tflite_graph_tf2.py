#!/usr/bin/env python
"""Drop-in for the OD API's `object_detection/export_tflite_graph_tf2.py` on TensorFlow 2.20.

Takes exactly the upstream flags and runs the upstream `main` (TFLite-ready SavedModel export (export_tflite_graph_lib_tf2));
the only difference is that tfod's compat layer is installed first, so every
OD API tutorial command works unchanged, e.g.::

    python scripts/export_tflite_graph_tf2.py --helpfull
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfod  # noqa: E402,F401  (installs the compat layer before the OD API loads)
from absl import app, flags  # noqa: E402
from object_detection import export_tflite_graph_tf2  # noqa: E402

if __name__ == "__main__":
    # upstream marks these in its own __main__ block, which importing skips
    for _flag in ("pipeline_config_path", "trained_checkpoint_dir", "output_directory"):
        flags.mark_flag_as_required(_flag)
    app.run(export_tflite_graph_tf2.main)
