"""Peak RSS of every process of a short training job, at two data sizes: does memory follow the data?

    python bench/bench_memory.py [--rows 20000 200000] [--batches 3]

For each size: demo dialogues (`raytune_bsm.demo`) written as Parquet (the training and validation splits as directories of
files of 10,000 rows, the way a large dataset on s3 comes; one file is read as one block), a local Ray cluster this script starts
(`ray.cluster_utils.Cluster`, one node, 2 CPUs) and stops, and the real job entrypoint
(`python -m raytune_bsm.runner.train bsm_job.json`) as a subprocess: a tiny BERT, 2 CPU workers, a few training
batches, no export. A sampler reads the RSS (psutil) of the driver and of every process under this one every
0.2 s and files each sample under the role the process's title shows at that moment (Ray names a worker process
for the task or actor it runs: `ray::RayTrainWorker...`, `ray::MapBatches(read_unit)->MapBatches(tokenize)`),
so a pooled worker that ran a data task and later something else counts in both.

Prints a table (peak MiB per role and size) and the growth from the smallest to the largest size; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

TINY = dict(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=128,
)
DATA_MARKS = ("Read", "MapBatches", "MapWorker", "Tokenize", "SplitCoordinator", "split", "Materialize")


def role(p: psutil.Process, driver: int) -> str | None:
    """What a process is doing now, from its pid or its Ray process title; None for processes not of interest."""
    if p.pid == driver:
        return "job driver"
    try:
        title = " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if not title.startswith("ray::"):
        return None
    if "RayTrainWorker" in title:
        return "train worker"
    if any(m in title for m in DATA_MARKS):
        return "data task/actor"
    if "TrainController" in title:
        return "train controller"
    return None  # idle pool workers, the export task (off here), Ray's own daemons


class Sampler(threading.Thread):
    """Peak RSS per (role, pid) of everything under this process, until stopped."""

    def __init__(self, driver: int) -> None:
        super().__init__(daemon=True)
        self.driver, self.peaks, self.done = driver, {}, threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.done.is_set():
            for p in me.children(recursive=True):
                r = role(p, self.driver)
                if r is None:
                    continue
                try:
                    m = p.memory_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                for kind, value in (("rss", m.rss), ("private", m.rss - m.shared)):
                    key = (kind, r, p.pid)
                    self.peaks[key] = max(self.peaks.get(key, 0), value)
            time.sleep(0.2)


ROWS_PER_FILE = 10_000  # the training split as a directory of files of this many rows, as a dataset on s3 comes


def split_into_files(src: Path, out: Path, rows_per_file: int) -> Path:
    """`src` rewritten as `out/part-K.parquet` files of at most `rows_per_file` rows (`src` removed)."""
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    out.mkdir()
    for k, start in enumerate(range(0, table.num_rows, rows_per_file)):
        pq.write_table(table.slice(start, rows_per_file), out / f"part-{k:04d}.parquet")
    src.unlink()
    return out


def job(rows: int, root: Path, batches: int) -> tuple[dict[tuple[str, int], int], float, dict]:
    """One short training job on `rows` demo dialogues: (peak RSS per (role, pid), seconds, the run's summary)."""
    from ray.cluster_utils import Cluster

    from raytune_bsm.demo.generator import write_demo_data

    data = root / f"data-{rows}"
    write_demo_data(data, rows=rows, seed=0)
    train = split_into_files(data / "train.parquet", data / "train", ROWS_PER_FILE)
    val = split_into_files(data / "val.parquet", data / "val", ROWS_PER_FILE)
    storage = root / f"runs-{rows}"
    spec = {
        "name": f"mem-{rows}",
        "storage": str(storage),
        "model": {"encoder_config": TINY, "max_tokens": 64, "max_chunks": 2},
        "data": {
            "train": str(train),
            "val": str(val),
            "batch_size": 8,
            "driver_prepare_mib": 0,
        },  # through Ray Data at every size: the path that must stay flat
        "train": {"max_epochs": 1, "limit_train_batches": batches, "limit_val_batches": batches, "export": False},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1},
    }
    (root / "bsm_job.json").write_text(json.dumps(spec))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        env = {**os.environ, "RAY_ADDRESS": cluster.address}
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "raytune_bsm.runner.train", str(root / "bsm_job.json")], env=env)
        sampler = Sampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        sampler.done.set()
        sampler.join()
        seconds = time.perf_counter() - t
    finally:
        cluster.shutdown()
    if rc != 0:
        raise SystemExit(f"bench_memory: the job on {rows} rows failed (exit {rc})")
    summary = json.loads((storage / spec["name"] / "bsm_result.json").read_text())
    return sampler.peaks, seconds, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--batches", type=int, default=3, help="training batches (limit_train_batches)")
    args = ap.parse_args()
    mib = 1 << 20
    roles = ["job driver", "train worker", "data task/actor", "train controller"]
    table: dict[int, dict[tuple[str, str, int], int]] = {}
    with tempfile.TemporaryDirectory(prefix="bsm-bench-memory-") as tmp:
        for rows in args.rows:
            peaks, seconds, summary = job(rows, Path(tmp), args.batches)
            table[rows] = peaks
            print(
                f"{rows:>8} dialogues: {seconds:.0f}s, data {json.dumps(summary.get('data'))}, "
                f"timings {json.dumps(summary.get('timings'))}",
                file=sys.stderr,
            )
    for kind, what in (
        ("rss", "peak RSS"),
        (
            "private",
            "peak RSS less shared pages (Ray's object store is shared memory: blocks a process maps count in its RSS)",
        ),
    ):
        print(f"\n{what}")
        sizes = {
            rows: {
                r: sorted((v for (k, rr, _), v in table[rows].items() if k == kind and rr == r), reverse=True)
                for r in roles
            }
            for rows in args.rows
        }
        print(f"{'process':<18}" + "".join(f"{f'{r:,} rows':>22}" for r in args.rows) + f"{'growth':>12}")
        for r in roles:
            cells = [
                f"{sizes[rows][r][0] / mib:.0f} MiB (x{len(sizes[rows][r])})" if sizes[rows][r] else "-"
                for rows in args.rows
            ]
            first, last = sizes[args.rows[0]][r], sizes[args.rows[-1]][r]
            growth = f"{(last[0] - first[0]) / mib:+.0f} MiB" if first and last else "-"
            print(f"{r:<18}" + "".join(f"{c:>22}" for c in cells) + f"{growth:>12}")
        hungriest = [max(v[0] for v in sizes[rows].values() if v) for rows in args.rows]
        print(
            f"hungriest process: {' -> '.join(f'{h / mib:.0f} MiB' for h in hungriest)} "
            f"({(hungriest[-1] - hungriest[0]) / mib:+.0f} MiB, x{hungriest[-1] / hungriest[0]:.2f}) "
            f"for x{args.rows[-1] / args.rows[0]:.0f} the data"
        )


if __name__ == "__main__":
    main()
