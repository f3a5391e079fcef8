"""A Train worker's shard of a tokenized Ray Dataset -> padded [B, C, T] batches, length-grouped.

    ray.train.get_dataset_shard("train")        (Ray splits each dataset equally: every rank gets rows // world)
      -> iter_batches(WINDOW records, locally shuffled for training)
      -> within a window: sort by cost (chunks x longest chunk), cut into batches, shuffle the batches' order
      -> pad_records (the one [B, C, T] padding, shared with the in-memory path and predict)

Validation and test splits come padded to a multiple of the world size with copies of a record marked `pad`
(runner/prepare.py), so equal shares drop none of their rows; the model counts padded copies nowhere.

Every rank holds the same number of rows, cut into windows of the same sizes, so every rank yields the same
number of batches (DDP would hang otherwise), and `len()` knows it before the first batch: Lightning's learning-
rate schedule takes its step count from there. Torch is imported only when iterating.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from raytune_bsm.data.batching import (
    CHUNK_LENS,
    COST,
    ID,
    INPUT_IDS,
    LABEL,
    PAD,
    TRUNCATED,
    ids_key,
    mask_key,
    pad_records,
    side_columns,
)
from raytune_bsm.data.features import PREFIX

WINDOW = 4096  # records sorted by length together: big enough to group well, small enough to stay random


class ShardBatches:
    """An iterable of batch dicts over one rank's shard; each `iter()` is one epoch (a new shuffle)."""

    def __init__(
        self,
        shard: Any,
        rows: int,
        batch_size: int,
        *,
        train: bool,
        group_by_length: bool,
        seed: int,
        text_name: str,
        label_name: str,
        id_name: str | None,
        pad_id: int,
        window: int = WINDOW,
        feature_names: list[str] | None = None,
    ) -> None:
        self.shard, self.rows, self.batch_size, self.window = shard, rows, batch_size, max(window, batch_size)
        self.train, self.group, self.seed, self.pad_id = train, group_by_length or not train, seed, pad_id
        self.ids_key, self.mask_key = ids_key(text_name), mask_key(text_name)
        self.label_name, self.id_name = label_name, id_name or ID
        self.feature_names = feature_names or []  # side features: a `feature/<name>` column each
        self.epoch = 0

    def __len__(self) -> int:
        full, rest = divmod(self.rows, self.window)
        return full * math.ceil(self.window / self.batch_size) + math.ceil(rest / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        shuffle = (
            {"local_shuffle_buffer_size": self.window, "local_shuffle_seed": self.seed + self.epoch}
            if self.train
            else {}
        )
        self.epoch += 1
        seen = 0
        for window in self.shard.iter_batches(batch_size=self.window, batch_format="pyarrow", **shuffle):
            seen += window.num_rows
            cost = window.column(COST).to_numpy()
            order = np.argsort(cost, kind="stable") if self.group else rng.permutation(window.num_rows)
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            if self.train:
                rng.shuffle(batches)  # length-grouped batches, in random order
            for rows in batches:
                yield self.collate(window.take(pa.array(rows, pa.int64())))
        if seen != self.rows:  # would give this rank another batch count than the others: DDP would hang
            raise RuntimeError(f"this rank's shard held {seen} records, {self.rows} expected")

    def collate(self, t: pa.Table) -> dict[str, Any]:
        import torch

        ids = _lists(t.column(INPUT_IDS))  # per record: int32 [tokens]
        lens = _lists(t.column(CHUNK_LENS))  # per record: int32 [chunks]
        padded, mask = pad_records(ids, lens, self.pad_id)
        return {
            self.ids_key: torch.from_numpy(padded),  # [B, C, T]
            self.mask_key: torch.from_numpy(mask),  # [B, C, T]
            self.label_name: torch.from_numpy(t.column(LABEL).to_numpy().astype(np.int64)),  # [B]
            self.id_name: t.column(ID).to_pylist(),
            TRUNCATED: t.column(TRUNCATED).to_pylist(),
            # copies that make an evaluated split's shares equal (runner/prepare.py): run, but never counted
            PAD: torch.from_numpy(t.column(PAD).to_numpy(zero_copy_only=False)),  # [B] bool
            **side_columns(_side(t, self.feature_names), self.feature_names),  # per feature: [B] float32
        }


def _side(t: pa.Table, names: list[str]) -> np.ndarray | None:
    """The side feature columns of a prepared batch -> raw float32 [B, F] (null: NaN), or None."""
    if not names:
        return None
    return np.stack([t.column(PREFIX + n).to_numpy(zero_copy_only=False) for n in names], 1).astype(np.float32)


def _lists(column: pa.ChunkedArray) -> list[np.ndarray]:
    """A list<int32> column -> one numpy array per row, without a Python list per token."""
    arr = column.combine_chunks()
    offsets = arr.offsets.to_numpy()
    values = arr.values.to_numpy(zero_copy_only=False)
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(arr))]
