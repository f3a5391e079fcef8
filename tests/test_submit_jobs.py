"""`bsm submit` and job control against a real local Ray cluster (token auth on), through the Python API."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import TINY_SETS

from raytune_bsm import api
from raytune_bsm.client import connection
from raytune_bsm.errors import JobError

pytestmark = pytest.mark.slow


def _wait_for(job_id: str, states: set[str], address: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api.status(job_id, address=address)["status"]
        if state in states:
            return state
        time.sleep(0.5)
    raise AssertionError(f"{job_id} never reached {states}; last {state}")


def test_submit_runs_to_success_and_status_logs_list_agree(local_cluster, tmp_path):
    address = local_cluster.dashboard_url
    opts = api.SubmitOptions(address=address, name="e2e", sets=TINY_SETS + ["demo_rows=200"])
    job_id = api.submit(opts)
    assert job_id == "bsm-e2e"
    seen = {_wait_for(job_id, {"RUNNING", "SUCCEEDED", "FAILED"}, address)}
    out = io.StringIO()
    final = api.logs(job_id, address=address, follow=True, out=out, poll=0.5)
    seen.add(final)
    assert final == "SUCCEEDED", out.getvalue()[-3000:]
    assert "RUNNING" in seen or "SUCCEEDED" in seen

    info = api.status(job_id, address=address)
    assert info["status"] == "SUCCEEDED" and info["run"] == "e2e"
    run_dir = Path(info["run_dir"])
    assert run_dir == Path(local_cluster.storage) / "e2e"
    assert 0.0 <= info["metrics"]["val_auroc"] <= 1.0
    assert Path(info["best_checkpoint"]).is_dir() and (Path(info["best_checkpoint"]) / "checkpoint.ckpt").exists()

    logs_text = out.getvalue()
    assert "validation:" in logs_text and "checkpoints:" in logs_text
    assert api.latest_metrics(logs_text)["val_auroc"] == pytest.approx(info["metrics"]["val_auroc"], abs=1e-4)

    listed = {r["job_id"]: r for r in api.list_jobs(address=address)}
    assert listed[job_id]["status"] == "SUCCEEDED" and listed[job_id]["run"] == "e2e"

    # What ran is what was submitted: the resolved config is stored with the run.
    stored = json.loads((run_dir / "bsm_config.json").read_text())
    assert stored["model"]["max_tokens"] == 64 and stored["data"]["demo_rows"] == 200
    preds = pq.read_table(run_dir / "test_predictions").to_pydict()
    assert len(preds["id"]) == 20 and set(preds) >= {"id", "label", "predicted", "prob_0", "prob_1"}

    # The best checkpoint was exported; `bsm fetch JOB` finds it through the job's metadata and verifies it.
    assert info["export"] == str(run_dir / "export")
    fetched = api.fetch(job_id, str(tmp_path / "model"), address=address)
    parity = json.loads((fetched / "manifest.json").read_text())["parity"]
    assert parity["onnxruntime"]["max_abs_diff"] <= 1e-4 and parity["torchscript"]["max_abs_diff"] <= 1e-4


def test_stop_running_and_pending_jobs(local_cluster):
    address = local_cluster.dashboard_url
    conn = connection.resolve_connection(address, start=False)
    client = connection.job_client(conn)
    # Pending: the entrypoint needs a resource no node has, so it never starts.
    pending = client.submit_job(
        entrypoint="python -c 'print(1)'",
        entrypoint_resources={"no_such_resource": 1},
        metadata={"bsm": "1", "bsm_kind": "train", "bsm_run": "pending"},
    )
    assert api.status(pending, address=address)["status"] == "PENDING"
    # Ray cannot stop a never-scheduled job (ray-project/ray#58353); bsm removes its supervisor and Ray ends it.
    assert api.stop(pending, address=address) in ("STOPPED", "FAILED")
    assert api.status(pending, address=address)["status"] in ("STOPPED", "FAILED")

    running = api.submit(
        api.SubmitOptions(address=address, name="to-stop", max_epochs=50, sets=TINY_SETS + ["demo_rows=200"])
    )
    _wait_for(running, {"RUNNING"}, address)
    assert api.stop(running, address=address) == "STOPPED"
    assert {r["job_id"]: r["status"] for r in api.list_jobs(address=address)}[running] == "STOPPED"


def test_unknown_job_id_is_a_clear_error(local_cluster):
    address = local_cluster.dashboard_url
    for call in (api.status, api.stop, lambda j, address: api.logs(j, address=address)):
        with pytest.raises(JobError, match="no job 'bsm-nope' on this cluster"):
            call("bsm-nope", address=address)


def test_more_cpus_than_the_cluster_has_fails_before_submission(local_cluster):
    from raytune_bsm.errors import ClusterError

    address = local_cluster.dashboard_url
    before = {r["job_id"] for r in api.list_jobs(address=address)}
    with pytest.raises(ClusterError, match=r"needs 64 CPUs .* the cluster has 2"):
        api.submit(api.SubmitOptions(address=address, name="too-big", num_workers=8, cpus_per_worker=8))
    with pytest.raises(ClusterError, match=r"needs 1 GPUs .* the cluster has 0"):
        api.submit(api.SubmitOptions(address=address, name="no-gpu", num_gpus=1))
    assert {r["job_id"] for r in api.list_jobs(address=address)} == before


def test_token_appears_in_no_plan_metadata_or_output(local_cluster, capfd):
    token = Path(local_cluster.token_file).read_text().strip()
    address = local_cluster.dashboard_url
    plan = api.submit(api.SubmitOptions(address=address, name="plan"), dry_run=True).plan()
    assert token not in json.dumps(plan)
    conn = connection.resolve_connection(address, start=False)
    assert token not in repr(conn)
    client = connection.job_client(conn)
    for job in client.list_jobs():
        assert token not in json.dumps(job.metadata or {}) and token not in json.dumps(job.runtime_env or {})
    out, err = capfd.readouterr()
    assert token not in out and token not in err


def test_sweep_needing_more_gpus_per_trial_than_the_cluster_has_fails_before_submission(local_cluster):
    from raytune_bsm.errors import ClusterError

    address = local_cluster.dashboard_url
    before = {r["job_id"] for r in api.list_jobs(address=address)}
    with pytest.raises(ClusterError, match="--gpus-per-trial"):
        api.tune(api.SubmitOptions(address=address, name="gpu-sweep"), {"gpus_per_trial": 4})
    assert {r["job_id"] for r in api.list_jobs(address=address)} == before


def test_status_of_a_failed_job_says_why_escaped(local_cluster):
    import shlex

    address = local_cluster.dashboard_url
    _, client = connection.connect(address, start=False)
    code = 'print("\\x1b[2Jstarting"); raise ValueError("boom \\x1b[31mred")'
    job_id = client.submit_job(
        entrypoint=f"python -c {shlex.quote(code)}", metadata={"bsm": "1", "bsm_kind": "train", "bsm_run": "fails"}
    )
    assert _wait_for(job_id, {"FAILED"}, address) == "FAILED"
    info = api.status(job_id, address=address)
    assert "ValueError: boom red" in info["error"], info["error"]
    assert "exit code 1" in info["error"] and "\x1b" not in info["error"] and "\n" not in info["error"]
    out = io.StringIO()
    assert api.logs(job_id, address=address, out=out) == "FAILED"
    assert "starting" in out.getvalue() and "\x1b" not in out.getvalue()
