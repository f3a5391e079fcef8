"""`bsm fetch`: a real export (tiny BERT) fetched from local storage, every sha256 checked, nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY_ENCODER

from raytune_bsm import api
from raytune_bsm.errors import ExportError


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A run directory in a storage root, holding a real export of a tiny model."""
    from raytune_bsm.model.export import export_checkpoint
    from raytune_bsm.model.text_bert import TextBertClassifier

    torch.manual_seed(0)
    model = TextBertClassifier(
        {"text_name": "dialogue", "label_name": "reversal_flag", "tokenizer": "all-MiniLM-L6-v2",
         "encoder_config": TINY_ENCODER, "class_names": ["0", "1"], "max_tokens": 64, "max_chunks": 4}
    )  # fmt: skip
    root = tmp_path_factory.mktemp("storage")
    ckpt = root / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": model.hparams}, ckpt)
    export_checkpoint(str(ckpt), str(root / "run1" / "export"))
    return root


def _copy_run(published: Path, tmp_path: Path) -> Path:
    run = tmp_path / "storage" / "run1"
    shutil.copytree(published / "run1", run)
    return run


def test_fetch_by_path_verifies_and_copies_every_file(published, tmp_path):
    out = api.fetch(str(published / "run1" / "export"), str(tmp_path / "model"))
    manifest = json.loads((out / "manifest.json").read_text())
    names = {e["path"] for e in manifest["files"]}
    assert {"model.onnx", "model.torchscript.pt", "bsm_model.json"} <= names
    assert any(n.startswith("tokenizer/") for n in names)
    for e in manifest["files"]:
        assert (out / e["path"]).stat().st_size == e["size"]


def test_fetch_by_run_name_uses_default_storage(published, tmp_path, bsm_home):
    shutil.copytree(published / "run1", bsm_home / "runs" / "run1")
    out = api.fetch("run1", str(tmp_path / "by-name"))
    assert (out / "model.onnx").exists()


def test_tampered_file_fails_and_leaves_nothing(published, tmp_path):
    run = _copy_run(published, tmp_path)
    onnx_file = run / "export" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    onnx_file.write_bytes(bytes(data))
    dest = tmp_path / "fetched"
    with pytest.raises(ExportError, match="model.onnx: checksum mismatch"):
        api.fetch(str(run / "export"), str(dest))
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".fetched")] == []


def test_missing_file_fails_and_leaves_nothing(published, tmp_path):
    run = _copy_run(published, tmp_path)
    (run / "export" / "bsm_model.json").unlink()
    dest = tmp_path / "fetched"
    with pytest.raises(ExportError, match="bsm_model.json: listed in the manifest but cannot be read"):
        api.fetch(str(run / "export"), str(dest))
    assert not dest.exists() and not any(p.name.startswith(".fetched") for p in tmp_path.iterdir())


def test_no_export_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="no export at"):
        api.fetch(str(tmp_path), str(tmp_path / "x"))
