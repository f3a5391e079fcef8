"""GPU scoring: the chunk graph (model.chunks.onnx + model.head.onnx) on ONNX Runtime's CUDA provider with IO
binding (bsm predict's GPU path), as
model FLOPs per second and MFU (÷ the GPU's peak). Runs only where a GPU and onnxruntime-gpu are present.

    python bench/bench_gpu.py [--records 2048] [--batch 256]

Model FLOPs per chunk of t tokens (forward, multiply-adds x 2): every encoder layer's matrices, 2 * 12 H^2 * t,
plus attention's scores and weighted sum, 2 * 2 * t^2 * H; the head is negligible.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

# Dense peak FLOP/s by device name (vendor data sheets): fp32 (no tensor cores) and TF32 / bf16 tensor-core.
PEAKS = {  # name fragment: (fp32, tf32, bf16) in TFLOP/s
    "H200": (67, 495, 989),
    "H100 SXM": (67, 495, 989),
    "H100 PCIe": (51, 378, 756),
    "H100": (67, 495, 989),
    "A100": (19.5, 156, 312),
    "A10G": (31.2, 62.5, 125),
    "A10": (31.2, 62.5, 125),
    "L40S": (91.6, 183, 362),
    "L4": (30.3, 60, 121),
    "T4": (8.1, 8.1, 65),
    "V100": (15.7, 15.7, 125),
    "RTX 4090": (82.6, 82.6, 165),
}


def peak(name: str) -> tuple[float, float, float] | None:
    for key in sorted(PEAKS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAKS[key]
    return None


def chunk_flops(tokens: int, hidden: int, layers: int, intermediate: int) -> float:
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * intermediate) + 2 * 2 * tokens * tokens * hidden
    return layers * per_layer


def run(export: Path, records: int = 2048, batch: int = 256) -> dict[str, Any]:
    import json

    import onnxruntime as ort
    from common import _gpu_name, long_texts

    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
    from raytune_bsm.graphs import GraphKind
    from raytune_bsm.scoring.batching import plan_block, run_plan
    from raytune_bsm.scoring.sessions import Scorer

    name = _gpu_name()
    if name is None or "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"skipped": "no GPU, or onnxruntime without the CUDA provider"}
    info = json.loads((export / "bsm_model.json").read_text())
    enc = info["hyperparameters"].get("encoder_config") or {}
    hidden, layers, inter = (
        enc.get("hidden_size", 384),
        enc.get("num_hidden_layers", 6),
        enc.get("intermediate_size", 1536),
    )
    settings = info["processor"]
    processor = ChunkProcessor.from_tokenizer_file(
        ProcessorConfig.of_model(settings), str(export / "tokenizer/tokenizer.json"), int(settings["pad_id"])
    )
    p = processor(long_texts(records, seed=41).texts)
    plan = plan_block(p.ids, p.lens, processor.pad_id, batch, GraphKind.CHUNKS)  # length-sorted chunks, as predict does
    scorer = Scorer(str(export / "model.chunks.onnx"), "CUDAExecutionProvider")
    head = Scorer(str(export / "model.head.onnx"), "CUDAExecutionProvider")
    run_plan(plan, scorer, head)  # warm-up: CUDA kernels, the arena
    t = time.perf_counter()
    run_plan(plan, scorer, head)
    secs = time.perf_counter() - t
    calls = plan.calls
    flops = sum(
        chunk_flops(int(c.feeds["input_ids"].shape[1]), hidden, layers, inter) * c.feeds["input_ids"].shape[0]
        for c in calls
    )
    achieved = flops / secs
    pk = peak(name)
    return {
        "gpu": name,
        "records_per_s": records / secs,
        "tflops": achieved / 1e12,
        "mfu_fp32": achieved / (pk[0] * 1e12) if pk else None,
        "mfu_tf32": achieved / (pk[1] * 1e12) if pk else None,
        "peak_known": pk is not None,
        "real_fraction": sum(c.real for c in calls) / sum(c.slots for c in calls),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--work", default="/tmp/bsm-bench-work")
    a = ap.parse_args()
    print(run(Path(a.work) / "export", a.records, a.batch))


if __name__ == "__main__":
    main()
