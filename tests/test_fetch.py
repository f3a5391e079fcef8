"""`bsm fetch`: a real export (tiny BERT) fetched from local storage, every sha256 checked, nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_checkpoint

from raytune_bsm import api
from raytune_bsm.errors import ExportError


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A run directory in a storage root, holding a real export of a tiny model."""
    from raytune_bsm.model.export import export_checkpoint

    root = tmp_path_factory.mktemp("storage")
    ckpt = tiny_checkpoint(root / "model.ckpt", class_names=["0", "1"], max_tokens=64, max_chunks=4)
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


def test_to_an_existing_file_or_non_empty_dir_is_refused_and_untouched(published, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(ExportError, match="is an existing file"):
        api.fetch(str(published / "run1" / "export"), str(target))
    assert target.read_text() == "mine"
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not empty"):
        api.fetch(str(published / "run1" / "export"), str(full))
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (api.fetch(str(published / "run1" / "export"), str(empty)) / "model.onnx").exists()


def test_download_export_copies_only_what_is_asked(published, tmp_path):
    from raytune_bsm import layout

    dest = tmp_path / "predict-files"
    manifest = layout.download_export(str(published / "run1" / "export"), dest, only=layout.PREDICT_FILES)
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == sorted(layout.PREDICT_FILES)
    for e in manifest["files"]:
        if e["path"] in layout.PREDICT_FILES:
            layout.verify_file(dest / e["path"], e)
    with pytest.raises(ExportError, match="does not list"):
        layout.download_export(str(published / "run1" / "export"), tmp_path / "x", only=["nope.bin"])
    assert not (tmp_path / "x").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_manifest_that_is_not_json_is_a_clear_error(published, tmp_path):
    run = _copy_run(published, tmp_path)
    (run / "export" / "manifest.json").write_text("{not json")
    with pytest.raises(ExportError, match="manifest.json is not valid JSON"):
        api.fetch(str(run / "export"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


FETCH = "import sys; from raytune_bsm.cli import main; sys.argv = ['bsm', 'fetch', {src!r}, '--to', {to!r}]; main()"


def test_fetch_shows_its_bytes_as_a_bar_on_a_terminal_and_as_plain_lines_elsewhere(published, tmp_path):
    from test_progress import _run_on_pty, _run_piped

    src = str(published / "run1" / "export")
    size_mb = (
        sum(e["size"] for e in json.loads((published / "run1" / "export" / "manifest.json").read_text())["files"]) / 1e6
    )
    text = _run_on_pty(FETCH.format(src=src, to=str(tmp_path / "a"))).decode(errors="replace")
    assert "\x1b[" in text and "downloading" in text and "MB" in text
    err = _run_piped(FETCH.format(src=src, to=str(tmp_path / "b")))
    assert "\r" not in err and "\x1b" not in err
    done = [line for line in err.splitlines() if line.startswith("downloading: ")][-1]
    assert done.startswith(f"downloading: {round(size_mb, 1)}/{round(size_mb, 1)} MB (100%) in "), err
