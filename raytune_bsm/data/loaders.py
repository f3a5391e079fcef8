"""The loaders that batch a run's prepared records for one training worker, both ways they come:

- `loaders`: the splits in this process's memory (`EncodedDataset`, a local run, `runtime: local`): a torch
  DataLoader per split, length-grouped batches (`LengthGroupedBatchSampler`), padded by `Collate`;
- `shard_loaders`: this Ray Train worker's equal shares of the splits the driver prepared once into Ray's object
  store (`Shards` says how many rows each has), streamed as the same batches (`ShardBatches`).

Each gives (train, val, test or None); a batch's keys are data/batching.py's either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from raytune_bsm.config import RunConfig
from raytune_bsm.data.batching import Collate, EncodedDataset, LengthGroupedBatchSampler


def loaders(
    run: RunConfig,
    model_config: dict[str, Any],
    pad_id: int,
    splits: tuple[EncodedDataset, EncodedDataset, EncodedDataset | None],
    rank: int = 0,
    world: int = 1,
) -> tuple[Any, Any, Any]:
    """(train, val, test or None) DataLoaders over the splits in memory; rank `rank` of `world` gets its share."""
    from torch.utils.data import DataLoader

    cfg = model_config

    def make(ds: EncodedDataset, train: bool) -> DataLoader:
        sampler = LengthGroupedBatchSampler(
            ds.padded_cost(),
            run.data.batch_size if train else run.data.eval_batch_size,
            shuffle=train,
            group_by_length=run.data.group_by_length or not train,  # eval: always sort, it changes nothing
            seed=run.train.seed,
            num_replicas=world,
            rank=rank,
        )
        collate = Collate(ds, cfg["text_name"], cfg["label_name"], cfg["id_name"], pad_id)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=run.data.num_workers)

    train, val, test = splits
    return make(train, True), make(val, False), (make(test, False) if test is not None else None)


@dataclass(frozen=True)
class Shards:
    """What a Train worker needs to batch its shares of the splits prepared once by the job's driver (the records
    themselves come as Ray dataset shards): sent to every worker in its loop config (`to_dict`)."""

    model_config: dict[str, Any]
    rows: dict[str, int]  # per split: its records
    pad_id: int
    pads: dict[str, int]  # per evaluated split: the padding copies that make its shares equal

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shards:
        return cls(**d)


def shard_loaders(run: RunConfig, shards: Shards, world: int) -> tuple[Any, Any, Any]:
    """This Train worker's (train, val, test or None) loaders over its shares of the run's datasets
    (`TorchTrainer(datasets=...)`): each rank gets (rows + padding copies) // world records of every split."""
    import ray.train

    from raytune_bsm.data.streaming import ShardBatches

    cfg = shards.model_config

    def make(name: str, train: bool) -> ShardBatches:
        return ShardBatches(
            ray.train.get_dataset_shard(name),
            (shards.rows[name] + shards.pads.get(name, 0)) // world,
            run.data.batch_size if train else run.data.eval_batch_size,
            train=train,
            group_by_length=run.data.group_by_length,
            seed=run.train.seed,
            text_name=cfg["text_name"],
            label_name=cfg["label_name"],
            id_name=cfg["id_name"],
            pad_id=shards.pad_id,
            feature_names=cfg.get("feature_fields") if cfg.get("fusion") != "text" else None,
        )

    return make("train", True), make("val", False), (make("test", False) if "test" in shards.rows else None)
