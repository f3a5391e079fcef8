"""Scoring speed: PyTorch eager and TorchScript against every ONNX Runtime graph bsm ships, in one process, on
the same pre-tokenized records, with accuracy and label agreement beside each speed.

    python bench/bench_scoring.py [--demo 200] [--long 120] [--batch 8]

Tokenization is outside the timings (all backends get the same records); each backend runs the same records in
calls of `--batch` records, grouped the way `bsm predict` groups them, on all usable cores, the backends' calls
interleaved (call i of each before call i + 1 of any) so that the machine's changing load falls on all alike.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common import THREADS, Texts, collate_for, demo_texts, fit_and_export, long_texts, machine

GRAPHS = [("ORT fp32 [B, C, T] (model.onnx)", False, "model.onnx"),
          ("ORT int8 [B, C, T] (model.int8.onnx)", False, "model.int8.onnx"),
          ("ORT packed fp32 (model.packed.onnx)", True, "model.packed.onnx"),
          ("ORT packed int8 (model.packed.int8.onnx)", True, "model.packed.int8.onnx")]  # fmt: skip


def _interleaved(backends: list[tuple[str, Callable[[Any], np.ndarray], list[Any], list[np.ndarray]]],
                 n: int) -> dict[str, tuple[float, np.ndarray]]:
    """Each backend's seconds and logits [n, 2]; call i of every backend runs before call i + 1 of any, so a
    change in the machine's load falls on all of them alike (a warm-up call each first)."""
    for _, run, batches, _ in backends:
        run(batches[0])
    secs = {name: 0.0 for name, *_ in backends}
    logits = {name: np.zeros((n, 2), dtype=np.float64) for name, *_ in backends}
    for i in range(max(len(b[2]) for b in backends)):
        for name, run, batches, order in backends:
            if i < len(batches):
                t = time.perf_counter()
                out = run(batches[i])
                secs[name] += time.perf_counter() - t
                logits[name][order[i]] = out
    return {name: (secs[name], logits[name]) for name in secs}


def score_all(model: Any, export: Path, data: Texts, batch: int) -> list[dict[str, Any]]:
    """One row per backend: records/s, time / TorchScript, accuracy, agreement with PyTorch, real-token share."""
    import torch

    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
    from raytune_bsm.scoring.batching import make_call, plan_calls
    from raytune_bsm.scoring.sessions import Scorer

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
    backends = [("PyTorch eager (sparse chunks)", lambda b: model.logits(*b).double().numpy(), tensors, bct_order),
                ("TorchScript (model.torchscript.pt)", lambda b: scripted(*b).double().numpy(), tensors, bct_order)]  # fmt: skip
    share = {backends[0][0]: real / sum(_sparse_slots(m) for _, m in tensors),
             backends[1][0]: real / sum(int(m.numel()) for _, m in tensors)}  # fmt: skip
    missing = []
    for name, packed, file in GRAPHS:
        if not (export / file).is_file():
            missing.append(name)
            continue
        scorer = Scorer(str(export / file), threads=THREADS)
        order = plan_calls(ds.lens, batch, packed=packed)
        calls = [make_call(ds.ids, ds.lens, r, processor.pad_id, packed) for r in order]
        backends.append((name, lambda c, s=scorer: s(c.feeds), calls, order))
        share[name] = sum(c.real for c in calls) / sum(c.slots for c in calls)
    with torch.no_grad():
        timed = _interleaved(backends, n)
    rows = [{"backend": name, "seconds": timed[name][0], "logits": timed[name][1], "real": share[name]}
            for name, *_ in backends] + [{"backend": name, "missing": True} for name in missing]  # fmt: skip
    ref = next(r for r in rows if r["backend"].startswith("TorchScript"))
    torch_labels = rows[0]["logits"].argmax(1)
    for r in rows:
        if r.get("missing"):
            continue
        pred = r["logits"].argmax(1)
        r.update(records_per_s=n / r["seconds"], speedup=ref["seconds"] / r["seconds"],
                 accuracy=float((pred == y).mean()), agreement=float((pred == torch_labels).mean()))  # fmt: skip
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
    out = [f"**{data.name}**, {len(data.labels)} records:", "",
           "| backend | records/s | speed ÷ TorchScript | accuracy | Δ accuracy (pt) | labels = PyTorch | real tokens |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if r.get("missing"):
            out.append(f"| {r['backend']} | not in this export | | | | | |")
            continue
        out.append(f"| {r['backend']} | {r['records_per_s']:.1f} | {r['speedup']:.2f}× | {r['accuracy']:.4f} | "
                   f"{100 * (r['accuracy'] - ref_acc):+.2f} | {r['agreement']:.4f} | {r['real']:.0%} |")  # fmt: skip
    return out + [""]


def run(work: Path, demo: int = 200, long: int = 120, batch: int = 8, log: Callable[[str], None] = print) -> dict[str, Any]:
    fitted = fit_and_export(work, demo_texts(240, seed=11), demo_texts(64, seed=12), log=log)
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
