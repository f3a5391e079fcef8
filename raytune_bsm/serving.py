"""The contract between `bsm serve up` (client/serve.py) and the application it deploys (runner/serve_app.py):
the application's import path, its `args` and their defaults, the request limits. Both sides read them here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

IMPORT_PATH = "raytune_bsm.runner.serve_app:build"  # the application builder the Serve config names
DEPLOYMENT = "BsmScorer"  # the one deployment of a bsm application
DEFAULT_NAME = "bsm"  # application name; its route prefix is /NAME
DEFAULT_HOST = "127.0.0.1"  # the HTTP proxy listens on loopback unless --host says otherwise
DEFAULT_PORT = 8000  # Ray Serve's own default


@dataclass(frozen=True)
class Limits:
    """What one request may hold (`bsm serve up --max-records / --max-body-kb`)."""

    max_records: int = 64  # records per request: larger jobs are what `bsm predict --on-cluster` is for
    max_body_bytes: int = 1 << 20  # 1 MiB: 64 long dialogues of ~16 KB each


@dataclass(frozen=True)
class ServeArgs:
    """The application's `args` in the Serve config: everything a replica needs besides its resources."""

    export: str  # the export directory (path or URI) as the cluster sees it
    run: str  # the run the export came from (its id in answers)
    precision: str = "auto"  # auto | fp32 | int8, as `bsm predict --precision`
    threads: int = 1  # ONNX Runtime threads: the replica's CPUs
    batch_size: int = 32  # chunks per session call, as `bsm predict --batch-size`
    max_batch_size: int = 16  # requests scored together (runner/serve_batching.py)
    batch_wait_ms: float = 5.0  # how long a batch waits for more requests: a few ms against ~10+ ms of scoring
    max_records: int = Limits.max_records
    max_body_bytes: int = Limits.max_body_bytes
    stuck_after_s: float = 120.0  # one scoring call running longer than this fails the health check
    token_sha256: str | None = None  # sha256 hex of the bearer token; None: no token (loopback only)
    verbose: bool = False  # log request text (never otherwise)

    @classmethod
    def of(cls, args: dict[str, Any]) -> ServeArgs:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown application args {unknown}; known: {sorted(known)}")
        return cls(**args)

    @property
    def limits(self) -> Limits:
        return Limits(self.max_records, self.max_body_bytes)
