"""How each Ray Train worker gets its share of the prepared datasets.

bsm's prepared splits are materialized (in Ray's object store) before the trainer starts, so there is nothing left
to stream: the driver cuts each one in place into equal shares (`MaterializedDataset.split(n, equal=True)`),
one per rank, fixed for the run, and `EqualShards` hands them out. Ray's default (`streaming_split`) would start a SplitCoordinator actor per dataset
and run a streaming executor in it every epoch, which costs a small run seconds of start-up and buys nothing here.
A dataset that is not materialized (someone else's) still goes through Ray's default.

Equal shares are what keep every rank at the same batch count (DDP hangs otherwise). Validation and test splits
come padded to a multiple of the world size (runner/prepare.pad_to_multiple), so they lose nothing; the training
split leaves out its last rows % world records (at most world-1), as DistributedSampler(drop_last=True) would.
"""

from __future__ import annotations

from typing import Any

import ray.train


class EqualShards(ray.train.DataConfig):
    """`DataConfig(datasets_to_split="all")`, with bsm's datasets handed out as the equal shares the driver cut
    before the trainer started (`shares(...)`). A dataset with no shares for this world size goes Ray's way."""

    def __init__(self, shares: dict[str, list[Any]] | None = None) -> None:
        super().__init__(datasets_to_split="all")
        self.shares = shares or {}

    def configure(
        self, datasets: dict[str, Any], world_size: int, worker_handles: Any, worker_node_ids: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        streamed = {k: ds for k, ds in datasets.items() if len(self.shares.get(k, ())) != world_size}
        out = (
            super().configure(streamed, world_size, worker_handles, worker_node_ids, **kwargs)
            if streamed
            else [{} for _ in range(world_size)]
        )
        for name in datasets:
            if name not in streamed:
                for rank, share in enumerate(self.shares[name]):
                    out[rank][name] = share.iterator()
        return out


def shares(datasets: dict[str, Any], world_size: int) -> dict[str, list[Any]]:
    """Each materialized dataset cut into `world_size` equal shares. Done in the driver before any trainer holds
    the cluster's CPUs: cutting a block in two is a Ray task, which a Train worker's own dataset manager could
    wait on forever with every CPU reserved by the workers."""
    return {name: ds.split(world_size, equal=True) for name, ds in datasets.items()}
