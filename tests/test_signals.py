"""SIGTERM and SIGHUP during a command that writes clean up as Ctrl-C does (issue 18, case 5): a real `bsm predict`
subprocess, signalled by pid while its hidden partial output exists, leaves neither that file nor the output, and
exits 128 + the signal's number (143 for SIGTERM, 129 for SIGHUP), as the signal's default action would report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_bad_inputs import exports, ws  # noqa: F401  a real export of the tiny checkpoint

from raytune_bsm.demo.generator import make_dialogues

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """Enough rows that the partial output is written (8,192 rows a write) well before the last row is scored."""
    d = make_dialogues(200, seed=5)
    n = 60_000
    path = tmp_path_factory.mktemp("signals") / "big.parquet"
    texts = d.column("dialogue").to_pylist()
    pq.write_table(pa.table({"dialogue": (texts * (n // len(texts) + 1))[:n], "order_id": list(range(n))}), path)
    return path


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_during_predict_removes_the_partial_output(exports, big_file, tmp_path, sig, code):
    out = tmp_path / "preds.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO), "BSM_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "raytune_bsm.cli", "predict", str(exports / "good"), str(big_file), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(".preds.parquet.tmp-*")):  # the hidden partial output, written while scoring
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no partial output after 240 s"
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == f"bsm: terminated ({sig.name})", stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == []  # no .tmp- file, no output
