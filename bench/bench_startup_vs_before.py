"""Start-up and whole-run time of a small job on today's data path against the path before Ray Data, side by side.

    python bench/bench_startup_vs_before.py [--rows 2000] [--rounds 2] [--before c8a782b]

"Before" is the commit ahead of the Ray Data training path (`--before`, default c8a782b: the job driver read and
tokenized every split, then every Train worker read and tokenized them again). It is checked out into a temporary
git worktree and run with `PYTHONPATH` pointing there, so its client ships its own package to the job; "now" is
this tree. Both submit to one local cluster bsm starts (`bsm up`, its own BSM_HOME), the same demo files
(train/val/test), the same tiny BERT for one epoch, in alternating rounds (before, now, before, now), so a change
in the machine's load falls on both. Measured as the user sees it, through `bsm submit --follow`: seconds from
submission to the first training-progress line (rank 0 prints one every 10% of an epoch's steps, so this is start-up
plus a tenth of the epoch), and to the command's exit. Medians over the rounds, and now ÷ before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_startup import TINY, follow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _bsm(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "raytune_bsm.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )


def run(rows: int = 2000, rounds: int = 2, before: str = "c8a782b", log: Any = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bsm-bench-before-") as tmp:
        root = Path(tmp)
        old = root / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), before], check=True)
        home = root / "home"
        env = {**os.environ, "BSM_HOME": str(home)}
        try:
            _bsm(env, "up")
            data = root / "data"
            _bsm(env, "demo-data", "--out", str(data), "--rows", str(rows))
            args = [
                "--train",
                str(data / "train.parquet"),
                "--val",
                str(data / "val.parquet"),
                "--test",
                str(data / "test.parquet"),
                "--max-epochs",
                "1",
                *[a for s in TINY for a in ("--set", s)],
            ]
            sides = {"before": str(old), "now": str(ROOT)}
            times: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
            for r in range(rounds):
                for side, path in sides.items():
                    side_env = {"PYTHONPATH": path}
                    os.environ.update(side_env)  # follow() passes os.environ on
                    try:
                        t = follow(home, *args, "--name", f"{side}-{r}")
                    finally:
                        os.environ.pop("PYTHONPATH", None)
                    times[side].append(t)
                    log(
                        f"round {r + 1} {side}: first training step {t['first_step_s']:.1f} s, whole run {t['total_s']:.1f} s"
                    )
        finally:
            subprocess.run([sys.executable, "-m", "raytune_bsm.cli", "down"], env=env, capture_output=True)
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    med = {
        side: {k: statistics.median(t[k] for t in ts) for k in ("first_step_s", "total_s")}
        for side, ts in times.items()
    }
    return {
        "rows": rows,
        "rounds": rounds,
        "before": before,
        "runs": times,
        "median": med,
        "first_step_ratio": med["now"]["first_step_s"] / med["before"]["first_step_s"],
        "total_ratio": med["now"]["total_s"] / med["before"]["total_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before", default="c8a782b")
    a = ap.parse_args()
    r = run(a.rows, a.rounds, a.before)
    print(json.dumps({k: v for k, v in r.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
