"""Processed records -> the arrays an exported graph takes, and which records go into one call.

Two graphs, two layouts (see layout.py):

    model.onnx         input_ids, attention_mask int64 [B, C, T]: every record padded to the call's largest chunk
                       count C and chunk length T (empty chunks are computed too)
    model.packed.onnx  input_ids, attention_mask int64 [N, T]: only the call's N non-empty chunks, padded to its
                       longest chunk T; pool float32 [R, N], pool[r, n] = 1 / chunks(r) if chunk n is record r's

A record is the processor's pair of int32 arrays: `ids` (its chunks' tokens back to back) and `lens` (each chunk's
length). Records are grouped so that the chunks of one call have similar lengths: the fraction of token slots
holding real tokens (`real / slots`) is what the packed graph saves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raytune_bsm.data.batching import pack_records, pad_records  # noqa: F401  (one padding, shared with training)


@dataclass
class Call:
    """One session call: the records it scores (indices into the block) and its inputs."""

    records: np.ndarray  # int64 [R]
    feeds: dict[str, np.ndarray]
    real: int  # token slots holding a real token
    slots: int  # token slots the graph computes


def plan_calls(lens: list[np.ndarray], batch_size: int, packed: bool) -> list[np.ndarray]:
    """Record indices per call, at most `batch_size` records each, records of similar shape together.

    Packed: sorted by longest chunk (then chunk count), so a call's chunks pad to nearly the same length.
    [B, C, T]: sorted by padded area (chunks x longest chunk), biggest first."""
    n = len(lens)
    longest = np.fromiter((int(l.max()) if len(l) else 0 for l in lens), np.int64, n)
    count = np.fromiter((len(l) for l in lens), np.int64, n)
    if packed:
        order = np.lexsort((-count, -longest))  # primary key last: longest chunk, then chunk count
    else:
        order = np.argsort(-(count * longest), kind="stable")
    return [order[s : s + batch_size] for s in range(0, n, batch_size)]


def make_call(ids: list[np.ndarray], lens: list[np.ndarray], records: np.ndarray, pad_id: int,
              packed: bool) -> Call:  # fmt: skip
    """The inputs of one call over `records` (indices into ids/lens)."""
    sel_ids, sel_lens = [ids[i] for i in records], [lens[i] for i in records]
    if packed:
        input_ids, mask, pool = pack_records(sel_ids, sel_lens, pad_id)
        feeds = {"input_ids": input_ids, "attention_mask": mask, "pool": pool}
        real = int(sum(int(l.sum()) for l in sel_lens))
    else:
        input_ids, mask = pad_records(sel_ids, sel_lens, pad_id)
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        real = int(mask.sum())
    return Call(records=records, feeds=feeds, real=real, slots=int(input_ids.size))
