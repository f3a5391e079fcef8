"""`bsm serve`: an export served on a real local Ray cluster's Ray Serve, asked over real HTTP on 127.0.0.1.

The tests of this module share one deployment and run in file order: the config, predictions (same as `bsm
predict`), refusals, the page in Chromium, a second host/port refused, a redeploy under load, a replica killed
under load, the token on a non-loopback bind, and `down` leaving no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import pytest
from test_predict import exported  # noqa: F401  (fixture: a tiny 3-class export and demo dialogues)
from typer.testing import CliRunner, Result

from raytune_bsm import api
from raytune_bsm.cli import app
from raytune_bsm.client import connection
from raytune_bsm.client.serve import API, request
from raytune_bsm.errors import ConfigError
from raytune_bsm.runner import serve_app
from raytune_bsm.scoring.predict import predict_file
from raytune_bsm.serving import ServeArgs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()


def post(url: str, body: bytes | dict, headers: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    return _open(req, timeout)


def get(url: str, headers: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    return _open(urllib.request.Request(url, headers=headers or {}), timeout)


def _open(req: urllib.request.Request, timeout: float) -> tuple[int, dict]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never through a proxy
    try:
        with opener.open(req, timeout=timeout) as r:
            text = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read(), e.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, {"text": text.decode(errors="replace")}


def details(cluster) -> dict:
    conn, _ = connection.connect(cluster.dashboard_url)
    return request(conn, "GET", API)


def texts_of(exported) -> tuple[list, list]:  # noqa: F811
    """The fixture's dialogues that are not blank (blank ones are refused by the API) and their ids."""
    keep = [(i, t) for i, t in zip(exported.ids, exported.texts) if t and t.strip()]
    return [i for i, _ in keep], [t for _, t in keep]


class Load:
    """`workers` callers posting one-record requests until stopped; every answer (status, seconds, body)."""

    def __init__(self, url: str, text: str, workers: int = 4, timeout: float = 30) -> None:
        self.url, self.text, self.timeout = url, text, timeout
        self.stop, self.results, self.lock = threading.Event(), [], threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                status, body = post(self.url, {"records": [{"id": 1, "dialogue": self.text}]}, timeout=self.timeout)
            except OSError as e:  # a timeout or a dropped connection
                status, body = -1, {"error": type(e).__name__}
            with self.lock:
                self.results.append((status, time.monotonic() - t0, body))

    def finish(self) -> list:
        self.stop.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        return self.results


@pytest.fixture(scope="module")
def served(local_cluster, exported, tmp_path_factory):  # noqa: F811
    """The tiny export served as application `bsm` on 127.0.0.1:PORT; a copy of it as run2 for the redeploy."""
    run2 = tmp_path_factory.mktemp("serve") / "run2" / "export"
    shutil.copytree(exported.dest, run2)
    result = api.serve_up(str(exported.dest), address=local_cluster.dashboard_url, port=PORT)
    yield result, run2
    with_apps = details(local_cluster).get("applications") or {}
    for name in with_apps:
        api.serve_down(name, address=local_cluster.dashboard_url)


def bsm(*args: str) -> Result:
    """`bsm ARGS` in this process (typer's CliRunner): exit code, stdout, stderr."""
    return CliRunner().invoke(app, list(args), prog_name="bsm")


def test_bad_flags_are_one_line_errors_before_any_cluster_is_contacted(exported, bsm_home):  # noqa: F811
    for flags, says in (
        (["--replicas", "2", "--autoscale", "1,2"], "--replicas and --autoscale exclude each other"),
        (["--autoscale", "3,1"], "--autoscale MIN,MAX needs 0 <= MIN <= MAX"),
        (["--autoscale", "two"], "--autoscale must be MIN,MAX"),
        (["--name", "Bad/Name"], "--name must be"),
        (["--precision", "int4"], "--precision must be one of"),
        (["--max-batch-size", "0"], "--max-batch-size must be at least 1"),
        (["--port", "70000"], "--port must be at most 65535"),
    ):
        r = bsm("serve", "up", str(exported.dest), "--dry-run", *flags)
        assert r.exit_code == 1, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("bsm: error: ") and says in r.stderr, r.stderr
        assert r.stdout == ""
    assert not list(bsm_home.iterdir())  # nothing written, no cluster started


def test_a_tampered_export_is_refused_before_deploying(exported, tmp_path):  # noqa: F811
    bad = tmp_path / "run" / "export"
    shutil.copytree(exported.dest, bad)
    with open(bad / "model.chunks.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(Exception, match="checksum mismatch"):
        api.serve_up(str(bad), dry_run=True)


def test_non_loopback_host_dry_run_names_a_token_file_and_writes_nothing(exported, tmp_path):  # noqa: F811
    token = tmp_path / "t.token"
    shown = api.serve_up(str(exported.dest), dry_run=True, host="0.0.0.0", token_file=str(token))
    assert shown["token_file"] == str(token) and not token.exists()


def test_check_health_fails_while_one_scoring_call_is_stuck():
    cls = serve_app.BsmScorer.func_or_class
    replica = cls.__new__(cls)
    replica.args = ServeArgs(export="x", run="r", stuck_after_s=2.0)
    replica.busy_since, replica.pinned = None, time.monotonic()
    replica.check_health()  # idle: healthy
    replica.busy_since = time.monotonic() - 1.0
    replica.check_health()  # scoring, not for long: healthy
    replica.busy_since = time.monotonic() - 5.0
    with pytest.raises(RuntimeError, match="one scoring call has run for 5 s"):
        replica.check_health()


@pytest.mark.slow
def test_the_dry_run_config_is_what_is_deployed(served, local_cluster, exported):  # noqa: F811
    result, _ = served
    assert result["url"] == f"http://127.0.0.1:{PORT}/bsm" and result["token_file"] is None
    shown = api.serve_up(str(exported.dest), dry_run=True, port=PORT)
    live = details(local_cluster)
    assert live["http_options"]["host"] == "127.0.0.1" and live["http_options"]["port"] == PORT
    deployed = live["applications"]["bsm"]["deployed_app_config"]
    app = shown["serve_config"]["applications"][0]
    assert {k: deployed[k] for k in app} == app


@pytest.mark.slow
def test_predictions_over_http_are_bsm_predicts_within_1e6(served, exported, tmp_path):  # noqa: F811
    result, _ = served
    ids, texts = texts_of(exported)
    offline = pq.read_table(predict_file(str(exported.dest), str(exported.data), str(tmp_path / "p.parquet")))
    want = {
        i: [offline.column(f"prob_{c}")[k].as_py() for c in ("refund", "partial", "reversed")]
        for k, i in enumerate(offline.column("id").to_pylist())
    }

    def ask(start: int) -> tuple[int, dict]:  # requests of 5 records, 8 at a time: batched across callers
        records = [{"id": i, "dialogue": t} for i, t in zip(ids[start : start + 5], texts[start : start + 5])]
        return post(result["url"] + "/predict", {"records": records})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(0, len(ids), 5)))
    manifest = json.loads((exported.dest / "manifest.json").read_text())
    sha = {e["path"]: e["sha256"] for e in manifest["files"]}
    got = 0
    for status, body in answers:
        assert status == 200, body
        for p in body["predictions"]:
            probs = [p["probabilities"][c] for c in ("refund", "partial", "reversed")]
            assert max(abs(a - b) for a, b in zip(probs, want[p["id"]])) < 1e-6
            assert p["class"] == max(p["probabilities"], key=p["probabilities"].get)
            assert p["export"] == {
                "run": exported.dest.parent.name,
                "graph": "model.chunks.onnx",
                "sha256": sha["model.chunks.onnx"],
            }
            assert p["precision"] == "fp32"
            got += 1
    assert got == len(ids) == 42


@pytest.mark.slow
@pytest.mark.parametrize(
    "body, status, field",
    [
        (b'{"records": [', 400, "body"),
        (b"\xff\xfe", 400, "body"),
        (b"[1, 2]", 422, "body"),
        (b'{"rows": []}', 422, "records"),
        (b'{"records": "Buyer: hi"}', 422, "records"),
        (b'{"records": []}', 422, "records"),
        (json.dumps({"records": [{"dialogue": "x"}] * 65}).encode(), 413, "records"),
        (json.dumps({"records": [{"dialogue": "x" * (1 << 20)}]}).encode(), 413, "body"),
        (b'{"records": [{"id": 1, "text": "Buyer: hi"}]}', 422, "records[0].dialogue"),
        (b'{"records": [{"dialogue": 3}]}', 422, "records[0].dialogue"),
        (b'{"records": [{"dialogue": ["Buyer: hi", null]}]}', 422, "records[0].dialogue[1]"),
        (b'{"records": [{"id": {"a": 1}, "dialogue": "x"}]}', 422, "records[0].id"),
        (b'{"records": [{"dialogue": "ok"}, {"dialogue": "  \\n "}]}', 422, "records[1].dialogue"),
        (b'{"records": [{"dialogue": ["", " "]}]}', 422, "records[0].dialogue"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_keeps_serving(served, body, status, field):
    url = served[0]["url"]
    got, answer = post(url + "/predict", body)
    assert (got, answer.get("field")) == (status, field), answer
    assert "Traceback" not in answer["error"] and "Buyer: hi" not in answer["error"]
    assert post(url + "/predict", {"records": [{"dialogue": "Buyer: hi"}]})[0] == 200


@pytest.mark.slow
def test_healthz_and_info(served):
    url = served[0]["url"]
    status, health = get(url + "/healthz")
    assert status == 200 and health["status"] == "ready" and health["scored"] >= 1  # the warm-up record
    status, info = get(url + "/info")
    assert status == 200 and info["classes"] == ["refund", "partial", "reversed"]
    assert set(info["fields"]) == {"id", "dialogue"} and info["threads"] == 1
    assert info["parity"] and info["limits"] == {"max_records": 64, "max_body_bytes": 1 << 20}
    status, spec = get(url + "/openapi.json")
    assert status == 200 and "/predict" in spec["paths"]


@pytest.mark.slow
def test_the_page_scores_a_pasted_dialogue_in_chromium(served):
    from test_report import CHROMIUM

    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            outside = []
            page.on("request", lambda r: outside.append(r.url) if "127.0.0.1" not in r.url else None)
            page.goto(served[0]["url"] + "/")
            assert page.locator("#token").is_hidden()  # no token on loopback
            page.fill("#dialogue", "Buyer: my parcel never arrived.\nSeller: I have refunded you.")
            page.click("#score")
            page.wait_for_function("document.querySelectorAll('#probs tr').length === 3", timeout=30_000)
            assert page.inner_text("#result").startswith("class: ")
            page.fill("#dialogue", "   ")
            page.click("#score")
            page.wait_for_function("document.getElementById('error').textContent.includes('is empty')")
            assert outside == []  # no external assets
        finally:
            browser.close()


@pytest.mark.slow
def test_a_second_application_on_another_port_is_refused_in_one_line(served, exported, local_cluster):  # noqa: F811
    r = bsm("serve", "up", str(exported.dest), "--name", "other", "--port", str(PORT + 1))
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"already listens on 127.0.0.1:{PORT}" in r.stderr and "one HTTP proxy" in r.stderr
    assert f"--port {PORT}" in r.stderr


@pytest.mark.slow
def test_redeploying_under_the_same_name_switches_without_dropping_requests(served, local_cluster, exported):  # noqa: F811
    result, run2 = served
    load = Load(result["url"] + "/predict", "Buyer: where is my order?\nSeller: on its way.")
    try:
        time.sleep(2)
        api.serve_up(str(run2), address=local_cluster.dashboard_url, port=PORT, replicas=2)
        time.sleep(2)
    finally:
        answers = load.finish()
    assert answers and all(s == 200 for s, _, _ in answers), {s for s, _, _ in answers}
    runs = [b["predictions"][0]["export"]["run"] for _, _, b in answers]
    assert runs[0] == exported.dest.parent.name and runs[-1] == "run2"  # switched, in order, nothing dropped


@pytest.mark.slow
def test_a_killed_replica_is_replaced_with_few_clean_failures_and_no_hang(served, local_cluster):
    url = served[0]["url"]
    replicas = details(local_cluster)["applications"]["bsm"]["deployments"]["BsmScorer"]["replicas"]
    pids = {r["pid"] for r in replicas if r["state"] == "RUNNING"}
    assert len(pids) == 2
    victim = sorted(pids)[0]
    load = Load(url + "/predict", "Buyer: refund please.\nSeller: done.", workers=8, timeout=30)
    try:
        time.sleep(2)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # Serve notices and starts a replacement
            now = details(local_cluster)["applications"]["bsm"]["deployments"]["BsmScorer"]["replicas"]
            alive = {r["pid"] for r in now if r["state"] == "RUNNING"}
            if len(alive) == 2 and victim not in alive:
                break
            time.sleep(1)
        else:
            pytest.fail(f"no replacement replica within 90 s: {now}")
        time.sleep(2)
    finally:
        answers = load.finish()
    failed = [(s, b) for s, _, b in answers if s != 200]
    assert len(answers) > 20 and len(failed) <= 16, failed  # at most the requests the killed replica held
    assert all(500 <= s < 600 for s, _ in failed), failed  # each a clean HTTP error: no hang, no dropped socket
    assert max(t for _, t, _ in answers) < 30


@pytest.mark.slow
def test_a_non_loopback_host_requires_the_bearer_token(served, exported, local_cluster, tmp_path):  # noqa: F811
    api.serve_down("bsm", address=local_cluster.dashboard_url)  # one proxy per cluster: rebind it
    token_file = tmp_path / "serve.token"
    result = api.serve_up(
        str(exported.dest), address=local_cluster.dashboard_url, host="0.0.0.0", port=PORT, token_file=str(token_file)
    )
    assert result["token_file"] == str(token_file)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    url, body = result["url"], {"records": [{"dialogue": "Buyer: hi"}]}
    assert url == f"http://127.0.0.1:{PORT}/bsm"
    assert post(url + "/predict", body)[0] == 401
    assert post(url + "/predict", body, {"Authorization": "Bearer " + token[:-1] + "x"})[0] == 401
    assert get(url + "/info", {"Authorization": token})[0] == 401  # not a bearer header
    assert post(url + "/predict", body, {"Authorization": "Bearer " + token})[0] == 200
    assert get(url + "/healthz", {"Authorization": "Bearer " + token})[0] == 200
    assert get(url + "/")[0] == 200  # the page's HTML: it asks for the token
    assert token not in json.dumps(details(local_cluster))  # only its sha256 is in the config


@pytest.mark.slow
def test_down_leaves_no_serve_process_behind(served, local_cluster):
    import psutil

    def serve_processes() -> list:
        out = []
        for p in psutil.Process(local_cluster.pid).children(recursive=True):
            try:
                if any(k in " ".join(p.cmdline()) for k in ("ServeReplica", "ProxyActor", "ServeController")):
                    out.append(p)
            except psutil.Error:
                pass
        return out

    assert serve_processes()  # the replica, the proxy and the controller
    assert api.serve_down("bsm", address=local_cluster.dashboard_url) == []
    deadline = time.monotonic() + 60
    while serve_processes() and time.monotonic() < deadline:
        time.sleep(1)
    assert serve_processes() == []
    with pytest.raises(ConfigError, match="no application named 'bsm'"):
        api.serve_down("bsm", address=local_cluster.dashboard_url)
