"""What a cluster holds, asked of its dashboard: alive nodes' CPUs/GPUs and whether an autoscaler can add nodes.

Both come from the dashboard's HTTP API with the connection's token (no `ray.init`, no `import ray`):
``GET /api/v0/nodes`` (the state API that `ray.util.state.list_nodes` calls) and ``GET /api/cluster_status``
(what `ray status` shows; Ray has no public client for it).
"""

from __future__ import annotations

import logging
from typing import Any

from raytune_bsm.client.dashboard import Connection, get_json
from raytune_bsm.errors import ClusterError
from raytune_bsm.resources import ClusterResources, NodeResources
from raytune_bsm.text import safe

log = logging.getLogger("raytune_bsm.client")


def _is_readonly_node_type(name: str) -> bool:
    # Ray's readonly provider (a `ray start` cluster without an autoscaling config) names one node type per
    # node: "node_<56 hex node id>" (camel-cased to "node<hex>" by the dashboard's JSON).
    rest = name[4:].lstrip("_") if name.lower().startswith("node") else ""
    return len(rest) >= 32 and all(c in "0123456789abcdefABCDEF" for c in rest)


def _can_autoscale(status: Any) -> bool:
    data = status.get("data") if isinstance(status, dict) else None
    cluster_status = data.get("clusterStatus") if isinstance(data, dict) else None
    report = cluster_status.get("autoscalerReport") if isinstance(cluster_status, dict) else None
    if not isinstance(report, dict):
        return False
    names: set[str] = set()
    for key in ("activeNodes", "idleNodes", "pendingLaunches"):
        value = report.get(key)
        if isinstance(value, dict):
            names.update(value)
    for entry in report.get("pendingNodes") or []:
        if isinstance(entry, (list, tuple)) and len(entry) >= 2:
            names.add(str(entry[1]))
    return any(not _is_readonly_node_type(n) for n in names)


def cluster_resources(conn: Connection) -> ClusterResources:
    """Alive nodes' CPUs/GPUs and whether an autoscaler can add nodes.

    `can_autoscale` is False for clusters whose autoscaler does not report through ``/api/cluster_status``
    (autoscaler v2, e.g. KubeRay); callers should offer an override for those.
    """
    body = get_json(conn, "/api/v0/nodes?limit=10000&detail=false")
    try:
        if not body.get("result", False):
            raise ClusterError(
                f"the Ray dashboard at {conn.dashboard_url} could not list nodes: {safe(body.get('msg'))}; retry"
            )
        rows = body["data"]["result"]["result"]
    except (AttributeError, KeyError, TypeError):
        raise ClusterError(
            f"the Ray dashboard at {conn.dashboard_url} answered /api/v0/nodes in an unexpected form; "
            f"check that it is Ray >= 2.52"
        ) from None
    nodes = []
    for row in rows:
        if not isinstance(row, dict) or row.get("state") != "ALIVE":
            continue
        res = row.get("resources_total") or {}
        nodes.append(NodeResources(safe(row.get("node_ip", "?")), float(res.get("CPU", 0)), float(res.get("GPU", 0))))
    nodes.sort(key=lambda n: (-n.gpus, n.node_ip))
    try:
        can_autoscale = _can_autoscale(get_json(conn, "/api/cluster_status"))
    except ClusterError as e:
        log.debug("no autoscaler status from %s: %s", conn.dashboard_url, e)
        can_autoscale = False
    return ClusterResources(
        total_cpus=sum(n.cpus for n in nodes),
        total_gpus=sum(n.gpus for n in nodes),
        nodes=nodes,
        can_autoscale=can_autoscale,
        dashboard_url=conn.dashboard_url,
    )
