"""Where jobs go: an address (or the local cluster bsm started) resolved to a `Connection` with its token.

Addresses accepted by `resolve_connection` (``--address``, then ``RAY_API_SERVER_ADDRESS``, then
``RAY_ADDRESS``: Ray's own order for the Jobs CLI):
    ``http(s)://host[:port]`` (used as given); ``host:port`` (http assumed); ``host`` (port 8265);
    ``auto`` / ``local`` (the cluster bsm started); ``ray://host[:port]`` (Ray Client: the dashboard is
    assumed at ``http://host:8265``, or the bsm cluster's own if it is that one); a GCS address
    (``host:6379``, or the ``gcs_address`` of the bsm cluster) is mapped to the bsm cluster's dashboard when
    it is that cluster and refused otherwise, naming the dashboard address to use instead.

`connect` is the whole way in: resolve, decide security (`check_secure`, before any authenticated request),
then the job client. Tokens live in `auth`, HTTP and the security check in `dashboard`, resources in `nodes`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from raytune_bsm.client import local_cluster as _cluster  # called through the module, so tests can swap `up`
from raytune_bsm.client.auth import is_loopback, read_token_file, token_from_env
from raytune_bsm.client.dashboard import (  # noqa: F401  (re-exported: the connection's API in one place)
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_GCS_PORT,
    Connection,
    auth_headers,
    authentication_mode,
    check_secure,
    job_client,
)
from raytune_bsm.client.local_cluster import LocalCluster, load_record, record_path, resolve_home
from raytune_bsm.client.nodes import cluster_resources  # noqa: F401  (re-exported)
from raytune_bsm.errors import ClusterError
from raytune_bsm.resources import ClusterResources, NodeResources  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger("raytune_bsm.client")


def read_token(cluster: LocalCluster | None = None) -> str | None:
    """The Ray auth token to send, stripped of whitespace, or None.

    For a cluster bsm started: that cluster's own token file. Otherwise Ray's order: ``RAY_AUTH_TOKEN``, then
    the file at ``RAY_AUTH_TOKEN_PATH`` (unreadable or empty is a `ClusterError`, as in Ray), then
    ``~/.ray/auth_token``.
    """
    if cluster is not None:
        return read_token_file(Path(cluster.token_file), "the local cluster's token file")
    return token_from_env()[0]


def _same_hostport(a: str, b: str) -> bool:
    """`host:port` equality, treating every loopback name as one host."""
    sa, sb = urlsplit("//" + a), urlsplit("//" + b)
    try:
        if sa.port != sb.port:
            return False
    except ValueError:
        return False
    ha, hb = (sa.hostname or "").lower(), (sb.hostname or "").lower()
    return ha == hb or (is_loopback(ha) and is_loopback(hb))


def _example(host: str = "HOST") -> str:
    return f"http://{host}:{DEFAULT_DASHBOARD_PORT}"


def _to_dashboard_url(address: str, source: str, rec: LocalCluster | None) -> str:
    s = address.strip().rstrip("/")
    if s.lower() in ("auto", "local"):
        if rec is not None:
            return rec.dashboard_url
        raise ClusterError(
            f"{source}={address!r} means the local cluster, but no cluster started by `bsm up` is recorded; "
            f"run `bsm up`, or give the dashboard address, e.g. {_example()}"
        )
    scheme, sep, rest = s.partition("://")
    if not sep:
        scheme, rest = "", s
    scheme = scheme.lower()
    if scheme not in ("", "http", "https", "ray"):
        raise ClusterError(
            f"{source}={address!r} has the scheme {scheme!r}; bsm talks to the Ray Jobs API: give "
            f"{_example()} (or https://...)"
        )
    try:
        parts = urlsplit("//" + rest)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ClusterError(
            f"{source}={address!r} is not a valid address (host or port); give e.g. {_example()}"
        ) from None
    if not host:
        raise ClusterError(f"{source}={address!r} names no host; give e.g. {_example()}")
    hostport = f"[{host}]" if ":" in host else host
    if scheme in ("http", "https"):
        return f"{scheme}://{hostport}{f':{port}' if port else ''}{parts.path.rstrip('/')}"
    if scheme == "ray":
        client = f"127.0.0.1:{rec.ports.get('client', -1)}" if rec is not None else ""
        if rec is not None and port is not None and _same_hostport(f"{hostport}:{port}", client):
            return rec.dashboard_url
        url = _example(hostport)
        log.warning(
            "%s=%s is a Ray Client address; bsm uses the Jobs API and assumes the dashboard at %s "
            "(give --address http://HOST:PORT if it listens elsewhere)",
            source,
            address,
            url,
        )
        return url
    if port is None:
        return _example(hostport)
    if rec is not None and _same_hostport(f"{hostport}:{port}", rec.gcs_address):
        return rec.dashboard_url
    if port == DEFAULT_GCS_PORT:
        raise ClusterError(
            f"{source}={address!r} looks like a GCS address (port {DEFAULT_GCS_PORT}), which `ray.init` uses; "
            f"bsm submits through the Jobs API on the dashboard: give {_example(hostport)} (or the dashboard's "
            f"port if it was changed)"
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


def resolve_connection(
    address: str | None, *, start: bool = True, home: Path | None = None, allow_insecure: bool = False
) -> Connection:
    """Where jobs go: `address`, else ``RAY_API_SERVER_ADDRESS`` / ``RAY_ADDRESS``, else the running bsm
    cluster, else (if `start`) a new one from `local_cluster.up()`. See the module docstring for the forms.

    Nothing is sent anywhere here (but to the local cluster bsm started, to see that it is alive)."""
    home_dir = resolve_home(home)
    source = "--address"
    if not (address and address.strip()):
        address = None
        for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            if os.environ.get(var, "").strip():
                address, source = os.environ[var], var
                break
    if address is not None:
        rec = load_record(home_dir)
        url = _to_dashboard_url(address, source, rec)
        if rec is not None and url == rec.dashboard_url:
            return _connection_for_cluster(rec, source)
        token, token_source = token_from_env()
        return Connection(
            dashboard_url=url,
            token=token,
            is_local=is_loopback(urlsplit(url).hostname or ""),
            started_by_bsm=False,
            storage_default=None,
            source=source,
            token_source=token_source,
            allow_insecure=allow_insecure,
        )
    rec = _cluster.running_cluster(home_dir)
    if rec is not None:
        return _connection_for_cluster(rec, "bsm cluster")
    if not start:
        raise ClusterError(
            "no Ray cluster to use: no --address, RAY_API_SERVER_ADDRESS and RAY_ADDRESS are unset, and no "
            f"cluster started by `bsm up` is running (record: {record_path(home_dir)}); run `bsm up` or pass "
            f"--address {_example()}"
        )
    return _connection_for_cluster(_cluster.up(home=home_dir), "started by bsm")


def connect(
    address: str | None, *, start: bool = True, allow_insecure: bool = False, home: Path | None = None
) -> tuple[Connection, JobSubmissionClient]:
    """Resolve `address`, decide whether it is secure enough (unauthenticated, before the token goes
    anywhere), then a job client that sends the token: the one way into a cluster for every command."""
    conn = resolve_connection(address, start=start, home=home, allow_insecure=allow_insecure)
    check_secure(conn, allow_insecure)
    return conn, job_client(conn)
