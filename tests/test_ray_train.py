"""Ray Train on a simulated two-node cluster (`ray.cluster_utils.Cluster`): placement, DDP sync, fault tolerance."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import TINY_ENCODER

from raytune_bsm.config import RunConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _run(name: str, **train) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": name,
            "model": {"encoder_config": TINY_ENCODER, "lr": 1e-3, "max_tokens": 64, "max_chunks": 4},
            "data": {"demo_rows": 200, "batch_size": 16},
            "train": {"max_epochs": 1, **train},
            "scaling": {"num_workers": 2, "cpus_per_worker": 1, "placement_strategy": "STRICT_SPREAD"},
        }
    )


def _workers(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "bsm_workers").glob("rank-*.json"))]


def test_two_workers_one_per_node_end_with_identical_weights(two_nodes, tmp_path):
    from raytune_bsm.runner.train import fit

    summary = fit(_run("two-nodes"), storage=str(tmp_path))
    assert summary["error"] is None
    workers = _workers(tmp_path / "two-nodes")
    assert len(workers) == 2
    assert workers[0]["node_id"] != workers[1]["node_id"]  # one worker on each node
    assert {n["NodeID"] for n in __import__("ray").nodes()} >= {w["node_id"] for w in workers}
    assert workers[0]["weights_sha256"] == workers[1]["weights_sha256"]  # DDP kept the replicas identical


def test_killed_worker_resumes_from_latest_checkpoint(two_nodes, tmp_path):
    """SIGKILL one training worker after the first checkpoint; the run restarts from it and finishes."""
    from raytune_bsm.runner.train import fit

    run = _run("killed", max_epochs=4)
    run_dir = tmp_path / "killed"
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(summary=fit(run, storage=str(tmp_path))))
    t.start()
    deadline = time.monotonic() + 300
    # Ray writes its checkpoint manager's snapshot once a reported checkpoint is registered: from then on a
    # restarted worker group gets that checkpoint back.
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    while not snapshot.exists() and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.2)
    assert snapshot.exists(), "no checkpoint was registered"
    victim = next(w for w in _workers(run_dir) if "weights_sha256" not in w)  # a worker still training
    os.kill(victim["pid"], signal.SIGKILL)
    t.join(timeout=600)
    summary = box["summary"]
    assert summary["error"] is None
    assert len(summary["restarts"]) == 1  # the failure it survived, reported
    assert summary["restarts"][0]["resumed_from"].startswith(str(run_dir))
    assert summary["metrics"]["epoch"] == 3  # all four epochs done (0-based)
