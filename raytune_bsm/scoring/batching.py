"""Processed records -> the arrays an exported graph takes, which rows go into one call, and the calls' outputs
back to one row of logits per record.

Three kinds of graph (`GraphKind`; file names in layout.py):

    model.chunks.onnx  input_ids, attention_mask int64 [N, T] -> features [N, H]: any chunks, of any records. The
                       chunks of a block are sorted by length and cut into calls of at most `max_chunks` chunks and
                       CALL_TOKENS token slots, so a call pads almost nothing; each record's mean over its chunks
                       then goes through model.head.onnx ([R, H] -> logits [R, K]) once per block
    model.packed.onnx  input_ids, attention_mask int64 [N, T]: the N non-empty chunks of whole records, padded to the
                       call's longest chunk T; pool float32 [R, N], pool[r, n] = 1 / chunks(r) if chunk n is record r's
    model.onnx         input_ids, attention_mask int64 [B, C, T]: every record padded to the call's largest chunk
                       count C and chunk length T (empty chunks are computed too)

A record is the processor's pair of int32 arrays: `ids` (its chunks' tokens back to back) and `lens` (each chunk's
length). The fraction of token slots holding real tokens (`real / slots`) is what the grouping saves.

A model with side features takes them raw, float32 [records, F] (NaN where missing), as `side_features`: the
head's second input for the chunk graph, a third input of model.onnx (one row per record of the call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from raytune_bsm.data.batching import (  # noqa: F401  (one padding, shared with training)
    ATTENTION_MASK,
    INPUT_IDS,
    POOL,
    pack_records,
    pad_records,
)
from raytune_bsm.data.features import SIDE_INPUT
from raytune_bsm.graphs import GraphKind
from raytune_bsm.layout import FEATURES_NAME

# Token slots per chunk-graph call: on 2 cores, calls of ~1k tokens ran 10-25% faster per token than calls of 4k
# (the activations stay in cache; bench/), and the per-call overhead is under 1% at this size.
CALL_TOKENS = 1024


@dataclass
class Call:
    """One session call: the output rows it fills (records; chunks of the block for the chunk graph) and its
    inputs."""

    rows: np.ndarray  # int64 [R] (or [N] chunks)
    feeds: dict[str, np.ndarray]
    real: int  # token slots holding a real token
    slots: int  # token slots the graph computes


@dataclass
class Plan:
    """A block's calls. For the chunk graph, `counts` (chunks per record, the block's chunks in record order)
    pools the calls' features back to records."""

    n: int  # records in the block
    calls: list[Call]
    counts: np.ndarray | None = None  # int64 [n]: the chunk graph only
    side: np.ndarray | None = None  # float32 [n, F]: raw side features of the block's records (the head's input)


def plan_calls(lens: list[np.ndarray], batch_size: int, packed: bool) -> list[np.ndarray]:
    """Record indices per call for the record-level graphs, at most `batch_size` records each, records of similar
    shape together. Packed: sorted by longest chunk (then chunk count), so a call's chunks pad to nearly the same
    length. [B, C, T]: sorted by padded area (chunks x longest chunk), biggest first."""
    n = len(lens)
    longest = np.fromiter((int(l.max()) if len(l) else 0 for l in lens), np.int64, n)
    count = np.fromiter((len(l) for l in lens), np.int64, n)
    if packed:
        order = np.lexsort((-count, -longest))  # primary key last: longest chunk, then chunk count
    else:
        order = np.argsort(-(count * longest), kind="stable")
    return [order[s : s + batch_size] for s in range(0, n, batch_size)]


def plan_chunks(chunk_lens: np.ndarray, max_chunks: int, tokens: int = CALL_TOKENS) -> list[np.ndarray]:
    """Chunk indices per call: longest first, each call at most `max_chunks` chunks and `tokens` token slots
    (at least one chunk), so it pads every chunk to the call's first, longest one."""
    order = np.argsort(-chunk_lens, kind="stable")
    out, s = [], 0
    while s < len(order):
        n = max(1, min(max_chunks, tokens // max(1, int(chunk_lens[order[s]]))))
        out.append(order[s : s + n])
        s += n
    return out


def make_call(ids: list[np.ndarray], lens: list[np.ndarray], records: np.ndarray, pad_id: int, packed: bool) -> Call:
    """The inputs of one record-level call over `records` (indices into ids/lens)."""
    sel_ids, sel_lens = [ids[i] for i in records], [lens[i] for i in records]
    if packed:
        input_ids, mask, pool = pack_records(sel_ids, sel_lens, pad_id)
        feeds = {INPUT_IDS: input_ids, ATTENTION_MASK: mask, POOL: pool}
        real = int(sum(int(l.sum()) for l in sel_lens))
    else:
        input_ids, mask = pad_records(sel_ids, sel_lens, pad_id)
        feeds = {INPUT_IDS: input_ids, ATTENTION_MASK: mask}
        real = int(mask.sum())
    return Call(rows=records, feeds=feeds, real=real, slots=int(input_ids.size))


def chunk_call(tokens: np.ndarray, starts: np.ndarray, chunk_lens: np.ndarray, rows: np.ndarray, pad_id: int) -> Call:
    """The chunk graph's inputs for chunks `rows` of a block whose tokens are `tokens` (every chunk back to back;
    chunk k at starts[k], chunk_lens[k] long): int64 [N, T] ids and mask, T the longest of them."""
    L = chunk_lens[rows].astype(np.int64)  # [N]
    N, T = len(rows), max(1, int(L.max()))
    row = np.repeat(np.arange(N), L)  # [tokens]: the call row of each token
    col = np.arange(int(L.sum())) - np.repeat(np.cumsum(L) - L, L)  # [tokens]: its position in the chunk
    input_ids = np.full((N, T), pad_id, dtype=np.int64)
    mask = np.zeros((N, T), dtype=np.int64)
    input_ids[row, col] = tokens[np.repeat(starts[rows], L) + col]
    mask[row, col] = 1
    return Call(rows=rows, feeds={INPUT_IDS: input_ids, ATTENTION_MASK: mask}, real=int(L.sum()), slots=N * T)


def plan_block(
    ids: list[np.ndarray],
    lens: list[np.ndarray],
    pad_id: int,
    batch_size: int,
    kind: GraphKind,
    side: np.ndarray | None = None,
    spread: int = 1,
) -> Plan:
    """The calls that score a block of records with a graph of `kind`. `batch_size`: records
    per call, or for the chunk graph chunks per call (and at most CALL_TOKENS token slots). `side`: the records'
    raw side features [n, F], for a model that has them. `spread`: for the chunk graph, the calls a scorer runs
    side by side: a block too small to fill them is cut into that many calls (a served request's few chunks in
    one call would keep every core but one idle)."""
    if kind != GraphKind.CHUNKS:
        packed = kind == GraphKind.PACKED
        calls = [make_call(ids, lens, r, pad_id, packed) for r in plan_calls(lens, batch_size, packed)]
        for call in calls if side is not None else []:
            call.feeds[SIDE_INPUT] = np.ascontiguousarray(side[call.rows], np.float32)  # [R, F]
        return Plan(len(ids), calls, side=side)
    counts = np.fromiter((len(l) for l in lens), np.int64, len(lens))
    chunk_lens = np.concatenate(lens).astype(np.int64) if lens else np.zeros(0, np.int64)  # [chunks]
    tokens = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64)  # every chunk back to back
    starts = np.cumsum(chunk_lens) - chunk_lens
    batch_size = max(1, min(batch_size, -(-len(chunk_lens) // max(1, spread))))
    calls = [chunk_call(tokens, starts, chunk_lens, rows, pad_id) for rows in plan_chunks(chunk_lens, batch_size)]
    return Plan(len(ids), calls, counts, side)


def run_plan(
    plan: Plan,
    score: Callable[[dict[str, np.ndarray]], np.ndarray],
    head: Callable[[np.ndarray], np.ndarray] | None = None,
    on_records: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Run a block's calls (`score(feeds)`; for the chunk graph then `head(features [R, H])`) -> logits float32
    [n, K] in the block's order. `on_records(k)` as k more records are done (for the chunk graph, in proportion
    to its chunks done)."""
    # a Scorer runs several calls at once (Scorer.map); any other callable, one after another
    outputs = getattr(score, "map", lambda f: map(score, f))(call.feeds for call in plan.calls)
    if plan.counts is None:
        out: np.ndarray | None = None
        for call, logits in zip(plan.calls, outputs):  # logits [R, K]
            out = np.zeros((plan.n, logits.shape[1]), np.float32) if out is None else out
            out[call.rows] = logits
            if on_records:
                on_records(len(call.rows))
        return out if out is not None else np.zeros((0, 0), np.float32)
    if head is None:
        raise ValueError("the chunk graph needs its head graph")
    total, done, reported = int(plan.counts.sum()), 0, 0
    features: np.ndarray | None = None
    for call, f in zip(plan.calls, outputs):  # f [N, H]
        features = np.zeros((total, f.shape[1]), np.float32) if features is None else features
        features[call.rows] = f
        done += len(call.rows)
        if on_records and (k := plan.n * done // total - reported) > 0:
            on_records(k)
            reported += k
    # each record's mean over its chunks [R, H]; a record with none gets zeros, so it scores as the head's bias
    means = np.zeros((plan.n, features.shape[1] if features is not None else int(head.width)), np.float32)
    has = plan.counts > 0
    if features is not None:
        starts = (np.cumsum(plan.counts) - plan.counts)[has]  # the first chunk of each record that has one
        means[has] = np.add.reduceat(features, starts, axis=0) / plan.counts[has, None]
    logits = head(means if plan.side is None else {FEATURES_NAME: means, SIDE_INPUT: plan.side})  # [R, K]
    if on_records and plan.n > reported:
        on_records(plan.n - reported)
    return logits


def real_share(plans: list[Plan]) -> float:
    """The fraction of computed token slots that hold real tokens."""
    real = sum(c.real for p in plans for c in p.calls)
    slots = sum(c.slots for p in plans for c in p.calls)
    return real / slots if slots else 1.0
