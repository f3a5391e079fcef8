"""Processor throughput, tokens per second on one core, against the bare fast tokenizer on the same text.

    python bench/bench_processor.py [--rows 4000] [--model all-MiniLM-L6-v2]

Both numbers come from the same run, so the ratio holds on a noisy shared machine.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one core: the tokenizer's Rust thread pool
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run(rows: int = 4000, model: str = "all-MiniLM-L6-v2", repeat: int = 3) -> dict:
    """Tokens per second of the processor and of the bare tokenizer, best of `repeat`, on the same dialogues."""
    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
    from raytune_bsm.demo.generator import make_dialogues

    dialogues = make_dialogues(rows, seed=1).column("dialogue").to_pylist()
    proc = ChunkProcessor(ProcessorConfig(tokenizer=model))
    rust = proc._rust  # the same tokenizer with truncation and padding off (tokenizer.json turns both on)
    proc(dialogues[:100])  # warm up

    best_proc = best_tok = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = proc(dialogues)
        best_proc = min(best_proc, time.perf_counter() - t)
        t = time.perf_counter()
        enc = rust.encode_batch(dialogues, add_special_tokens=False)
        best_tok = min(best_tok, time.perf_counter() - t)
    tokens, raw = out.tokens, sum(len(e.ids) for e in enc)
    return {
        "records": len(dialogues),
        "tokens": tokens,
        "truncated": out.truncated,
        "processor_tokens_per_s": tokens / best_proc,
        "tokenizer_tokens_per_s": raw / best_tok,
        "ratio": (tokens / best_proc) / (raw / best_tok),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    r = run(a.rows, a.model, a.repeat)
    print(f"records={r['records']} tokens={r['tokens']} truncated={r['truncated']}")
    print(f"processor: {r['processor_tokens_per_s']:,.0f} tokens/s")
    print(f"bare tokenizer on whole dialogues: {r['tokenizer_tokens_per_s']:,.0f} tokens/s")
    print(f"processor / bare tokenizer speed: {r['ratio']:.2f}")


if __name__ == "__main__":
    main()
