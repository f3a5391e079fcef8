"""The export's checks against PyTorch, before anything is published.

Two sets of batches, chosen so that the check covers every case and costs seconds, not minutes:

- shape batches, which every graph runs: the first PARITY_RECORDS validation records as given (real tokens, full
  length), the same grown with two all-padding chunks and padding columns, the same with a record emptied (no
  chunk at all), and synthetic dialogues until there are >= 3 shapes besides the one the graphs were traced on;
- labelled batches: up to MAX_LABELLED labelled validation records, which the fp32 and int8 chunk graphs (the
  graphs `bsm predict` runs, called the way it calls them) score for the validation metric. The fp32 chunk graph
  stands in for PyTorch there: it matched PyTorch within `tolerance` on the shape batches, and runs 3x faster.

- fp32 (`model.onnx`, `model.chunks.onnx` + `model.head.onnx`, `model.torchscript.pt`):
  logits within `tolerance` of PyTorch and the same predicted labels on the shape batches, or an ExportError and
  nothing is published. Their metric is that of `model.chunks.onnx` (within 1e-4 of each other, they rank the
  same).
- int8 (`model.int8.onnx`, `model.chunks.int8.onnx`): not held to the fp32 bound; label
  agreement with PyTorch (on the labelled records: with `model.chunks.onnx`) and the largest logit difference
  recorded per graph, and the metric (accuracy, and AUROC for two classes) of `model.chunks.int8.onnx` beside
  fp32's under the manifest's "precision", which is what `bsm predict` chooses a precision by.

A model with side features gets them in every batch: the validation batches' own (or values drawn about the
training mean where a batch has none), and in every batch some missing (NaN) and infinite values, so the
preprocessing baked into the graphs is checked against PyTorch's too.

Every ONNX graph gets one session, with the options `bsm predict` uses (scoring.sessions.Scorer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from raytune_bsm.data.batching import ATTENTION_MASK, INPUT_IDS, Collate, EncodedDataset
from raytune_bsm.data.features import SIDE_INPUT
from raytune_bsm.errors import ExportError
from raytune_bsm.graphs import GraphKind
from raytune_bsm.layout import (
    CHUNKS_INT8_ONNX_FILE,
    CHUNKS_ONNX_FILE,
    HEAD_ONNX_FILE,
    INT8_ONNX_FILE,
    ONNX_FILE,
    TORCHSCRIPT_FILE,
)
from raytune_bsm.model.onnx_graphs import quiet
from raytune_bsm.scoring.batching import plan_block, run_plan
from raytune_bsm.scoring.sessions import Scorer

log = logging.getLogger(__name__)

MAX_VAL_BATCHES = 8  # validation batches looked at (the first ones given)
MAX_LABELLED = 32  # labelled validation records the int8 metric is measured on
PARITY_RECORDS = 2  # validation records (as given, full length) in every graph's shape batches
CALL_CHUNKS = 32  # chunks per chunk-graph call, as `bsm predict` calls it by default
FP32_FILES = (ONNX_FILE, CHUNKS_ONNX_FILE, TORCHSCRIPT_FILE)
INT8_FILES = (INT8_ONNX_FILE, CHUNKS_INT8_ONNX_FILE)
NAMES = {ONNX_FILE: "onnxruntime", CHUNKS_ONNX_FILE: "chunks", TORCHSCRIPT_FILE: "torchscript"}  # "parity" keys

# Synthetic dialogues when no validation batches are given: different lengths, so the batches have different
# chunk counts and chunk lengths, and one empty dialogue (a record with no chunks).
_SHORT = "Where is my order?\nIt was delivered yesterday, here is the tracking."
_MEDIUM = "\n".join(
    [
        "Hi, the blender I ordered arrived with a cracked jar.",
        "Sorry to hear that. Can you send a photo of the damage?",
        "Sure, photo attached. The crack runs along the base and it leaks.",
        "Thanks. I can offer a partial refund of 20 percent or a replacement.",
        "I would prefer a full refund, I do not trust the packaging.",
    ]
)
_LONG = "\n".join(
    f"Message {i}: the buyer says the package never arrived and the seller answers that tracking shows it was "
    f"delivered to the front door on day {i}, with a photo of the parcel and the carrier's signature record."
    for i in range(14)
)
_SYNTHETIC = [_SHORT, _MEDIUM, _LONG, "", _MEDIUM + "\n" + _SHORT, _LONG[: len(_LONG) // 3]]


@dataclass
class Batch:
    ids: torch.Tensor  # [B, C, T] int64
    mask: torch.Tensor  # [B, C, T] int64
    source: str
    labels: np.ndarray | None = None  # [B] true labels: only for the labelled validation batches
    side: torch.Tensor | None = None  # [B, F] float32 raw side features (NaN: missing), for a model with them


def parity_batches(
    model: Any, processor: Any, val_batches: list[dict] | None, example_shape: tuple[int, ...]
) -> tuple[list[Batch], list[Batch]]:
    """(shape batches every graph runs, labelled batches for the metrics); see the module's doc."""
    max_pos = int(model.bert.config.max_position_embeddings)
    label = model.config["label_name"]
    val, labelled, left = [], [], MAX_LABELLED
    for i, b in enumerate((val_batches or [])[:MAX_VAL_BATCHES]):
        ids, mask = torch.as_tensor(b[model.ids_key]).cpu().long(), torch.as_tensor(b[model.mask_key]).cpu().long()
        side = _side(model, b, len(ids), i)
        val.append(Batch(ids, mask, f"val[{i}]", side=side))
        if label in b and left > 0:
            y = np.asarray(torch.as_tensor(b[label]).cpu())[:left]
            labelled.append(Batch(ids[:left], mask[:left], f"val[{i}]", y, side[:left] if side is not None else None))
            left -= len(y)
    synthetic = _synthetic(processor, model)
    first = val[0] if val else synthetic[0]
    cut = first.side[:PARITY_RECORDS] if first.side is not None else None
    first = Batch(
        first.ids[:PARITY_RECORDS], first.mask[:PARITY_RECORDS], f"{first.source}[:{PARITY_RECORDS}]", side=cut
    )
    extra_tokens = 3 if first.ids.shape[2] + 3 <= max_pos else 0
    pad = (0, extra_tokens, 0, 2)  # 2 all-padding chunks, `extra_tokens` padding columns
    shapes = [
        first,
        Batch(
            F.pad(first.ids, pad),
            F.pad(first.mask, pad),
            f"{first.source}+2 empty chunks+{extra_tokens} pad tokens",
            side=first.side,
        ),
    ]
    if first.ids.shape[0] > 1:  # a record with no chunk beside others: the model gives it the head's bias
        mask = first.mask.clone()
        mask[-1] = 0
        shapes.append(Batch(first.ids, mask, f"{first.source} with its last record emptied", side=first.side))
    if first.side is not None:  # every side feature missing in one record, infinite in another
        side = first.side.clone()
        side[0] = float("nan")
        side[-1, ::2] = float("inf")
        shapes.append(
            Batch(first.ids, first.mask, f"{first.source} with missing and infinite side features", side=side)
        )
    seen = {tuple(b.ids.shape) for b in shapes} - {tuple(example_shape)}
    for b in synthetic:
        if len(seen) >= 3:
            break
        if tuple(b.ids.shape) not in seen | {tuple(example_shape)}:
            shapes.append(b)
            seen.add(tuple(b.ids.shape))
    keep = lambda bs: [b for b in bs if bool(b.mask.any())]  # noqa: E731 - the sparse reference needs a chunk
    return keep(shapes), keep(labelled)


def _synthetic(processor: Any, model: Any) -> list[Batch]:
    p = processor(_SYNTHETIC)
    ds = EncodedDataset(p.ids, p.lens, np.zeros(len(_SYNTHETIC), dtype=np.int64), list(range(len(_SYNTHETIC))))
    collate = Collate(ds, "x", "y", None, processor.pad_id)
    batches = [collate(idx) for idx in ([1, 3, 0], [0], [2, 5], [4, 0])]
    return [
        Batch(b[collate.ids_key], b[collate.mask_key], f"synthetic{i}", side=_side(model, {}, len(b["y"]), 100 + i))
        for i, b in enumerate(batches)
    ]


def _side(model: Any, batch: dict, rows: int, seed: int) -> torch.Tensor | None:
    """A batch's raw side features [rows, F]: its own, else drawn about the training mean (one in five missing,
    one in eleven infinite); None for a text-only model."""
    if not model.feature_fields:
        return None
    if all(n in batch for n in model.feature_fields):
        return model.side_input(batch).cpu()
    stats = model.config["feature_stats"]
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(stats["mean"]) + torch.tensor(stats["std"]) * 2 * torch.randn(
        rows, len(stats["mean"]), generator=g
    )
    k = torch.arange(x.numel()).view_as(x)
    x[k % 5 == 1] = float("nan")
    x[k % 11 == 3] = float("inf")
    return x.float()


def _feeds(b: Batch) -> dict[str, np.ndarray]:
    """A batch as the [B, C, T] graph takes it."""
    feeds = {INPUT_IDS: b.ids.numpy(), ATTENTION_MASK: b.mask.numpy()}
    return {**feeds, SIDE_INPUT: b.side.numpy()} if b.side is not None else feeds


def records(ids: np.ndarray, mask: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """[B, C, T] -> the processor's records: per record its non-empty chunks' tokens back to back, and their
    lengths (a chunk's mask is a prefix of ones, as the processor pads)."""
    out_ids, out_lens = [], []
    for b in range(ids.shape[0]):
        lens = mask[b].sum(axis=1)  # [C]
        kept = [c for c in range(ids.shape[1]) if lens[c] > 0]
        out_ids.append(np.concatenate([ids[b, c, : lens[c]] for c in kept]) if kept else np.zeros(0, np.int64))
        out_lens.append(lens[kept].astype(np.int64))
    return out_ids, out_lens


def _runners(out: Path, pad_id: int) -> dict[str, Callable[[Batch], np.ndarray]]:
    """file -> batch -> logits [B, classes] for every record of the batch, each graph called as predict calls
    it (chunks: the chunks of the batch sorted by length, then the head; [B, C, T]: the batch as given)."""
    head = Scorer(str(out / HEAD_ONNX_FILE))
    with quiet():  # torch.jit.load's deprecation note
        scripted = torch.jit.load(str(out / TORCHSCRIPT_FILE), map_location="cpu").eval()

    def run(f: str, kind: GraphKind) -> Callable[[Batch], np.ndarray]:
        scorer = Scorer(str(out / f))

        def chunks(b: Batch) -> np.ndarray:
            ids, lens = records(b.ids.numpy(), b.mask.numpy())
            side = b.side.numpy() if b.side is not None else None
            return run_plan(plan_block(ids, lens, pad_id, CALL_CHUNKS, GraphKind.CHUNKS, side), scorer, head)

        if kind == GraphKind.BCT:  # as given: the [B, C, T] graph must take empty chunks and padding columns
            return lambda b: scorer(_feeds(b))
        return chunks

    kinds = {
        ONNX_FILE: GraphKind.BCT,
        INT8_ONNX_FILE: GraphKind.BCT,
        CHUNKS_ONNX_FILE: GraphKind.CHUNKS,
        CHUNKS_INT8_ONNX_FILE: GraphKind.CHUNKS,
    }
    runners = {f: run(f, k) for f, k in kinds.items()}
    runners[TORCHSCRIPT_FILE] = lambda b: (
        scripted(*(b.ids, b.mask, *([b.side] if b.side is not None else []))).float().numpy()
    )
    return runners


def check(
    model: Any, out: Path, pad_id: int, shapes: list[Batch], labelled: list[Batch], tolerance: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parity, precision) for the manifest; an ExportError if an fp32 graph differs from PyTorch."""
    runners = _runners(out, pad_id)
    figures = {f: {"max_abs_diff": 0.0, "label_mismatches": 0, "records": 0} for f in runners}

    def compare(f: str, got: np.ndarray, want: np.ndarray) -> None:
        if got.shape != want.shape:
            raise ExportError(f"parity: {f} gave logits of shape {got.shape}, PyTorch {want.shape}")
        diff = float(np.max(np.abs(got - want)))
        fig = figures[f]
        fig["max_abs_diff"] = max(fig["max_abs_diff"], diff if np.isfinite(diff) else float("inf"))
        fig["label_mismatches"] += int((got.argmax(-1) != want.argmax(-1)).sum())
        fig["records"] += len(want)

    with torch.no_grad():
        for b in shapes:
            ref = model.logits(b.ids, b.mask, side=b.side).float().numpy()  # [B, classes]
            for f, run in runners.items():
                compare(f, run(b), ref)
    scores: dict[str, list[np.ndarray]] = {CHUNKS_ONNX_FILE: [], CHUNKS_INT8_ONNX_FILE: []}
    failed = [
        f for f in FP32_FILES if not (figures[f]["max_abs_diff"] <= tolerance and figures[f]["label_mismatches"] == 0)
    ]
    for b in labelled if not failed else []:
        ref = runners[CHUNKS_ONNX_FILE](b)  # [B, classes]: PyTorch's within tolerance (checked above)
        got = runners[CHUNKS_INT8_ONNX_FILE](b)
        compare(CHUNKS_INT8_ONNX_FILE, got, ref)
        scores[CHUNKS_ONNX_FILE].append(ref)
        scores[CHUNKS_INT8_ONNX_FILE].append(got)
    for fig in figures.values():
        fig["labels_agree"] = fig["label_mismatches"] == 0
        fig["label_agreement"] = round(1 - fig["label_mismatches"] / max(1, fig["records"]), 6)
    parity = {
        **{name: figures[f] for f, name in NAMES.items()},
        "tolerance": tolerance,
        "reference": "PyTorch eval, logits(dense=False)",
        "records": sum(len(b.ids) for b in shapes),
        "shapes": [list(b.ids.shape) for b in shapes],
        "sources": [b.source for b in shapes],
        "with_padding_chunks": any(bool((~b.mask.bool().any(-1)).any()) for b in shapes),
        "with_missing_side_features": any(b.side is not None and bool(torch.isnan(b.side).any()) for b in shapes),
    }
    if failed:
        detail = "; ".join(
            f"{f}: max |Δ logits| {figures[f]['max_abs_diff']:.3g}, "
            f"{figures[f]['label_mismatches']} predicted label(s) differ"
            for f in failed
        )
        raise ExportError(
            f"parity check failed (tolerance {tolerance:g}) against PyTorch on {parity['records']} "
            f"records in shapes {parity['shapes']}: {detail}; nothing was published"
        )
    y = np.concatenate([b.labels for b in labelled]) if labelled else np.zeros(0, dtype=np.int64)
    metric = {k: _metrics(np.concatenate(v) if v else np.zeros((0, 0)), y) for k, v in scores.items()}
    per_file = lambda fs: {f: {k: figures[f][k] for k in ("label_agreement", "max_abs_diff")} for f in fs}  # noqa: E731
    precision = {
        "labelled_records": int(len(y)),
        "fp32": {
            **metric[CHUNKS_ONNX_FILE],
            "measured_on": CHUNKS_ONNX_FILE,
            "label_agreement": min(figures[f]["label_agreement"] for f in FP32_FILES),
            "max_abs_diff": max(figures[f]["max_abs_diff"] for f in FP32_FILES),
            "files": per_file(FP32_FILES),
        },
        "int8": {
            **metric[CHUNKS_INT8_ONNX_FILE],
            "measured_on": CHUNKS_INT8_ONNX_FILE,
            "label_agreement": figures[CHUNKS_INT8_ONNX_FILE]["label_agreement"],
            "max_abs_diff": figures[CHUNKS_INT8_ONNX_FILE]["max_abs_diff"],
            "files": per_file(INT8_FILES),
        },
    }
    log.info(
        "parity on %d records: %s; int8 label agreement %s",
        parity["records"],
        {f: figures[f]["max_abs_diff"] for f in FP32_FILES},
        precision["int8"]["label_agreement"],
    )
    return parity, precision


def _metrics(logits: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """accuracy (and AUROC for two classes) on the labelled records; None where there are none (or one class)."""
    out: dict[str, float | None] = {"accuracy": float((logits.argmax(1) == y).mean()) if len(y) else None}
    if logits.ndim == 2 and logits.shape[1] == 2:
        from torchmetrics.functional.classification import binary_auroc

        both = len(np.unique(y)) == 2
        probs = torch.softmax(torch.from_numpy(logits), dim=1)[:, 1]
        out["auroc"] = float(binary_auroc(probs, torch.from_numpy(y).long())) if both else None
    return out
