"""A real S3 API on 127.0.0.1 for tests (a pytest plugin: `pytest_plugins = ["s3_server"]` in conftest.py).

moto's ThreadedMotoServer speaks the S3 HTTP API on a free loopback port; nothing leaves the machine. Fixtures:

- `s3_server` (session): the running server and its bucket; `.env` holds the AWS_* variables that point any
  client at it (pyarrow >= 15 honours AWS_ENDPOINT_URL, so `pyarrow.fs.FileSystem.from_uri("s3://...")` reaches
  it; pass `.env` to a Ray cluster's runtime_env for its workers).
- `s3` (per test): the same server with those variables set for this test only (monkeypatch) and a key prefix
  of the test's own, so tests never see each other's objects.

pyarrow's S3 writes need moto >= 5.2.2: 5.2.1 answers CompleteMultipartUpload with the wrong XML root, and
pyarrow reports INTERNAL_FAILURE (getmoto/moto#10055, fixed by #10056). Reads work with any moto 5.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

BUCKET = "bsm-test"


@dataclass
class S3:
    """An S3 endpoint with one bucket; `prefix` is where this user's objects go."""

    endpoint_url: str
    bucket: str = BUCKET
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"
    prefix: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probing for credentials
        }

    def uri(self, key: str = "") -> str:
        """s3://bucket/prefix/key"""
        return f"s3://{self.bucket}/{self._key(key)}"

    def _key(self, key: str) -> str:
        return "/".join(p for p in (self.prefix.strip("/"), key.strip("/")) if p)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def put(self, key: str, data: bytes) -> str:
        """One object from bytes; returns its URI."""
        self.client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return self.uri(key)

    def upload(self, local: str | Path, key: str) -> str:
        """A file, or a directory (every file under it, keeping relative paths), to `key`; returns its URI."""
        local = Path(local)
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        for f in files:
            rel = key if f == local else f"{key.rstrip('/')}/{f.relative_to(local).as_posix()}"
            self.put(rel, f.read_bytes())
        return self.uri(key)

    @contextmanager
    def environment(self) -> Iterator[None]:
        """These AWS_* variables in os.environ while the block runs (a cluster started there inherits them)."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)

    def read(self, key: str) -> bytes:
        """One object's bytes (key relative to the prefix)."""
        return self.client().get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def keys(self, key: str = "") -> list[str]:
        """Object keys under `key` (relative to the prefix)."""
        resp = self.client().list_objects_v2(Bucket=self.bucket, Prefix=self._key(key))
        base = len(self._key("")) + 1 if self.prefix else 0
        return sorted(o["Key"][base:] for o in resp.get("Contents", []))

    def filesystem(self) -> Any:
        """A pyarrow S3FileSystem for this endpoint, built explicitly (no environment needed)."""
        import pyarrow.fs as pafs

        scheme, _, host = self.endpoint_url.partition("://")
        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            endpoint_override=host,
            scheme=scheme,
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    """moto's S3 server on a free loopback port, with the bucket created; stopped at the end of the session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request in the test output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3(endpoint_url=f"http://{host}:{port}")
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: S3, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The S3 server, reachable through the AWS_* environment for this test, under a prefix of its own."""
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    return S3(endpoint_url=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=f"t-{uuid.uuid4().hex[:10]}")
