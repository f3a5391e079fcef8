"""Where jobs run: a local Ray head that bsm starts and stops, or any cluster's Jobs API, with token auth.

Local cluster (`up` / `down` / `running_cluster`)
    `up()` runs ``<this python> -m ray.scripts.scripts start --head --block ...`` as a child in a session of
    its own, so jobs run with this Python environment and every Ray process of that cluster descends from a
    process bsm knows. Its record is ``bsm_home()/cluster.json``. Everything listens on 127.0.0.1 only: the
    dashboard via ``--dashboard-host``, the rest because ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray
    use the loopback address as the node IP, as it does for its single-node macOS/Windows clusters (``ray
    start`` would otherwise turn ``--node-ip-address 127.0.0.1`` into the machine's routable address).
    Ports: 6379 / 8265 / 10001 when free, everything else (and those when taken) from a block of
    ``_BLOCK`` ports below the kernel's ephemeral range that this cluster holds an flock on for its
    lifetime (the lock fd is inherited by the Ray head), so two bsm clusters on one machine never share a
    port, worker ports included. `down()` stops only that recorded process and its descendants.

Connections, tokens and resources live in `connection.py`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from raytune_bsm.errors import ClusterError, ConfigError
from raytune_bsm.layout import bsm_home

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

RECORD_NAME = "cluster.json"
TOKEN_NAME = "cluster.token"
LOG_NAME = "ray-head.log"
LOCK_NAME = "cluster.lock"

DEFAULT_GCS_PORT = 6379
DEFAULT_DASHBOARD_PORT = 8265
DEFAULT_CLIENT_PORT = 10001

AUTH_HEADER = "Authorization"  # ray/_private/authentication/authentication_constants.py
BEARER = "Bearer "
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")  # Ray's default token file

_BLOCK = 512  # ports per cluster: 16 for Ray's listeners, the rest for worker processes
_FIRST_WORKER_OFFSET = 16
_BAND_LO = 20000  # start of the band blocks come from (Ray's default worker ports are 10002-19999)
_MAX_TEMP_DIR_LEN = 38  # temp_dir + "/session_<date>_<usec>_<pid>/sockets/plasma_store" must fit 107 bytes
_HTTP_TIMEOUT = 10.0
_PROBE_TIMEOUT = 3.0


def _home(home: Path | str | None) -> Path:
    return Path(home).expanduser().absolute() if home is not None else bsm_home()


def _say(progress: Progress | None, msg: str) -> None:
    if progress is not None:
        progress(msg)
    else:
        log.info(msg)


# --------------------------------------------------------------------------------------------------------
# The record of the local cluster
# --------------------------------------------------------------------------------------------------------


@dataclass
class LocalCluster:
    """What bsm started: the record kept in ``bsm_home()/cluster.json`` (the token itself is not in it)."""

    gcs_address: str  # "127.0.0.1:PORT" — for `ray.init(address=...)` on this machine, not the Jobs API
    dashboard_url: str  # "http://127.0.0.1:PORT" — dashboard + Jobs API
    pid: int  # the `ray start --head --block` process bsm spawned; leader of its own session/process group
    num_cpus: float
    num_gpus: float
    temp_dir: str  # Ray's --temp-dir (sessions, logs, sockets)
    log_file: str  # stdout/stderr of the head process
    started_at: str  # ISO 8601, UTC
    storage: str  # default run storage for jobs on this cluster: bsm_home()/runs
    token_file: str = ""  # mode 0600; RAY_AUTH_TOKEN_PATH of the cluster
    pid_start_time: int | None = None  # /proc/<pid>/stat starttime: guards against pid reuse
    temp_dir_owned: bool = False  # a short dir under /tmp bsm made (home too long for unix sockets)
    session_dir: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    ray_version: str = ""
    python: str = ""

    @property
    def home(self) -> Path:
        return Path(self.log_file).parent

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalCluster:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _record_path(home: Path) -> Path:
    return home / RECORD_NAME


def _load_record(home: Path) -> LocalCluster | None:
    path = _record_path(home)
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
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    """Serialise up()/down() of one bsm home across processes."""
    import fcntl

    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(home / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------------------------------------
# Processes (Linux /proc; a `ps` fallback elsewhere)
# --------------------------------------------------------------------------------------------------------


class _Proc(NamedTuple):
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start_time: int | None


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # heads this process spawned, so they can be reaped


def _proc(pid: int) -> _Proc | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except (OSError, ValueError):
        if Path("/proc/self/stat").exists():
            return None
        return _ps_proc(pid)
    rest = data[data.rfind(")") + 2 :].split()
    return _Proc(pid, int(rest[1]), int(rest[2]), int(rest[3]), rest[0], int(rest[19]))


def _ps_table() -> list[_Proc]:
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,pgid=,stat="], capture_output=True, text=True, check=False
    ).stdout
    procs = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            pid, ppid, pgid = int(parts[0]), int(parts[1]), int(parts[2])
            procs.append(_Proc(pid, ppid, pgid, pgid, parts[3][:1], None))
    return procs


def _ps_proc(pid: int) -> _Proc | None:
    return next((p for p in _ps_table() if p.pid == pid), None)


def _all_procs() -> list[_Proc]:
    if not Path("/proc/self/stat").exists():
        return _ps_table()
    procs = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            p = _proc(int(name))
            if p is not None:
                procs.append(p)
    return procs


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        out = subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True, check=False)
        return out.stdout.strip()


def _is_alive(pid: int, start_time: int | None) -> bool:
    """The process `pid` that started at `start_time` (not a reuse of its pid) exists and is not a zombie."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    p = _proc(pid)
    if p is None or p.state in ("Z", "X"):
        return False
    return start_time is None or p.start_time is None or p.start_time == start_time


def _descendants(root: int) -> dict[int, int | None]:
    """pid -> start time of `root` and every process below it, right now."""
    procs = _all_procs()
    children: dict[int, list[_Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found: dict[int, int | None] = {}
    rootp = next((p for p in procs if p.pid == root), None)
    stack = [rootp] if rootp is not None else []
    while stack:
        p = stack.pop()
        if p.pid in found:
            continue
        found[p.pid] = p.start_time
        stack.extend(children.get(p.pid, []))
    return found


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(procs: dict[int, int | None], deadline: float) -> dict[int, int | None]:
    """Wait until none of `procs` is alive or the deadline passes; return the ones still alive."""
    while True:
        alive = {pid: st for pid, st in procs.items() if _is_alive(pid, st)}
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _session_leftovers(rec: LocalCluster) -> dict[int, int | None]:
    """Ray processes still in the session/process group bsm created for `rec` after its leader is gone.

    Linux does not hand out a pid while it is still some live process's session or group id, so while no
    other process has the leader's pid, members of session `rec.pid` started no earlier than the leader are
    that cluster's. If the pid belongs to another process now, that session is someone else's: nothing is
    swept. The command line must also be a Ray one. Needs start times (/proc); elsewhere nothing is swept.
    """
    if rec.pid_start_time is None:
        return {}
    leader = _proc(rec.pid)
    if leader is not None and (leader.start_time != rec.pid_start_time or leader.state not in ("Z", "X")):
        return {}  # the pid is another process's now, or the head is alive (the caller handles that)
    out: dict[int, int | None] = {}
    for p in _all_procs():
        if p.pid == os.getpid() or (p.sid != rec.pid and p.pgid != rec.pid) or p.state in ("Z", "X"):
            continue
        if p.start_time is None or p.start_time < rec.pid_start_time:
            continue
        if "ray" in _cmdline(p.pid).lower():
            out[p.pid] = p.start_time
    return out


def _stop_head(rec: LocalCluster, timeout: float, progress: Progress | None) -> None:
    """SIGTERM the recorded head (Ray then stops what it started), then SIGKILL whatever of it is left."""
    deadline = time.monotonic() + max(timeout, 1.0)
    tree: dict[int, int | None] = {}
    if _is_alive(rec.pid, rec.pid_start_time):
        tree = _descendants(rec.pid)
        _say(progress, f"Stopping the local Ray cluster (pid {rec.pid}, {len(tree)} processes) ...")
        _signal(rec.pid, signal.SIGTERM)
        child = _CHILDREN.get(rec.pid)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
        leader_left = _wait_gone({rec.pid: rec.pid_start_time}, deadline)
        if leader_left:
            log.warning("Ray head pid %d did not stop within %.0fs; killing its process group", rec.pid, timeout)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(rec.pid, signal.SIGKILL)  # the group bsm created (start_new_session) — still ours
        # Job drivers run in sessions of their own; Ray's watcher kills them within ~1 s of their supervisor.
        tree = _wait_gone(tree, max(deadline, time.monotonic() + 3.0))
    tree.update(_session_leftovers(rec))
    if tree:
        log.warning("killing %d leftover process(es) of the Ray cluster: %s", len(tree), sorted(tree))
        for pid, st in tree.items():
            if _is_alive(pid, st):
                _signal(pid, signal.SIGKILL)
        tree = _wait_gone(tree, time.monotonic() + 5.0)
    child = _CHILDREN.pop(rec.pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    if tree:
        raise ClusterError(
            f"processes of the local Ray cluster are still alive after SIGKILL: pids {sorted(tree)}; "
            f"check them with `ps -o pid,stat,cmd -p {','.join(map(str, sorted(tree)))}` and run `bsm down` again"
        )


# --------------------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    """Nobody listens on (or holds) `port` on any address, IPv4 or IPv6."""
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for fam, host in families:
        try:
            s = socket.socket(fam, socket.SOCK_STREAM)
        except OSError:
            continue  # family not available on this machine
        try:
            if fam == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def _port_band() -> tuple[int, int]:
    """Where port blocks come from: below the ephemeral range (outgoing connections never take these)."""
    eph_lo, eph_hi = _ephemeral_range()
    if eph_lo - _BAND_LO >= 4 * _BLOCK:
        return _BAND_LO, eph_lo
    if 65536 - (eph_hi + 1) >= 4 * _BLOCK:
        return eph_hi + 1, 65536
    return _BAND_LO, _BAND_LO + 16 * _BLOCK


@dataclass
class _Ports:
    ports: dict[str, int]
    lock_fd: int


def _reserve_ports() -> _Ports:
    """Lock a block of free ports for one cluster; the lock lives as long as the process holding `lock_fd`."""
    import fcntl

    lock_dir = Path(tempfile.gettempdir()) / f"bsm-port-locks-{os.getuid()}"
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    lo, hi = _port_band()
    starts = list(range(lo, hi - _BLOCK + 1, _BLOCK))
    random.shuffle(starts)
    for start in starts:
        fd = os.open(lock_dir / f"block-{start}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if not all(_port_free(p) for p in range(start, start + _BLOCK)):
            os.close(fd)
            continue
        defaults = {"gcs": DEFAULT_GCS_PORT, "dashboard": DEFAULT_DASHBOARD_PORT, "client": DEFAULT_CLIENT_PORT}
        ports = {name: (port if _port_free(port) else start + i) for i, (name, port) in enumerate(defaults.items())}
        for i, name in enumerate(
            [
                "metrics_export",
                "dashboard_agent_listen",
                "dashboard_agent_grpc",
                "runtime_env_agent",
                "node_manager",
                "object_manager",
                "autoscaler_metrics",
                "dashboard_metrics",
            ],
            start=3,
        ):
            ports[name] = start + i
        ports["min_worker"] = start + _FIRST_WORKER_OFFSET
        ports["max_worker"] = start + _BLOCK - 1
        return _Ports(ports, fd)
    raise ClusterError(
        f"no free block of {_BLOCK} TCP ports in {lo}-{hi - 1} for a local Ray cluster; stop clusters you no "
        f"longer need (`bsm down` with their BSM_HOME) or free ports in that range"
    )


# --------------------------------------------------------------------------------------------------------
# up / down / running_cluster
# --------------------------------------------------------------------------------------------------------


def _write_token(path: Path) -> None:
    """A fresh 256-bit token in a file only its owner can read (mode 0600 whatever the umask)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secrets.token_hex(32).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_token_file(path: Path, what: str) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ClusterError(f"cannot read the Ray auth token from {what} {path}: {e.strerror or e}") from None
    if not token:
        raise ClusterError(f"the Ray auth token file {what} {path} is empty; write the cluster's token into it")
    return token


def _temp_dir_for(home: Path) -> tuple[Path, bool]:
    candidate = home / "ray"
    if len(str(candidate).encode()) <= _MAX_TEMP_DIR_LEN:
        candidate.mkdir(parents=True, exist_ok=True, mode=0o700)
        return candidate, False
    # Unix socket paths (session dir + sockets/plasma_store) are limited to 107 bytes on Linux.
    return Path(tempfile.mkdtemp(prefix="bsm-", dir="/tmp" if os.path.isdir("/tmp") else None)), True


def _head_env(token_file: Path, ports: dict[str, int]) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)  # RAY_AUTH_TOKEN would take precedence over the cluster's own token file
    env.update(
        {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_file),
            # Single-node cluster on loopback: Ray uses 127.0.0.1 as the node IP (see the module docstring).
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            # No Serve proxies to drain on a local dev cluster: make SIGTERM teardown immediate.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            # Fixed defaults (44217 / 44227) would collide between two clusters on one machine.
            "AUTOSCALER_METRIC_PORT": str(ports["autoscaler_metrics"]),
            "DASHBOARD_METRIC_PORT": str(ports["dashboard_metrics"]),
        }
    )
    return env


def _head_command(ports: dict[str, int], temp_dir: Path, num_cpus: int | None, num_gpus: int | None) -> list[str]:
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1",
        "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1",
        "--port", str(ports["gcs"]),
        "--dashboard-port", str(ports["dashboard"]),
        "--ray-client-server-port", str(ports["client"]),
        "--metrics-export-port", str(ports["metrics_export"]),
        "--dashboard-agent-listen-port", str(ports["dashboard_agent_listen"]),
        "--dashboard-agent-grpc-port", str(ports["dashboard_agent_grpc"]),
        "--runtime-env-agent-port", str(ports["runtime_env_agent"]),
        "--node-manager-port", str(ports["node_manager"]),
        "--object-manager-port", str(ports["object_manager"]),
        "--min-worker-port", str(ports["min_worker"]),
        "--max-worker-port", str(ports["max_worker"]),
        "--temp-dir", str(temp_dir),
        "--disable-usage-stats",
        "--log-style", "record",
        "--log-color", "false",
    ]  # fmt: skip
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if num_gpus is not None:
        cmd += ["--num-gpus", str(num_gpus)]
    return cmd


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _probe(rec: LocalCluster, token: str | None, timeout: float = _PROBE_TIMEOUT) -> bool:
    """The Jobs API of `rec` answers an authenticated request."""
    headers = {AUTH_HEADER: BEARER + token} if token else {}
    try:
        status, _ = _connection._http_get(rec.dashboard_url + "/api/version", headers, timeout)
    except _connection._NET_ERRORS:
        return False
    return status == 200


def _cluster_token(rec: LocalCluster) -> str | None:
    try:
        return _read_token_file(Path(rec.token_file), "the local cluster's token file") if rec.token_file else None
    except ClusterError:
        return None


def _forget(home: Path, rec: LocalCluster) -> None:
    """Remove what bsm kept for `rec`: its record, its token file and a /tmp temp dir bsm made for it."""
    for path in (_record_path(home), Path(rec.token_file) if rec.token_file else None):
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    if rec.temp_dir_owned and rec.temp_dir:
        shutil.rmtree(rec.temp_dir, ignore_errors=True)


def _validate_count(name: str, value: int | None, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}; pass e.g. {name} {max(minimum, 1)}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}; pass e.g. {name} {max(minimum, 1)}")


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
    home_dir = _home(home)
    with _home_lock(home_dir):
        rec = _load_record(home_dir)
        if rec is not None:
            token = _cluster_token(rec)
            if _is_alive(rec.pid, rec.pid_start_time) and _probe(rec, token):
                _warn_if_different(rec, num_cpus, num_gpus, progress)
                _say(progress, f"Using the running local Ray cluster at {rec.dashboard_url} (pid {rec.pid})")
                return rec
            if _is_alive(rec.pid, rec.pid_start_time):
                _say(progress, f"The recorded Ray head (pid {rec.pid}) does not answer at {rec.dashboard_url}; "
                     "stopping it")  # fmt: skip
            _stop_head(rec, 30.0, progress)
            _forget(home_dir, rec)
        return _start(home_dir, num_cpus, num_gpus, timeout, progress)


def _warn_if_different(
    rec: LocalCluster, num_cpus: int | None, num_gpus: int | None, progress: Progress | None
) -> None:
    for name, want, have in (("CPUs", num_cpus, rec.num_cpus), ("GPUs", num_gpus, rec.num_gpus)):
        if want is not None and float(want) != float(have):
            msg = (
                f"the running local Ray cluster has {have:g} {name}, not the {want} asked for; "
                f"run `bsm down` then `bsm up` to change it"
            )
            log.warning(msg)
            if progress is not None:
                progress(msg)


def _start(
    home: Path, num_cpus: int | None, num_gpus: int | None, timeout: float, progress: Progress | None
) -> LocalCluster:
    import ray

    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    storage = home / "runs"
    storage.mkdir(parents=True, exist_ok=True)
    token_file = home / TOKEN_NAME
    _write_token(token_file)
    token = _read_token_file(token_file, "the local cluster's token file")
    temp_dir, temp_owned = _temp_dir_for(home)
    log_file = home / LOG_NAME
    reserved = _reserve_ports()
    ports = reserved.ports
    cmd = _head_command(ports, temp_dir, num_cpus, num_gpus)
    asked = ((num_cpus, "CPUs"), (num_gpus, "GPUs"))
    what = ", ".join(f"{n} {k}" for n, k in asked if n is not None) or "all CPUs/GPUs"
    _say(progress, f"Starting a local Ray {ray.__version__} head ({what}; log: {log_file}) ...")
    t0 = time.monotonic()
    try:
        with open(log_file, "wb") as logf:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=_head_env(token_file, ports),
                cwd=home,
                start_new_session=True,  # own session + process group: down() stops exactly this tree
                pass_fds=(reserved.lock_fd,),  # the head holds the port-block lock for its lifetime
            )
    finally:
        os.close(reserved.lock_fd)
    _CHILDREN[proc.pid] = proc
    p = _proc(proc.pid)
    rec = LocalCluster(
        gcs_address=f"127.0.0.1:{ports['gcs']}",
        dashboard_url=f"http://127.0.0.1:{ports['dashboard']}",
        pid=proc.pid,
        num_cpus=float(num_cpus) if num_cpus is not None else 0.0,
        num_gpus=float(num_gpus) if num_gpus is not None else 0.0,
        temp_dir=str(temp_dir),
        log_file=str(log_file),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        storage=str(storage),
        token_file=str(token_file),
        pid_start_time=p.start_time if p is not None else None,
        temp_dir_owned=temp_owned,
        ports=dict(ports),
        ray_version=ray.__version__,
        python=sys.executable,
    )
    try:
        _wait_ready(rec, proc, token, t0 + timeout, timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            _stop_head(rec, 15.0, progress)
        _forget(home, rec)
        raise
    _write_json_atomic(_record_path(home), rec.to_json())
    _say(progress, f"Local Ray cluster is up at {rec.dashboard_url} ({rec.num_cpus:g} CPUs, {rec.num_gpus:g} GPUs, "
         f"token auth on) in {time.monotonic() - t0:.1f}s")  # fmt: skip
    return rec


def _wait_ready(rec: LocalCluster, proc: subprocess.Popen[bytes], token: str, deadline: float, timeout: float) -> None:
    """Until the Jobs API answers with the token and the head node is ALIVE; fills in resources and session."""
    conn = _connection.Connection(rec.dashboard_url, token, is_local=True, started_by_bsm=True, storage_default=rec.storage)
    log_file = Path(rec.log_file)
    while True:
        if proc.poll() is not None:
            raise ClusterError(
                f"the local Ray head exited with code {proc.returncode} while starting; its log {log_file} ends "
                f"with:\n{_log_tail(log_file)}"
            )
        if _probe(rec, token, timeout=2.0):
            try:
                res = _connection.cluster_resources(conn)
            except ClusterError:
                res = None
            if res is not None and res.nodes:
                rec.num_cpus, rec.num_gpus = res.total_cpus, res.total_gpus
                with contextlib.suppress(Exception):
                    status, body = _connection._http_get(rec.dashboard_url + "/api/version", _connection.auth_headers(conn), 5)
                    session = json.loads(body).get("session_name") if status == 200 else None
                    if session:
                        rec.session_dir = str(Path(rec.temp_dir) / session)
                return
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"the local Ray head did not answer at {rec.dashboard_url} within {timeout:g}s; "
                f"see its log {log_file}, which ends with:\n{_log_tail(log_file)}\n"
                f"Retry with a longer timeout if the machine is busy."
            )
        time.sleep(0.25)


def down(*, home: Path | None = None, timeout: float = 30, progress: Progress | None = None) -> LocalCluster | None:
    """Stop the cluster recorded in ``cluster.json`` (only it) and remove the record; None if none was recorded.

    Only the recorded head process (checked by pid *and* start time, so a reused pid is never signalled),
    the processes below it and members of the session bsm created for it are signalled: SIGTERM to the head
    (Ray stops what it started), then SIGKILL to anything of it still alive after `timeout` seconds.
    """
    home_dir = _home(home)
    with _home_lock(home_dir):
        rec = _load_record(home_dir)
        if rec is None:
            _say(progress, f"No local Ray cluster recorded in {_record_path(home_dir)}")
            return None
        t0 = time.monotonic()
        _stop_head(rec, timeout, progress)
        _forget(home_dir, rec)
        _say(progress, f"Stopped the local Ray cluster at {rec.dashboard_url} in {time.monotonic() - t0:.1f}s")
        return rec


def running_cluster(home: Path | None = None) -> LocalCluster | None:
    """The recorded local cluster if its head is alive and its Jobs API answers, else None.

    A record whose head process is gone is removed. A live head that does not answer is left recorded (so
    `bsm down` can still stop it) and None is returned.
    """
    home_dir = _home(home)
    rec = _load_record(home_dir)
    if rec is None:
        return None
    if not _is_alive(rec.pid, rec.pid_start_time):
        with _home_lock(home_dir):
            again = _load_record(home_dir)
            if again is not None and again.pid == rec.pid and not _is_alive(rec.pid, rec.pid_start_time):
                log.info("removing the stale record of a local Ray cluster whose head (pid %d) is gone", rec.pid)
                _stop_head(rec, 5.0, None)  # sweeps leftovers of its session, if any
                _forget(home_dir, rec)
        return None
    if not _probe(rec, _cluster_token(rec)):
        log.warning(
            "the local Ray head (pid %d) is alive but its Jobs API at %s does not answer; run `bsm down`",
            rec.pid,
            rec.dashboard_url,
        )
        return None
    return rec


from raytune_bsm.client import connection as _connection  # noqa: E402  (it imports this module first)
