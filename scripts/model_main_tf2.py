#!/usr/bin/env python
"""Drop-in for the OD API's `object_detection/model_main_tf2.py` on TensorFlow 2.20.

Takes exactly the upstream flags and runs the upstream `main` (training and evaluation (model_lib_v2));
the only difference is that tfod's compat layer is installed first, so every
OD API tutorial command works unchanged, e.g.::

    python scripts/model_main_tf2.py --helpfull
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfod  # noqa: E402,F401  (installs the compat layer before the OD API loads)
from absl import app, flags  # noqa: E402
from object_detection import model_main_tf2  # noqa: E402

if __name__ == "__main__":
    # upstream marks these inside main(), after parsing, where a missing flag ends in
    # a traceback instead of a usage message
    for _flag in ("pipeline_config_path", "model_dir"):
        flags.mark_flag_as_required(_flag)
    app.run(model_main_tf2.main)
