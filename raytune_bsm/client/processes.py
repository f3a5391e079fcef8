"""The processes of a local cluster bsm started, through psutil: is it alive, what is below it, stop it (only it).

A process is named by its pid *and* its start time (psutil's ``create_time``), so a pid the kernel has handed
to another process since is never taken for bsm's: it is neither reported alive nor signalled.
The head runs in a session of its own (``start_new_session``); Ray's job drivers run in sessions of their own
below it, so stopping walks the head's process tree, then sweeps what is left of the head's session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from raytune_bsm.errors import ClusterError

if TYPE_CHECKING:  # pragma: no cover
    import psutil

log = logging.getLogger("raytune_bsm.client")

_START_TOLERANCE = 0.05  # s: create_time is derived from clock ticks (10 ms); two readings of one process agree
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # heads this process spawned, so they can be reaped


def spawn(cmd: list[str], *, env: dict[str, str], cwd: str, log_path: str) -> subprocess.Popen[bytes]:
    """Start `cmd` in a session and process group of its own, output to `log_path`; remembered for reaping."""
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    CHILDREN[proc.pid] = proc
    return proc


def start_time(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch), or None if there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def _as_create_time(started: float | None) -> float | None:
    """Records written before bsm used psutil hold /proc's start time in clock ticks since boot."""
    import psutil

    if started is not None and started < 1e9:
        return psutil.boot_time() + started / os.sysconf("SC_CLK_TCK")
    return started


def _process(pid: int, started: float | None) -> psutil.Process | None:
    """The live, non-zombie process `pid` that started at `started` (None: any start time), else None."""
    import psutil

    started = _as_create_time(started)

    child = CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        CHILDREN.pop(pid, None)  # reaped: our own head exited
        return None
    try:
        p = psutil.Process(pid)
        if p.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        if started is not None and abs(p.create_time() - started) > _START_TOLERANCE:
            return None  # the pid was reused
        return p
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def is_alive(pid: int, started: float | None) -> bool:
    """The process `pid` that started at `started` (not a reuse of its pid) exists and is not a zombie."""
    return _process(pid, started) is not None


def descendants(pid: int, started: float | None = None) -> dict[int, float]:
    """pid -> start time of `pid` and every process below it, right now ({} if it is not alive)."""
    import psutil

    root = _process(pid, started)
    if root is None:
        return {}
    out = {root.pid: root.create_time()}
    for p in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out[p.pid] = p.create_time()
    return out


def cmdline(pid: int) -> str:
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def _alive(procs: dict[int, float]) -> list[Any]:
    return [p for pid, st in procs.items() if (p := _process(pid, st)) is not None]


def _wait_gone(procs: dict[int, float], timeout: float) -> dict[int, float]:
    """Wait up to `timeout` s for `procs` to end; the ones still alive."""
    import psutil

    _, alive = psutil.wait_procs(_alive(procs), timeout=max(0.0, timeout))
    return {p.pid: procs[p.pid] for p in alive if p.pid in procs}


def session_leftovers(leader: int, started: float | None) -> dict[int, float]:
    """Ray processes still in the session/process group `leader` created, once the leader itself is gone.

    Linux does not hand out a pid while it is still some live process's session or group id, so while no other
    process has the leader's pid, members of session `leader` started no earlier than the leader are that
    cluster's. If the pid belongs to another process now, nothing is swept; the command line must be a Ray one.
    """
    import psutil

    started = _as_create_time(started)
    if started is None:
        return {}
    with contextlib.suppress(psutil.Error):
        if psutil.Process(leader).status() != psutil.STATUS_ZOMBIE:
            return {}  # the leader is alive (the caller handles that) or its pid is another process's now
    out: dict[int, float] = {}
    for p in psutil.process_iter(["pid", "create_time", "status", "cmdline"]):
        info = p.info
        if (
            p.pid == os.getpid()
            or info["status"] == psutil.STATUS_ZOMBIE
            or (info["create_time"] or 0) < started - _START_TOLERANCE
        ):
            continue
        try:
            if leader not in (os.getsid(p.pid), os.getpgid(p.pid)):
                continue
        except OSError:
            continue
        if "ray" in " ".join(info["cmdline"] or []).lower():
            out[p.pid] = info["create_time"]
    return out


def _kill(procs: dict[int, float], sig: int) -> None:
    import psutil

    for p in _alive(procs):
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def stop_session(pid: int, started: float | None, timeout: float, say: Callable[[str], None]) -> None:
    """SIGTERM the head `pid` (Ray then stops what it started), then SIGKILL whatever of it is left.

    Only that process (checked by pid and start time), the processes below it and the leftovers of its session
    are signalled; without a recorded start time nothing is (the pid cannot be told from a reused one).
    A ClusterError if anything of it survives SIGKILL."""
    if started is None:
        log.warning(
            "no start time recorded for the Ray head pid %d: not signalling it (it may be another "
            "process now); stop it yourself if it is still the head",
            pid,
        )
        return
    tree = descendants(pid, started)
    if tree:
        say(f"Stopping the local Ray cluster (pid {pid}, {len(tree)} processes) ...")
        _kill({pid: tree[pid]}, signal.SIGTERM)
        child = CHILDREN.get(pid)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(timeout, 1.0))
        if _wait_gone({pid: tree[pid]}, max(timeout, 1.0) if child is None else 0.1):
            log.warning("Ray head pid %d did not stop within %.0fs; killing its process group", pid, timeout)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # the group bsm created (start_new_session): still ours
        # Job drivers run in sessions of their own; Ray's watcher kills them within ~1 s of their supervisor.
        tree = _wait_gone(tree, 3.0)
    tree.update(session_leftovers(pid, started))
    if tree:
        log.warning("killing %d leftover process(es) of the Ray cluster: %s", len(tree), sorted(tree))
        _kill(tree, signal.SIGKILL)
        tree = _wait_gone(tree, 5.0)
    child = CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    if tree:
        pids = sorted(tree)
        raise ClusterError(
            f"processes of the local Ray cluster are still alive after SIGKILL: pids {pids}; check them with "
            f"`ps -o pid,stat,cmd -p {','.join(map(str, pids))}` and run `bsm down` again"
        )
