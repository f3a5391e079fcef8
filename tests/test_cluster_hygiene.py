"""What a job on bsm's local cluster leaves open or behind (issue 18: 3, 4, 21, 22, 23, 24), on a real cluster.

One real local cluster runs one real two-worker training job (gloo process group). While it trains, every
listening socket of every process of the cluster (Ray's own, the job's driver, the Train workers with torch's
store and Gloo) is listed with psutil: all must be bound to loopback. Then, with the job still running: `bsm down`
without --force, a real SIGINT to `bsm logs --follow`, `bsm stop` and `bsm logs --follow` of the stopped job, and
`bsm fetch` of a job id the cluster does not know. After `bsm down`, the temp directory bsm and the cluster were
given holds nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY_SETS
from typer.testing import CliRunner

from raytune_bsm import api
from raytune_bsm.cli import app
from raytune_bsm.client import connection, processes
from raytune_bsm.client import local_cluster as cl
from raytune_bsm.client.fetch import locate_export
from raytune_bsm.runner.callbacks import remove_staged_checkpoints

pytestmark = pytest.mark.slow


@pytest.fixture
def own_tmpdir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TMPDIR for this test's bsm (and so for the cluster it starts, if bsm let it through)."""
    tmp = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR again
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    return tmp


def _listeners(root: int) -> dict[tuple[str, int], str]:
    """(address, port) -> the process's command line, for every TCP listening socket below `root`."""
    import psutil

    found = {}
    for pid in processes.descendants(root):
        try:
            p = psutil.Process(pid)
            cmd = " ".join(p.cmdline())
            found |= {(c.laddr.ip, c.laddr.port): cmd for c in p.net_connections("tcp") if c.status == "LISTEN"}
        except psutil.Error:
            continue
    return found


def _loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(a, "ipv4_mapped", None)
    return a.is_loopback or (mapped is not None and mapped.is_loopback)


def test_a_job_listens_on_loopback_only_and_the_cluster_leaves_no_temp_files(bsm_home: Path, own_tmpdir: Path) -> None:
    rec = cl.up(num_cpus=2, home=bsm_home, timeout=300)
    tree: dict[int, float] = {}
    try:
        address = rec.dashboard_url
        client = connection.job_client(connection.resolve_connection(address, start=False))
        job = api.submit(
            api.SubmitOptions(
                address=address, name="hygiene", num_workers=2, max_epochs=50, sets=TINY_SETS + ["demo_rows=200"]
            )
        )
        # ---- 3: every listening socket while the process group trains (until its first epoch is validated)
        seen: dict[tuple[str, int], str] = {}
        deadline = time.monotonic() + 600
        while "validation:" not in client.get_job_logs(job):
            assert time.monotonic() < deadline, "the job reported no epoch in 600s"
            assert api.status(job, address=address)["status"] in ("PENDING", "RUNNING"), client.get_job_logs(job)
            seen |= _listeners(rec.pid)
            time.sleep(0.5)
        seen |= _listeners(rec.pid)
        workers = {k: cmd for k, cmd in seen.items() if "RayTrainWorker" in cmd}
        assert len(workers) >= 3, seen  # rank 0's store, a Gloo socket per rank: the process group was seen
        off = {k: cmd[:80] for k, cmd in seen.items() if not _loopback(k[0])}
        assert not off, f"listening beyond loopback: {off}"

        # ---- 22: `bsm down` while the job runs (not on a terminal, no --force): one line, the cluster stays up
        r = CliRunner().invoke(app, ["down"], prog_name="bsm")
        assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
        assert f"jobs are running on the local Ray cluster: {job} (RUNNING); `bsm down --force`" in r.stderr
        assert cl.running_cluster(bsm_home) == rec

        # ---- 23: a real Ctrl-C to `bsm logs --follow`: the job keeps running, and bsm says how to reach it
        follower = subprocess.Popen(
            [sys.executable, "-m", "raytune_bsm.cli", "logs", job, "--follow", "--address", address],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.extend(follower.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 180
        while not any("validation:" in line for line in err):  # it is following: the log so far is out
            assert follower.poll() is None and time.monotonic() < deadline, "".join(err)
            time.sleep(0.5)
        follower.send_signal(signal.SIGINT)
        assert follower.wait(60) == 130
        reader.join(10)
        assert err[-1].rstrip() == (
            f"bsm: interrupted; job {job} keeps running on the cluster: follow it with `bsm logs {job} --follow "
            f"--address {address}`, stop it with `bsm stop {job} --address {address}`"
        )
        assert api.status(job, address=address)["status"] == "RUNNING"

        # ---- 21: stopped, its log followed: no signal dump, and the last line is the job's state
        assert api.stop(job, address=address) == "STOPPED"
        r = CliRunner().invoke(app, ["logs", job, "--follow", "--address", address], prog_name="bsm")
        assert r.exit_code == 1
        assert "received at time=" not in r.stderr and "PC: @" not in r.stderr, r.stderr[-2000:]
        end = r.stderr.rstrip().splitlines()
        assert f"job {job}: STOPPED" in end[-3:], end[-3:]  # then its metrics, as `submit --follow` ends

        # ---- 24: a bsm job id this cluster does not know (a run from before `bsm down` / `bsm up`): its run
        export = Path(rec.storage) / "base1" / "export"
        export.mkdir(parents=True)
        (export / "manifest.json").write_text(json.dumps({"files": []}))
        assert locate_export("bsm-base1") == (str(export), "base1")
        assert locate_export("bsm-base1", address=address) == (str(export), "base1")
        tree = processes.descendants(rec.pid)
    finally:
        stopped = cl.down(home=bsm_home)
    assert stopped is not None and stopped.tmp_dir and not Path(stopped.tmp_dir).exists()
    assert not [p for p, st in tree.items() if processes.is_alive(p, st)]
    # ---- 4: nothing of bsm's or the cluster's is left in the temp directory they were given
    assert sorted(p.name for p in own_tmpdir.iterdir()) == []


def test_a_stopped_runs_staging_folders_are_removed_and_no_other(own_tmpdir: Path) -> None:
    """What the sweep's recorder calls for a trial ASHA stopped (its workers never remove their own)."""
    for name in ("t1", "t10", "t1-best", "t1*"):
        for rank in (0, 1):
            (own_tmpdir / f"lightning_checkpoints-job_id=02000000-name={name}-world_rank={rank}" / "0").mkdir(
                parents=True
            )
    assert remove_staged_checkpoints("t1") == 2
    assert remove_staged_checkpoints("t1*", rank=1) == 1
    assert sorted(p.name.split("-name=")[1] for p in own_tmpdir.iterdir()) == [
        "t1*-world_rank=0",
        "t1-best-world_rank=0",
        "t1-best-world_rank=1",
        "t10-world_rank=0",
        "t10-world_rank=1",
    ]
