"""The README's multi-node example, as a user runs it, against a simulated two-node cluster with s3:// storage.

    bsm submit --address http://HEAD:8265 --num-gpus 8 --storage s3://bucket/bsm-runs --train s3://bucket/claims/

The cluster is a real `ray.cluster_utils.Cluster` (a head with the dashboard and a second node, separate raylets),
the storage a real S3 API on 127.0.0.1 (moto). This machine has no GPU, so `--num-gpus 8` is checked by its plan
(`--dry-run`) and the run itself takes `--num-workers 2`, one worker per node; everything else is the README's
command: the CLI in a subprocess, `--address` the head's dashboard, the training data a directory of Parquet files
on s3://, the run directory, its checkpoints and its export on s3://, then `bsm fetch` and `bsm predict`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import TINY_SETS

pytestmark = pytest.mark.slow

FILES = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_node_head(s3_server):
    """A head (dashboard on a loopback port) and a second node, 3 CPUs each, both holding the S3 server's credentials in their
    environment, as a real cluster's nodes hold theirs. Stopped at the end of the module."""
    from ray.cluster_utils import Cluster

    port = _free_port()
    with s3_server.environment():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 3,
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": port,
            },
        )
        # Its own runtime-env directory, as a second machine has its own disk: on one machine both nodes would
        # unpack the job's packages into one place, and the second unpacking deletes the driver's working dir.
        cluster.add_node(num_cpus=3, runtime_env_dir_name="runtime_resources_node2")
        cluster.wait_for_nodes()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        cluster.shutdown()


def _bsm(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raytune_bsm.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_readme_multi_node_example_on_two_nodes_and_s3(two_node_head, s3, tmp_path):
    from raytune_bsm.demo.generator import make_dialogues

    claims = tmp_path / "claims"
    claims.mkdir()
    table = make_dialogues(240, seed=7)
    for k in range(FILES):
        pq.write_table(table.slice(k * 80, 80), claims / f"part-{k}.parquet")
    train = s3.upload(claims, "claims") + "/"
    storage = s3.uri("bsm-runs")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(s3.env, BSM_HOME=str(tmp_path / "home"))
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    readme = ["submit", "--address", two_node_head, "--storage", storage, "--train", train]

    # The README's command, GPUs and all: the plan asks 8 workers with one GPU each, NCCL.
    plan = _bsm(*readme, "--num-gpus", "8", "--dry-run", env=env, timeout=120)
    assert plan.returncode == 0, plan.stderr
    resolved = json.loads(plan.stdout)
    scaling = resolved["scaling"]
    assert (scaling["num_workers"], scaling["use_gpu"], scaling["backend"]) == (8, True, "nccl")
    assert scaling["resources_per_worker"].get("GPU") == 1
    assert resolved["config"]["storage"] == storage and resolved["config"]["data"]["train"] == train

    # The same command on this machine's CPUs: one worker on each node, everything on s3://.
    # Two CPUs a worker on nodes of three: one worker fits a node (Ray places them), one CPU stays for the data.
    done = _bsm(
        *readme,
        "--num-workers",
        "2",
        "--cpus-per-worker",
        "2",
        "--name",
        "readme",
        "--max-epochs",
        "1",
        "--follow",
        *sets,
        env=env,
    )
    assert done.returncode == 0, done.stderr[:6000]
    assert "job bsm-readme: SUCCEEDED" in done.stderr
    keys = s3.keys("bsm-runs/readme")
    assert "bsm-runs/readme/export/manifest.json" in keys, keys
    workers = [json.loads(s3.read(k)) for k in keys if k.startswith("bsm-runs/readme/bsm_workers/rank-")]
    assert len({w["node_id"] for w in workers}) == 2  # the two workers ran on the two nodes
    assert workers[0]["weights_sha256"] == workers[1]["weights_sha256"]

    fetched = _bsm(
        "fetch", "bsm-readme", "--to", str(tmp_path / "model"), "--address", two_node_head, env=env, timeout=300
    )
    assert fetched.returncode == 0, fetched.stderr
    scored = _bsm(
        "predict",
        str(tmp_path / "model"),
        str(claims / "part-0.parquet"),
        "--out",
        str(tmp_path / "s.parquet"),
        env=env,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 80
    assert not [k for k in s3.keys() if ".tmp" in k]
