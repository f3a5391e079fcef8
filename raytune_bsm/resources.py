"""What a cluster holds (CPUs and GPUs per node) and the checks against it; shared by the client (before
submission) and the sweep (on the cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from raytune_bsm.errors import ClusterError


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
