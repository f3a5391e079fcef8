"""Scoring speed: PyTorch eager and TorchScript against every ONNX Runtime graph bsm ships, in one process, on
the same pre-tokenized records, with accuracy and label agreement beside each speed.

    python bench/bench_scoring.py [--demo 200] [--long 120] [--batch 8]

Tokenization is outside the timings (all backends get the same records); each backend runs the same records in
calls of `--batch` records, grouped the way `bsm predict` groups them, on all usable cores, the backends' calls
interleaved (in turns of consecutive calls, several turns each) so that the machine's changing load falls on all
alike. ONNX Runtime runs as `bsm predict` runs it (scoring.sessions.Scorer; the chunk graphs a call per core side
by side, one thread each); TorchScript as the issue's reference (one call at a time on every core), and once more side by side
like ONNX Runtime, to show what that alone is worth. The
chunk graphs take the chunks of all the records sorted by length, in calls of at most `bsm predict`'s default 32
chunks and scoring.batching.CALL_TOKENS token slots, then the head over each record's mean (timed too).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from common import THREADS, Texts, collate_for, demo_texts, fit_and_export, long_texts, machine

from raytune_bsm.graphs import GraphKind

GRAPHS = [
    ("ORT fp32 [B, C, T] (model.onnx)", GraphKind.BCT, "model.onnx"),
    ("ORT int8 [B, C, T] (model.int8.onnx)", GraphKind.BCT, "model.int8.onnx"),
    ("ORT packed fp32 (model.packed.onnx)", GraphKind.PACKED, "model.packed.onnx"),
    ("ORT packed int8 (model.packed.int8.onnx)", GraphKind.PACKED, "model.packed.int8.onnx"),
    ("ORT chunks fp32 (model.chunks.onnx + head)", GraphKind.CHUNKS, "model.chunks.onnx"),
    ("ORT chunks int8 (model.chunks.int8.onnx + head)", GraphKind.CHUNKS, "model.chunks.int8.onnx"),
]
CHUNK_CALL = 32  # chunks per chunk-graph call: `bsm predict`'s default --batch-size
ROUNDS = 6  # turns each backend takes

Backend = tuple[str, Callable[[], None], list[Callable[[], None]], Callable[[], np.ndarray]]
# name, a warm-up call, its `rounds` turns, its logits [n, 2] after them
RunMany = Callable[[list[Any]], Iterable[np.ndarray]]  # inputs -> outputs in order: one after another, or side by side


def _interleaved(backends: list[Backend]) -> dict[str, tuple[float, np.ndarray]]:
    """Each backend's seconds and logits. The backends take turns, ROUNDS turns each (a turn is a run of
    consecutive calls of one backend, as in `bsm predict`, where one session runs alone and its weights stay in
    cache): a change in the machine's load falls on all of them alike, and no backend's calls run with another's
    weights just loaded into the caches. A warm-up call each first."""
    for _, warm, _, _ in backends:
        warm()
    secs = {name: 0.0 for name, *_ in backends}
    for r in range(ROUNDS):
        for name, _, turns, _ in backends:
            t = time.perf_counter()
            turns[r]()
            secs[name] += time.perf_counter() - t
    return {name: (secs[name], result()) for name, _, _, result in backends}


def _turns(run_many: RunMany, inputs: list[Any], store: Callable[[int, np.ndarray], None]) -> list[Callable[[], None]]:
    """ROUNDS turns over `inputs`, each running its share through `run_many` and handing output i to store(i, out)."""

    def turn(lo: int, hi: int) -> Callable[[], None]:
        def go() -> None:
            for i, out in zip(range(lo, hi), run_many(inputs[lo:hi])):
                store(i, out)

        return go

    n = len(inputs)
    return [turn(r * n // ROUNDS, (r + 1) * n // ROUNDS) for r in range(ROUNDS)]


def _record_calls(
    run_many: RunMany, batches: list[Any], order: list[np.ndarray], n: int
) -> tuple[Callable[[], None], list[Callable[[], None]], Callable[[], np.ndarray]]:
    """Calls over whole records: each call's logits go to its records' rows."""
    logits = np.zeros((n, 2), dtype=np.float64)

    def store(i: int, out: np.ndarray) -> None:
        logits[order[i]] = out

    return lambda: list(run_many(batches[:1])), _turns(run_many, batches, store), lambda: logits


def _chunk_calls(
    plan: Any, scorer: Any, head: Any
) -> tuple[Callable[[], None], list[Callable[[], None]], Callable[[], np.ndarray]]:
    """The chunk graph's calls (run as `bsm predict` runs them: Scorer.map), then the mean over each record's
    chunks and the head, timed in the last turn."""
    from raytune_bsm.scoring.batching import Plan, run_plan

    features: dict[int, np.ndarray] = {}
    out: list[np.ndarray] = []
    feeds = [c.feeds for c in plan.calls]
    turns = _turns(scorer.map, feeds, features.__setitem__)

    def finish() -> None:  # the head over the features computed above (run_plan with the calls already made)
        replay = iter(features[i] for i in range(len(plan.calls)))
        out[:] = [run_plan(Plan(plan.n, plan.calls, plan.counts), lambda _f: next(replay), head).astype(np.float64)]

    last = turns[-1]
    turns[-1] = lambda: (last(), finish())
    return lambda: list(scorer.map(feeds[:1])), turns, lambda: out[0]


def score_all(model: Any, export: Path, data: Texts, batch: int) -> list[dict[str, Any]]:
    """One row per backend: records/s, time / TorchScript, accuracy, agreement with PyTorch, real-token share."""
    import torch

    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
    from raytune_bsm.scoring.batching import plan_block, plan_calls, real_share
    from raytune_bsm.scoring.sessions import Scorer, streams_for

    torch.set_num_threads(THREADS)
    processor = ChunkProcessor(ProcessorConfig.of_model(model.config))
    ds, collate = collate_for(processor, data, model.config)
    y = np.asarray(data.labels)
    n = len(y)

    bct_order = plan_calls(ds.lens, batch, packed=False)
    tb = [collate([int(i) for i in r]) for r in bct_order]
    tensors = [(b[collate.ids_key], b[collate.mask_key]) for b in tb]
    scripted = torch.jit.load(str(export / "model.torchscript.pt")).eval()
    real = sum(int(m.sum()) for _, m in tensors)
    pool = ThreadPoolExecutor(THREADS)

    def one(b: Any) -> np.ndarray:
        with torch.no_grad():  # per thread
            return scripted(*b).double().numpy()

    def side_by_side(bs: list[Any]) -> list[np.ndarray]:  # TorchScript as bsm runs ORT: a call per core at once
        torch.set_num_threads(1)
        try:
            return list(pool.map(one, bs))
        finally:
            torch.set_num_threads(THREADS)

    backends = [
        (
            "PyTorch eager (sparse chunks)",
            *_record_calls(lambda bs: (model.logits(*b).double().numpy() for b in bs), tensors, bct_order, n),
        ),
        (
            "TorchScript (model.torchscript.pt)",
            *_record_calls(lambda bs: (scripted(*b).double().numpy() for b in bs), tensors, bct_order, n),
        ),
        (f"TorchScript, {THREADS} calls side by side", *_record_calls(side_by_side, tensors, bct_order, n)),
    ]
    share = {
        backends[0][0]: real / sum(_sparse_slots(m) for _, m in tensors),
        backends[1][0]: real / sum(int(m.numel()) for _, m in tensors),
    }
    share[backends[2][0]] = share[backends[1][0]]
    missing = []
    head = (
        Scorer(str(export / "model.head.onnx"), threads=THREADS, streams=1)
        if (export / "model.head.onnx").is_file()
        else None
    )
    for name, kind, file in GRAPHS:
        if not (export / file).is_file() or (kind is GraphKind.CHUNKS and head is None):
            missing.append(name)
            continue
        scorer = Scorer(str(export / file), threads=THREADS, streams=streams_for(kind))  # as `bsm predict` runs it
        plan = plan_block(ds.ids, ds.lens, processor.pad_id, CHUNK_CALL if kind is GraphKind.CHUNKS else batch, kind)
        if kind is GraphKind.CHUNKS:
            backends.append((name, *_chunk_calls(plan, scorer, head)))
        else:
            feeds = [c.feeds for c in plan.calls]
            backends.append((name, *_record_calls(scorer.map, feeds, [c.rows for c in plan.calls], n)))
        share[name] = real_share([plan])
    with torch.no_grad():
        timed = _interleaved(backends)
    rows = [
        {"backend": name, "seconds": timed[name][0], "logits": timed[name][1], "real": share[name]}
        for name, *_ in backends
    ] + [{"backend": name, "missing": True} for name in missing]
    ref = next(r for r in rows if r["backend"].startswith("TorchScript"))
    torch_labels = rows[0]["logits"].argmax(1)
    for r in rows:
        if r.get("missing"):
            continue
        pred = r["logits"].argmax(1)
        r.update(
            records_per_s=n / r["seconds"],
            speedup=ref["seconds"] / r["seconds"],
            accuracy=float((pred == y).mean()),
            agreement=float((pred == torch_labels).mean()),
        )
    return rows


def _sparse_slots(mask: Any) -> int:
    """Token slots the eager model computes: its non-empty chunks, padded to their longest."""
    m = mask.reshape(-1, mask.shape[-1])
    keep = m.any(dim=1)
    if not bool(keep.any()):
        return 1
    used = int(m[keep].any(dim=0).nonzero().max()) + 1
    return int(keep.sum()) * used


def table(rows: list[dict[str, Any]], data: Texts) -> list[str]:
    ref_acc = next(r for r in rows if r["backend"].startswith("TorchScript"))["accuracy"]
    out = [
        f"**{data.name}**, {len(data.labels)} records:",
        "",
        "| backend | records/s | speed ÷ TorchScript | accuracy | Δ accuracy (pt) | labels = PyTorch | real tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("missing"):
            out.append(f"| {r['backend']} | not in this export | | | | | |")
            continue
        out.append(
            f"| {r['backend']} | {r['records_per_s']:.1f} | {r['speedup']:.2f}× | {r['accuracy']:.4f} | "
            f"{100 * (r['accuracy'] - ref_acc):+.2f} | {r['agreement']:.4f} | {r['real']:.0%} |"
        )
    return out + [""]


def run(
    work: Path, demo: int = 200, long: int = 120, batch: int = 8, log: Callable[[str], None] = print
) -> dict[str, Any]:
    fitted = fit_and_export(work, demo_texts(1200, seed=11), demo_texts(64, seed=12), log=log)
    sets = [demo_texts(demo, seed=21), long_texts(long, seed=22)]
    results = {}
    for data in sets:
        rows = score_all(fitted["model"], fitted["export"], data, batch)
        results[data.name] = rows
        for line in table(rows, data):
            log(line)
    return {"fitted": fitted, "results": results, "sets": sets}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--demo", type=int, default=200)
    p.add_argument("--long", type=int, default=120)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--work", default="/tmp/bsm-bench-work")
    a = p.parse_args()
    print(machine())
    run(Path(a.work), a.demo, a.long, a.batch)


if __name__ == "__main__":
    main()
