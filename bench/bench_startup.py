"""A real `bsm submit --follow` on a local cluster bsm starts: time to the first training step, the whole run, the export.

    python bench/bench_startup.py [--work /tmp/bsm-bench-startup] [--rows 2000]

Everything is the user's path: `bsm up`, `bsm demo-data`, `bsm submit --follow` as subprocesses, on a BSM_HOME of
the benchmark's own (its cluster is stopped at the end with `bsm down`). Two runs:

- the default model (all-MiniLM-L6-v2, 8 chunks x 128 tokens) for 3 training steps: the time from submission to
  the first training step as the user sees it (the first `epoch 1/1  step` line reaching `--follow`), and the
  export of that model (its manifest's own timings);
- a tiny BERT for one whole epoch over `--rows` dialogues: the whole run, submission to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TINY = [
    "encoder_config={vocab_size: 30522, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, "
    "intermediate_size: 64, max_position_embeddings: 128}",
    "max_tokens=64",
    "max_chunks=4",
    "lr=0.001",
]
FIRST_STEP = re.compile(r"epoch 1/\d+\s+step \d+/\d+")


def _bsm(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BSM_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "raytune_bsm.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def follow(home: Path, *args: str, timeout: float = 1800) -> dict[str, Any]:
    """`bsm submit --follow ARGS`: seconds to the first training step line and to the end, and the job id."""
    env = {**os.environ, "BSM_HOME": str(home)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "raytune_bsm.cli", "submit", "--follow", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first, tail = None, []
    assert proc.stderr is not None
    for line in proc.stderr:
        if first is None and FIRST_STEP.search(line):
            first = time.perf_counter() - t0
        tail = (tail + [line])[-40:]
    out = proc.stdout.read() if proc.stdout else ""
    if proc.wait(timeout=timeout) != 0:
        raise RuntimeError("bsm submit failed:\n" + "".join(tail))
    return {"first_step_s": first, "total_s": time.perf_counter() - t0, "job_id": out.strip().splitlines()[0]}


def run(work: str | None = None, rows: int = 2000, log: Any = print) -> dict[str, Any]:
    root = Path(work or tempfile.mkdtemp(prefix="bsm-bench-startup-"))
    home = root / f"home-{os.getpid()}"
    t = time.perf_counter()
    _bsm(home, "up")
    up_s = time.perf_counter() - t
    try:
        data = root / f"data-{rows}"
        if not (data / "train.parquet").exists():
            _bsm(home, "demo-data", "--out", str(data), "--rows", str(rows))
        splits = ["--train", str(data / "train.parquet"), "--val", str(data / "val.parquet")]
        default = follow(
            home,
            *splits,
            "--name",
            "startup-default",
            "--max-epochs",
            "1",
            "--set",
            "limit_train_batches=3",
            "--set",
            "limit_val_batches=2",
        )
        log(
            f"default model: first training step {default['first_step_s']:.1f}s after submission, "
            f"run {default['total_s']:.1f}s"
        )
        manifest = json.loads((home / "runs" / "startup-default" / "export" / "manifest.json").read_text())
        tiny = follow(
            home, *splits, "--name", "startup-tiny", "--max-epochs", "1", *[a for s in TINY for a in ("--set", s)]
        )
        log(
            f"tiny model, {rows} rows, one epoch: first step {tiny['first_step_s']:.1f}s, whole run {tiny['total_s']:.1f}s"
        )
        result = json.loads((home / "runs" / "startup-tiny" / "bsm_result.json").read_text())
    finally:
        _bsm(home, "down")
    return {
        "cluster_up_s": up_s,
        "default": default,
        "export_timings": manifest.get("timings"),
        "tiny": tiny,
        "tiny_result_timings": result.get("timings"),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=None)
    ap.add_argument("--rows", type=int, default=2000)
    a = ap.parse_args()
    print(json.dumps(run(a.work, a.rows), indent=2))


if __name__ == "__main__":
    main()
