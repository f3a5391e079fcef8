"""bsm's log lines: one handler on the "raytune_bsm" logger, to stderr (stdout carries results)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    """bsm's log lines go to stderr, once."""
    root = logging.getLogger("raytune_bsm")
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s bsm %(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(h)
        root.setLevel(level)
        root.propagate = False
