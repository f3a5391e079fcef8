"""The local Ray cluster bsm starts and stops: `up`, `down`, `running_cluster` and its record.

`up()` runs ``<this python> -m ray.scripts.scripts start --head --block ...`` (see `head`) as a child in a
session of its own, so every Ray process of that cluster descends from a process bsm knows, and its jobs run
with this interpreter. Its record is ``bsm_home()/cluster.json``. Everything listens on 127.0.0.1 only: the
dashboard via ``--dashboard-host``, the rest because ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray use the
loopback address as the node IP, as it does for its single-node macOS/Windows clusters; the jobs' torch process
groups bind that node IP too (`runner/process_group.py`). Its processes and jobs get a TMPDIR of their own
(``<temp dir>/tmp``). `down()` names the jobs still running (and refuses without `force`), stops only the
recorded process (pid *and* start time checked) and what is below it (`processes`), and removes that TMPDIR.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from raytune_bsm.client import head, processes
from raytune_bsm.client.auth import TOKEN_NAME, read_token_file, write_token
from raytune_bsm.client.dashboard import Connection, job_client, probe
from raytune_bsm.client.nodes import cluster_resources
from raytune_bsm.errors import ClusterError, ConfigError
from raytune_bsm.layout import bsm_home
from raytune_bsm.text import safe

log = logging.getLogger("raytune_bsm.client")

Progress = Callable[[str], None]

RECORD_NAME = "cluster.json"
LOG_NAME = "ray-head.log"
LOCK_NAME = "cluster.lock"
_ATTEMPTS = 3  # starts of a head whose port another program took between bsm's check and Ray's bind


def resolve_home(home: Path | str | None) -> Path:
    return Path(home).expanduser().absolute() if home is not None else bsm_home()


def _say(progress: Progress | None, msg: str) -> None:
    if progress is not None:
        progress(msg)
    else:
        log.info(msg)


@dataclass
class LocalCluster:
    """What bsm started: the record kept in ``bsm_home()/cluster.json`` (the token itself is not in it)."""

    gcs_address: str  # "127.0.0.1:PORT": for `ray.init(address=...)` on this machine, not the Jobs API
    dashboard_url: str  # "http://127.0.0.1:PORT": dashboard + Jobs API
    pid: int  # the `ray start --head --block` process bsm spawned; leader of its own session/process group
    num_cpus: float
    num_gpus: float
    temp_dir: str  # Ray's --temp-dir (sessions, logs, sockets)
    log_file: str  # stdout/stderr of the head process
    started_at: str  # ISO 8601, UTC
    storage: str  # default run storage for jobs on this cluster: bsm_home()/runs
    token_file: str = ""  # mode 0600; RAY_AUTH_TOKEN_PATH of the cluster
    pid_start_time: float | None = None  # psutil create_time of `pid`: guards against pid reuse
    temp_dir_owned: bool = False  # a short dir under /tmp bsm made (home too long for unix sockets)
    tmp_dir: str = ""  # the TMPDIR of the cluster's processes and jobs (in temp_dir); removed by down()
    session_dir: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    ray_version: str = ""
    python: str = ""  # the interpreter its jobs run with

    @property
    def home(self) -> Path:
        return Path(self.log_file).parent

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalCluster:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ----------------------------------------------------------------------------------------------- the record


def record_path(home: Path) -> Path:
    return home / RECORD_NAME


def load_record(home: Path) -> LocalCluster | None:
    path = record_path(home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ClusterError(f"cannot read the local cluster record {path}: {e}; check its permissions") from None
    try:
        return LocalCluster.from_json(json.loads(text))
    except (ValueError, TypeError) as e:
        raise ClusterError(
            f"the local cluster record {path} is not valid ({e}); if a cluster bsm started may still be "
            f"running, stop its `ray start --head --block` process by its pid, then delete {path}"
        ) from None


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    """Serialise up()/down() of one bsm home across processes."""
    from filelock import FileLock

    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(home / LOCK_NAME, mode=0o600):
        yield


def _forget(home: Path, rec: LocalCluster) -> None:
    """Remove what bsm kept for `rec`: its record, its token file and a /tmp temp dir bsm made for it."""
    for path in (record_path(home), Path(rec.token_file) if rec.token_file else None):
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    if rec.temp_dir_owned and rec.temp_dir:
        shutil.rmtree(rec.temp_dir, ignore_errors=True)
    elif rec.tmp_dir:
        shutil.rmtree(rec.tmp_dir, ignore_errors=True)


def _cluster_token(rec: LocalCluster) -> str | None:
    try:
        return read_token_file(Path(rec.token_file), "the local cluster's token file") if rec.token_file else None
    except ClusterError:
        return None


def _answers(rec: LocalCluster) -> bool:
    return probe(rec.dashboard_url, _cluster_token(rec)) is not None


# ------------------------------------------------------------------------------------------ starting a head


def _validate_count(name: str, value: int | None, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}; pass e.g. {name} {max(minimum, 1)}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}; pass e.g. {name} {max(minimum, 1)}")


# ----------------------------------------------------------------------------------------- up / down / running


def up(
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    *,
    home: Path | None = None,
    timeout: float = 90,
    progress: Progress | None = None,
) -> LocalCluster:
    """Start a local Ray head (token auth on, loopback only) unless the recorded one is alive; return its record.

    `num_cpus` / `num_gpus` None lets Ray detect them. Progress goes to `progress` or to this module's logger
    (stderr), never stdout. Raises `ClusterError` (with the tail of the head's log) if it does not come up
    within `timeout` seconds; whatever was started is stopped again.
    """
    _validate_count("--num-cpus", num_cpus, 1)
    _validate_count("--num-gpus", num_gpus, 0)
    home_dir = resolve_home(home)
    with _home_lock(home_dir):
        rec = load_record(home_dir)
        if rec is not None:
            alive = processes.is_alive(rec.pid, rec.pid_start_time)
            if alive and _answers(rec):
                _warn_if_different(rec, num_cpus, num_gpus, progress)
                _say(progress, f"Using the running local Ray cluster at {rec.dashboard_url} (pid {rec.pid})")
                return rec
            if alive:
                _say(
                    progress,
                    f"The recorded Ray head (pid {rec.pid}) does not answer at {rec.dashboard_url}; stopping it",
                )
            processes.stop_session(rec.pid, rec.pid_start_time, 30.0, lambda m: _say(progress, m))
            _forget(home_dir, rec)
        return _start(home_dir, num_cpus, num_gpus, timeout, progress)


def _warn_if_different(
    rec: LocalCluster, num_cpus: int | None, num_gpus: int | None, progress: Progress | None
) -> None:
    msgs = [
        f"the running local Ray cluster has {have:g} {name}, not the {want} asked for"
        for name, want, have in (("CPUs", num_cpus, rec.num_cpus), ("GPUs", num_gpus, rec.num_gpus))
        if want is not None and float(want) != float(have)
    ]
    if rec.python and rec.python != sys.executable:
        msgs.append(f"the running local Ray cluster runs jobs with {rec.python}, not {sys.executable}")
    for msg in msgs:
        log.warning("%s; run `bsm down` then `bsm up` to change it", msg)
        if progress is not None:
            progress(f"{msg}; run `bsm down` then `bsm up` to change it")


def _start(
    home: Path, num_cpus: int | None, num_gpus: int | None, timeout: float, progress: Progress | None
) -> LocalCluster:
    import ray
    from filelock import FileLock

    storage = home / "runs"
    storage.mkdir(parents=True, exist_ok=True)
    token_file = home / TOKEN_NAME
    token = write_token(token_file)
    temp_dir, temp_owned = head.temp_dir_for(home)
    tmp_dir = head.tmp_dir_for(temp_dir)
    log_file = home / LOG_NAME
    asked = ", ".join(f"{n} {k}" for n, k in ((num_cpus, "CPUs"), (num_gpus, "GPUs")) if n is not None)
    _say(progress, f"Starting a local Ray {ray.__version__} head ({asked or 'all CPUs/GPUs'}; log: {log_file}) ...")
    t0 = time.monotonic()
    taken: set[int] = set()
    for attempt in range(_ATTEMPTS):
        # One bsm at a time picks ports and starts a head on this machine, so two bsm never pick the same port;
        # a port something else takes meanwhile makes the head exit: then again, with other ports.
        with FileLock(head.ports_lock(home), mode=0o600):
            ports = head.pick_ports(avoid=taken)
            proc = processes.spawn(
                head.head_command(ports, temp_dir, num_cpus, num_gpus),
                env=head.head_env(home, token_file, ports, tmp_dir),
                cwd=str(home),
                log_path=str(log_file),
            )
            rec = LocalCluster(
                gcs_address=f"127.0.0.1:{ports['gcs']}",
                dashboard_url=f"http://127.0.0.1:{ports['dashboard']}",
                pid=proc.pid,
                num_cpus=float(num_cpus or 0),
                num_gpus=float(num_gpus or 0),
                temp_dir=str(temp_dir),
                log_file=str(log_file),
                started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                storage=str(storage),
                token_file=str(token_file),
                pid_start_time=processes.start_time(proc.pid),
                temp_dir_owned=temp_owned,
                tmp_dir=str(tmp_dir),
                ports=ports,
                ray_version=ray.__version__,
                python=sys.executable,
            )
            try:
                _wait_ready(rec, proc, token, t0 + timeout, timeout)
                break
            except BaseException as e:
                with contextlib.suppress(Exception):
                    processes.stop_session(rec.pid, rec.pid_start_time, 15.0, lambda m: _say(progress, m))
                if isinstance(e, ClusterError) and "address already in use" in str(e) and attempt + 1 < _ATTEMPTS:
                    _say(progress, "A port of the new Ray head was taken meanwhile; starting it again on other ports")
                    taken |= set(ports.values())
                    continue
                _forget(home, rec)
                raise
    _write_json_atomic(record_path(home), rec.to_json())
    _say(
        progress,
        f"Local Ray cluster is up at {rec.dashboard_url} ({rec.num_cpus:g} CPUs, {rec.num_gpus:g} GPUs, "
        f"token auth on) in {time.monotonic() - t0:.1f}s",
    )
    return rec


def _wait_ready(rec: LocalCluster, proc: Any, token: str, deadline: float, timeout: float) -> None:
    """Until the Jobs API answers with the token and the head node is ALIVE; fills in resources and session."""
    conn = Connection(rec.dashboard_url, token, is_local=True, started_by_bsm=True, storage_default=rec.storage)
    log_file = Path(rec.log_file)
    while True:
        if proc.poll() is not None:
            raise ClusterError(
                f"the local Ray head exited with code {proc.returncode} while starting; its log "
                f"{log_file} ends with:\n{head.log_tail(log_file)}"
            )
        version = probe(rec.dashboard_url, token, timeout=2.0)
        if version is not None:
            try:
                res = cluster_resources(conn)
            except ClusterError:
                res = None
            if res is not None and res.nodes:
                rec.num_cpus, rec.num_gpus = res.total_cpus, res.total_gpus
                session = version.get("session_name") if isinstance(version, dict) else None
                if isinstance(session, str) and session:
                    rec.session_dir = str(Path(rec.temp_dir) / session)
                return
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"the local Ray head did not answer at {rec.dashboard_url} within {timeout:g}s; see its log "
                f"{log_file}, which ends with:\n{head.log_tail(log_file)}\nRetry with a longer timeout if the machine is busy."
            )
        time.sleep(0.25)


def running_jobs(home: Path | None = None) -> list[tuple[str, str]]:
    """(job id, state) of every job on the recorded local cluster that has not ended; [] if it does not answer."""
    rec = load_record(resolve_home(home))
    if rec is None or not processes.is_alive(rec.pid, rec.pid_start_time) or not _answers(rec):
        return []
    conn = Connection(rec.dashboard_url, _cluster_token(rec), is_local=True, started_by_bsm=True)
    try:
        jobs = job_client(conn).list_jobs()
    except (ClusterError, RuntimeError, OSError) as e:
        log.warning("could not list the jobs of the local Ray cluster at %s: %s", rec.dashboard_url, e)
        return []
    active = [j for j in jobs if str(getattr(j.status, "value", j.status)) not in ("SUCCEEDED", "FAILED", "STOPPED")]
    return [(safe(j.submission_id or j.job_id or "?"), str(getattr(j.status, "value", j.status))) for j in active]


def describe_jobs(jobs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{job} ({state})" for job, state in jobs)


def down(
    *, home: Path | None = None, timeout: float = 30, progress: Progress | None = None, force: bool = True
) -> LocalCluster | None:
    """Stop the cluster recorded in ``cluster.json`` (only it) and remove the record; None if none was recorded.

    Jobs still running on it are named; without `force` they are a ClusterError and the cluster stays up.
    Only the recorded head process (checked by pid *and* start time, so a reused pid is never signalled),
    the processes below it and members of the session bsm created for it are signalled: SIGTERM to the head
    (Ray stops what it started), then SIGKILL to anything of it still alive after `timeout` seconds.
    """
    home_dir = resolve_home(home)
    active = running_jobs(home_dir)
    if active and not force:
        raise ClusterError(
            f"jobs are running on the local Ray cluster: {describe_jobs(active)}; `bsm down --force` stops them "
            "with the cluster (`bsm stop JOB` stops one)"
        )
    with _home_lock(home_dir):
        rec = load_record(home_dir)
        if rec is None:
            _say(progress, f"No local Ray cluster recorded in {record_path(home_dir)}")
            return None
        if active:
            _say(progress, f"Stopping the jobs still running on it: {describe_jobs(active)}")
        t0 = time.monotonic()
        processes.stop_session(rec.pid, rec.pid_start_time, timeout, lambda m: _say(progress, m))
        _forget(home_dir, rec)
        _say(progress, f"Stopped the local Ray cluster at {rec.dashboard_url} in {time.monotonic() - t0:.1f}s")
        return rec


def running_cluster(home: Path | None = None) -> LocalCluster | None:
    """The recorded local cluster if its head is alive and its Jobs API answers, else None.

    A record whose head process is gone is removed. A live head that does not answer is left recorded (so
    `bsm down` can still stop it) and None is returned.
    """
    home_dir = resolve_home(home)
    rec = load_record(home_dir)
    if rec is None:
        return None
    if not processes.is_alive(rec.pid, rec.pid_start_time):
        with _home_lock(home_dir):
            again = load_record(home_dir)
            if again is not None and again.pid == rec.pid and not processes.is_alive(rec.pid, rec.pid_start_time):
                log.info("removing the stale record of a local Ray cluster whose head (pid %d) is gone", rec.pid)
                processes.stop_session(rec.pid, rec.pid_start_time, 5.0, log.info)  # sweeps leftovers, if any
                _forget(home_dir, rec)
        return None
    if not _answers(rec):
        log.warning(
            "the local Ray head (pid %d) is alive but its Jobs API at %s does not answer; run `bsm down`",
            rec.pid,
            rec.dashboard_url,
        )
        return None
    return rec
