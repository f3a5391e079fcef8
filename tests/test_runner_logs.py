"""Clean job logs: the libraries' info chatter is silenced at its loggers (warnings stay, once), bsm's lines
always show, and BSM_VERBOSE=1 (the CLI's --verbose) brings everything back. A real job's log is counted in
test_runner_jobs.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = """
import logging
logging.basicConfig(level=logging.INFO, format="ROOT %(message)s")  # a root handler, as Ray's workers have
from raytune_bsm.logs import quiet_libraries, setup_logging
setup_logging()
quiet_libraries()
import transformers
logging.getLogger("lightning.pytorch").info("LIGHTNING-INFO")
logging.getLogger("lightning.pytorch").warning("LIGHTNING-WARN")
logging.getLogger("ray.train").info("TRAIN-INFO")
transformers.logging.get_logger("transformers.modeling_utils").warning("TRANSFORMERS-REPORT")
logging.getLogger("raytune_bsm").info("BSM-LINE")
"""


def _run(verbose: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("BSM_VERBOSE", "TRANSFORMERS_VERBOSITY")}
    if verbose:
        env["BSM_VERBOSE"] = "1"
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_library_chatter_is_silenced_unless_verbose(verbose):
    text = _run(verbose)
    assert text.count("BSM-LINE") == 1 and text.count("LIGHTNING-WARN") >= 1
    if verbose:
        assert "LIGHTNING-INFO" in text and "TRAIN-INFO" in text and "TRANSFORMERS-REPORT" in text
    else:
        assert "LIGHTNING-INFO" not in text and "TRAIN-INFO" not in text and "TRANSFORMERS-REPORT" not in text
        assert text.count("LIGHTNING-WARN") == 1  # not a second time through the root logger
