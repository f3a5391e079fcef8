"""One submission pipeline (issue 19.1): `plan` does every check that needs no cluster, local data included, and
`schedule` sends what was planned. A typo in --train never starts a cluster; the dry run is what is sent."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from conftest import TINY_SETS

from raytune_bsm import api
from raytune_bsm.client import connection
from raytune_bsm.errors import DataError


def _raylets() -> set[int]:
    pids = set()
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "raylet":
            pids.add(p.pid)
    return pids


@pytest.mark.parametrize("command", ["submit", "tune"])
def test_a_bad_train_path_is_refused_before_any_cluster_starts(bsm_home: Path, tmp_path: Path, command: str):
    before = _raylets()
    opts = api.SubmitOptions(train=str(tmp_path / "no-such" / "train.parquet"), name="typo")
    with pytest.raises(DataError, match=r"--train: .*no-such.*no such file"):
        api.submit(opts) if command == "submit" else api.tune(opts)
    assert _raylets() <= before  # no raylet started (a local cluster would have one)
    assert not list(bsm_home.glob("cluster*")), list(bsm_home.iterdir())


def test_the_dry_run_is_what_schedule_sends(local_cluster):
    address = local_cluster.dashboard_url
    opts = api.SubmitOptions(address=address, name="as-planned", sets=list(TINY_SETS), max_epochs=1)
    planned = api.submit(opts, dry_run=True).plan()
    job_id = api.submit(opts)
    try:
        _, client = connection.connect(address, start=False)
        info = client.get_job_info(job_id)
        assert job_id == planned["submission_id"]
        assert info.entrypoint == planned["entrypoint"]
        assert info.metadata == planned["metadata"]
        assert info.runtime_env["env_vars"] == planned["runtime_env"]["env_vars"]
    finally:
        api.stop(job_id, address=address)
