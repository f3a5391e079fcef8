"""`bsm serve up | status | down`: an export answering HTTP requests on the cluster's Ray Serve.

`plan()` does every check before a cluster is asked to do anything: the flags, the export (found from a job id,
a run name or a path as `bsm fetch` finds it; the manifest read and every file scoring reads checked against
its sha256), the token for a non-loopback host. It returns the Serve config, exactly what `up` applies (and
what `--dry-run` prints): the package as it is on this machine goes to the replicas as a `py_modules` package
whose content-addressed URI (gcs://_ray_pkg_<hash>.zip) is computed here and uploaded through the Jobs API's
package upload, as a job's would be; the application is applied with the dashboard's declarative Serve API
(`PUT /api/serve/applications/`), alongside the applications already deployed there.

Ray Serve has one HTTP proxy per cluster (per node), started with the first application: every application
shares its host and port, each under its own route prefix (`/NAME`). `up` asking for another host or port
than the running proxy's is refused with the way out; `down` of the last application shuts Serve down, proxy
and controller included, so nothing is left running.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raytune_bsm import layout
from raytune_bsm.client import connection
from raytune_bsm.client.auth import is_loopback, read_token_file, write_token
from raytune_bsm.client.dashboard import NET_ERRORS, Connection, auth_failure, auth_headers, unreachable
from raytune_bsm.client.fetch import locate_export
from raytune_bsm.client.submission import ENV_VARS, EXCLUDES, PACKAGE_DIR, check_storage
from raytune_bsm.errors import ClusterError, ConfigError
from raytune_bsm.serving import DEFAULT_HOST, DEFAULT_NAME, DEFAULT_PORT, DEPLOYMENT, IMPORT_PATH, Limits, ServeArgs
from raytune_bsm.text import safe

log = logging.getLogger("raytune_bsm")

API = "/api/serve/applications/"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
HEALTH_PERIOD_S = 5  # Serve calls check_health this often
HEALTH_TIMEOUT_S = 30  # ... and replaces a replica whose check fails or takes longer
DRAIN_S = 30  # a replica being replaced finishes the requests it holds for up to this long


@dataclass
class ServePlan:
    config: dict[str, Any]  # the Serve config (http_options + this application)
    url: str  # where the application answers
    token_file: str | None  # the bearer token's file (mode 0600), when one is required
    new_token: bool  # the token file does not exist yet: `up` writes it
    graph: str = ""  # the graph the replicas will run, and why

    @property
    def app(self) -> dict[str, Any]:
        return self.config["applications"][0]

    def shown(self) -> dict[str, Any]:
        """What `--dry-run` prints."""
        return {"serve_config": self.config, "url": self.url, "token_file": self.token_file}


def plan(
    source: str,
    *,
    address: str | None = None,
    name: str = DEFAULT_NAME,
    replicas: int | None = None,
    autoscale: str | None = None,
    cpus_per_replica: int = 1,
    max_batch_size: int = 16,
    batch_wait_ms: float = 5.0,
    max_records: int = Limits.max_records,
    max_body_kb: int = Limits.max_body_bytes // 1024,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    precision: str = "auto",
    token_file: str | None = None,
    verbose: bool = False,
) -> ServePlan:
    """The Serve config `up` applies; contacts no cluster unless `source` is a job id (to find its export)."""
    from ray._private.runtime_env.packaging import get_uri_for_directory  # ray: not on `bsm --help`'s path

    if not NAME.fullmatch(name):
        raise ConfigError(f"--name must be 1-63 lowercase letters, digits or '-' (a URL path), got {name!r}")
    for flag, value, least in (
        ("--cpus-per-replica", cpus_per_replica, 1),
        ("--max-batch-size", max_batch_size, 1),
        ("--max-records", max_records, 1),
        ("--max-body-kb", max_body_kb, 1),
        ("--port", port, 1),
    ):
        if value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    if port > 65535:
        raise ConfigError(f"--port must be at most 65535, got {port}")
    if not 0 <= batch_wait_ms <= 1000:
        raise ConfigError(f"--batch-wait-ms must be between 0 and 1000, got {batch_wait_ms}")
    scaling = _scaling(replicas, autoscale, max_batch_size)
    export, run = locate_export(source, address=address)
    export = check_storage(export, "EXPORT")
    choice = verify_export(export, precision)
    token_path, token_sha, new = _token(host, token_file, name)
    args = ServeArgs(
        export=export,
        run=run,
        precision=precision,
        threads=cpus_per_replica,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        max_records=max_records,
        max_body_bytes=max_body_kb * 1024,
        token_sha256=token_sha,
        verbose=verbose,
    )
    package = get_uri_for_directory(str(PACKAGE_DIR), include_gitignore=True, excludes=EXCLUDES)
    deployment = {
        "name": DEPLOYMENT,
        **scaling,
        # Requests wait in the replica's batcher, not in the proxy: a replica at its limit makes Serve's router
        # back off and retry, which left it idle most of the time (2 * max_batch_size, 64 callers on 2 cores: 22.9
        # requests/s, the replica busy 26% of the time; 8 *: 80 requests/s, busy 83%)
        "max_ongoing_requests": 8 * max_batch_size,
        "ray_actor_options": {"num_cpus": cpus_per_replica},
        "health_check_period_s": HEALTH_PERIOD_S,
        "health_check_timeout_s": HEALTH_TIMEOUT_S,
        "graceful_shutdown_timeout_s": DRAIN_S,
    }
    app = {
        "name": name,
        "route_prefix": f"/{name}",
        "import_path": IMPORT_PATH,
        "runtime_env": {"py_modules": [package], "env_vars": ENV_VARS},
        "args": asdict(args),
        "deployments": [deployment],
    }
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") or is_loopback(host) else host
    return ServePlan(
        config={"http_options": {"host": host, "port": port}, "applications": [app]},
        url=f"http://{url_host}:{port}/{name}",
        token_file=str(token_path) if token_path else None,
        new_token=new,
        graph=f"{choice.file}; {choice.why}",
    )


def verify_export(export: str, precision: str) -> Any:
    """The manifest read and every file scoring reads (the graph `precision` picks, the model JSON, the
    tokenizer) checked against its sha256, as `bsm fetch` checks them; the graph choice."""
    from raytune_bsm.scoring.sessions import choose_graph  # numpy: not on `bsm --help`'s path

    with tempfile.TemporaryDirectory(prefix="bsm-serve-") as tmp:
        manifest = layout.download_export(export, Path(tmp) / "manifest", only=[])
        choice = choose_graph(manifest, precision)
        layout.download_export(export, Path(tmp) / "export", [*choice.files, layout.MODEL_JSON, layout.TOKENIZER_JSON])
    return choice


def _scaling(replicas: int | None, autoscale: str | None, max_batch_size: int) -> dict[str, Any]:
    if replicas is not None and autoscale is not None:
        raise ConfigError("--replicas and --autoscale exclude each other; give one")
    if autoscale is None:
        if replicas is not None and replicas < 1:
            raise ConfigError(f"--replicas must be at least 1, got {replicas}")
        return {"num_replicas": replicas or 1}
    try:
        low, high = (int(x) for x in autoscale.split(","))
    except ValueError:
        raise ConfigError(f"--autoscale must be MIN,MAX (two whole numbers), got {autoscale!r}") from None
    if not 0 <= low <= high or high < 1:
        raise ConfigError(f"--autoscale MIN,MAX needs 0 <= MIN <= MAX and MAX >= 1, got {autoscale!r}")
    if low == 0:
        log.warning(
            "--autoscale %s: scaling up from zero replicas takes 30 s or more; the first request waits", autoscale
        )
    return {
        "autoscaling_config": {
            "min_replicas": low,
            "max_replicas": high,
            "initial_replicas": max(low, 1),
            "target_ongoing_requests": max_batch_size,  # one full batch per replica, then add one
        }
    }


def _token(host: str, token_file: str | None, name: str) -> tuple[Path | None, str | None, bool]:
    """(the token's file, its sha256, whether `up` must create it). A non-loopback host requires a token."""
    if token_file is None and is_loopback(host):
        return None, None, False
    path = Path(token_file).expanduser().absolute() if token_file else layout.bsm_home() / f"serve-{name}.token"
    if not path.exists():
        return path, None, True
    token = read_token_file(path, "--token-file")
    return path, hashlib.sha256(token.encode()).hexdigest(), False


# --------------------------------------------------------------------------------------- the cluster side


def up(plan_: ServePlan, *, address: str | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """Apply the plan: check the running proxy's host and port, upload the package, apply the config beside the
    other applications, wait until the application is RUNNING. Returns {name, url, token_file}."""
    conn, client = connection.connect(address)
    app = plan_.app
    details = request(conn, "GET", API)
    _check_proxy(details, plan_.config["http_options"], app["name"])
    others = _declared(details, skip=app["name"])
    replicas = app["deployments"][0].get("num_replicas") or app["deployments"][0]["autoscaling_config"]["min_replicas"]
    connection.cluster_resources(conn).require(
        cpus=replicas * app["deployments"][0]["ray_actor_options"]["num_cpus"], what=f"{replicas} replica(s)"
    )
    if plan_.new_token:  # written only now that every check has passed
        path = Path(plan_.token_file or "")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        app["args"]["token_sha256"] = hashlib.sha256(write_token(path).encode()).hexdigest()
        log.info("wrote a new bearer token to %s (mode 0600)", path)
    uri = client._upload_package_if_needed(  # the Jobs SDK's own upload: the URI plan() computed
        str(PACKAGE_DIR), include_gitignore=True, include_parent_dir=True, excludes=EXCLUDES
    )
    if uri != app["runtime_env"]["py_modules"][0]:
        raise ClusterError(f"the package changed while deploying ({uri}); run `bsm serve up` again")
    started = time.time()
    request(conn, "PUT", API, {**plan_.config, "applications": [*others, app]})
    _wait_running(conn, app, started, timeout)
    log.info("%s answers at %s (%s)", app["name"], plan_.url, plan_.graph)
    return {"name": app["name"], "url": plan_.url, "token_file": plan_.token_file}


def status(name: str | None = None, *, address: str | None = None) -> list[dict[str, Any]]:
    """Every application on the cluster's Serve (or `name`): status, URL, replicas (state, pid), the export."""
    conn, _ = connection.connect(address, start=False)
    details = request(conn, "GET", API)
    apps = details.get("applications") or {}
    if name is not None and name not in apps:
        raise ConfigError(f"no application named {name!r} on {conn.dashboard_url}; running: {sorted(apps) or 'none'}")
    http = details.get("http_options") or {}
    out = []
    for app_name, app in sorted(apps.items()):
        if name is not None and app_name != name:
            continue
        cfg = app.get("deployed_app_config") or {}
        args = cfg.get("args") or {}
        host = http.get("host") or DEFAULT_HOST
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        out.append(
            {
                "name": app_name,
                "status": app.get("status"),
                "message": _last_line(app.get("message") or ""),
                "url": f"http://{shown}:{http.get('port', DEFAULT_PORT)}{app.get('route_prefix') or ''}",
                "export": args.get("export"),
                "bsm": cfg.get("import_path") == IMPORT_PATH,
                "replicas": [
                    {"state": r.get("state"), "pid": r.get("pid"), "node": r.get("node_ip")}
                    for d in (app.get("deployments") or {}).values()
                    for r in d.get("replicas") or []
                ],
            }
        )
    return out


def down(name: str = DEFAULT_NAME, *, address: str | None = None, timeout: float = 60.0) -> list[str]:
    """Remove application `name`; when no other application is left, shut Ray Serve down (controller and
    proxies too). Returns the applications still deployed."""
    conn, _ = connection.connect(address, start=False)
    details = request(conn, "GET", API)
    apps = details.get("applications") or {}
    if name not in apps:
        raise ConfigError(f"no application named {name!r} on {conn.dashboard_url}; running: {sorted(apps) or 'none'}")
    others = _declared(details, skip=name)
    if others:
        request(conn, "PUT", API, {"http_options": _http(details), "applications": others})
    else:
        request(conn, "DELETE", API)
    deadline = time.monotonic() + timeout
    while name in (request(conn, "GET", API).get("applications") or {}):
        if time.monotonic() > deadline:
            raise ClusterError(f"{name} is still being deleted after {timeout:.0f} s; see `bsm serve status`")
        time.sleep(0.5)
    return [a["name"] for a in others]


def _check_proxy(details: dict[str, Any], want: dict[str, Any], name: str) -> None:
    """One HTTP proxy per cluster: refuse another host or port than the running one's, saying what to do."""
    apps = sorted(details.get("applications") or {})
    have = details.get("http_options") or {}
    running = bool(apps or (details.get("controller_info") or {}).get("actor_id"))
    if not running or not have:
        return
    if (have.get("host"), have.get("port")) != (want["host"], want["port"]):
        others = [a for a in apps if a != name]
        raise ConfigError(
            f"Ray Serve on this cluster already listens on {have.get('host')}:{have.get('port')}, and it has one "
            f"HTTP proxy for every application ({', '.join(others) or 'none deployed now'}); deploy with --host "
            f"{have.get('host')} --port {have.get('port')}, or stop them first (`bsm serve down NAME`)"
        )


def _declared(details: dict[str, Any], skip: str) -> list[dict[str, Any]]:
    """The configs of the applications to keep (all but `skip`); an application deployed from Python
    (`serve.run`) has none, and a declarative apply would delete it: refused."""
    out, imperative = [], []
    for app_name, app in sorted((details.get("applications") or {}).items()):
        if app_name == skip:
            continue
        cfg = app.get("deployed_app_config")
        (out if cfg else imperative).append(cfg or app_name)
    if imperative:
        raise ClusterError(
            f"the applications {imperative} were deployed from Python (serve.run), and applying a Serve config "
            "would delete them; remove them first, or serve on another cluster"
        )
    return out


def _http(details: dict[str, Any]) -> dict[str, Any]:
    have = details.get("http_options") or {}
    return {"host": have.get("host", DEFAULT_HOST), "port": have.get("port", DEFAULT_PORT)}


def _wait_running(conn: Connection, app: dict[str, Any], started: float, timeout: float) -> None:
    """Until the application runs this config (RUNNING after this apply); a failed deploy names Serve's reason."""
    deadline, name = time.monotonic() + timeout, app["name"]
    while True:
        now = (request(conn, "GET", API).get("applications") or {}).get(name) or {}
        mine = (now.get("deployed_app_config") or {}).get("args") == app["args"]
        fresh = (now.get("last_deployed_time_s") or 0) >= started - 1
        if mine and fresh and now.get("status") == "RUNNING":
            return
        if mine and fresh and now.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise ClusterError(f"{name}: {now['status']}: {safe(_last_line(now.get('message') or ''))}")
        if time.monotonic() > deadline:
            raise ClusterError(
                f"{name} is not running after {timeout:.0f} s (status {now.get('status')}); see `bsm serve status`"
            )
        time.sleep(1.0)


def _last_line(message: str) -> str:
    """The line that says what went wrong, from a message that may hold a replica's traceback."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception)\b", ln)]
    return (errors or lines or [""])[-1][:500]


def request(conn: Connection, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
    """An authenticated dashboard request with a JSON body; the JSON answer ({} when empty). Every failure is a
    ClusterError naming what the dashboard said."""
    headers = {**auth_headers(conn), **({"Content-Type": "application/json"} if body is not None else {})}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(conn.dashboard_url + path, data=data, headers=headers, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if conn.is_local else None
    try:
        with (opener.open if opener else urllib.request.urlopen)(req, timeout=timeout) as resp:
            text = resp.read()
    except urllib.error.HTTPError as e:
        said = b""
        with contextlib.suppress(Exception):
            said = e.read()
        if e.code in (401, 403):
            raise ClusterError(auth_failure(conn, e.code)) from None
        raise ClusterError(
            f"the Ray dashboard at {conn.dashboard_url} refused {method} {path} (HTTP {e.code}): "
            f"{safe(_last_line(said.decode(errors='replace')))}"
        ) from None
    except NET_ERRORS as e:
        raise unreachable(conn.dashboard_url, e) from None
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        raise ClusterError(
            f"the Ray dashboard at {conn.dashboard_url} answered {method} {path} with non-JSON"
        ) from None
