"""What a cluster holds (CPUs and GPUs per node) and the checks against it; shared by the client (before
submission) and the sweep (on the cluster). Also what this machine gives a local command (`cap_threads`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

from raytune_bsm.errors import ClusterError, ConfigError

log = logging.getLogger("raytune_bsm")


class NodeResources(NamedTuple):
    node_ip: str
    cpus: float
    gpus: float


@dataclass
class ClusterResources:
    total_cpus: float
    total_gpus: float
    nodes: list[NodeResources]
    can_autoscale: bool  # an autoscaler with node types of its own reports through /api/cluster_status
    dashboard_url: str = ""

    @property
    def max_gpus_per_node(self) -> float:
        return max((n.gpus for n in self.nodes), default=0.0)

    def require(self, *, gpus: float = 0, cpus: float = 0, what: str = "the job") -> None:
        """Raise `ClusterError` if `what` needs more GPUs/CPUs than the cluster has and it cannot autoscale."""
        if self.can_autoscale:
            return
        nodes = ", ".join(f"{n.node_ip}: {n.cpus:g} CPUs {n.gpus:g} GPUs" for n in self.nodes) or "no nodes"
        for name, need, have in (("GPUs", gpus, self.total_gpus), ("CPUs", cpus, self.total_cpus)):
            if need > have:
                raise ClusterError(
                    f"{what} needs {need:g} {name} but the Ray cluster at {self.dashboard_url} has {have:g} "
                    f"({nodes}) and does not autoscale; ask for fewer {name} or use a bigger cluster "
                    f"(e.g. `ray up cluster.yaml`)"
                )


def cap_threads(threads: int | None, flag: str = "--threads") -> int | None:
    """`threads` at most the cores this process may run on, with a warning when it asked for more: threads beyond
    the cores only take turns on them (`bsm predict --threads 1000` on 2 cores: 20 records in 15.2 s, not 0.9 s).
    Capped rather than refused, so a command written for a bigger machine still runs here. None stays None."""
    if threads is None:
        return None
    if threads < 1:
        raise ConfigError(f"{flag} must be at least 1, got {threads}")
    from raytune_bsm.scoring.sessions import default_threads  # numpy: off `bsm --help`'s path

    cores = default_threads()
    if threads > cores:
        log.warning("%s %d: this machine gives bsm %d cores; using %d threads", flag, threads, cores, cores)
        return cores
    return threads
