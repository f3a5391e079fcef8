"""Ray auth tokens on the user's machine: where a token comes from, the token files bsm writes, and where a
token may be sent.

Token authentication (Ray >= 2.52; read in Ray 2.60's own source, `ray/_private/authentication/`)
    * enabled by the environment variable ``RAY_AUTH_MODE=token`` on every Ray process of the cluster;
      ``ray start`` does not generate a token itself (``create_token_if_missing=False``), so bsm writes a
      fresh 256-bit token (``secrets.token_hex(32)``, as ``ray get-auth-token --generate`` does) to
      ``bsm_home()/cluster.token`` with mode 0600 and points ``RAY_AUTH_TOKEN_PATH`` at it;
    * a token is looked up, highest first, in ``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``
      (unreadable or empty is an error, not a fallback) and ``~/.ray/auth_token``; `token_from_env` follows that;
    * over HTTP it is sent as ``Authorization: Bearer <token>``; a missing token is answered 401, a wrong one
      403; ``GET /api/authentication_mode`` is public and answers ``{"authentication_mode": "token"|"disabled"}``.

Where a token may go (`may_send_token`): to a loopback host, or over https; over plain http to any other host
only with ``--allow-insecure``. A host counts as loopback only when it is a loopback IP literal or
``localhost``: bsm never resolves a name to decide whom to trust.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from raytune_bsm.errors import ClusterError

log = logging.getLogger("raytune_bsm.client")

AUTH_HEADER = "Authorization"  # ray/_private/authentication/authentication_constants.py
BEARER = "Bearer "
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")  # Ray's default token file
TOKEN_NAME = "cluster.token"  # the local cluster's token file in bsm_home()


def write_token(path: Path) -> str:
    """A fresh 256-bit token in a file only its owner can read (mode 0600 whatever the umask); returns it."""
    token = secrets.token_hex(32)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return token


def read_token_file(path: Path, what: str) -> str:
    """The token in `path`, stripped; a ClusterError naming `what` and the path if unreadable or empty."""
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ClusterError(f"cannot read the Ray auth token from {what} {path}: {e.strerror or e}") from None
    if not token:
        raise ClusterError(f"the Ray auth token file {what} {path} is empty; write the cluster's token into it")
    return token


def token_from_env() -> tuple[str | None, str | None]:
    """(token, where it came from) in Ray's order, or (None, None). The source names a variable or a path."""
    env_token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if env_token:
        return env_token, "RAY_AUTH_TOKEN"
    env_path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if env_path:
        path = Path(env_path).expanduser()
        return read_token_file(path, "RAY_AUTH_TOKEN_PATH"), f"RAY_AUTH_TOKEN_PATH={path}"
    default = DEFAULT_TOKEN_PATH.expanduser()
    if default.is_file():
        token = read_token_file(default, "Ray's default token file")
        with contextlib.suppress(OSError):
            if default.stat().st_mode & 0o077:
                log.warning("%s can be read by other users; run `chmod 600 %s`", default, default)
        return token, str(default)
    return None, None


def bearer(token: str | None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``, or ``{}`` without a token."""
    return {AUTH_HEADER: BEARER + token} if token else {}


def is_loopback(host: str) -> bool:
    """A loopback IP literal or a ``localhost`` name. Names are never resolved (DNS is not trusted)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_is_loopback(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")


def may_send_token(url: str, allow_insecure: bool) -> bool:
    """Whether a token may travel to `url`: loopback, https, or plain http with --allow-insecure."""
    return url_is_loopback(url) or url.lower().startswith("https://") or allow_insecure
