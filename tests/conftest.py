"""Shared fixtures: a tiny BERT built from a config (no download), data files, an isolated BSM_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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


@pytest.fixture(autouse=True)
def bsm_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own BSM_HOME, so no test sees another's cluster record or demo data."""
    home = tmp_path_factory.mktemp("bsm-home")
    monkeypatch.setenv("BSM_HOME", str(home))
    return home


def write_parquet(path: Path, **columns: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path
