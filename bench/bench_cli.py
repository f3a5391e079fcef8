"""`bsm --help` against `ray --help`: wall time of each as a fresh process, median of 5, interleaved.

python bench/bench_cli.py [--n 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from typing import Any

from common import run_cli


def run(n: int = 5) -> dict[str, Any]:
    bsm = (
        [shutil.which("bsm") or sys.executable, "--help"]
        if shutil.which("bsm")
        else [sys.executable, "-m", "raytune_bsm.cli", "--help"]
    )
    ray = (
        [shutil.which("ray"), "--help"]
        if shutil.which("ray")
        else [sys.executable, "-m", "ray.scripts.scripts", "--help"]
    )
    run_cli(bsm), run_cli(ray)  # warm the file cache
    times: dict[str, list[float]] = {"bsm": [], "ray": []}
    for _ in range(n):
        times["bsm"].append(run_cli(bsm))
        times["ray"].append(run_cli(ray))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"bsm_s": med["bsm"], "ray_s": med["ray"], "ratio": med["bsm"] / med["ray"], "n": n}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=5)
    r = run(p.parse_args().n)
    print(
        f"bsm --help {r['bsm_s']:.2f}s, ray --help {r['ray_s']:.2f}s (median of {r['n']}): bsm/ray = {r['ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
