"""Bad inputs to the artifact commands, second round (issue 18, cases 7, 8, 9, 11 and 25): unwritable
destinations, a user's file in an earlier report, links inside an export, a changed export sent to the cluster,
a file that is not a checkpoint. Each is one line `bsm: error: ...`, exit 1, nothing written, never a traceback.

The workspace, the tiny checkpoint and its real export are test_bad_inputs.py's fixtures. Tests run as root here,
and root ignores mode bits, so a read-only destination is made real: a read-only tmpfs mount (where this machine
lets the tests mount; mode bits 0555 when not root) or a regular file standing where a folder must be.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_bad_inputs import exports, isolated, snapshot, ws  # noqa: F401  the shared workspace and its export
from typer.testing import CliRunner

from raytune_bsm.cli import app
from raytune_bsm.demo.generator import make_dialogues
from raytune_bsm.layout import write_manifest


def _bsm(args: list[str]):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="bsm")


def _one_error_line(r, needle: str) -> str:
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{type(r.exception).__name__}: {r.exception}"
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsm: error: "), r.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


def _mount_tmpfs(where: Path, options: str) -> bool:
    """A tmpfs at `where` (root only, and only where the machine lets a process mount); True if mounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return r.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def read_only_dir(tmp_path_factory):
    """A directory nobody (root included) can write: a read-only tmpfs mount, or mode 0555 when not root."""
    where = tmp_path_factory.mktemp("ro") / "ro"
    if os.geteuid() != 0:
        where.mkdir()
        where.chmod(0o555)
        yield where
        where.chmod(0o755)
        return
    if not _mount_tmpfs(where, "ro,size=64k"):
        pytest.skip("running as root, and this machine does not let the tests mount a read-only tmpfs")
    yield where
    _umount(where)


# ---------------------------------------------------------------------------- case 7: unwritable destinations

DESTINATIONS = {  # each command and where its output goes, under {dest}
    "predict": ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--out", "{dest}/p.parquet"],
    "fetch": ["fetch", "{ws}/fexports/good", "--to", "{dest}/fetched"],
    "export": ["export", "{ws}/ckpt/model.ckpt", "--to", "{dest}/exported"],
    "demo-data": ["demo-data", "--out", "{dest}/demo"],
    "report": ["report", "{ws}/exports/good", "--out", "{dest}/report"],
}


@pytest.mark.parametrize("command", list(DESTINATIONS))
@pytest.mark.parametrize("kind", ["read-only-tmpfs-mount", "a-regular-file-where-a-folder-must-be"])
def test_an_unwritable_destination_is_one_line_naming_it_before_any_work(
    ws, exports, isolated, read_only_dir, command, kind, request
):
    dest = read_only_dir if kind == "read-only-tmpfs-mount" else ws.root / "user" / "file.txt" / "sub"
    args = [a.replace("{ws}", str(ws.root)).replace("{dest}", str(dest)) for a in DESTINATIONS[command]]
    before = snapshot(isolated)
    r = _bsm(args)
    # One line: predict says nothing of scoring (its first block would log "scoring with ..."), export loads nothing
    line = _one_error_line(r, "cannot be written")
    assert str(dest) in line and ("Read-only file system" in line or "is a file, not a directory" in line), line
    assert snapshot(isolated) == before
    if kind == "read-only-tmpfs-mount":
        assert list(read_only_dir.iterdir()) == []


def test_a_full_disk_midway_is_one_line_and_no_partial_file_on_a_tiny_tmpfs_mount(ws, exports, isolated, tmp_path):
    """An OSError after every check passed (ENOSPC while writing, on a real 4 KiB tmpfs): one line, no traceback."""
    tiny = tmp_path / "tiny"
    if not _mount_tmpfs(tiny, "size=4k"):
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        d = make_dialogues(40, seed=3)
        n = 9000  # more than one write (8192 rows): the output outgrows 4 KiB while scoring
        pq.write_table(
            pa.table({"dialogue": (d.column("dialogue").to_pylist() * 250)[:n], "order_id": list(range(n))}),
            tmp_path / "many.parquet",
        )
        r = _bsm(["predict", ws.root / "exports" / "good", tmp_path / "many.parquet", "--out", tiny / "p.parquet"])
        assert r.exit_code == 1 and "Traceback" not in r.stderr, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("bsm: error: ") and "No space left on device" in last, r.stderr
        assert list(tiny.iterdir()) == []  # the hidden partial output is gone too
    finally:
        _umount(tiny)


# ---------------------------------------------------------------------------- case 8: the user's file in a report


def test_report_over_an_earlier_report_keeps_the_users_own_files(ws, exports, isolated):
    out = ws.root / "user" / "rep"
    assert _bsm(["report", ws.root / "exports" / "good", "--out", out]).exit_code == 0
    marker = json.loads((out / ".bsm-report").read_text())
    assert "report.html" in marker["files"]
    (out / "my notes.txt").write_text("the user's own")
    (out / "mine").mkdir()
    (out / "mine" / "plot.png").write_bytes(b"the user's picture")
    (out / "old_figure.png").write_bytes(b"a figure the earlier report wrote")  # listed by the marker: bsm's
    (out / ".bsm-report").write_text(json.dumps({**marker, "files": [*marker["files"], "old_figure.png"]}))
    (out / "report.html").write_text("the earlier report")

    r = _bsm(["report", ws.root / "exports" / "good", "--out", out])
    assert r.exit_code == 0, r.stderr
    assert (out / "my notes.txt").read_text() == "the user's own"
    assert (out / "mine" / "plot.png").read_bytes() == b"the user's picture"
    assert not (out / "old_figure.png").exists()
    assert (out / "report.html").read_text().startswith("<!")  # replaced by the new report
    assert "kept 2 file(s) of yours" in r.stderr
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".rep")) == []  # no temporary dirs


# ---------------------------------------------------------------------------- case 9: links inside an export


def _export_with_link(ws, root: Path, rel: str, target: Path) -> Path:
    """A copy of the stand-in export whose `rel` is a symbolic link to `target`, listed in the manifest with the
    target's sha256 and size (what a tampered export would say)."""
    shutil.copytree(ws.root / "fexports" / "good", root)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / rel).unlink(missing_ok=True)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).symlink_to(target)
    (root / "manifest.json").unlink()
    entries = [e for e in manifest["files"] if e["path"] != rel]
    data = target.read_bytes()
    entries.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    (root / "manifest.json").write_text(json.dumps({**manifest, "files": entries}))
    return root


@pytest.mark.parametrize("rel", ["model.onnx", "bsm_model.json", "tokenizer/tokenizer.json"])
def test_fetch_refuses_a_link_inside_an_export_and_says_nothing_of_its_target(ws, isolated, tmp_path, rel):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:a secret outside the export\n")
    export = _export_with_link(ws, tmp_path / "linked", rel, secret)
    before = snapshot(isolated)
    line = _one_error_line(_bsm(["fetch", export, "--to", "f"]), "symbolic link")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    assert digest[:16] not in line and str(secret.stat().st_size) not in line, line
    assert snapshot(isolated) == before  # nothing copied, no temporary directory left


def test_fetch_refuses_an_export_whose_folder_is_a_link(ws, isolated, tmp_path):
    outside = tmp_path / "outside-tok"
    outside.mkdir()
    (outside / "tokenizer.json").write_text("{}")
    export = _export_with_link(ws, tmp_path / "linked", "tokenizer/tokenizer.json", outside / "tokenizer.json")
    (export / "tokenizer" / "tokenizer.json").unlink()
    (export / "tokenizer").rmdir()
    (export / "tokenizer").symlink_to(outside)  # the folder is the link; the file in it is a regular one
    _one_error_line(_bsm(["fetch", export, "--to", "f"]), "a symbolic link inside the export (its folder tokenizer)")


def test_predict_refuses_a_real_export_whose_bsm_model_json_links_outside(ws, exports, isolated, tmp_path):
    export = tmp_path / "linked-export"
    shutil.copytree(exports / "good", export)
    outside = tmp_path / "other_model.json"
    shutil.copy(export / "bsm_model.json", outside)  # a valid bsm_model.json, but not this export's file
    (export / "bsm_model.json").unlink()
    (export / "bsm_model.json").symlink_to(outside)
    before = snapshot(isolated)
    _one_error_line(
        _bsm(["predict", export, ws.root / "data" / "good.parquet", "--out", "p.parquet"]),
        "bsm_model.json: a symbolic link inside the export",
    )
    assert snapshot(isolated) == before


def test_predict_refuses_a_linked_manifest(ws, exports, isolated, tmp_path):
    export = tmp_path / "linked-manifest"
    shutil.copytree(exports / "good", export)
    shutil.move(export / "manifest.json", tmp_path / "manifest.json")
    (export / "manifest.json").symlink_to(tmp_path / "manifest.json")
    _one_error_line(
        _bsm(["predict", export, ws.root / "data" / "good.parquet", "--out", "p.parquet"]),
        "manifest.json: a symbolic link inside the export",
    )


def test_an_export_with_a_link_is_never_written(tmp_path):
    from raytune_bsm.errors import ExportError

    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "model.onnx").symlink_to("/etc/hostname")
    with pytest.raises(ExportError, match="model.onnx is a symbolic link"):
        write_manifest(tmp_path / "e", {})


# ---------------------------------------------------------------------------- case 11: a changed export, on-cluster


def test_on_cluster_predict_of_a_changed_export_is_refused_before_contacting_the_cluster(ws, exports, isolated):
    # Port 9 (discard) on loopback: were the export checked after connecting, this would be a connection error.
    r = _bsm(
        [
            "predict",
            exports / "tampered",
            ws.root / "data" / "good.parquet",
            "--on-cluster",
            "--out",
            ws.root / "user" / "preds",
            "--address",
            "http://127.0.0.1:9",
        ]
    )
    _one_error_line(r, ".onnx: checksum mismatch")


def test_the_clusters_driver_checks_the_export_once_one_line_exit_1_no_actor_started(ws, exports, tmp_path, capfd):
    """runner/batch_predict.py's entrypoint as the job runs it, on a changed export: refused before Ray starts."""
    import ray

    from raytune_bsm.runner import batch_predict

    job = {
        "kind": "predict",
        "export": str(exports / "tampered"),
        "data": str(ws.root / "data" / "good.parquet"),
        "out": str(tmp_path / "preds"),
    }
    (tmp_path / "bsm_job.json").write_text(json.dumps(job))
    assert batch_predict.main(str(tmp_path / "bsm_job.json")) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bsm: error: ") and "checksum mismatch" in err[0], err
    assert not ray.is_initialized() and not (tmp_path / "preds").exists()


# ---------------------------------------------------------------------------- case 25: not a checkpoint


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"hello, not a checkpoint\n", id="text"),
        pytest.param(b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.", id="plain-pickle"),
        pytest.param(bytes(range(256)) * 4, id="binary"),
    ],
)
def test_export_of_a_file_that_is_not_a_checkpoint_never_suggests_turning_the_safety_off(
    ws, isolated, tmp_path, content
):
    (tmp_path / "not.ckpt").write_bytes(content)
    r = _bsm(["export", tmp_path / "not.ckpt", "--to", "e"])
    line = _one_error_line(r, "is not a bsm Lightning checkpoint")
    assert "weights_only" not in r.stderr and "will likely succeed" not in r.stderr, r.stderr
    assert not (ws.root / "user" / "e").exists()
    assert line.endswith("refused unread")
