"""Export refuses what it must (issue 8.3, 8.4): a checkpoint that would run code is never unpickled, a directory
bsm did not write is never replaced, a file is never a destination, and a failure leaves nothing behind."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_checkpoint
from typer.testing import CliRunner

from raytune_bsm import api
from raytune_bsm.cli.app import app
from raytune_bsm.errors import ConfigError, ExportError
from raytune_bsm.model.export import export_checkpoint
from raytune_bsm.model.text_bert import load_checkpoint


class _Payload:
    """Unpickling this creates the file `path`: what a crafted checkpoint's payload would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint file whose unpickling runs code (it creates `marker`), and the marker's path. The payload is
    real: loading the file the unsafe way does create the marker (checked, then removed)."""
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {}}, "payload": _Payload(marker)}, ckpt)
    torch.load(ckpt, weights_only=False)  # the unsafe way: the payload runs
    assert marker.exists()
    marker.unlink()
    return ckpt, marker


def _tiny_checkpoint(path: Path) -> Path:
    return tiny_checkpoint(path, label_name="y", max_tokens=16, class_names=None)


def test_a_crafted_checkpoint_is_refused_without_running_its_payload(crafted):
    ckpt, marker = crafted
    with pytest.raises(ExportError, match=r"not a bsm Lightning checkpoint: it asks for (io|builtins)\.open") as e:
        load_checkpoint(ckpt)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_bsm_export_refuses_a_crafted_checkpoint_and_a_ray_checkpoint_dir_holding_one(crafted, tmp_path, monkeypatch):
    ckpt, marker = crafted
    ray_dir = tmp_path / "checkpoint_000001"
    ray_dir.mkdir()
    (ray_dir / "checkpoint.ckpt").write_bytes(ckpt.read_bytes())
    monkeypatch.chdir(tmp_path)
    for source in (ckpt, ray_dir):
        r = CliRunner().invoke(app, ["export", str(source), "--to", "out"], prog_name="bsm")
        assert r.exit_code == 1, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bsm: error: ") and ".open, which bsm never loads" in lines[0], (
            r.stderr
        )
        assert not marker.exists()
        assert not (tmp_path / "out").exists()


def test_a_checkpoint_of_tensors_and_plain_data_loads(tmp_path):
    again = load_checkpoint(_tiny_checkpoint(tmp_path / "ok.ckpt"))
    assert again.config["max_tokens"] == 16 and not again.training


@pytest.mark.parametrize(
    "manifest",
    [None, "{}", '{"files": []}', json.dumps({"format": "something-else", "files": []})],
    ids=["no-manifest", "empty-json", "no-format", "other-format"],
)
def test_export_to_a_users_directory_is_refused_and_it_stays_as_it_was(tmp_path, manifest):
    """The issue's case: a directory of the user's files that happens to hold a manifest.json."""
    dest = tmp_path / "mine"
    (dest / "sub").mkdir(parents=True)
    (dest / "notes.txt").write_text("keep me")
    (dest / "sub" / "data.csv").write_text("a,b\n1,2\n")
    if manifest is not None:
        (dest / "manifest.json").write_text(manifest)
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="non-empty directory that bsm did not export"):
        api.export(str(_tiny_checkpoint(tmp_path / "m.ckpt")), str(dest))
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "mine"]


def test_an_earlier_export_holding_a_users_file_is_not_replaced(tmp_path):
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "manifest.json").write_text(
        json.dumps({"format": "bsm-export", "files": [{"path": "model.onnx", "sha256": "0" * 64, "size": 1}]})
    )
    (dest / "model.onnx").write_bytes(b"x")
    (dest / "my_notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="files it did not write .*my_notes.txt"):
        export_checkpoint(str(_tiny_checkpoint(tmp_path / "m.ckpt")), str(dest))
    assert (dest / "my_notes.txt").read_text() == "mine" and (dest / "model.onnx").read_bytes() == b"x"


def test_export_to_an_existing_file_is_a_clear_error(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("mine")
    with pytest.raises(ConfigError, match=r"file\.txt' exists and is a file, not a directory"):
        export_checkpoint(str(_tiny_checkpoint(tmp_path / "m.ckpt")), str(target))
    assert target.read_text() == "mine"


def test_a_failed_export_leaves_no_temporary_directory_anywhere(tmp_path, monkeypatch):
    """Parity fails late (after every file is written): no sibling .tmp-*, nothing in the temp dir, no dest."""
    tmp = tmp_path / "systemp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    ckpt = _tiny_checkpoint(tmp_path / "m.ckpt")
    dest = tmp_path / "runs" / "a" / "export"
    with pytest.raises(ExportError, match="parity check failed"):
        export_checkpoint(str(ckpt), str(dest), tolerance=-1.0)
    assert list(tmp.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "systemp"]  # runs/a made for it: gone too
