"""Job control from the user's machine: status, logs, wait, stop and list bsm's jobs on a cluster.

Everything a cluster says (job messages, log lines, metadata) passes `text.safe` before it reaches a terminal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shlex
import sys
import time
from typing import Any, TextIO

from raytune_bsm.client import connection
from raytune_bsm.errors import BsmError, ClusterError, JobError
from raytune_bsm.layout import RunDir
from raytune_bsm.logline import EpochValidation, parse_epoch
from raytune_bsm.records import JobInfo, RunResult, SweepResult, result_from_dict
from raytune_bsm.storage import exists, read_bytes
from raytune_bsm.text import safe

log = logging.getLogger("raytune_bsm")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# The ids bsm issues (bsm-RUN, bsm-RUN-resume-DATE-TIME; RUN as --name allows) and Ray's own (raysubmit_...): one
# path segment of the Jobs API, so nothing that would make `nope/../bsm-x`, `bsm-x?q` or `bsm-x#f` reach another.
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
# The stack dump Ray's processes print when a signal ends them (`bsm stop`): "*** SIGTERM received at time=...",
# "PC: @ 0x...", "    @ 0x...", bare or behind Ray's "[date E pid tid] logging.cc:N: " and a "(worker pid=N)" prefix.
_SIGNAL_DUMP = re.compile(
    r"^(?:\(.*?\)\s+)?(?:\[[^\]]*\]\s+\S+:\d+:\s*)?"
    r"(?:\*\*\* SIG[A-Z]+ received at time=.*|PC: @\s+0x[0-9a-fA-F]+.*|\s*@\s+(?:0x[0-9a-fA-F]+|\.\.\.).*)$"
)
# The line of a log that says why it failed: a Python exception, bsm's own error line, or the shell's.
_ERROR_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Failure)\b.*|bsm: error: .*|(?:/bin/)?sh: .+)$"
)


def _connect(address: str | None, allow_insecure: bool = False) -> tuple[Any, Any]:
    return connection.connect(address, start=False, allow_insecure=allow_insecure)


def check_job_id(job_id: str) -> str:
    """`job_id` if it has the form of a job id bsm or Ray issues, else a JobError naming it."""
    if not JOB_ID.fullmatch(job_id):
        raise JobError(
            f"{safe(job_id)!r} is not a job id (bsm's are bsm-RUN, Ray's raysubmit_...: letters, digits, '-', '_' "
            "and '.'); `bsm list` shows the jobs"
        )
    return job_id


def _job_info(client: Any, job_id: str) -> Any:
    check_job_id(job_id)
    try:
        return client.get_job_info(job_id)
    except RuntimeError as e:
        if "does not exist" in str(e) or "404" in str(e):
            raise JobError(f"no job {safe(job_id)!r} on this cluster; `bsm list` shows the jobs") from None
        raise


def _state(info: Any) -> str:
    return str(info.status.value if hasattr(info.status, "value") else info.status)


def _iso(ms: int | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ms / 1000)) if ms else None


def _meta(info: Any, key: str) -> str | None:
    value = (info.metadata or {}).get(key)
    return safe(value) if value is not None else None


# ----------------------------------------------------------------------------------------------- status


def status(job_id: str | None = None, *, address: str | None = None, allow_insecure: bool = False) -> JobInfo:
    """State, times, the latest metrics and where the artifacts are; for a FAILED job, why ("error").
    No job id: the newest bsm job. `.to_dict()` is `bsm status --json`."""
    if job_id is not None:
        check_job_id(job_id)
    _, client = _connect(address, allow_insecure)
    if job_id is None:
        jobs = _list(client)
        if not jobs:
            raise JobError("no bsm jobs on this cluster yet; submit one with `bsm submit`")
        job_id = jobs[0]["job_id"]
    info = _job_info(client, job_id)
    out = JobInfo(
        job_id=safe(job_id),
        status=_state(info),
        message=safe(info.message) if info.message is not None else None,
        start_time=_iso(info.start_time),
        end_time=_iso(info.end_time),
        run=_meta(info, "bsm_run"),
        kind=_meta(info, "bsm_kind"),
        run_dir=_meta(info, "bsm_run_dir"),
    )
    logs_text: str | None = None
    if out.status == "FAILED":
        logs_text = client.get_job_logs(job_id)
        out.error = failure_reason(info, logs_text)
    out.result = _read_result(out.run_dir)
    if out.result is None:
        out.metrics = latest_metrics(logs_text if logs_text is not None else client.get_job_logs(job_id))
    return out


def failure_reason(info: Any, logs_text: str) -> str:
    """Why a job failed, in one escaped line: Ray's message, the driver's exit code, the log's last error line."""
    parts = []
    if info.message and info.message.strip():
        # Ray appends ", last available logs (truncated to 20,000 chars):" and the logs; the error line follows.
        first = info.message.strip().splitlines()[0].split(", last available logs", 1)[0].rstrip(":")
        parts.append(safe(first))
    code = getattr(info, "driver_exit_code", None)
    if code not in (None, 0):
        parts.append(f"driver exit code {code}")
    line = last_error_line(logs_text)
    if line and not any(line in p for p in parts):
        parts.append(line)
    return "; ".join(parts) or "no reason given by Ray; see `bsm logs`"


def last_error_line(logs_text: str) -> str | None:
    """The last line of `logs_text` that names an error (an exception, ``bsm: error: ...``), escaped."""
    for line in reversed(logs_text.splitlines()):
        line = line.strip()
        if _ERROR_LINE.match(line):
            return safe(line)
    return None


def _read_result(run_dir: str | None) -> RunResult | SweepResult | None:
    if not run_dir:
        return None
    try:
        path = RunDir.at(run_dir).result
        return result_from_dict(json.loads(read_bytes(path))) if exists(path) else None
    except Exception:  # noqa: BLE001 - storage the client cannot reach (e.g. cloud credentials only on the cluster)
        return None


def latest_metrics(logs: str) -> dict[str, float | None] | None:
    """The metrics of the newest validation line the workers logged (logline's format)."""
    for line in reversed(logs.splitlines()):
        event = parse_epoch(line)
        if isinstance(event, EpochValidation):
            return event.metrics
    return None


# ----------------------------------------------------------------------------------------------- logs


def logs(
    job_id: str,
    *,
    address: str | None = None,
    follow: bool = False,
    out: TextIO = sys.stderr,
    poll: float = 2.0,
    retries: int = 30,
    allow_insecure: bool = False,
) -> str:
    """Write the job's logs to `out` (escaped); with `follow`, stream them until the job ends, across dropped
    connections. Returns the job's final status (or the current one without `follow`)."""
    check_job_id(job_id)
    conn, client = _connect(address, allow_insecure)
    info = _job_info(client, job_id)
    if not follow:
        out.write(safe(without_signal_dumps(client.get_job_logs(job_id)), multiline=True))
        out.flush()
        return _state(info)
    return follow_logs(client, job_id, out, poll=poll, retries=retries, where=conn.dashboard_url)


def follow_logs(
    client: Any, job_id: str, out: TextIO, *, poll: float = 2.0, retries: int = 30, where: str = "the cluster"
) -> str:
    """Stream a job's logs with `client.tail_job_logs` until the job is terminal; return its final state.

    The stream replays the log from its start on every connection, so after a drop bsm reconnects and skips
    what it already printed. Gives up (ClusterError) after `retries` failed connections in a row."""
    printed = 0  # characters of the log written so far
    failures = 0
    lines = LogLines()

    async def tail() -> None:
        nonlocal printed, failures
        seen = 0
        async for chunk in client.tail_job_logs(job_id):
            new = chunk[max(0, printed - seen) :]
            seen += len(chunk)
            if new:
                out.write(safe(lines.feed(new), multiline=True))
                out.flush()
                printed = seen
                failures = 0

    while True:
        try:
            asyncio.run(tail())
            state = _state(_job_info(client, job_id))
        except BsmError:
            raise
        except Exception as e:  # noqa: BLE001 - a dropped connection (aiohttp, requests or Ray's RuntimeError): retry
            failures += 1
            if failures > retries:
                raise ClusterError(
                    f"lost the connection to {where} while following the logs of {safe(job_id)} "
                    f"({type(e).__name__}: {safe(str(e))}); run `bsm logs --follow` again"
                ) from None
            log.debug("log stream of %s dropped (%s); reconnecting", job_id, e)
            time.sleep(poll)
            continue
        if state in TERMINAL:
            out.write(safe(lines.flush(), multiline=True))
            out.flush()
            return state
        time.sleep(poll)  # the stream ended but the job did not: reconnect


class LogLines:
    """A job's log as it streams in, by whole lines, without Ray's signal stack dumps (`_SIGNAL_DUMP`)."""

    def __init__(self) -> None:
        self._partial = ""  # the last line, until its newline arrives

    def feed(self, text: str) -> str:
        head, _, self._partial = (self._partial + text).rpartition("\n")
        return without_signal_dumps(head + "\n") if head or _ else ""

    def flush(self) -> str:
        rest, self._partial = self._partial, ""
        return without_signal_dumps(rest)


def without_signal_dumps(text: str) -> str:
    """`text` without the lines of Ray's signal stack dumps."""
    return "".join(line for line in text.splitlines(keepends=True) if not _SIGNAL_DUMP.match(line.rstrip("\r\n")))


def wait(
    job_id: str,
    *,
    address: str | None = None,
    on_log: TextIO | None = None,
    timeout: float | None = None,
    allow_insecure: bool = False,
) -> str:
    """Block until the job ends; stream its logs to `on_log` if given. Returns the final status."""
    check_job_id(job_id)
    if on_log is not None:
        return logs(job_id, address=address, follow=True, out=on_log, allow_insecure=allow_insecure)
    _, client = _connect(address, allow_insecure)
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        state = _state(_job_info(client, job_id))
        if state in TERMINAL:
            return state
        if deadline and time.monotonic() > deadline:
            raise JobError(f"job {safe(job_id)} still {state} after {timeout:.0f}s")
        time.sleep(1.0)


# ----------------------------------------------------------------------------------------------- stop, list


def stop(job_id: str, *, address: str | None = None, timeout: float = 30.0, allow_insecure: bool = False) -> str:
    """Stop a running or pending job; wait up to `timeout` s for it to end; return its status."""
    check_job_id(job_id)
    _, client = _connect(address, allow_insecure)
    state = _state(_job_info(client, job_id))
    if state in TERMINAL:
        return state
    client.stop_job(job_id)
    deadline = time.monotonic() + timeout
    killed = False
    while time.monotonic() < deadline:  # stopping is asynchronous: report the state it reached
        state = _state(_job_info(client, job_id))
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
    code = (
        "import ray; ray.init(); ray.kill(ray.get_actor("
        f"{'_ray_internal_job_actor_' + job_id!r}, namespace='SUPERVISOR_ACTOR_RAY_NAMESPACE'), no_restart=True)"
    )
    log.warning("job %s is still pending after the stop request; removing its unscheduled supervisor", safe(job_id))
    client.submit_job(
        entrypoint=f"python -c {shlex.quote(code)}", entrypoint_num_cpus=0, metadata={"bsm_stopper_for": job_id}
    )


def list_jobs(*, address: str | None = None, allow_insecure: bool = False) -> list[dict[str, Any]]:
    """bsm's jobs on the cluster, newest first."""
    _, client = _connect(address, allow_insecure)
    return _list(client)


def _list(client: Any) -> list[dict[str, Any]]:
    rows = []
    for j in client.list_jobs():
        if (j.metadata or {}).get("bsm") != "1" or not j.submission_id:
            continue
        rows.append(
            {
                "job_id": safe(j.submission_id),
                "status": _state(j),
                "kind": _meta(j, "bsm_kind"),
                "run": _meta(j, "bsm_run"),
                "start_time": _iso(j.start_time),
                "end_time": _iso(j.end_time),
                "run_dir": _meta(j, "bsm_run_dir"),
                "_start": j.start_time or 0,
            }
        )
    rows.sort(key=lambda r: r["_start"], reverse=True)
    for r in rows:
        r.pop("_start")
    return rows
