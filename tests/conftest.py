"""Shared fixtures: a tiny BERT built from a config (no download), data files, an isolated BSM_HOME."""

from __future__ import annotations

import http.server
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest_plugins = ["s3_server"]  # the `s3_server` / `s3` fixtures: a real S3 API on 127.0.0.1 (tests/s3_server.py)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Two layers, hidden 32: fast on CPU. The vocabulary matches the offline default tokenizer.
TINY_ENCODER = dict(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=128,
)


@pytest.fixture
def tiny_encoder() -> dict:
    return dict(TINY_ENCODER)


def tiny_checkpoint(path: Path, **model: object) -> Path:
    """A bsm checkpoint at `path` of an untrained tiny model (seed 0): a binary dialogue classifier, 2 chunks of 24
    tokens, unless `model` says otherwise (a key given None is left out). What `bsm export` reads, untrained."""
    import json

    import torch

    from raytune_bsm.model.text_bert import TextBertClassifier

    torch.manual_seed(0)
    config = {
        "text_name": "dialogue",
        "label_name": "reversal_flag",
        "tokenizer": "all-MiniLM-L6-v2",
        "encoder_config": TINY_ENCODER,
        "max_chunks": 2,
        "max_tokens": 24,
        "class_names": ["False", "True"],
        **model,
    }
    net = TextBertClassifier({k: v for k, v in config.items() if v is not None}).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "hyper_parameters": json.loads(json.dumps(dict(net.hparams)))}, path)
    return path


# One BSM_HOME for the session (the shared local cluster's record, the demo-data cache); tests that need
# isolation take the `bsm_home` fixture.
SESSION_HOME = Path(tempfile.mkdtemp(prefix="bsm-test-home-"))
os.environ["BSM_HOME"] = str(SESSION_HOME)


@pytest.fixture
def bsm_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A BSM_HOME of this test's own."""
    home = tmp_path_factory.mktemp("bsm-home")
    monkeypatch.setenv("BSM_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def local_cluster():
    """A real local Ray cluster (token auth on, loopback), started the way `bsm up` does; stopped at the end."""
    from raytune_bsm.client import local_cluster as cluster

    rec = cluster.up(num_cpus=2, home=SESSION_HOME)
    try:
        yield rec
    finally:
        cluster.down(home=SESSION_HOME)


TINY_SETS = [
    "encoder_config={vocab_size: 30522, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, "
    "intermediate_size: 64, max_position_embeddings: 128}",
    "lr=0.001",
    "max_tokens=64",
    "max_chunks=4",
    "batch_size=32",
]


def write_parquet(path: Path, **columns: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture(autouse=True)
def _bsm_logs_reach_caplog(monkeypatch):
    """A CLI command run in-process sets up bsm's stderr handler with propagate=False; keep bsm's records
    reaching pytest's caplog in every later test, whatever ran before."""
    import logging

    monkeypatch.setattr(logging.getLogger("raytune_bsm"), "propagate", True)


# ------------------------------------------------------------------------- the bad-input matrix's scaffolding


def isolate(user_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """BSM_HOME and the temp directory of this case alone, no cluster address or token from the environment, and
    `user_dir` the working directory (relative output paths land there). Returns [BSM_HOME, TMPDIR]."""
    home = tmp_path_factory.mktemp("home")
    tmp = tmp_path_factory.mktemp("tmp")
    monkeypatch.setenv("BSM_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("user-home")))  # not this machine's ~/.ray/auth_token
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(user_dir)
    monkeypatch.setattr(logging.getLogger("raytune_bsm"), "handlers", [])  # setup_logging binds this case's stderr
    return [home, tmp]


LIBRARY_STATE = {".ses"}  # onnxruntime's native library keeps a session id in $TMPDIR/.ses when first loaded


def snapshot(roots: list[Path]) -> dict[str, tuple[int, int]]:
    """Every file and directory under `roots`: (size, mtime), to show a failed command changed nothing."""
    return {
        str(p): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns if p.is_file() else 0)
        for root in roots
        for p in [root, *root.rglob("*")]
        if p.name not in LIBRARY_STATE
    }


@contextmanager
def two_node_cluster(cpus_per_node: int) -> Iterator[object]:
    """A real two-node Ray cluster in this machine (`ray.cluster_utils.Cluster`), this process its driver."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus_per_node, "include_dashboard": False})
    cluster.add_node(num_cpus=cpus_per_node)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """A stand-in HTTP server's handler (a fake Ray dashboard): quiet, with a JSON answer helper."""

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _json(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
