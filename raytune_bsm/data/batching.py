"""Batching: processed records -> padded [B, C, T] batches, in length-grouped order.

`EncodedDataset` holds a split's processed records (token ids and chunk lengths, from the processor);
`Collate` pads a batch to its own largest chunk count and chunk length (dynamic padding, never to
max_chunks x max_tokens) with `pad_records`, the one [B, C, T] padding in bsm (predict's too; `pack_records`
is the packed graph's [N, T] + pool inputs); `LengthGroupedBatchSampler` puts records of similar padded size
together and gives every DDP rank the same number of batches. Torch is imported only inside `Collate.__call__`.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np

# A batch's keys, spelled once here: the prepared records' columns (data/ray_data.py writes them,
# data/streaming.py reads them), the training batch (Collate, data/streaming.py, model/text_bert.py) and the
# exported graphs' token inputs (layout.INPUT_NAMES, scoring/batching.py, model/onnx_graphs.py)
INPUT_IDS = "input_ids"  # int64 token ids: [B, C, T] (a batch, model.onnx) or [N, T] (chunk and packed graphs)
ATTENTION_MASK = "attention_mask"  # int64, 1 where INPUT_IDS holds a real token; INPUT_IDS's shape
POOL = "pool"  # float32 [R, N]: the packed graph's mean of each record's chunks
CHUNK_LENS = "chunk_lens"  # a prepared record's chunk lengths, int32 [chunks]
LABEL = "label"  # a prepared record's class index
ID = "id"  # a record's id: the prepared column, and a batch's key when the data names no id field
TRUNCATED = "truncated"  # per record: it had more than max_chunks chunks (None: not known)
PAD = "pad"  # bool [B]: a copy that makes an evaluated split's shares equal (runner/prepare.py): run, never counted
COST = "cost"  # a prepared record's chunks x longest chunk: the [C, T] area it pads to (length grouping)


def ids_key(text_name: str) -> str:
    """A batch's key for the [B, C, T] token ids of text field `text_name`."""
    return f"{text_name}_processed_{INPUT_IDS}"


def mask_key(text_name: str) -> str:
    """A batch's key for the [B, C, T] attention mask of text field `text_name`."""
    return f"{text_name}_processed_{ATTENTION_MASK}"


class EncodedDataset:
    """Processed records of one split; indexable, so it works as a torch map-style dataset."""

    def __init__(
        self,
        ids: list[np.ndarray],
        lens: list[np.ndarray],
        labels: np.ndarray,
        record_ids: list[Any],
        truncated: list[bool] | None = None,
        features: np.ndarray | None = None,
        feature_names: list[str] | None = None,
    ):
        self.ids, self.lens, self.labels, self.record_ids = ids, lens, labels, record_ids
        self.truncated = truncated  # per record: it had more than max_chunks chunks (None: not known)
        self.features, self.feature_names = features, feature_names  # raw float32 [n, F] side features, NaN: missing

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> int:
        return i  # the collate function reads the arrays directly: no per-item tensor churn

    def padded_cost(self) -> np.ndarray:
        """Per record: chunks x longest chunk, the [C, T] area it occupies in a padded batch."""
        return np.fromiter((len(l) * (l.max() if len(l) else 0) for l in self.lens), np.int64, len(self.lens))


class Collate:
    """Indices -> a batch dict padded to the batch's own largest chunk count and chunk length."""

    def __init__(self, dataset: EncodedDataset, text_name: str, label_name: str, id_name: str | None, pad_id: int):
        self.ds, self.pad_id = dataset, pad_id
        self.ids_key, self.mask_key = ids_key(text_name), mask_key(text_name)
        self.label_name, self.id_name = label_name, id_name or ID

    def __call__(self, indices: Sequence[int]) -> dict[str, Any]:
        import torch

        ids, mask = pad_records([self.ds.ids[i] for i in indices], [self.ds.lens[i] for i in indices], self.pad_id)
        return {
            self.ids_key: torch.from_numpy(ids),  # [B, C, T]
            self.mask_key: torch.from_numpy(mask),  # [B, C, T]
            self.label_name: torch.from_numpy(self.ds.labels[list(indices)]),  # [B]
            self.id_name: [self.ds.record_ids[i] for i in indices],
            **({TRUNCATED: [self.ds.truncated[i] for i in indices]} if self.ds.truncated is not None else {}),
            **side_columns(self.ds.features, self.ds.feature_names, list(indices)),
        }


def side_columns(x: np.ndarray | None, names: list[str] | None, rows: Any = slice(None)) -> dict[str, Any]:
    """A batch's side features: one float32 [B] tensor per feature, keyed by its column name (the model gathers
    them to [B, F] in its own order); {} for a text-only model."""
    import torch

    if x is None or not names:
        return {}
    return {name: torch.from_numpy(np.ascontiguousarray(x[rows, k])) for k, name in enumerate(names)}


def _scatter(
    ids: list[np.ndarray], lens: list[np.ndarray], rows: int, T: int, pad_id: int, row_of_chunk: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
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


def pack_records(
    ids: list[np.ndarray], lens: list[np.ndarray], pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


class LengthGroupedBatchSampler:
    """Batches of records of similar padded size, in random order; sharded across DDP ranks.

    Shuffle, cut into pools of `pool` batches, sort each pool by padded cost, cut into batches, shuffle the
    batches. Every rank gets the same number of batches (padded by repeating records) so DDP never waits on a
    rank that ran out. With `shuffle=False` (evaluation) it only sorts, and ranks get disjoint shards.
    """

    def __init__(
        self,
        cost: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = True,
        group_by_length: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pool: int = 64,
    ) -> None:
        self.cost, self.batch_size, self.shuffle, self.group = cost, batch_size, shuffle, group_by_length
        self.seed, self.num_replicas, self.rank, self.pool, self.epoch = seed, num_replicas, rank, pool, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        n = len(self.cost)
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.group:
            span = self.batch_size * self.pool if self.shuffle else n
            order = np.concatenate(
                [
                    chunk[np.argsort(-self.cost[chunk], kind="stable")]
                    for chunk in np.array_split(order, max(1, math.ceil(n / span)))
                ]
            )
        return order

    def _batches(self) -> list[list[int]]:
        order = self._order()
        if not self.shuffle and self.num_replicas > 1:
            # Evaluation: every rank gets a disjoint, length-sorted shard of records (never an empty one:
            # a rank with no records would stall DDP, so it re-scores record 0, which only happens when
            # there are fewer records than ranks).
            order = order[self.rank :: self.num_replicas]
            if len(order) == 0:
                order = np.array([0])
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            rng = np.random.default_rng(self.seed + self.epoch + 1)
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        if self.num_replicas == 1 or not self.shuffle:
            return iter(batches)
        # Training: equal batch counts per rank (the last ones repeat records) so DDP never waits on a rank.
        per_rank = math.ceil(len(batches) / self.num_replicas)
        batches = (batches * self.num_replicas)[: per_rank * self.num_replicas]
        return iter(batches[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        n = len(self.cost)
        if self.num_replicas == 1:
            return math.ceil(n / self.batch_size)
        if self.shuffle:
            return math.ceil(math.ceil(n / self.batch_size) / self.num_replicas)
        shard = max(1, len(range(self.rank, n, self.num_replicas)))
        return math.ceil(shard / self.batch_size)
