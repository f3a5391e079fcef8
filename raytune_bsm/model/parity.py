"""The export's checks against PyTorch, before anything is published.

Every graph runs the same batches as the PyTorch model's own (sparse) path: the given validation batches (or
synthetic dialogues), copies of them grown with all-padding chunks and padding columns, one with a record that has
no chunk at all, and synthetic ones until there are >= 3 shapes besides the example the graphs were traced on.

- fp32 (`model.onnx`, `model.packed.onnx`, `model.torchscript.pt`): logits within `tolerance` and the same
  predicted labels, or an ExportError and nothing is published.
- int8 (`model.int8.onnx`, `model.packed.int8.onnx`): not held to the fp32 bound; their label agreement with
  PyTorch and the validation metric (accuracy, and AUROC for two classes) on the labelled validation records are
  recorded beside fp32's under the manifest's "precision", which is what `bsm predict` chooses a precision by.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from raytune_bsm.data.dataset import Collate, EncodedDataset
from raytune_bsm.errors import ExportError
from raytune_bsm.layout import INT8_ONNX_FILE, ONNX_FILE, OUTPUT_NAME, PACKED_INT8_ONNX_FILE, PACKED_ONNX_FILE
from raytune_bsm.layout import TORCHSCRIPT_FILE
from raytune_bsm.model.onnx_graphs import quiet

log = logging.getLogger(__name__)

MAX_VAL_BATCHES = 8  # validation batches used (the first ones given)
FP32_FILES = (ONNX_FILE, PACKED_ONNX_FILE, TORCHSCRIPT_FILE)
INT8_FILES = (INT8_ONNX_FILE, PACKED_INT8_ONNX_FILE)

# Synthetic dialogues when no validation batches are given: different lengths, so the batches have different
# chunk counts and chunk lengths, and one empty dialogue (a record with no chunks).
_SHORT = "Where is my order?\nIt was delivered yesterday, here is the tracking."
_MEDIUM = "\n".join([
    "Hi, the blender I ordered arrived with a cracked jar.",
    "Sorry to hear that. Can you send a photo of the damage?",
    "Sure, photo attached. The crack runs along the base and it leaks.",
    "Thanks. I can offer a partial refund of 20 percent or a replacement.",
    "I would prefer a full refund, I do not trust the packaging.",
])  # fmt: skip
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
    labels: np.ndarray | None = None  # [B] true labels: only for the validation batches as given


def parity_batches(model: Any, processor: Any, val_batches: list[dict] | None, example_shape: tuple[int, ...]) -> list[Batch]:
    max_pos = int(model.bert.config.max_position_embeddings)
    label = model.config["label_name"]
    out = []
    for i, b in enumerate((val_batches or [])[:MAX_VAL_BATCHES]):
        labels = np.asarray(torch.as_tensor(b[label]).cpu()) if label in b else None
        out.append(Batch(torch.as_tensor(b[model.ids_key]).cpu().long(), torch.as_tensor(b[model.mask_key]).cpu().long(),
                         f"val[{i}]", labels))  # fmt: skip
    synthetic = _synthetic(processor)
    out = out or list(synthetic)
    for b in list(out[:2]):  # (at most 4 records of each: the point is the shape, not the volume)
        extra_tokens = 3 if b.ids.shape[2] + 3 <= max_pos else 0
        pad = (0, extra_tokens, 0, 2)  # 2 all-padding chunks, `extra_tokens` padding columns
        out.append(Batch(F.pad(b.ids[:4], pad), F.pad(b.mask[:4], pad), f"{b.source}[:4]+2 empty chunks+{extra_tokens} pad tokens"))
    first = out[0]
    if first.ids.shape[0] > 1:  # a record with no chunk beside others: the model gives it the head's bias
        mask = first.mask[:3].clone()
        mask[-1] = 0
        out.append(Batch(first.ids[:3], mask, f"{first.source}[:3] with its last record emptied"))
    shapes = {tuple(b.ids.shape) for b in out} - {tuple(example_shape)}
    for b in synthetic:
        if len(shapes) >= 3:
            break
        if tuple(b.ids.shape) not in shapes | {tuple(example_shape)}:
            out.append(b)
            shapes.add(tuple(b.ids.shape))
    return [b for b in out if bool(b.mask.any())]  # the sparse reference path needs one non-empty chunk


def _synthetic(processor: Any) -> list[Batch]:
    p = processor(_SYNTHETIC)
    ds = EncodedDataset(p.ids, p.lens, np.zeros(len(_SYNTHETIC), dtype=np.int64), list(range(len(_SYNTHETIC))))
    collate = Collate(ds, "x", "y", None, processor.pad_id)
    batches = [collate(idx) for idx in ([1, 3, 0], [0], [2, 5], [4, 0])]
    return [Batch(b[collate.ids_key], b[collate.mask_key], f"synthetic{i}") for i, b in enumerate(batches)]


def pack(ids: np.ndarray, mask: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """[B, C, T] -> the packed graph's feed (non-empty chunks only, padded to the longest) and the records it
    holds (those with >= 1 chunk)."""
    B, C, T = ids.shape
    flat_ids, flat_mask = ids.reshape(B * C, T), mask.reshape(B * C, T)
    keep = flat_mask.any(axis=1)  # [B*C]
    owner = np.repeat(np.arange(B), C)[keep]  # [N]: each kept chunk's record
    rows = np.unique(owner)  # records with >= 1 chunk
    n = np.bincount(owner, minlength=B)  # [B] chunks per record
    pool = np.zeros((len(rows), len(owner)), dtype=np.float32)  # [R, N]
    pool[np.searchsorted(rows, owner), np.arange(len(owner))] = 1.0 / n[owner]
    used = int(flat_mask[keep].any(axis=0).nonzero()[0].max()) + 1  # longest chunk
    feed = {"input_ids": flat_ids[keep, :used], "attention_mask": flat_mask[keep, :used], "pool": pool}
    return feed, rows


def _runners(out: Path) -> dict[str, Callable[[Batch], np.ndarray]]:
    """file -> batch -> logits [B, classes] for the records the graph scores (all, or those with chunks)."""
    sessions = {f: ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
                for f in (ONNX_FILE, PACKED_ONNX_FILE, *INT8_FILES)}  # fmt: skip
    with quiet():  # torch.jit.load's deprecation note
        scripted = torch.jit.load(str(out / TORCHSCRIPT_FILE), map_location="cpu").eval()

    def bct(f: str) -> Callable[[Batch], np.ndarray]:
        return lambda b: sessions[f].run([OUTPUT_NAME], {"input_ids": b.ids.numpy(), "attention_mask": b.mask.numpy()})[0]

    def packed(f: str) -> Callable[[Batch], np.ndarray]:
        return lambda b: sessions[f].run([OUTPUT_NAME], pack(b.ids.numpy(), b.mask.numpy())[0])[0]

    return {ONNX_FILE: bct(ONNX_FILE), PACKED_ONNX_FILE: packed(PACKED_ONNX_FILE),
            TORCHSCRIPT_FILE: lambda b: scripted(b.ids, b.mask).float().numpy(),
            INT8_ONNX_FILE: bct(INT8_ONNX_FILE), PACKED_INT8_ONNX_FILE: packed(PACKED_INT8_ONNX_FILE)}  # fmt: skip


def check(model: Any, out: Path, batches: list[Batch], tolerance: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parity, precision) for the manifest; an ExportError if an fp32 graph differs from PyTorch."""
    runners = _runners(out)
    figures = {f: {"max_abs_diff": 0.0, "label_mismatches": 0, "records": 0} for f in runners}
    scores: dict[str, list[np.ndarray]] = {f: [] for f in ("pytorch", *runners)}
    truth: list[np.ndarray] = []
    with torch.no_grad():
        for b in batches:
            ref = model.logits(b.ids, b.mask).float().numpy()  # [B, classes]
            rows = pack(b.ids.numpy(), b.mask.numpy())[1]
            for f, run in runners.items():
                got = run(b)
                want = ref[rows] if f in (PACKED_ONNX_FILE, PACKED_INT8_ONNX_FILE) else ref
                if got.shape != want.shape:
                    raise ExportError(f"parity: {f} gave logits of shape {got.shape}, PyTorch {want.shape}")
                diff = float(np.max(np.abs(got - want)))
                fig = figures[f]
                fig["max_abs_diff"] = max(fig["max_abs_diff"], diff if np.isfinite(diff) else float("inf"))
                fig["label_mismatches"] += int((got.argmax(-1) != want.argmax(-1)).sum())
                fig["records"] += len(want)
                if b.labels is not None:
                    full = np.full_like(ref, np.nan)
                    full[rows if f in (PACKED_ONNX_FILE, PACKED_INT8_ONNX_FILE) else slice(None)] = got
                    scores[f].append(full)
            if b.labels is not None:
                scores["pytorch"].append(ref)
                truth.append(b.labels)
    for fig in figures.values():
        fig["labels_agree"] = fig["label_mismatches"] == 0
        fig["label_agreement"] = round(1 - fig["label_mismatches"] / max(1, fig["records"]), 6)
    parity = {
        "onnxruntime": figures[ONNX_FILE], "packed": figures[PACKED_ONNX_FILE], "torchscript": figures[TORCHSCRIPT_FILE],
        "tolerance": tolerance, "reference": "PyTorch eval, logits(dense=False)",
        "records": sum(len(b.ids) for b in batches), "shapes": [list(b.ids.shape) for b in batches],
        "sources": [b.source for b in batches],
        "with_padding_chunks": any(bool((~b.mask.bool().any(-1)).any()) for b in batches),
    }  # fmt: skip
    failed = [f for f in FP32_FILES if not (figures[f]["max_abs_diff"] <= tolerance and figures[f]["labels_agree"])]
    if failed:
        detail = "; ".join(f"{f}: max |Δ logits| {figures[f]['max_abs_diff']:.3g}, "
                           f"{figures[f]['label_mismatches']} predicted label(s) differ" for f in failed)  # fmt: skip
        raise ExportError(f"parity check failed (tolerance {tolerance:g}) against PyTorch on {parity['records']} "
                          f"records in shapes {parity['shapes']}: {detail}; nothing was published")  # fmt: skip
    y = np.concatenate(truth) if truth else np.zeros(0, dtype=np.int64)
    metric = {f: _metrics(np.concatenate(s) if s else np.zeros((0, 0)), y) for f, s in scores.items()}
    precision = {"labelled_records": int(len(y)), "pytorch": metric["pytorch"],
                 "fp32": _worst(FP32_FILES[:2], figures, metric), "int8": _worst(INT8_FILES, figures, metric)}  # fmt: skip
    log.info("parity on %d records: %s; int8 label agreement %s", parity["records"],
             {f: figures[f]["max_abs_diff"] for f in FP32_FILES}, precision["int8"]["label_agreement"])  # fmt: skip
    return parity, precision


def _metrics(logits: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """accuracy (and AUROC for two classes) on the labelled records; None where there are none (or one class)."""
    ok = ~np.isnan(logits).any(axis=1) if logits.size else np.zeros(0, dtype=bool)
    logits, y = logits[ok], y[ok] if len(y) == len(ok) else y[:0]
    out: dict[str, float | None] = {"accuracy": float((logits.argmax(1) == y).mean()) if len(y) else None}
    if logits.ndim == 2 and logits.shape[1] == 2:
        from torchmetrics.functional.classification import binary_auroc

        both = len(np.unique(y)) == 2
        probs = torch.softmax(torch.from_numpy(logits), dim=1)[:, 1]
        out["auroc"] = float(binary_auroc(probs, torch.from_numpy(y).long())) if both else None
    return out


def _worst(files: tuple[str, ...], figures: dict[str, dict], metric: dict[str, dict]) -> dict[str, Any]:
    """One precision's figures: the worst over its graphs, and each graph's own."""
    def low(key: str) -> float | None:
        vals = [metric[f][key] for f in files if metric[f].get(key) is not None]
        return min(vals) if vals else None

    out: dict[str, Any] = {"accuracy": low("accuracy"), "label_agreement": min(figures[f]["label_agreement"] for f in files),
                           "max_abs_diff": max(figures[f]["max_abs_diff"] for f in files)}  # fmt: skip
    if any("auroc" in metric[f] for f in files):
        out["auroc"] = low("auroc")
    out["files"] = {f: {**metric[f], "label_agreement": figures[f]["label_agreement"],
                        "max_abs_diff": figures[f]["max_abs_diff"]} for f in files}  # fmt: skip
    return out
