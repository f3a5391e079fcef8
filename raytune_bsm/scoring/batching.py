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


def _scatter(ids: list[np.ndarray], lens: list[np.ndarray], rows: int, T: int, pad_id: int,
             row_of_chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Chunks back to back -> int64 [rows, T] ids and mask; chunk k lands in row row_of_chunk[k]."""
    out_ids = np.full((rows, T), pad_id, dtype=np.int64)
    out_mask = np.zeros((rows, T), dtype=np.int64)
    chunk_lens = np.concatenate(lens) if lens else np.zeros(0, np.int64)
    if chunk_lens.sum() == 0:
        return out_ids, out_mask
    flat = np.concatenate(ids).astype(np.int64)  # [tokens]
    starts = np.cumsum(chunk_lens) - chunk_lens  # [chunks]
    row = np.repeat(row_of_chunk, chunk_lens)  # [tokens]
    col = np.arange(len(flat)) - np.repeat(starts, chunk_lens)  # [tokens]
    out_ids[row, col] = flat
    out_mask[row, col] = 1
    return out_ids, out_mask


def pad_records(ids: list[np.ndarray], lens: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Records -> int64 [B, C, T] ids and mask, C and T the records' own maxima (at least 1 each)."""
    B = len(ids)
    C = max(1, max((len(l) for l in lens), default=1))
    T = max(1, max((int(l.max()) for l in lens if len(l)), default=1))
    counts = np.fromiter((len(l) for l in lens), np.int64, B)
    # chunk k of record b goes to row b * C + its position within the record
    first = np.repeat(np.cumsum(counts) - counts, counts)  # [chunks]: index of the record's first chunk
    record = np.repeat(np.arange(B), counts)  # [chunks]
    row = record * C + (np.arange(int(counts.sum())) - first)
    flat_ids, flat_mask = _scatter(ids, lens, B * C, T, pad_id, row)
    return flat_ids.reshape(B, C, T), flat_mask.reshape(B, C, T)


def pack_records(ids: list[np.ndarray], lens: list[np.ndarray],
                 pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Records -> int64 [N, T] ids and mask of their non-empty chunks, and float32 [R, N] pool.

    A call whose records are all empty gets one masked-in pad chunk that no record pools (the graph never sees
    a zero-size dimension; those records score as the head's bias, like the [B, C, T] graph)."""
    R = len(ids)
    counts = np.fromiter((len(l) for l in lens), np.int64, R)
    N = int(counts.sum())
    T = max(1, max((int(l.max()) for l in lens if len(l)), default=1))
    if N == 0:
        return (np.full((1, 1), pad_id, np.int64), np.ones((1, 1), np.int64), np.zeros((R, 1), np.float32))
    out_ids, out_mask = _scatter(ids, lens, N, T, pad_id, np.arange(N))
    pool = np.zeros((R, N), dtype=np.float32)
    record = np.repeat(np.arange(R), counts)  # [N]
    pool[record, np.arange(N)] = 1.0 / counts[record]
    return out_ids, out_mask, pool


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
