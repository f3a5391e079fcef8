"""Issue 8.2: the local cluster bsm starts runs jobs with the interpreter bsm runs under, whatever PATH says.

`bsm submit --follow` is run as a user of a virtual environment who never activated it would: bsm invoked by
its absolute path, with a PATH (/usr/bin:/bin) from which bsm's environment is absent, on a fresh BSM_HOME
so bsm starts its own cluster. The job's `python` must still be bsm's (with ray, pyarrow, torch...).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY_SETS

pytestmark = pytest.mark.slow

BARE_PATH = "/usr/bin:/bin"


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "RAY_ADDRESS",
            "RAY_API_SERVER_ADDRESS",
            "RAY_AUTH_TOKEN",
            "RAY_AUTH_TOKEN_PATH",
            "VIRTUAL_ENV",
            "PYTHONPATH",
        )
    }
    return {**env, "BSM_HOME": str(home), "PATH": BARE_PATH}


def _bsm(home: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raytune_bsm.cli", *args],
        env=_env(home),
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def fresh_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "bsm-home"
    try:
        yield home
    finally:
        down = _bsm(home, "down", timeout=180)
        assert down.returncode == 0, down.stderr[-2000:]
        assert not (home / "cluster.json").exists()


def test_submit_follow_with_bsm_env_absent_from_path(fresh_home: Path) -> None:
    bsm_dir = os.path.dirname(sys.executable)
    assert bsm_dir not in BARE_PATH.split(":"), "this test needs bsm's interpreter outside /usr/bin:/bin"
    sets = [a for s in TINY_SETS + ["demo_rows=120"] for a in ("--set", s)]
    done = _bsm(fresh_home, "submit", "--follow", "--name", "bare-path", "--max-epochs", "1", *sets, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "job bsm-bare-path: SUCCEEDED" in done.stderr
    assert done.stdout.strip().splitlines()[0] == "bsm-bare-path"
    # The head's jobs see bsm's interpreter first on PATH, and the record says which one it is.
    record = (fresh_home / "cluster.json").read_text()
    assert sys.executable in record
    assert (fresh_home / "bin" / "python").read_text().endswith(f'exec {sys.executable} "$@"\n')
