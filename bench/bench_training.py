"""Training steps, in one process on the same records:

- bsm's batches (only non-empty chunks go through BERT, each batch padded to its own longest chunk, records of
  similar size batched together) against the reference design's fixed [B, C, T] batches (every record padded to
  C chunks of T tokens, every chunk computed), on demo data and on long texts: seconds per step, real tokens;
- a steady-state step under Lightning against a plain PyTorch loop over the same batches (goal <= 1.05).

    python bench/bench_training.py [--steps 6] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np
from common import THREADS, C, T, Texts, collate_for, demo_texts, long_texts, model_config


def _model(seed: int = 0) -> Any:
    import torch

    from raytune_bsm.model.text_bert import TextBertClassifier

    torch.manual_seed(seed)
    return TextBertClassifier(model_config(freeze_layers=2, lr=2e-4)).train()


def _step_times(model: Any, batches: list[dict], dense: bool) -> list[float]:
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    times = []
    for b in batches:
        t = time.perf_counter()
        logits = model.logits(b[model.ids_key], b[model.mask_key], dense=dense)
        loss = F.cross_entropy(logits.float(), b[model.config["label_name"]])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return times


def batches_for(data: Texts, batch: int, steps: int, fixed: bool) -> tuple[list[dict], float]:
    """`steps` + 1 training batches (bsm's sampler and collate, or the reference's fixed [B, C, T]) and the
    fraction of the token slots BERT computes that hold a real token."""
    import torch

    from raytune_bsm.config import resolve_model_config
    from raytune_bsm.data.batching import LengthGroupedBatchSampler
    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig

    cfg = resolve_model_config(model_config())
    processor = ChunkProcessor(ProcessorConfig.of_model(cfg))
    ds, collate = collate_for(processor, data, cfg)
    sampler = LengthGroupedBatchSampler(ds.padded_cost(), batch, shuffle=True, group_by_length=not fixed, seed=0)
    out, real, slots = [], 0, 0
    for idx in list(sampler)[: steps + 1]:
        b = collate(idx)
        ids, mask = b[collate.ids_key], b[collate.mask_key]
        if fixed:  # the reference: every record C x T, every chunk through BERT
            pad = (0, T - ids.shape[2], 0, C - ids.shape[1])
            ids = torch.nn.functional.pad(ids, pad, value=processor.pad_id)
            mask = torch.nn.functional.pad(mask, pad)
            b[collate.ids_key], b[collate.mask_key] = ids, mask
            slots += mask.numel()
        else:  # what the sparse path computes: non-empty chunks, padding columns none of them uses dropped
            m = mask.reshape(-1, mask.shape[-1])
            keep = m.any(1)
            slots += int(keep.sum()) * (int(m[keep].any(0).nonzero().max()) + 1)
        real += int(mask.sum())
        out.append(b)
    return out, real / slots


def bsm_vs_fixed(data: Texts, batch: int, steps: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(THREADS)
    res = {}
    for name, fixed in (("bsm", False), ("fixed", True)):
        batches, real = batches_for(data, batch, steps, fixed)
        times = _step_times(_model(), batches, dense=fixed)[1:]  # the first step warms up
        res[name] = {
            "step_s": statistics.median(times),
            "real_fraction": real,
            "records_per_s": batch / statistics.median(times),
        }
    res["speedup"] = res["fixed"]["step_s"] / res["bsm"]["step_s"]
    return res


def lightning_vs_plain(data: Texts, batch: int, steps: int, rounds: int = 3) -> dict[str, Any]:
    """Steady-state seconds per step, Lightning against a plain loop: the same model init, the same batches, in
    `rounds` alternating rounds (A, B, A, B, ...) so a change in the machine's load hits both; each round drops
    its first 2 steps (warm-up) and the figure is the median over all rounds' remaining steps."""
    import lightning.pytorch as pl
    import torch

    torch.set_num_threads(THREADS)
    batches, _ = batches_for(data, batch, steps + 2, fixed=False)

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_batch_start(self, *a: Any) -> None:
            self.starts.append(time.perf_counter())

    def lightning_round() -> list[float]:
        model = _model()
        model.configure_optimizers = lambda: torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=2e-4
        )
        clock = Clock()
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=len(batches),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[clock],
        )
        trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False))
        clock.starts.append(time.perf_counter())  # the end of the last step
        return list(np.diff(clock.starts)[2:])

    light: list[float] = []
    plain: list[float] = []
    for _ in range(rounds):
        light += lightning_round()
        plain += _step_times(_model(), batches, dense=False)[2:]
    lightning, plain_s = statistics.median(light), statistics.median(plain)
    return {
        "lightning_step_s": lightning,
        "plain_step_s": plain_s,
        "ratio": lightning / plain_s,
        "steps_each": len(light),
        "rounds": rounds,
    }


def run(batch: int = 8, steps: int = 6, log: Callable[[str], None] = print) -> dict[str, Any]:
    out = {}
    for data in (demo_texts(batch * (steps + 2) * 4, seed=51), long_texts(batch * (steps + 2) * 2, seed=52)):
        r = bsm_vs_fixed(data, batch, steps)
        log(
            f"{data.name}: bsm {r['bsm']['step_s']:.2f}s/step ({r['bsm']['real_fraction']:.0%} real), fixed "
            f"{r['fixed']['step_s']:.2f}s/step ({r['fixed']['real_fraction']:.0%} real): {r['speedup']:.2f}x"
        )
        out[data.name] = r
    lp = lightning_vs_plain(demo_texts(batch * (steps + 4) * 2, seed=53), batch, steps)
    log(f"Lightning {lp['lightning_step_s']:.3f}s/step, plain loop {lp['plain_step_s']:.3f}s/step: {lp['ratio']:.3f}")
    out["lightning"] = lp
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    a = ap.parse_args()
    run(a.batch, a.steps)


if __name__ == "__main__":
    main()
