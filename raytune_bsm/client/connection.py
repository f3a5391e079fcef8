"""Connections to a Ray cluster's Jobs API: addresses, auth tokens, security checks, resources.

Token authentication (Ray >= 2.52; read in Ray 2.60's own source, `ray/_private/authentication/`)
    * enabled by the environment variable ``RAY_AUTH_MODE=token`` on every Ray process of the cluster;
      ``ray start`` does not generate a token itself (``create_token_if_missing=False``), so bsm writes a
      fresh 256-bit token (``secrets.token_hex(32)``, as ``ray get-auth-token --generate`` does) to
      ``bsm_home()/cluster.token`` with mode 0600 and points ``RAY_AUTH_TOKEN_PATH`` at it;
    * a token is looked up, highest first, in ``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``
      (unreadable or empty is an error, not a fallback) and ``~/.ray/auth_token``; `read_token` follows that;
    * over HTTP it is sent as ``Authorization: Bearer <token>`` (``X-Ray-Authorization`` and the
      ``ray-authentication-token`` cookie are fallbacks); a missing token is answered 401, a wrong one 403;
      ``GET /api/authentication_mode`` is public and answers ``{"authentication_mode": "token"|"disabled"}``.

Addresses accepted by `resolve_connection` (``--address``, then ``RAY_API_SERVER_ADDRESS``, then
``RAY_ADDRESS`` — Ray's own order for the Jobs CLI):
    ``http(s)://host[:port]`` (used as given); ``host:port`` (http assumed); ``host`` (port 8265);
    ``auto`` / ``local`` (the cluster bsm started); ``ray://host[:port]`` (Ray Client: the dashboard is
    assumed at ``http://host:8265``, or the bsm cluster's own if it is that one); a GCS address
    (``host:6379``, or the ``gcs_address`` of the bsm cluster) is mapped to the bsm cluster's dashboard when
    it is that cluster and refused otherwise, naming the dashboard address to use instead.

The token never appears in a repr, a log line, an exception message or a job's metadata / runtime_env.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from raytune_bsm.client.local_cluster import (
    AUTH_HEADER,
    BEARER,
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_GCS_PORT,
    DEFAULT_TOKEN_PATH,
    _HTTP_TIMEOUT,
    LocalCluster,
    _home,
    _load_record,
    _read_token_file,
    _record_path,
)
from raytune_bsm.client import local_cluster as _cluster  # called through the module, so tests and callers can swap `up`
from raytune_bsm.errors import ClusterError
from raytune_bsm.resources import ClusterResources, NodeResources  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger("raytune_bsm.client.local_cluster")


# --------------------------------------------------------------------------------------------------------
# HTTP (stdlib only, so importing this module stays cheap)
# --------------------------------------------------------------------------------------------------------


def _http_get(url: str, headers: dict[str, str], timeout: float = _HTTP_TIMEOUT) -> tuple[int, bytes]:
    """(status, body). Errors below HTTP (refused, reset, not HTTP at all) propagate as OSError and friends."""
    import urllib.error
    import urllib.request

    handlers = []
    if _is_loopback(urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))  # never send loopback traffic to a proxy
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        with contextlib.suppress(Exception):
            return e.code, e.read()
        return e.code, b""


# Below HTTP: refused/reset/timeouts (OSError, incl. URLError), a port that does not speak HTTP
# (http.client.HTTPException), a malformed URL (ValueError).
_NET_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, http.client.HTTPException)


def _unreachable(url: str, err: BaseException) -> ClusterError:
    reason = getattr(err, "reason", None) or err
    return ClusterError(
        f"cannot reach the Ray Jobs API at {url} ({type(err).__name__}: {reason}); check that the cluster is "
        f"up and that this is its dashboard address (default port {DEFAULT_DASHBOARD_PORT}, e.g. "
        f"http://HOST:{DEFAULT_DASHBOARD_PORT} — not the GCS port {DEFAULT_GCS_PORT}), or start a local one "
        f"with `bsm up`"
    )


def _get_json(conn: Connection, path: str, timeout: float = _HTTP_TIMEOUT) -> Any:
    url = conn.dashboard_url + path
    try:
        status, body = _http_get(url, auth_headers(conn), timeout)
    except _NET_ERRORS as e:
        raise _unreachable(conn.dashboard_url, e) from None
    if status in (401, 403):
        raise ClusterError(_auth_failure(conn, status))
    if status != 200:
        raise ClusterError(
            f"the Ray dashboard at {conn.dashboard_url} answered HTTP {status} to GET {path}: "
            f"{body[:200].decode(errors='replace')!r}; check that it is a Ray >= 2.52 dashboard"
        )
    try:
        return json.loads(body)
    except ValueError:
        raise ClusterError(
            f"the Ray dashboard at {conn.dashboard_url} answered GET {path} with something that is not JSON; "
            f"check that the address is a Ray dashboard"
        ) from None


# --------------------------------------------------------------------------------------------------------
# Connections, tokens, auth
# --------------------------------------------------------------------------------------------------------


@dataclass
class Connection:
    """Where jobs go. `token` is left out of the repr; never print `asdict(conn)`."""

    dashboard_url: str  # http(s) base of the Jobs API, no trailing slash
    token: str | None = field(default=None, repr=False)
    is_local: bool = False  # loopback host
    started_by_bsm: bool = False
    storage_default: str | None = None  # run storage to use when --storage is not given (bsm cluster only)
    source: str = "--address"  # where the address came from, for messages
    token_source: str | None = None  # where the token came from (a variable or a path — never the token)


def _token_and_source() -> tuple[str | None, str | None]:
    env_token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if env_token:
        return env_token, "RAY_AUTH_TOKEN"
    env_path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if env_path:
        path = Path(env_path).expanduser()
        return _read_token_file(path, "RAY_AUTH_TOKEN_PATH"), f"RAY_AUTH_TOKEN_PATH={path}"
    default = DEFAULT_TOKEN_PATH.expanduser()
    if default.is_file():
        token = _read_token_file(default, "Ray's default token file")
        with contextlib.suppress(OSError):
            if default.stat().st_mode & 0o077:
                log.warning("%s can be read by other users; run `chmod 600 %s`", default, default)
        return token, str(default)
    return None, None


def read_token(cluster: LocalCluster | None = None) -> str | None:
    """The Ray auth token to send, stripped of whitespace, or None.

    For a cluster bsm started: that cluster's own token file. Otherwise Ray's order: ``RAY_AUTH_TOKEN``, then
    the file at ``RAY_AUTH_TOKEN_PATH`` (unreadable or empty is a `ClusterError`, as in Ray), then
    ``~/.ray/auth_token``.
    """
    if cluster is not None:
        return _read_token_file(Path(cluster.token_file), "the local cluster's token file")
    return _token_and_source()[0]


def auth_headers(conn: Connection) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` when `conn` has a token, else ``{}``."""
    return {AUTH_HEADER: BEARER + conn.token} if conn.token else {}


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_hostport(a: str, b: str) -> bool:
    """`host:port` equality, treating every loopback name as one host."""
    sa, sb = urlsplit("//" + a), urlsplit("//" + b)
    try:
        if sa.port != sb.port:
            return False
    except ValueError:
        return False
    ha, hb = (sa.hostname or "").lower(), (sb.hostname or "").lower()
    return ha == hb or (_is_loopback(ha) and _is_loopback(hb))


def _to_dashboard_url(address: str, source: str, rec: LocalCluster | None) -> str:
    s = address.strip().rstrip("/")
    if s.lower() in ("auto", "local"):
        if rec is not None:
            return rec.dashboard_url
        raise ClusterError(
            f"{source}={address!r} means the local cluster, but no cluster started by `bsm up` is recorded; "
            f"run `bsm up`, or give the dashboard address, e.g. http://HOST:{DEFAULT_DASHBOARD_PORT}"
        )
    scheme, sep, rest = s.partition("://")
    if not sep:
        scheme, rest = "", s
    scheme = scheme.lower()
    if scheme not in ("", "http", "https", "ray"):
        raise ClusterError(
            f"{source}={address!r} has the scheme {scheme!r}; bsm talks to the Ray Jobs API: give "
            f"http://HOST:{DEFAULT_DASHBOARD_PORT} (or https://...)"
        )
    parts = urlsplit("//" + rest)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ClusterError(
            f"{source}={address!r} has an invalid port; give e.g. http://HOST:{DEFAULT_DASHBOARD_PORT}"
        ) from None
    if not host:
        raise ClusterError(f"{source}={address!r} names no host; give e.g. http://HOST:{DEFAULT_DASHBOARD_PORT}")
    hostport = f"[{host}]" if ":" in host else host
    if scheme in ("http", "https"):
        return f"{scheme}://{hostport}{f':{port}' if port else ''}{parts.path.rstrip('/')}"
    if scheme == "ray":
        client = f"127.0.0.1:{rec.ports.get('client', -1)}" if rec is not None else ""
        if rec is not None and port is not None and _same_hostport(f"{hostport}:{port}", client):
            return rec.dashboard_url
        url = f"http://{hostport}:{DEFAULT_DASHBOARD_PORT}"
        log.warning(
            "%s=%s is a Ray Client address; bsm uses the Jobs API and assumes the dashboard at %s "
            "(give --address http://HOST:PORT if it listens elsewhere)",
            source,
            address,
            url,
        )
        return url
    if port is None:
        return f"http://{hostport}:{DEFAULT_DASHBOARD_PORT}"
    if rec is not None and _same_hostport(f"{hostport}:{port}", rec.gcs_address):
        return rec.dashboard_url
    if port == DEFAULT_GCS_PORT:
        raise ClusterError(
            f"{source}={address!r} looks like a GCS address (port {DEFAULT_GCS_PORT}), which `ray.init` uses; "
            f"bsm submits through the Jobs API on the dashboard: give "
            f"http://{hostport}:{DEFAULT_DASHBOARD_PORT} (or the dashboard's port if it was changed)"
        )
    return f"http://{hostport}:{port}"


def _connection_for_cluster(rec: LocalCluster, source: str) -> Connection:
    return Connection(
        dashboard_url=rec.dashboard_url,
        token=read_token(rec),
        is_local=True,
        started_by_bsm=True,
        storage_default=rec.storage,
        source=source,
        token_source=rec.token_file,
    )


def resolve_connection(address: str | None, *, start: bool = True, home: Path | None = None) -> Connection:
    """Where jobs go: `address`, else ``RAY_API_SERVER_ADDRESS`` / ``RAY_ADDRESS``, else the running bsm
    cluster, else (if `start`) a new one from `cluster.up()`. See the module docstring for the address forms."""
    home_dir = _home(home)
    source = "--address"
    if not (address and address.strip()):
        address = None
        for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            if os.environ.get(var, "").strip():
                address, source = os.environ[var], var
                break
    if address is not None:
        rec = _load_record(home_dir)
        url = _to_dashboard_url(address, source, rec)
        if rec is not None and url == rec.dashboard_url:
            return _connection_for_cluster(rec, source)
        token, token_source = _token_and_source()
        return Connection(
            dashboard_url=url,
            token=token,
            is_local=_is_loopback(urlsplit(url).hostname or ""),
            started_by_bsm=False,
            storage_default=None,
            source=source,
            token_source=token_source,
        )
    rec = _cluster.running_cluster(home_dir)
    if rec is not None:
        return _connection_for_cluster(rec, "bsm cluster")
    if not start:
        raise ClusterError(
            "no Ray cluster to use: no --address, RAY_API_SERVER_ADDRESS and RAY_ADDRESS are unset, and no "
            f"cluster started by `bsm up` is running (record: {_record_path(home_dir)}); run `bsm up` or pass "
            f"--address http://HOST:{DEFAULT_DASHBOARD_PORT}"
        )
    return _connection_for_cluster(_cluster.up(home=home_dir), "started by bsm")


def _auth_failure(conn: Connection, status: int) -> str:
    if status == 401 or not conn.token:
        return (
            f"the Ray cluster at {conn.dashboard_url} requires an auth token and none was sent; set "
            f"RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or write it to ~/.ray/auth_token "
            f"(chmod 600) — on the head node `ray get-auth-token` prints it"
        )
    return (
        f"the Ray cluster at {conn.dashboard_url} refused the auth token from {conn.token_source} (HTTP {status}): "
        f"it is not this cluster's token; use the one `ray get-auth-token` prints on its head node"
    )


def job_client(conn: Connection) -> JobSubmissionClient:
    """A `JobSubmissionClient` for `conn` that sends its token; connection/auth failures are `ClusterError`s."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(conn.dashboard_url, headers=auth_headers(conn))
    except AuthenticationError as e:
        status = 401 if "Authentication required" in str(e) else 403
        raise ClusterError(_auth_failure(conn, status)) from None
    except (ConnectionError, OSError) as e:
        raise _unreachable(conn.dashboard_url, e) from None
    except RuntimeError as e:  # version check: 404 etc.
        raise ClusterError(
            f"{conn.dashboard_url} did not answer like a Ray Jobs API ({e}); give the dashboard address of a "
            f"Ray >= 2.52 cluster, e.g. http://HOST:{DEFAULT_DASHBOARD_PORT}"
        ) from None


def authentication_mode(conn: Connection) -> str:
    """``GET /api/authentication_mode``: ``"token"`` or ``"disabled"`` (a Ray without the endpoint — older
    than 2.52, so without token auth — counts as ``"disabled"``)."""
    url = conn.dashboard_url + "/api/authentication_mode"
    try:
        status, body = _http_get(url, auth_headers(conn))
    except _NET_ERRORS as e:
        raise _unreachable(conn.dashboard_url, e) from None
    if status == 404:
        return "disabled"
    if status != 200:
        raise ClusterError(
            f"the Ray dashboard at {conn.dashboard_url} answered HTTP {status} to GET /api/authentication_mode; "
            f"check the address"
        )
    try:
        mode = json.loads(body)["authentication_mode"]
    except (ValueError, KeyError, TypeError):
        raise ClusterError(
            f"{conn.dashboard_url} answered GET /api/authentication_mode without an authentication_mode; "
            f"check that the address is a Ray dashboard"
        ) from None
    return str(mode)


def check_secure(conn: Connection, allow_insecure: bool) -> None:
    """Refuse a cluster off this machine whose Jobs API runs without token authentication.

    A loopback cluster is accepted as is. With `allow_insecure` the refusal becomes a warning.
    """
    if conn.is_local:
        return
    mode = authentication_mode(conn)
    if mode == "token":
        if not conn.token:
            raise ClusterError(_auth_failure(conn, 401))
        if conn.dashboard_url.startswith("http://"):
            log.warning(
                "sending the auth token to %s over plain http; prefer https or an SSH tunnel "
                "(`ray dashboard cluster.yaml`) to a loopback port",
                conn.dashboard_url,
            )
        return
    if allow_insecure:
        log.warning(
            "the Ray cluster at %s has token authentication %s; submitting anyway (--allow-insecure)",
            conn.dashboard_url,
            mode,
        )
        return
    raise ClusterError(
        f"the Ray cluster at {conn.dashboard_url} has token authentication {mode!s} "
        f"(authentication_mode={mode!r}): anyone who can reach it can run code on it. Start it with "
        f"RAY_AUTH_MODE=token (see cluster.yaml), or pass --allow-insecure to submit anyway"
    )


# --------------------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------------------


def _is_readonly_node_type(name: str) -> bool:
    # Ray's readonly provider (a `ray start` cluster without an autoscaling config) names one node type per
    # node: "node_<56 hex node id>" (camel-cased to "node<hex>" by the dashboard's JSON).
    rest = name[4:].lstrip("_") if name.lower().startswith("node") else ""
    return len(rest) >= 32 and all(c in "0123456789abcdefABCDEF" for c in rest)


def _can_autoscale(status: Any) -> bool:
    data = status.get("data") if isinstance(status, dict) else None
    cluster_status = data.get("clusterStatus") if isinstance(data, dict) else None
    report = cluster_status.get("autoscalerReport") if isinstance(cluster_status, dict) else None
    if not isinstance(report, dict):
        return False
    names: set[str] = set()
    for key in ("activeNodes", "idleNodes", "pendingLaunches"):
        value = report.get(key)
        if isinstance(value, dict):
            names.update(value)
    for entry in report.get("pendingNodes") or []:
        if isinstance(entry, (list, tuple)) and len(entry) >= 2:
            names.add(str(entry[1]))
    return any(not _is_readonly_node_type(n) for n in names)


def cluster_resources(conn: Connection) -> ClusterResources:
    """Alive nodes' CPUs/GPUs from the state API (``GET /api/v0/nodes``) and whether an autoscaler can add
    nodes (``GET /api/cluster_status``), both over HTTP with `conn`'s token (no `ray.init`).

    `can_autoscale` is False for clusters whose autoscaler does not report through ``/api/cluster_status``
    (autoscaler v2, e.g. KubeRay); callers should offer an override for those.
    """
    body = _get_json(conn, "/api/v0/nodes?limit=10000&detail=false")
    try:
        if not body.get("result", False):
            raise ClusterError(
                f"the Ray dashboard at {conn.dashboard_url} could not list nodes: {body.get('msg')!s}; retry"
            )
        rows = body["data"]["result"]["result"]
    except (AttributeError, KeyError, TypeError):
        raise ClusterError(
            f"the Ray dashboard at {conn.dashboard_url} answered /api/v0/nodes in an unexpected form; "
            f"check that it is Ray >= 2.52"
        ) from None
    nodes = []
    for row in rows:
        if not isinstance(row, dict) or row.get("state") != "ALIVE":
            continue
        res = row.get("resources_total") or {}
        nodes.append(NodeResources(str(row.get("node_ip", "?")), float(res.get("CPU", 0)), float(res.get("GPU", 0))))
    nodes.sort(key=lambda n: (-n.gpus, n.node_ip))
    try:
        can_autoscale = _can_autoscale(_get_json(conn, "/api/cluster_status"))
    except ClusterError as e:
        log.debug("no autoscaler status from %s: %s", conn.dashboard_url, e)
        can_autoscale = False
    return ClusterResources(
        total_cpus=sum(n.cpus for n in nodes),
        total_gpus=sum(n.gpus for n in nodes),
        nodes=nodes,
        can_autoscale=can_autoscale,
        dashboard_url=conn.dashboard_url,
    )
