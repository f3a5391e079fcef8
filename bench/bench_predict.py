"""`bsm predict` end to end (read Parquet, tokenize, score, write Parquet) against its pure scoring time: the
same session running the same calls on records tokenized beforehand, the two alternated. Goal: ratio <= 1.1.

    python bench/bench_predict.py [--rows 300]   (after bench_scoring.py has built the export)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import THREADS, Texts, demo_texts, fit_and_export, long_texts


def run(export: Path, data: Texts, batch_size: int = 32, rounds: int = 3) -> dict[str, Any]:
    """End to end and pure scoring, alternated `rounds` times (medians), so a change in the machine's load falls
    on both alike."""
    # As `bsm predict` runs in a user's shell: TOKENIZERS_PARALLELISM unset, so the Rust tokenizer uses its own
    # threads (bench/common.py turns them off for the training benchmarks in this process).
    saved = os.environ.pop("TOKENIZERS_PARALLELISM", None)
    try:
        return _run(export, data, batch_size, rounds)
    finally:
        if saved is not None:
            os.environ["TOKENIZERS_PARALLELISM"] = saved


def _run(export: Path, data: Texts, batch_size: int, rounds: int) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raytune_bsm.scoring.predict import Predictor, predict_file

    e2e, pures = [], []
    with tempfile.TemporaryDirectory(prefix="bsm-bench-predict-") as tmp:
        src = Path(tmp) / "in.parquet"
        pq.write_table(pa.table({"order_id": [f"r{i}" for i in range(len(data.texts))], "dialogue": data.texts}), src)
        p = Predictor(str(export), threads=THREADS)  # the same graph `predict_file` chooses
        plan = p.calls(data.texts, batch_size)
        for _ in range(rounds):
            t = time.perf_counter()
            predict_file(
                str(export),
                str(src),
                str(Path(tmp) / "out.parquet"),
                batch_size=batch_size,
                threads=THREADS,
                overwrite=True,
            )
            e2e.append(time.perf_counter() - t)
            p.scorer(plan.calls[0].feeds)  # warm-up, as predict_file's first call had none: conservative
            p.real = p.slots = 0
            t = time.perf_counter()
            p.score(len(data.texts), plan)
            pures.append(time.perf_counter() - t)
    end_to_end, pure = statistics.median(e2e), statistics.median(pures)
    return {
        "rows": len(data.texts),
        "graph": p.choice.file,
        "precision": p.choice.precision,
        "why": p.choice.why,
        "end_to_end_s": end_to_end,
        "pure_scoring_s": pure,
        "ratio": end_to_end / pure,
        "real_fraction": p.real_fraction,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--work", default="/tmp/bsm-bench-work")
    a = ap.parse_args()
    fitted = fit_and_export(Path(a.work), demo_texts(1200, seed=11), demo_texts(64, seed=12))
    r = run(fitted["export"], long_texts(a.rows, seed=31))
    print(
        f"bsm predict {r['end_to_end_s']:.2f}s end to end, {r['pure_scoring_s']:.2f}s pure scoring "
        f"({r['graph']}): ratio {r['ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
