"""Talking to a Ray cluster's dashboard (the Jobs API): the connection, the token gate, the security check.

The token is sent only where `auth.may_send_token` allows (loopback, https, or ``--allow-insecure``), and to a
cluster off this machine only after `check_secure` has asked, without a token, whether it wants one
(``GET /api/authentication_mode``). `auth_headers` is the one place a token enters a request: it refuses a
host the token may not go to, so no caller can send it there by mistake. The token never appears in a repr,
a log line, an exception message or a job's metadata / runtime_env.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raytune_bsm.client.auth import bearer, may_send_token, url_is_loopback
from raytune_bsm.errors import ClusterError
from raytune_bsm.logs import quiet_libraries
from raytune_bsm.text import safe

if TYPE_CHECKING:  # pragma: no cover
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger("raytune_bsm.client")

DEFAULT_GCS_PORT = 6379
DEFAULT_DASHBOARD_PORT = 8265
HTTP_TIMEOUT = 10.0
_ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")

# Below HTTP: refused/reset/timeouts (OSError, incl. URLError), a port that does not speak HTTP
# (http.client.HTTPException), a malformed URL (ValueError).
NET_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, http.client.HTTPException)


@dataclass
class Connection:
    """Where jobs go. `token` is left out of the repr; never print `asdict(conn)`."""

    dashboard_url: str  # http(s) base of the Jobs API, no trailing slash
    token: str | None = field(default=None, repr=False)
    is_local: bool = False  # loopback host
    started_by_bsm: bool = False
    storage_default: str | None = None  # run storage to use when --storage is not given (bsm cluster only)
    source: str = "--address"  # where the address came from, for messages
    token_source: str | None = None  # where the token came from (a variable or a path, never the token)
    allow_insecure: bool = False  # --allow-insecure: the token may go over plain http to another host


def http_get(url: str, headers: dict[str, str], timeout: float = HTTP_TIMEOUT) -> tuple[int, bytes]:
    """(status, body). Errors below HTTP (refused, reset, not HTTP at all) propagate as OSError and friends."""
    handlers = [urllib.request.ProxyHandler({})] if url_is_loopback(url) else []  # loopback never via a proxy
    req = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.build_opener(*handlers).open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        with contextlib.suppress(Exception):
            return e.code, e.read()
        return e.code, b""


def unreachable(url: str, err: BaseException) -> ClusterError:
    reason = getattr(err, "reason", None) or err
    return ClusterError(
        f"cannot reach the Ray Jobs API at {url} ({type(err).__name__}: {safe(str(reason))}); check that the "
        f"cluster is up and that this is its dashboard address (default port {DEFAULT_DASHBOARD_PORT}, e.g. "
        f"http://HOST:{DEFAULT_DASHBOARD_PORT}, not the GCS port {DEFAULT_GCS_PORT}), or start a local one "
        f"with `bsm up`"
    )


def auth_failure(conn: Connection, status: int) -> str:
    if status == 401 or not conn.token:
        return (
            f"the Ray cluster at {conn.dashboard_url} requires an auth token and none was sent; set "
            f"RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or write it to ~/.ray/auth_token "
            f"(chmod 600); on the head node `ray get-auth-token` prints it"
        )
    return (
        f"the Ray cluster at {conn.dashboard_url} refused the auth token from {conn.token_source} (HTTP {status}): "
        f"it is not this cluster's token; use the one `ray get-auth-token` prints on its head node"
    )


def _insecure_token(conn: Connection) -> str:
    return (
        f"refusing to send the Ray auth token (from {conn.token_source}) to {conn.dashboard_url} over plain http: "
        f"anyone on the way could read it. Use https, or an SSH tunnel to a loopback port "
        f"(`ray dashboard cluster.yaml`), or pass --allow-insecure to send it anyway"
    )


def auth_headers(conn: Connection) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` when `conn` has a token, else ``{}``; a ClusterError (before
    anything is sent) if the token may not go to `conn`'s host."""
    if conn.token and not may_send_token(conn.dashboard_url, conn.allow_insecure):
        raise ClusterError(_insecure_token(conn))
    return bearer(conn.token)


def get_json(conn: Connection, path: str, timeout: float = HTTP_TIMEOUT) -> Any:
    """An authenticated GET of `path` on `conn`'s dashboard, as JSON; every failure a ClusterError."""
    headers = auth_headers(conn)
    try:
        status, body = http_get(conn.dashboard_url + path, headers, timeout)
    except NET_ERRORS as e:
        raise unreachable(conn.dashboard_url, e) from None
    if status in (401, 403):
        raise ClusterError(auth_failure(conn, status))
    if status != 200:
        raise ClusterError(
            f"the Ray dashboard at {conn.dashboard_url} answered HTTP {status} to GET {path}: "
            f"{safe(body[:200].decode(errors='replace'))!r}; check that it is a Ray >= 2.52 dashboard"
        )
    try:
        return json.loads(body)
    except ValueError:
        raise ClusterError(
            f"the Ray dashboard at {conn.dashboard_url} answered GET {path} with something that is not JSON; "
            f"check that the address is a Ray dashboard"
        ) from None


def probe(url: str, token: str | None, timeout: float = 3.0) -> dict[str, Any] | None:
    """``GET /api/version`` of a loopback dashboard with `token`: its JSON if it answers 200, else None."""
    if not url_is_loopback(url):
        raise ValueError(f"probe() is for the local cluster only, not {url}")
    try:
        status, body = http_get(url + "/api/version", bearer(token), timeout)
        return json.loads(body) if status == 200 else None
    except (*NET_ERRORS, json.JSONDecodeError):
        return None


def authentication_mode(conn: Connection) -> str:
    """``GET /api/authentication_mode``, sent without a token: ``"token"`` or ``"disabled"`` (a Ray without the
    endpoint, older than 2.52 and so without token auth, counts as ``"disabled"``)."""
    try:
        status, body = http_get(conn.dashboard_url + "/api/authentication_mode", {})
    except NET_ERRORS as e:
        raise unreachable(conn.dashboard_url, e) from None
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
        mode = None
    if mode not in ("token", "disabled"):
        raise ClusterError(
            f"{conn.dashboard_url} answered GET /api/authentication_mode without a known authentication_mode; "
            f"check that the address is a Ray dashboard"
        )
    return str(mode)


def check_secure(conn: Connection, allow_insecure: bool) -> None:
    """Decide, before any authenticated request, whether `conn` may be used and whether it gets the token.

    A loopback cluster is accepted as is. Another host is asked (without a token) for its authentication mode:
    token auth over https is fine; over plain http the token goes only with `allow_insecure`; a cluster without
    token auth is refused unless `allow_insecure`, and then gets no token (it does not need one)."""
    conn.allow_insecure = allow_insecure
    if conn.is_local:
        return
    mode = authentication_mode(conn)
    if mode == "token":
        if not conn.token:
            raise ClusterError(auth_failure(conn, 401))
        if not may_send_token(conn.dashboard_url, conn.allow_insecure):
            raise ClusterError(_insecure_token(conn))
        if conn.dashboard_url.lower().startswith("http://"):
            log.warning(
                "sending the auth token to %s over plain http (--allow-insecure); prefer https or an SSH "
                "tunnel (`ray dashboard cluster.yaml`) to a loopback port",
                conn.dashboard_url,
            )
        return
    if not conn.allow_insecure:
        raise ClusterError(
            f"the Ray cluster at {conn.dashboard_url} has token authentication {mode} "
            f"(authentication_mode={mode!r}): anyone who can reach it can run code on it. Start it with "
            f"RAY_AUTH_MODE=token (see cluster.yaml), or pass --allow-insecure to submit anyway"
        )
    log.warning(
        "the Ray cluster at %s has token authentication %s; submitting anyway (--allow-insecure)",
        conn.dashboard_url,
        mode,
    )
    conn.token = None  # it does not ask for one: the token stays here


def job_client(conn: Connection) -> JobSubmissionClient:
    """A `JobSubmissionClient` for `conn` that sends its token; connection/auth failures are `ClusterError`s."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    quiet_libraries()  # its SDK modules set their loggers to INFO when imported (package uploads, "WebSocket closed")
    headers = auth_headers(conn)  # refuses before anything is sent if the token may not go there
    try:
        with _address_env_hidden():
            client = JobSubmissionClient(conn.dashboard_url, headers=headers)
    except AuthenticationError as e:
        raise ClusterError(auth_failure(conn, 401 if "Authentication required" in str(e) else 403)) from None
    except (ConnectionError, OSError) as e:
        raise unreachable(conn.dashboard_url, e) from None
    except RuntimeError as e:  # version check: 404 etc.
        raise ClusterError(
            f"{conn.dashboard_url} did not answer like a Ray Jobs API ({safe(str(e))}); give the dashboard address "
            f"of a Ray >= 2.52 cluster, e.g. http://HOST:{DEFAULT_DASHBOARD_PORT}"
        ) from None
    if client.get_address().rstrip("/") != conn.dashboard_url:  # pragma: no cover  (a Ray that resolves otherwise)
        raise ClusterError(
            f"Ray's job client chose {safe(client.get_address())}, not {conn.dashboard_url}; unset "
            f"RAY_ADDRESS / RAY_API_SERVER_ADDRESS or pass the same --address"
        )
    return client


@contextlib.contextmanager
def _address_env_hidden() -> Iterator[None]:
    """Ray's `JobSubmissionClient(address)` lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override `address`
    (ray.dashboard.utils.get_address_for_submission_client), which would send this connection's token to
    another cluster: hide them while the client is built (it resolves its address once, there)."""
    saved = {v: os.environ.pop(v) for v in _ADDRESS_VARS if v in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
