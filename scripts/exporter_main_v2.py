#!/usr/bin/env python
"""Drop-in for the OD API's `object_detection/exporter_main_v2.py` on TensorFlow 2.20.

Takes exactly the upstream flags and runs the upstream `main` (SavedModel export (exporter_lib_v2));
the only difference is that tfod's compat layer is installed first, so every
OD API tutorial command works unchanged, e.g.::

    python scripts/exporter_main_v2.py --helpfull
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfod  # noqa: E402,F401  (installs the compat layer before the OD API loads)
from absl import app  # noqa: E402
from object_detection import exporter_main_v2  # noqa: E402

if __name__ == "__main__":
    app.run(exporter_main_v2.main)
