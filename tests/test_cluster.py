"""raytune_bsm.client: local clusters bsm starts/stops (real Ray), connections, where the token may go, resources.

The `slow` tests start real local Ray clusters, each in a BSM_HOME of its own under tmp_path; one cluster
is shared by the module (fixture `shared`) and a second one is started and stopped by the `down` test.
Everything else runs against fake records and a tiny local HTTP server.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import JsonHandler

from raytune_bsm.client import connection as cn
from raytune_bsm.client import head, processes
from raytune_bsm.client import local_cluster as cl
from raytune_bsm.client.auth import may_send_token
from raytune_bsm.errors import ClusterError, ConfigError

AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No Ray address or token from the machine: an empty HOME hides ~/.ray/auth_token."""
    for var in AUTH_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _alive(pids: dict[int, int | None]) -> list[int]:
    return sorted(pid for pid, st in pids.items() if processes.is_alive(pid, st))


def _tree_listeners(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP LISTEN socket held by `pid` or a process below it (psutil; no traffic)."""
    import psutil

    found = set()
    for p in processes.descendants(pid):
        try:
            conns = psutil.Process(p).net_connections(kind="tcp")
        except psutil.Error:
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return found


def _is_loopback(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(a, "ipv4_mapped", None)
    return a.is_loopback or (mapped is not None and mapped.is_loopback)


def _wait_job(client: Any, job_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = str(client.get_job_status(job_id))
        if status.split(".")[-1] in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status.split(".")[-1]
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


# ----------------------------------------------------------------------------------------------------
# a real local cluster shared by the module
# ----------------------------------------------------------------------------------------------------


@dataclass
class Shared:
    home: Path
    rec: cl.LocalCluster
    token: str
    up_seconds: float


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    home = tmp_path_factory.mktemp("bsm-shared")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BSM_HOME", str(home))
        for var in AUTH_ENV:
            mp.delenv(var, raising=False)
        t0 = time.monotonic()
        rec = cl.up(num_cpus=2, home=home)
        up_seconds = time.monotonic() - t0
        print(f"\nup() took {up_seconds:.1f}s", file=sys.stderr)
        try:
            yield Shared(home, rec, Path(rec.token_file).read_text().strip(), up_seconds)
        finally:
            tree = processes.descendants(rec.pid)
            t0 = time.monotonic()
            stopped = cl.down(home=home)
            print(f"\ndown() took {time.monotonic() - t0:.1f}s", file=sys.stderr)
            assert stopped is not None and stopped.pid == rec.pid
            assert _alive(tree) == [], "processes of the shared cluster survived down()"
            assert not (home / cl.RECORD_NAME).exists()


@pytest.mark.slow
def test_up_starts_loopback_cluster_with_token_auth(shared: Shared) -> None:
    rec = shared.rec
    assert rec.dashboard_url.startswith("http://127.0.0.1:")
    assert rec.gcs_address.startswith("127.0.0.1:")
    assert rec.num_cpus == 2 and rec.num_gpus == 0
    assert rec.storage == str(shared.home / "runs") and Path(rec.storage).is_dir()
    assert cl.running_cluster(shared.home) == rec
    conn = cn.resolve_connection(None, start=False, home=shared.home)
    assert conn.started_by_bsm and conn.is_local and conn.token == shared.token
    assert cn.authentication_mode(conn) == "token"
    # Every listening socket of every process of this cluster is bound to loopback only.
    wanted = {rec.ports["gcs"], rec.ports["dashboard"], rec.ports["client"]}
    deadline = time.monotonic() + 60  # the Ray Client server comes up a little after the dashboard answers
    listeners = _tree_listeners(rec.pid)
    while not wanted <= {port for _, port in listeners}:
        assert time.monotonic() < deadline, f"not listening: {wanted - {port for _, port in listeners}}"
        time.sleep(0.5)
        listeners = _tree_listeners(rec.pid)
    assert len(listeners) >= 8, listeners  # GCS, dashboard, raylet, object manager, agents, ...
    bad = [(ip, port) for ip, port in listeners if not _is_loopback(ipaddress.ip_address(ip))]
    assert not bad, f"listening off loopback: {bad}"
    # The head is a session leader whose process tree holds gcs_server and raylet.
    assert os.getsid(rec.pid) == rec.pid
    cmds = " ".join(processes.cmdline(p) for p in processes.descendants(rec.pid))
    assert "gcs_server" in cmds and "raylet" in cmds and "dashboard" in cmds


@pytest.mark.slow
def test_second_up_returns_same_record(shared: Shared, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    again = cl.up(home=shared.home)
    assert time.monotonic() - t0 < 5
    assert again == shared.rec
    assert json.loads((shared.home / cl.RECORD_NAME).read_text())["pid"] == shared.rec.pid
    assert capsys.readouterr().out == "", "up() must not print to stdout"


@pytest.mark.slow
def test_token_and_record_files_are_private(shared: Shared) -> None:
    token_file = Path(shared.rec.token_file)
    assert token_file.parent == shared.home
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(shared.token) == 64
    record = shared.home / cl.RECORD_NAME
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert shared.token not in record.read_text()
    assert shared.token not in repr(shared.rec)


@pytest.mark.slow
def test_client_without_token_is_refused(shared: Shared) -> None:
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    with pytest.raises(AuthenticationError, match="Authentication required"):
        JobSubmissionClient(shared.rec.dashboard_url)
    # Through bsm: a clear ClusterError, for a missing and for a wrong token, never echoing a token.
    with pytest.raises(ClusterError, match="requires an auth token") as missing:
        cn.job_client(cn.Connection(shared.rec.dashboard_url, token=None, is_local=True))
    wrong = "wrong-" + "x" * 40
    with pytest.raises(ClusterError, match="refused the auth token") as refused:
        cn.job_client(cn.Connection(shared.rec.dashboard_url, token=wrong, is_local=True, token_source="test"))
    for err in (missing, refused):
        assert shared.token not in str(err.value) and wrong not in str(err.value)


@pytest.mark.slow
def test_job_with_token_runs_and_token_stays_secret(
    shared: Shared, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    conn = cn.resolve_connection(None, home=shared.home)
    assert conn.source == "bsm cluster" and conn.token == shared.token
    assert shared.token not in repr(conn) and shared.token not in str(conn)
    assert cn.auth_headers(conn) == {"Authorization": f"Bearer {shared.token}"}
    client = cn.job_client(conn)
    job_id = client.submit_job(entrypoint="python -c 'print(42)'", metadata={"who": "test"})
    assert _wait_job(client, job_id) == "SUCCEEDED"
    assert "42" in client.get_job_logs(job_id)
    info = client.get_job_info(job_id)
    assert shared.token not in json.dumps(info.metadata or {})
    assert shared.token not in json.dumps(info.runtime_env or {}, default=str)
    assert shared.token not in repr(info)
    captured = capsys.readouterr()
    assert shared.token not in caplog.text + captured.out + captured.err


@pytest.mark.slow
def test_job_driver_can_use_ray_with_cluster_token(shared: Shared) -> None:
    """A job's driver reaches the GCS with token auth on (the token file comes from the head's env)."""
    client = cn.job_client(cn.resolve_connection(None, home=shared.home))
    code = "import ray; ray.init(); print('answer', ray.get(ray.remote(lambda: 6 * 7).remote()))"
    job_id = client.submit_job(entrypoint=f'python -c "{code}"')
    assert _wait_job(client, job_id) == "SUCCEEDED", client.get_job_logs(job_id)
    assert "answer 42" in client.get_job_logs(job_id)


@pytest.mark.slow
def test_jobs_run_with_bsms_interpreter(shared: Shared) -> None:
    """Whatever PATH says, a job's `python` is the interpreter bsm runs under (issue 8.2)."""
    client = cn.job_client(cn.resolve_connection(None, home=shared.home))
    job_id = client.submit_job(entrypoint="python -c 'import sys; print(\"exe\", sys.executable)'")
    assert _wait_job(client, job_id) == "SUCCEEDED", client.get_job_logs(job_id)
    assert f"exe {sys.executable}" in client.get_job_logs(job_id)
    assert shared.rec.python == sys.executable


@pytest.mark.slow
def test_cluster_resources_of_local_cluster(shared: Shared) -> None:
    conn = cn.resolve_connection(None, home=shared.home)
    res = cn.cluster_resources(conn)
    assert res.total_cpus == 2 and res.total_gpus == 0
    assert res.nodes == [cn.NodeResources("127.0.0.1", 2.0, 0.0)]
    assert res.can_autoscale is False
    res.require(gpus=0, cpus=2)
    with pytest.raises(ClusterError, match="needs 4 GPUs") as err:
        res.require(gpus=4)
    assert shared.token not in str(err.value)


@pytest.mark.slow
def test_down_stops_only_its_own_cluster(shared: Shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "bsm"
    monkeypatch.setenv("BSM_HOME", str(home))
    core = ("ray.scripts.scripts", "gcs_server", "raylet", "dashboard.py", "monitor.py")
    shared_tree = {  # long-lived processes only (idle workers come and go on their own)
        pid: st
        for pid, st in processes.descendants(shared.rec.pid).items()
        if any(k in processes.cmdline(pid) for k in core)
    }
    assert len(shared_tree) >= 5
    rec = cl.up(num_cpus=1)  # BSM_HOME from the environment
    assert rec.home == home and rec.pid != shared.rec.pid
    assert not set(rec.ports.values()) & set(shared.rec.ports.values())
    # A job whose driver runs in a session of its own must be stopped too.
    client = cn.job_client(cn.resolve_connection(None, start=False))
    job_id = client.submit_job(entrypoint="python -c 'import time; time.sleep(600)'")
    deadline = time.monotonic() + 60
    while str(client.get_job_status(job_id)).split(".")[-1] != "RUNNING":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.3)
    time.sleep(1.0)
    tree = processes.descendants(rec.pid)
    assert any("time.sleep(600)" in processes.cmdline(p) for p in tree), "driver not found below the head"
    t0 = time.monotonic()
    stopped = cl.down()
    took = time.monotonic() - t0
    print(f"\ndown() with a running job took {took:.1f}s", file=sys.stderr)
    assert stopped is not None and stopped.pid == rec.pid
    assert _alive(tree) == [], "processes of the stopped cluster are still alive"
    assert not (home / cl.RECORD_NAME).exists() and not Path(rec.token_file).exists()
    if rec.temp_dir_owned:
        assert not Path(rec.temp_dir).exists()
    assert cl.down() is None  # nothing recorded any more
    assert cl.running_cluster() is None
    # The shared cluster was not touched.
    assert _alive(shared_tree) == sorted(shared_tree)
    assert cl.running_cluster(shared.home) == shared.rec


# ----------------------------------------------------------------------------------------------------
# connections, precedence and tokens — no cluster needed
# ----------------------------------------------------------------------------------------------------


class _FakeDashboard(JsonHandler):
    mode: str | None = "token"  # None: answer 404 like Ray < 2.52
    token: str | None = None
    nodes: ClassVar[list[dict[str, Any]]] = []
    cluster_status: ClassVar[dict[str, Any] | None] = None
    seen: ClassVar[list[tuple[str, str | None]]] = []  # (path, Authorization header) of every request

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        srv = type(self)
        srv.seen.append((path, self.headers.get("Authorization")))
        if path == "/api/authentication_mode":
            if srv.mode is None:
                self._json(404, {})
            else:
                self._json(200, {"authentication_mode": srv.mode})
            return
        if srv.token is not None and self.headers.get("Authorization") != f"Bearer {srv.token}":
            self._json(401 if not self.headers.get("Authorization") else 403, {})
            return
        if path == "/api/version":
            self._json(200, {"version": "4", "ray_version": "2.60.0", "session_name": "session_fake"})
        elif path == "/api/v0/nodes":
            self._json(200, {"result": True, "msg": "", "data": {"result": {"result": srv.nodes}}})
        elif path == "/api/cluster_status":
            self._json(200, {"result": True, "data": {"clusterStatus": srv.cluster_status}})
        else:
            self._json(404, {})


@contextlib.contextmanager
def _serve_fake_dashboard() -> Iterator[tuple[str, type[_FakeDashboard]]]:
    handler = type(
        "Handler", (_FakeDashboard,), {"mode": "token", "token": None, "nodes": [], "cluster_status": None, "seen": []}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def fake_dashboard() -> Iterator[tuple[str, type[_FakeDashboard]]]:
    with _serve_fake_dashboard() as served:
        yield served


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A harmless live process to stand in as a recorded head (never signalled by these tests)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _fake_record(home: Path, pid: int, url: str, token: str = "recorded-token") -> cl.LocalCluster:
    home.mkdir(parents=True, exist_ok=True)
    token_file = home / cl.TOKEN_NAME
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    rec = cl.LocalCluster(
        gcs_address="127.0.0.1:46379",
        dashboard_url=url,
        pid=pid,
        num_cpus=2,
        num_gpus=0,
        temp_dir=str(home / "ray"),
        log_file=str(home / cl.LOG_NAME),
        started_at="2025-01-01T00:00:00+00:00",
        storage=str(home / "runs"),
        token_file=str(token_file),
        pid_start_time=processes.start_time(pid),
        ports={"client": 40001},
    )
    cl._write_json_atomic(home / cl.RECORD_NAME, rec.to_json())
    return rec


def _no_up(*args: Any, **kwargs: Any) -> cl.LocalCluster:
    raise AssertionError("up() must not be called here")


def test_bsm_home_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSM_HOME", str(tmp_path / "h"))
    assert cl.bsm_home() == tmp_path / "h"
    monkeypatch.delenv("BSM_HOME")
    assert cl.bsm_home() == Path.home() / ".bsm"


def test_precedence_explicit_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cl, "up", _no_up)
    monkeypatch.setenv("RAY_ADDRESS", "http://from-ray-address.example:8265")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://from-api-server.example:8265")
    conn = cn.resolve_connection("http://explicit.example:8265", home=tmp_path)
    assert (conn.dashboard_url, conn.source) == ("http://explicit.example:8265", "--address")
    assert not conn.started_by_bsm and not conn.is_local and conn.storage_default is None
    # Ray's order for the Jobs API: RAY_API_SERVER_ADDRESS, then RAY_ADDRESS.
    conn = cn.resolve_connection(None, home=tmp_path)
    assert (conn.dashboard_url, conn.source) == ("http://from-api-server.example:8265", "RAY_API_SERVER_ADDRESS")
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    conn = cn.resolve_connection("  ", home=tmp_path)
    assert (conn.dashboard_url, conn.source) == ("http://from-ray-address.example:8265", "RAY_ADDRESS")


def test_precedence_env_over_recorded_cluster(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_dashboard: tuple[str, type[_FakeDashboard]],
    sleeper: subprocess.Popen,
) -> None:
    url, handler = fake_dashboard
    handler.token = "recorded-token"
    _fake_record(tmp_path, sleeper.pid, url)
    monkeypatch.setattr(cl, "up", _no_up)
    monkeypatch.setenv("RAY_ADDRESS", "other-head.example:8265")
    conn = cn.resolve_connection(None, home=tmp_path)
    assert conn.dashboard_url == "http://other-head.example:8265" and not conn.started_by_bsm
    if conn.token is not None:  # the bsm cluster's token must not be sent to another cluster
        pytest.fail(f"a token was picked up for another cluster (from {conn.token_source})")


def test_precedence_recorded_cluster_over_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_dashboard: tuple[str, type[_FakeDashboard]],
    sleeper: subprocess.Popen,
) -> None:
    url, handler = fake_dashboard
    handler.token = "recorded-token"
    rec = _fake_record(tmp_path, sleeper.pid, url)
    monkeypatch.setattr(cl, "up", _no_up)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token-not-for-this-cluster")
    assert cl.running_cluster(tmp_path) == rec
    conn = cn.resolve_connection(None, home=tmp_path)
    assert conn.source == "bsm cluster" and conn.started_by_bsm and conn.is_local
    assert conn.dashboard_url == url and conn.token == "recorded-token"
    assert conn.storage_default == rec.storage
    # The recorded cluster named by its dashboard, GCS or Ray Client address, or "auto", is that cluster.
    for address in (url, rec.gcs_address, "localhost:46379", "ray://127.0.0.1:40001", "auto"):
        c = cn.resolve_connection(address, home=tmp_path)
        assert c.dashboard_url == url and c.started_by_bsm and c.token == "recorded-token", address


def test_precedence_start_when_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path | None] = []

    def fake_up(*args: Any, home: Path | None = None, **kwargs: Any) -> cl.LocalCluster:
        calls.append(home)
        token_file = tmp_path / "t"
        token_file.write_text("started-token")
        return cl.LocalCluster(
            "127.0.0.1:1",
            "http://127.0.0.1:2",
            1,
            1,
            0,
            "/t",
            str(tmp_path / "log"),
            "now",
            str(tmp_path / "runs"),
            token_file=str(token_file),
        )

    monkeypatch.setattr(cl, "up", fake_up)
    with pytest.raises(ClusterError, match="bsm up"):
        cn.resolve_connection(None, start=False, home=tmp_path)
    assert calls == []
    conn = cn.resolve_connection(None, home=tmp_path)
    assert calls == [tmp_path]
    assert conn.source == "started by bsm" and conn.token == "started-token" and conn.started_by_bsm


def test_stale_record_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    _fake_record(tmp_path, proc.pid, "http://127.0.0.1:9")
    rec = cl.load_record(tmp_path)
    assert rec is not None
    rec.pid_start_time = -1  # certainly not the start time of whatever has this pid now
    cl._write_json_atomic(tmp_path / cl.RECORD_NAME, rec.to_json())
    assert cl.running_cluster(tmp_path) is None
    assert not (tmp_path / cl.RECORD_NAME).exists() and not (tmp_path / cl.TOKEN_NAME).exists()


def test_down_never_signals_a_reused_pid(tmp_path: Path) -> None:
    """A record whose pid now belongs to another process (another start time) stops nothing."""
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)  # looks like ray"], start_new_session=True
    )
    try:
        rec = _fake_record(tmp_path, other.pid, "http://127.0.0.1:9")
        assert rec.pid_start_time is not None
        rec.pid_start_time -= 1  # the recorded head started earlier: this pid was reused since
        cl._write_json_atomic(tmp_path / cl.RECORD_NAME, rec.to_json())
        assert cl.running_cluster(tmp_path) is None  # stale: removed, nothing signalled
        cl._write_json_atomic(tmp_path / cl.RECORD_NAME, rec.to_json())
        assert cl.down(home=tmp_path) == rec
        time.sleep(0.3)
        assert other.poll() is None, "down() signalled a process that is not the recorded head"
        rec.pid_start_time = None  # no start time: the pid alone never justifies a signal
        cl._write_json_atomic(tmp_path / cl.RECORD_NAME, rec.to_json())
        assert cl.down(home=tmp_path) == rec
        time.sleep(0.3)
        assert other.poll() is None, "down() signalled a pid whose start time it could not check"
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("http://head.example:8265", "http://head.example:8265"),
        ("https://head.example/ray/", "https://head.example/ray"),
        ("head.example:8265", "http://head.example:8265"),
        ("head.example", "http://head.example:8265"),
        ("ray://head.example:10001", "http://head.example:8265"),
        ("[::1]:8265", "http://[::1]:8265"),
        ("127.0.0.1:8266", "http://127.0.0.1:8266"),
    ],
)
def test_address_forms(address: str, url: str, tmp_path: Path) -> None:
    conn = cn.resolve_connection(address, start=False, home=tmp_path)
    assert conn.dashboard_url == url
    assert conn.is_local == ("127.0.0.1" in url or "[::1]" in url)


@pytest.mark.parametrize("address", ["head.example:6379", "auto", "grpc://head.example:1", "http://head:notaport"])
def test_bad_addresses(address: str, tmp_path: Path) -> None:
    with pytest.raises(ClusterError) as err:
        cn.resolve_connection(address, start=False, home=tmp_path)
    assert address in str(err.value)
    if address.endswith(":6379"):
        assert "http://head.example:8265" in str(err.value)


def test_read_token_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cn.read_token() is None
    default = tmp_path / ".ray" / "auth_token"
    default.parent.mkdir()
    default.write_text("  default-token\n")
    default.chmod(0o600)
    assert cn.read_token() == "default-token"
    path_file = tmp_path / "tok"
    path_file.write_text("path-token\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path_file))
    assert cn.read_token() == "path-token"
    monkeypatch.setenv("RAY_AUTH_TOKEN", " env-token ")
    assert cn.read_token() == "env-token"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    path_file.write_text("   \n")
    with pytest.raises(ClusterError, match="RAY_AUTH_TOKEN_PATH .* is empty"):
        cn.read_token()
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ClusterError, match="RAY_AUTH_TOKEN_PATH"):
        cn.read_token()


def test_connection_repr_and_headers_hide_nothing_but_token() -> None:
    conn = cn.Connection("https://h:8265", token="s3cret-token-value", token_source="RAY_AUTH_TOKEN")
    assert "s3cret-token-value" not in repr(conn) and "s3cret-token-value" not in str(conn)
    assert cn.auth_headers(conn) == {"Authorization": "Bearer s3cret-token-value"}
    assert cn.auth_headers(cn.Connection("http://h:8265")) == {}
    # Plain http to another host: refused (without echoing the token) unless --allow-insecure.
    with pytest.raises(ClusterError, match="refusing to send the Ray auth token .* --allow-insecure") as err:
        cn.auth_headers(cn.Connection("http://h:8265", token="s3cret-token-value", token_source="RAY_AUTH_TOKEN"))
    assert "s3cret-token-value" not in str(err.value)
    insecure = cn.Connection("http://h:8265", token="s3cret-token-value", allow_insecure=True)
    assert cn.auth_headers(insecure) == {"Authorization": "Bearer s3cret-token-value"}


@pytest.mark.parametrize(
    ("url", "allow_insecure", "sent"),
    [
        ("http://127.0.0.1:8265", False, True),  # loopback http is fine
        ("http://[::1]:8265", False, True),
        ("http://localhost:8265", False, True),
        ("https://head.example:8265", False, True),  # https anywhere is fine
        ("http://head.example:8265", False, False),  # plain http to another host: never by default
        ("http://10.0.0.5:8265", False, False),
        ("http://127.0.0.1.example:8265", False, False),  # a name, never resolved, is another host
        ("http://head.example:8265", True, True),
    ],
)
def test_where_a_token_may_go(url: str, allow_insecure: bool, sent: bool) -> None:
    assert may_send_token(url, allow_insecure) is sent


REMOTE_NAME = "ray-head.bsm-test.invalid"  # resolves nowhere; the mocked resolver sends it to 127.0.0.1


@pytest.fixture
def remote_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """A host name bsm must treat as another machine, whose traffic the mocked resolver sends to 127.0.0.1."""
    import socket

    real = socket.getaddrinfo

    def fake_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == REMOTE_NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return REMOTE_NAME


def test_token_never_sent_over_plain_http_to_remote_host_resolver_mocked(
    fake_dashboard: tuple[str, type[_FakeDashboard]],
    remote_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, handler = fake_dashboard
    handler.token = "remote-secret-token"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "remote-secret-token")
    address = url.replace("127.0.0.1", remote_name)
    conn = cn.resolve_connection(address, start=False, home=tmp_path)
    assert not conn.is_local and conn.token == "remote-secret-token"
    # Every way in refuses before the token leaves: connect (check first), a client or a resources query.
    for call in (
        lambda: cn.connect(address, start=False, home=tmp_path),
        lambda: cn.job_client(conn),
        lambda: cn.cluster_resources(conn),
        lambda: cn.check_secure(conn, allow_insecure=False),
    ):
        with pytest.raises(ClusterError, match="over plain http.*--allow-insecure") as err:
            call()
        assert "remote-secret-token" not in str(err.value)
    assert handler.seen, "the server was never asked anything (is the resolver mock working?)"
    assert [p for p, _ in handler.seen] == ["/api/authentication_mode"] * len(handler.seen)  # asked, unauthenticated
    assert all(auth is None for _, auth in handler.seen), handler.seen
    # With --allow-insecure the user chose to send it: then (and only then) it arrives.
    conn = cn.resolve_connection(address, start=False, home=tmp_path, allow_insecure=True)
    cn.check_secure(conn, allow_insecure=True)
    assert cn.cluster_resources(conn).nodes == []
    assert ("/api/v0/nodes", "Bearer remote-secret-token") in handler.seen


def test_ray_address_env_never_redirects_the_token_resolver_mocked(
    fake_dashboard: tuple[str, type[_FakeDashboard]],
    remote_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray's JobSubmissionClient lets RAY_ADDRESS override the address it is given; bsm's client does not."""
    url, handler = fake_dashboard
    handler.token = "cluster-a-token"
    with _serve_fake_dashboard() as (other_url, other):
        monkeypatch.setenv("RAY_ADDRESS", other_url.replace("127.0.0.1", remote_name))
        monkeypatch.setenv("RAY_API_SERVER_ADDRESS", other_url.replace("127.0.0.1", remote_name))
        conn = cn.resolve_connection(url, start=False, home=tmp_path)  # --address beats the environment
        conn.token, conn.token_source = "cluster-a-token", "test"
        client = cn.job_client(conn)
        assert client.get_address() == url
        assert ("/api/version", "Bearer cluster-a-token") in handler.seen
        assert other.seen == [], "a request went to the RAY_ADDRESS cluster"
        assert os.environ["RAY_ADDRESS"].startswith("http://" + remote_name)  # restored


def test_insecure_remote_cluster_gets_no_token_resolver_mocked(
    fake_dashboard: tuple[str, type[_FakeDashboard]],
    remote_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, handler = fake_dashboard
    handler.mode = "disabled"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-for-this-cluster")
    address = url.replace("127.0.0.1", remote_name)
    conn = cn.resolve_connection(address, start=False, home=tmp_path, allow_insecure=True)
    cn.check_secure(conn, allow_insecure=True)  # warns; an unauthenticated cluster does not need the token
    assert conn.token is None
    cn.cluster_resources(conn)
    assert all(auth is None for _, auth in handler.seen), handler.seen


def test_check_secure_fake_server(
    fake_dashboard: tuple[str, type[_FakeDashboard]], caplog: pytest.LogCaptureFixture
) -> None:
    url, handler = fake_dashboard
    remote = cn.Connection(url, token=None, is_local=False)  # pretend it is another machine
    handler.mode = "disabled"
    assert cn.authentication_mode(remote) == "disabled"
    with pytest.raises(ClusterError, match="--allow-insecure") as err:
        cn.check_secure(remote, allow_insecure=False)
    assert url in str(err.value) and "disabled" in str(err.value)
    with caplog.at_level(logging.WARNING):
        cn.check_secure(remote, allow_insecure=True)
    assert "--allow-insecure" in caplog.text
    # A loopback cluster is fine without auth; an old Ray without the endpoint counts as disabled.
    cn.check_secure(cn.Connection(url, is_local=True), allow_insecure=False)
    handler.mode = None
    assert cn.authentication_mode(remote) == "disabled"
    with pytest.raises(ClusterError, match="--allow-insecure"):
        cn.check_secure(remote, allow_insecure=False)
    # Token mode: fine with a token, a clear error without one.
    handler.mode = "token"
    cn.check_secure(cn.Connection(url, token="t", is_local=False), allow_insecure=False)
    with pytest.raises(ClusterError, match="RAY_AUTH_TOKEN"):
        cn.check_secure(remote, allow_insecure=False)


def test_cluster_resources_fake_server(fake_dashboard: tuple[str, type[_FakeDashboard]]) -> None:
    url, handler = fake_dashboard
    handler.token = "tok"
    handler.nodes = [
        {"node_ip": "10.0.0.1", "state": "ALIVE", "resources_total": {"CPU": 8.0}},
        {"node_ip": "10.0.0.2", "state": "ALIVE", "resources_total": {"CPU": 96.0, "GPU": 8.0}},
        {"node_ip": "10.0.0.3", "state": "DEAD", "resources_total": {"CPU": 96.0, "GPU": 8.0}},
    ]
    handler.cluster_status = {
        "autoscalerReport": {"activeNodes": {"gpu.a100x8": 1, "head.cpu": 1}, "pendingNodes": [], "pendingLaunches": {}}
    }
    conn = cn.Connection(url, token="tok")
    res = cn.cluster_resources(conn)
    assert (res.total_cpus, res.total_gpus, res.max_gpus_per_node) == (104, 8, 8)
    assert res.nodes[0] == cn.NodeResources("10.0.0.2", 96.0, 8.0)
    assert res.can_autoscale is True
    res.require(gpus=64)  # an autoscaling cluster may grow
    # A `ray start` cluster: the readonly provider's per-node types ("node_<id>", camel-cased).
    handler.cluster_status = {"autoscalerReport": {"activeNodes": {"node" + "1890B62E" * 7: 1}}}
    res = cn.cluster_resources(conn)
    assert res.can_autoscale is False
    with pytest.raises(ClusterError, match="needs 16 GPUs .* has 8"):
        res.require(gpus=16)
    with pytest.raises(ClusterError, match="requires an auth token"):
        cn.cluster_resources(cn.Connection(url))


def test_unreachable_address_is_a_cluster_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = cn.Connection(f"http://127.0.0.1:{port}", token="secret-xyz", is_local=True)
    for call in (cn.authentication_mode, cn.cluster_resources, cn.job_client):
        with pytest.raises(ClusterError, match="cannot reach") as err:
            call(conn)
        assert "secret-xyz" not in str(err.value)


def test_up_rejects_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--num-cpus must be >= 1, got 0"):
        cl.up(0, home=tmp_path)
    with pytest.raises(ConfigError, match="--num-gpus"):
        cl.up(1, -1, home=tmp_path)
    assert not (tmp_path / cl.RECORD_NAME).exists()


def test_down_without_record(tmp_path: Path) -> None:
    assert cl.down(home=tmp_path) is None


def test_temp_dir_falls_back_to_short_path(tmp_path: Path) -> None:
    long_home = tmp_path / ("x" * 60)
    long_home.mkdir()
    temp, owned = head.temp_dir_for(long_home)
    try:
        assert owned and len(str(temp)) <= head.MAX_TEMP_DIR_LEN and temp.is_dir()
    finally:
        temp.rmdir()
    short = Path(tempfile.mkdtemp(prefix="b", dir="/tmp"))
    temp, owned = head.temp_dir_for(short)
    try:
        assert not owned and temp == short / "ray"
    finally:
        temp.rmdir()
        short.rmdir()


def test_pick_ports_prefers_defaults_and_avoids_taken_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(head, "PREFERRED_PORTS", {"gcs": port, "dashboard": port, "client": port})
        ports = head.pick_ports()
    assert port not in ports.values()
    assert len(set(ports.values())) == len(ports) == 5  # gcs, dashboard, client and the two metrics ports


def test_import_is_cheap() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, raytune_bsm.client.local_cluster; print('ray' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_start_times_name_a_process_not_its_pid(sleeper: subprocess.Popen) -> None:
    started = processes.start_time(sleeper.pid)
    assert started is not None and processes.is_alive(sleeper.pid, started)
    assert not processes.is_alive(sleeper.pid, started - 1)  # another process that once had this pid
    # A record from before psutil: /proc's start time in clock ticks still names the same process.
    ticks = int(Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    assert processes.is_alive(sleeper.pid, ticks) and not processes.is_alive(sleeper.pid, ticks - 100)
    assert list(processes.descendants(sleeper.pid, started)) == [sleeper.pid]
