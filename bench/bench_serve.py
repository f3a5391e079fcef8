"""`bsm serve` under load, beside `bsm predict` on the same export and CPUs. 127.0.0.1 only; every cell bounded by
a request count and a time limit.

For records of demo length and long ones (4 x 128 tokens): requests/s and p50/p95/p99 latency of one-record
requests at concurrency 1, 8 and 64 (each caller sends its next request when the last one is answered, over a
kept-alive connection), next to offline scoring's records/s (the `Predictor` `bsm predict` uses, in this
process, with the replica's thread count) and the bare time to score one record. Goals (issue 21): at
concurrency 64 at least 0.8x the offline records/s; at concurrency 1 a p50 within 1.5x the bare one-record time.

    python bench/bench_serve.py [--export DIR] [--requests 400] [--seconds 40]
                                (default export: bench/common.py's fine-tuned one, built if missing)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from common import THREADS, Texts, demo_texts, long_texts

CONCURRENCY = (1, 8, 64)


def offline(export: str, texts: list[str], precision: str, rounds: int = 3) -> dict[str, float]:
    """Offline records/s over `texts` (the best of `rounds`) and the median time to score one record alone."""
    from raytune_bsm.scoring.predict import Predictor

    p = Predictor(export, precision=precision, threads=THREADS)
    p.predict_texts(texts[:8])  # warm-up
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        p.predict_texts(texts)
        best = max(best, len(texts) / (time.perf_counter() - t))
    one = []
    for text in texts[:30]:
        t = time.perf_counter()
        p.score(1, p.calls([text], 32))  # tokenize and score, nothing else
        one.append(time.perf_counter() - t)
    return {"records_per_s": best, "one_record_ms": 1000 * statistics.median(one), "graph": p.choice.file}


async def _load(url: str, texts: list[str], concurrency: int, requests: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    failed, sent = [0], [0]
    deadline = time.monotonic() + seconds

    async def caller(session: aiohttp.ClientSession, k: int) -> None:
        while sent[0] < requests and time.monotonic() < deadline:
            text = texts[(sent[0] + k) % len(texts)]
            sent[0] += 1
            t = time.perf_counter()
            try:
                async with session.post(url, json={"records": [{"id": k, "dialogue": text}]}) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t)
            else:
                failed[0] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(caller(session, k) for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0] if latencies else 0.0] * 99
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failed": failed[0],
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * q[49],
        "p95_ms": 1000 * q[94],
        "p99_ms": 1000 * q[98],
    }


def run(
    export: str,
    sets: dict[str, Texts],
    *,
    requests: int,
    seconds: float,
    port: int,
    precision: str,
    batch_wait_ms: float = 5.0,
) -> dict:
    """Serve `export` (one replica with this machine's usable CPUs) and load it; offline scoring measured right
    before and right after each kind's served cells (their mean), so a change in the machine's load falls on
    both alike. Takes the application down at the end."""
    from raytune_bsm import api

    rows: dict[str, Any] = {}
    result = api.serve_up(
        export, name="bench", port=port, cpus_per_replica=THREADS, precision=precision, batch_wait_ms=batch_wait_ms
    )
    try:
        for kind, data in sets.items():
            before = offline(export, data.texts, precision, rounds=1)
            rows[kind] = {"served": [], "load": [os.getloadavg()[0]]}
            for c in CONCURRENCY:
                done = _health(result["url"])
                cell = asyncio.run(_load(result["url"] + "/predict", data.texts, c, requests, seconds))
                now = _health(result["url"])
                cell["records_per_batch"] = (now["scored"] - done["scored"]) / max(1, now["batches"] - done["batches"])
                rows[kind]["served"].append(cell)
                print(json.dumps({"kind": kind, **cell}), flush=True)
            after = offline(export, data.texts, precision, rounds=1)
            rows[kind]["load"].append(os.getloadavg()[0])
            rows[kind]["offline"] = {
                "records_per_s": (before["records_per_s"] + after["records_per_s"]) / 2,
                "one_record_ms": (before["one_record_ms"] + after["one_record_ms"]) / 2,
                "graph": before["graph"],
            }
    finally:
        api.serve_down("bench")
    return rows


def run_on_own_cluster(export: str, sets: dict[str, Texts], **kw: Any) -> dict:
    """`run` on a local cluster of this machine's usable CPUs in a BSM_HOME of its own, stopped afterwards."""
    import tempfile

    from raytune_bsm.client import local_cluster

    with tempfile.TemporaryDirectory(prefix="bsm-bench-serve-") as home:
        saved = os.environ.get("BSM_HOME")
        os.environ["BSM_HOME"] = home
        try:
            local_cluster.up(num_cpus=THREADS, home=Path(home))
            return run(export, sets, **kw)
        finally:
            local_cluster.down(home=Path(home))
            os.environ.pop("BSM_HOME") if saved is None else os.environ.__setitem__("BSM_HOME", saved)


def _health(url: str) -> dict[str, Any]:
    """The replica's /healthz: records and batches scored so far (one replica: all of them)."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url + "/healthz", timeout=30) as r:
        return json.loads(r.read())


def table(rows: dict[str, Any]) -> str:
    """Markdown: one table per kind of record, the goals' ratios in the last columns."""
    out = []
    for kind, r in rows.items():
        off = r["offline"]
        out.append(
            f"**{kind}**: offline `bsm predict` scoring {off['records_per_s']:.1f} records/s ({off['graph']}, "
            f"{THREADS} threads, measured before and after the served cells); one record alone "
            f"{off['one_record_ms']:.1f} ms; load average {r['load'][0]:.1f} before, {r['load'][1]:.1f} after.\n"
        )
        out.append(
            "| concurrency | requests | failed | requests/s | ÷ offline records/s | records per batch | p50 ms | "
            "p95 ms | p99 ms |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|")
        for s in r["served"]:
            out.append(
                f"| {s['concurrency']} | {s['requests']} | {s['failed']} | {s['requests_per_s']:.1f} | "
                f"{s['requests_per_s'] / off['records_per_s']:.2f}× | {s['records_per_batch']:.1f} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | "
                f"{s['p99_ms']:.1f} |"
            )
        c1 = r["served"][0]
        out.append(
            f"\np50 at concurrency 1 ÷ one record alone: {c1['p50_ms'] / off['one_record_ms']:.2f}× (goal ≤ 1.5)\n"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", help="an export directory (default: bench/common.py's fine-tuned model)")
    ap.add_argument("--work", default="/tmp/bsm-bench-work")
    ap.add_argument("--requests", type=int, default=400, help="requests per cell, at most")
    ap.add_argument("--seconds", type=float, default=40, help="seconds per cell, at most")
    ap.add_argument("--rows", type=int, default=200, help="distinct records per kind")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    a = ap.parse_args()
    export = a.export
    if export is None:
        from common import fit_and_export

        export = str(fit_and_export(Path(a.work), demo_texts(1200, seed=11), demo_texts(64, seed=12))["export"])
    sets = {"demo": demo_texts(a.rows, seed=41), "long (4 x 128)": long_texts(a.rows, seed=42)}
    rows = run(
        export,
        sets,
        requests=a.requests,
        seconds=a.seconds,
        port=a.port,
        precision=a.precision,
        batch_wait_ms=a.batch_wait_ms,
    )
    print(table(rows))


if __name__ == "__main__":
    main()
