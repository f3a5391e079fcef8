"""Job control from the user's machine: status, logs, wait, stop and list bsm's jobs on a cluster."""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from raytune_bsm.client import connection
from raytune_bsm.errors import ClusterError, ConfigError, JobError
from raytune_bsm.storage import exists, join, read_bytes

log = logging.getLogger("raytune_bsm")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}

# ----------------------------------------------------------------------------------------------- job control


def _job_info(client: Any, job_id: str) -> Any:
    try:
        return client.get_job_info(job_id)
    except RuntimeError as e:
        if "does not exist" in str(e) or "404" in str(e):
            raise JobError(f"no job {job_id!r} on this cluster; `bsm list` shows the jobs") from None
        raise


def _iso(ms: int | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ms / 1000)) if ms else None


def status(job_id: str | None = None, *, address: str | None = None) -> dict[str, Any]:
    """State, times, the latest metrics and where the artifacts are. No job id: the newest bsm job."""
    conn, client = _connect(address, start=False)
    if job_id is None:
        jobs = list_jobs(address=address)
        if not jobs:
            raise JobError("no bsm jobs on this cluster yet; submit one with `bsm submit`")
        job_id = jobs[0]["job_id"]
    info = _job_info(client, job_id)
    meta = info.metadata or {}
    out: dict[str, Any] = {
        "job_id": job_id,
        "status": str(info.status.value if hasattr(info.status, "value") else info.status),
        "message": info.message,
        "start_time": _iso(info.start_time),
        "end_time": _iso(info.end_time),
        "run": meta.get("bsm_run"),
        "kind": meta.get("bsm_kind"),
        "run_dir": meta.get("bsm_run_dir"),
    }
    result = _read_result(meta.get("bsm_run_dir"))
    if result:
        out.update(metrics=result.get("metrics"), best_checkpoint=result.get("best_checkpoint"),
                   restarts=len(result.get("restarts") or []), export=result.get("export"))  # fmt: skip
        if "leaderboard" in result:
            out.update(leaderboard=result["leaderboard"], monitor=result.get("monitor"), trials=result.get("trials"))
    else:
        out["metrics"] = latest_metrics(client.get_job_logs(job_id))
    return out


def _read_result(run_dir: str | None) -> dict[str, Any] | None:

    if not run_dir:
        return None
    try:
        path = join(run_dir, "bsm_result.json")
        return json.loads(read_bytes(path)) if exists(path) else None
    except Exception:  # storage the client cannot reach (e.g. cloud credentials only on the cluster)
        return None


def latest_metrics(logs: str) -> dict[str, float] | None:
    """The newest `epoch N validation: {...}` line the workers logged."""
    for line in reversed(logs.splitlines()):
        if " validation: {" in line:
            try:
                return json.loads(line.split(" validation: ", 1)[1])
            except ValueError:
                continue
    return None


def logs(job_id: str, *, address: str | None = None, follow: bool = False, out: TextIO = sys.stderr,
         poll: float = 2.0, retries: int = 30) -> str:  # fmt: skip
    """Write the job's logs to `out`; with `follow`, keep writing until it ends (across dropped connections).

    Returns the job's final status (or the current one without `follow`)."""
    conn, client = _connect(address, start=False)
    _job_info(client, job_id)
    written, failures = 0, 0
    while True:
        try:
            text = client.get_job_logs(job_id)
            state = str(_job_info(client, job_id).status.value)
            failures = 0
        except (ConnectionError, OSError, RuntimeError) as e:  # a dropped connection: retry, then give up
            failures += 1
            if not follow or failures > retries:
                raise ClusterError(f"lost the connection to {conn.dashboard_url} while reading logs: {e}") from None
            time.sleep(poll)
            continue
        if len(text) > written:
            out.write(text[written:])
            out.flush()
            written = len(text)
        if not follow or state in TERMINAL:
            return state
        time.sleep(poll)


def wait(job_id: str, *, address: str | None = None, on_log: TextIO | None = None, timeout: float | None = None) -> str:
    """Block until the job ends; stream its logs to `on_log` if given. Returns the final status."""
    if on_log is not None:
        return logs(job_id, address=address, follow=True, out=on_log)
    conn, client = _connect(address, start=False)
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        state = str(_job_info(client, job_id).status.value)
        if state in TERMINAL:
            return state
        if deadline and time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {state} after {timeout:.0f}s")
        time.sleep(1.0)


def stop(job_id: str, *, address: str | None = None, timeout: float = 30.0) -> str:
    """Stop a running or pending job; wait up to `timeout` s for it to end; return its status."""
    conn, client = _connect(address, start=False)
    info = _job_info(client, job_id)
    state = str(info.status.value)
    if state in TERMINAL:
        return state
    client.stop_job(job_id)
    deadline = time.monotonic() + timeout
    killed = False
    while time.monotonic() < deadline:  # stopping is asynchronous: report the state it reached
        state = str(_job_info(client, job_id).status.value)
        if state in TERMINAL:
            return state
        if state == "PENDING" and not killed and time.monotonic() > deadline - timeout + 3:
            _kill_pending_supervisor(client, job_id)
            killed = True
        time.sleep(0.5)
    return state


def _kill_pending_supervisor(client: Any, job_id: str) -> None:
    """Ray cannot stop a job whose supervisor actor was never scheduled (e.g. it waits for resources no node
    has; ray-project/ray#58353): `stop_job` queues a call the actor never runs. bsm kills that actor from a
    tiny job on the cluster itself, which works wherever the Jobs API does. Ray then records the job FAILED
    ("Job supervisor actor died"), the only terminal state it allows for this."""
    import shlex

    code = (
        "import ray; ray.init(); ray.kill(ray.get_actor("
        f"{'_ray_internal_job_actor_' + job_id!r}, namespace='SUPERVISOR_ACTOR_RAY_NAMESPACE'), no_restart=True)"
    )
    log.warning("job %s is still pending after the stop request; removing its unscheduled supervisor", job_id)
    client.submit_job(entrypoint=f"python -c {shlex.quote(code)}", entrypoint_num_cpus=0,
                      metadata={"bsm_stopper_for": job_id})  # fmt: skip


def list_jobs(*, address: str | None = None) -> list[dict[str, Any]]:
    """bsm's jobs on the cluster, newest first."""
    conn, client = _connect(address, start=False)
    rows = []
    for j in client.list_jobs():
        meta = j.metadata or {}
        if meta.get("bsm") != "1" or not j.submission_id:
            continue
        rows.append(
            {
                "job_id": j.submission_id,
                "status": str(j.status.value),
                "kind": meta.get("bsm_kind"),
                "run": meta.get("bsm_run"),
                "start_time": _iso(j.start_time),
                "end_time": _iso(j.end_time),
                "run_dir": meta.get("bsm_run_dir"),
                "_start": j.start_time or 0,
            }
        )
    rows.sort(key=lambda r: r["_start"], reverse=True)
    for r in rows:
        r.pop("_start")
    return rows


