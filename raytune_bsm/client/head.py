"""How bsm launches a local Ray head: its command line, environment, ports and temp dir (`local_cluster` runs it).

Ports: bsm picks only the ones it must know or that Ray would otherwise take from a fixed default shared by
every cluster on the machine (GCS, dashboard, Ray Client: 6379 / 8265 / 10001 when free; the two metrics
ports); Ray picks every other port itself (``0``: node and object managers, agents, workers).
Jobs run with the interpreter bsm runs under, whatever PATH says: the head's PATH starts with
``bsm_home()/bin``, whose ``python`` and ``python3`` exec ``sys.executable``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import sys
import tempfile
from collections.abc import Collection
from pathlib import Path

from raytune_bsm.text import safe

BIN_DIR = "bin"  # python / python3 shims that run sys.executable: first on the head's PATH
PREFERRED_PORTS = {"gcs": 6379, "dashboard": 8265, "client": 10001}
MAX_TEMP_DIR_LEN = 38  # temp_dir + "/session_<date>_<usec>_<pid>/sockets/plasma_store" must fit 107 bytes


def _port_free(port: int) -> bool:
    """Nobody listens on (or holds) `port` on any address, IPv4 or IPv6."""
    for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
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


def pick_ports(avoid: Collection[int] = ()) -> dict[str, int]:
    """The ports bsm must know or that have a fixed machine-wide default; the preferred ones when free (and not
    in `avoid`), else ones the kernel hands out."""
    ports: dict[str, int] = {}
    socks = []
    try:
        for name in ("gcs", "dashboard", "client", "autoscaler_metrics", "dashboard_metrics"):
            preferred = PREFERRED_PORTS.get(name)
            if preferred is not None and preferred not in avoid and _port_free(preferred):
                ports[name] = preferred
                continue
            s = socket.socket()  # the kernel's choice; held open until all are picked so none repeats
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports[name] = s.getsockname()[1]
    finally:
        for s in socks:
            s.close()
    return ports


def python_shims(home: Path) -> Path:
    """``home/bin/python`` and ``python3``: scripts that exec this interpreter (a symlink would lose a venv)."""
    bin_dir = home / BIN_DIR
    bin_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    script = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n'
    for name in ("python", "python3"):
        tmp = bin_dir / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(script)
        tmp.chmod(0o700)
        os.replace(tmp, bin_dir / name)
    return bin_dir


def head_env(home: Path, token_file: Path, ports: dict[str, int], tmp_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)  # RAY_AUTH_TOKEN would take precedence over the cluster's own token file
    path = [str(python_shims(home)), os.path.dirname(sys.executable), *env.get("PATH", os.defpath).split(os.pathsep)]
    env.update(
        {
            "PATH": os.pathsep.join(dict.fromkeys(p for p in path if p)),  # jobs' `python` is sys.executable
            # What Ray's processes and the jobs put in the temp dir (multiprocessing's pymp-*, Lightning's
            # staged checkpoints, ...) goes to the cluster's own, which `bsm down` removes.
            "TMPDIR": str(tmp_dir),
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


def head_command(ports: dict[str, int], temp_dir: Path, num_cpus: int | None, num_gpus: int | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--include-dashboard",
        "true",
        "--dashboard-host",
        "127.0.0.1",
        "--port",
        str(ports["gcs"]),
        "--dashboard-port",
        str(ports["dashboard"]),
        "--ray-client-server-port",
        str(ports["client"]),
        "--dashboard-agent-listen-port",
        "0",  # 0: Ray picks (its default 52365 is one per machine)
        "--min-worker-port",
        "0",
        "--max-worker-port",
        "0",
        "--temp-dir",
        str(temp_dir),
        "--disable-usage-stats",
        "--log-style",
        "record",
        "--log-color",
        "false",
    ]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if num_gpus is not None:
        cmd += ["--num-gpus", str(num_gpus)]
    return cmd


def temp_dir_for(home: Path) -> tuple[Path, bool]:
    candidate = home / "ray"
    if len(str(candidate).encode()) <= MAX_TEMP_DIR_LEN:
        candidate.mkdir(parents=True, exist_ok=True, mode=0o700)
        return candidate, False
    # Unix socket paths (session dir + sockets/plasma_store) are limited to 107 bytes on Linux.
    return Path(tempfile.mkdtemp(prefix="bsm-", dir="/tmp" if os.path.isdir("/tmp") else None)), True


def tmp_dir_for(temp_dir: Path) -> Path:
    """The cluster's TMPDIR: ``<Ray's temp dir>/tmp``, short enough for the unix sockets made in it."""
    tmp = temp_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    return tmp


def ports_lock(home: Path) -> Path:
    """The lock every bsm of this user takes while it picks ports and starts a head: ``~/.bsm/ports.lock``
    whatever BSM_HOME says (the cluster's home if ~/.bsm cannot be made)."""
    shared = Path.home() / ".bsm"
    try:
        shared.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return home / "ports.lock"
    return shared / "ports.lock"


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return safe("\n".join(path.read_text(errors="replace").splitlines()[-lines:]), multiline=True)
    except OSError:
        return "(no log)"
