"""Records tokenized per second by bsm's Ray Data stage on a `ray.cluster_utils.Cluster` of 1 and of 2 nodes.

    python bench/bench_tokenize_nodes.py [--rows 20000] [--cpus-per-node 1] [--rounds 2]

The same split (demo dialogues, a directory of Parquet files) goes through `data.ray_data.prepare_split` (read,
distributed checks, `map_batches(tokenize)` as Ray tasks over every node's CPUs) and is materialized; the time is
that pass, start to finish, with the cluster already up and warm. On one machine the simulated nodes share its
cores, so each node gets one CPU by default: one node uses one of this machine's cores, two nodes use two, as a
second one-core machine would add one (the ratio can reach at most the cores this machine has free: 2x here). The two sizes run in alternating rounds (1, 2, 1, 2)
and each keeps its best, so a change in the machine's load hits both.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one core per tokenizer actor: the CPUs Ray gave it

FILES = 8


def write_split(rows: int, out: Path) -> Path:
    import pyarrow.parquet as pq

    from raytune_bsm.demo.generator import make_dialogues

    table = make_dialogues(rows, seed=11)
    out.mkdir(parents=True, exist_ok=True)
    step = -(-rows // FILES)
    for k in range(FILES):
        pq.write_table(table.slice(k * step, step), out / f"part-{k}.parquet")
    return out


def tokenize_once(data: Path) -> tuple[float, int]:
    """Seconds for one read-check-tokenize pass over `data` on the connected cluster, and the records out."""
    from raytune_bsm.config import DataConfig
    from raytune_bsm.data.ray_data import prepare_split

    cfg = DataConfig(text_field="dialogue", label_field="reversal_flag")
    processor = {"tokenizer": "all-MiniLM-L6-v2", "max_tokens": 128, "max_chunks": 8}
    t = time.perf_counter()
    split = prepare_split(str(data), cfg, processor)
    rows = split.dataset.materialize().count()
    return time.perf_counter() - t, rows


def on_cluster(nodes: int, cpus: int, data: Path) -> tuple[float, int]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus, runtime_env_dir_name=f"runtime_resources_{_}")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        tokenize_once(data)  # warm-up: worker processes build the tokenizer, files are cached
        return tokenize_once(data)
    finally:
        ray.shutdown()
        cluster.shutdown()


def run(rows: int = 20000, cpus_per_node: int = 1, rounds: int = 2, log: Any = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bsm-bench-tok-") as tmp:
        data = write_split(rows, Path(tmp) / "train")
        best: dict[int, float] = {}
        for r in range(rounds):
            for nodes in (1, 2):
                seconds, out = on_cluster(nodes, cpus_per_node, data)
                best[nodes] = min(best.get(nodes, float("inf")), seconds)
                log(
                    f"round {r + 1}: {nodes} node(s) x {cpus_per_node} CPU: {out} records in {seconds:.1f}s "
                    f"({out / seconds:,.0f} records/s)"
                )
    per_s = {n: rows / s for n, s in best.items()}
    return {"rows": rows, "cpus_per_node": cpus_per_node, "records_per_s": per_s, "ratio": per_s[2] / per_s[1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    r = run(a.rows, a.cpus_per_node, a.rounds)
    print(
        f"1 node: {r['records_per_s'][1]:,.0f} records/s; 2 nodes: {r['records_per_s'][2]:,.0f} records/s; "
        f"2 nodes / 1 node = {r['ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
