"""TensorBoard over the runs folder, bound to the loopback address by default."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from tfod.errors import TfodError

log = logging.getLogger(__name__)


def tensorboard(logdir: str | Path = "runs", port: int = 6006, host: str = "127.0.0.1") -> int:
    """Run TensorBoard in the foreground until Ctrl-C; returns its exit code.

    Example:
        >>> tensorboard("runs", port=6006)
    """
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise TfodError("log folder not found", where=str(logdir),
                        fix="train a run first, or pass --logdir")
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
           "--port", str(port), "--host", host]
    log.info("tensorboard: http://%s:%d/ over %s (Ctrl-C stops it)", host, port, logdir)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
