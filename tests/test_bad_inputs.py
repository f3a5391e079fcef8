"""No traceback for any user mistake on any command (issue 8.8): a matrix of bad inputs (data files, flags,
recipes, search spaces, manifests, addresses, output paths). Each case must exit 1 with exactly one stderr line
`bsm: error: ...` that names the flag, file or value, print nothing on stdout, and write nothing: the workspace,
BSM_HOME and the temp directory hold the same files before and after.

Commands run in-process (typer's CliRunner) against one workspace of real files: Parquet/CSV/JSONL data, YAML
recipes and search spaces, a real tiny checkpoint and its real export (with damaged copies). No cluster: run
commands use --dry-run, cluster commands get addresses that fail before anything is sent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import isolate, snapshot, tiny_checkpoint
from typer.testing import CliRunner

from raytune_bsm.cli import app
from raytune_bsm.demo.generator import make_dialogues
from raytune_bsm.layout import write_manifest


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _parquet(path: Path, **columns: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def _damaged_copies(export: Path) -> None:
    """Beside `export`: notjson, unsafe, nofiles (bad manifests), nomanifest, tampered (every .onnx changed)."""
    for name in ("notjson", "unsafe", "nomanifest", "tampered", "nofiles"):
        shutil.copytree(export, export.parent / name)
    manifest = json.loads((export / "manifest.json").read_text())
    _write(export.parent / "notjson" / "manifest.json", "{not json")
    _write(
        export.parent / "unsafe" / "manifest.json",
        json.dumps({**manifest, "files": [{"path": "../../evil", "sha256": "0" * 64, "size": 1}]}),
    )
    _write(export.parent / "nofiles" / "manifest.json", json.dumps({**manifest, "files": "all of them"}))
    (export.parent / "nomanifest" / "manifest.json").unlink()
    for onnx in (export.parent / "tampered").glob("*.onnx"):  # every ONNX file predict may read
        with open(onnx, "ab") as f:
            f.write(b"\0")


@pytest.fixture(scope="module")
def exports(ws) -> Path:
    """A real export of the tiny checkpoint (what predict needs) and damaged copies, under {ws}/exports."""
    from raytune_bsm.model.export import export_checkpoint

    export_checkpoint(str(ws.root / "ckpt" / "model.ckpt"), str(ws.root / "exports" / "good"))
    _damaged_copies(ws.root / "exports" / "good")
    return ws.root / "exports"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The workspace: good and bad files of every kind the commands read."""

    root = tmp_path_factory.mktemp("bad-inputs")
    d = make_dialogues(40, seed=3)
    texts, labels, ids = (d.column(c).to_pylist() for c in ("dialogue", "reversal_flag", "order_id"))
    data = root / "data"
    _parquet(data / "good.parquet", dialogue=texts, reversal_flag=labels, order_id=ids)
    _parquet(data / "nocol.parquet", text=texts, reversal_flag=labels)
    _parquet(data / "oneclass_int.parquet", dialogue=texts, reversal_flag=[1] * len(texts))
    _parquet(data / "oneclass_str.parquet", dialogue=texts, reversal_flag=["yes"] * len(texts))
    _parquet(data / "nums_as_text.parquet", dialogue=list(range(40)), reversal_flag=labels)
    _write(data / "garbage.parquet", b"PAR1 this is not parquet")
    _write(data / "empty.csv", b"")
    _write(data / "dupcol.csv", "dialogue,dialogue,reversal_flag\nhi,there,1\nyo,ho,0\n")
    _write(data / "bad.jsonl", '{"dialogue": "hi", "reversal_flag": 1}\n{not json\n')
    _write(data / "mixed_ids.jsonl", '{"order_id": 1, "dialogue": "hi"}\n{"order_id": "a", "dialogue": "yo"}\n')
    _write(data / "notes.txt", "dialogue\nhello\n")
    (data / "empty_dir").mkdir()

    rec = root / "recipes"
    _write(rec / "list.yaml", "- a\n- b\n")
    _write(rec / "invalid.yaml", "model: [unclosed\n")
    _write(rec / "unknown_top.yaml", "bogus: 1\n")
    _write(rec / "unknown_model_key.yaml", "model:\n  learning_rate: 0.1\n")
    _write(rec / "bad_type.yaml", "model:\n  lr: abc\n")
    _write(rec / "bad_section.yaml", "data: 5\n")
    _write(rec / "bad_range.yaml", "train:\n  max_epochs: 0\n")
    _write(rec / "binary.yaml", b"\xff\xfe\x00\x01")
    _write(rec / "tune_bad.yaml", "tune:\n  num_samples: many\n")
    _write(rec / "tune_unknown.yaml", "tune:\n  trials: 3\n")

    runs = root / "runs"  # damaged records of earlier runs and sweeps, for --resume
    _write(runs / "notjson" / "bsm_sweep.json", "{ not json")
    _write(runs / "nosettings" / "bsm_sweep.json", "[1, 2]")
    _write(runs / "emptysweep" / "bsm_sweep.json", "{}")
    _write(runs / "brokenrun" / "bsm_config.json", b"\xff\xfe")

    sp = root / "spaces"
    _write(sp / "bad_dist.yaml", "lr: {normal: [0.0, 1.0]}\n")
    _write(sp / "unknown_key.yaml", "learning_rate: {uniform: [0.0, 1.0]}\n")
    _write(sp / "strings.yaml", "lr: {choice: [fast, slow]}\n")
    _write(sp / "list.yaml", "- lr\n")
    _write(sp / "fixed.yaml", "scaling.num_workers: {choice: [1, 2]}\n")
    _write(sp / "low_high.yaml", "lr: {uniform: [0.2, 0.1]}\n")
    _write(sp / "bad_value.yaml", "batch_size: {randint: [0, 4]}\n")

    # A real tiny checkpoint (its export, for predict, is the `exports` fixture), and damaged ones.
    tiny_checkpoint(root / "ckpt" / "model.ckpt", chunk_pooling="mean")
    _write(root / "ckpt" / "garbage.ckpt", b"not a checkpoint at all")
    (root / "ckpt" / "no_ckpt_dir").mkdir()
    # What fetch reads is files and a manifest: a small stand-in export with damaged copies.
    good = root / "fexports" / "good"
    _write(good / "model.onnx", b"onnx bytes")
    _write(good / "bsm_model.json", "{}")
    write_manifest(good, {"kind": "stand-in"})
    _damaged_copies(good)

    user = root / "user"
    _write(user / "notes" / "keep.txt", "the user's own files")
    _write(user / "file.txt", "a file, not a directory")
    return SimpleNamespace(root=root)


@pytest.fixture
def isolated(ws, tmp_path_factory, monkeypatch):
    """This case's own BSM_HOME and TMPDIR, the workspace's user/ its working directory (conftest.isolate)."""
    return [ws.root, *isolate(ws.root / "user", tmp_path_factory, monkeypatch)]


X = "(see `bsm"  # a usage error's hint
H1, H3, H4, H6 = "owner: H1", "owner: H3", "owner: H4", "owner: H6"


def xfail(reason: str):  # a case whose fix lies in another helper's files: it flips to a failure when fixed
    return pytest.mark.xfail(strict=True, reason=reason)


CASES = [
    # ------------------------------------------------------------------ submit: flags (--dry-run: no cluster)
    pytest.param(["submit", "--num-gpus", "0"], "--num-gpus must be at least 1", id="num-gpus-0"),
    pytest.param(["submit", "--num-workers", "0"], "--num-workers must be at least 1", id="num-workers-0"),
    pytest.param(["submit", "--num-gpus", "2", "--num-workers", "3"], "--num-gpus", id="gpus-and-workers"),
    pytest.param(["submit", "--cpus-per-worker", "0"], "--cpus-per-worker must be at least 1", id="cpus-0"),
    pytest.param(["submit", "--max-epochs", "0"], "--max-epochs must be at least 1", id="max-epochs-0"),
    pytest.param(["submit", "--batch-size", "0"], "--batch-size must be at least 1", id="batch-size-0"),
    pytest.param(["submit", "--lr", "0"], "--lr must be in", id="lr-0"),
    pytest.param(["submit", "--lr", "-1e-3"], "--lr must be in", id="lr-negative"),
    pytest.param(["submit", "--lr", "abc"], "'--lr'", id="lr-not-a-number"),
    pytest.param(["submit", "--max-chunks", "0"], "--max-chunks must be between 1", id="max-chunks-0"),
    pytest.param(["submit", "--max-tokens", "4"], "--max-tokens must be between 8", id="max-tokens-4"),
    pytest.param(
        ["submit", "--max-tokens", "1024"], "--max-tokens must be at most 512 for this model", id="max-tokens-too-many"
    ),
    pytest.param(["submit", "--name", "bad name!"], "--name must be letters", id="name-bad"),
    pytest.param(["submit", "--name", "-x"], "--name", id="name-dash"),
    pytest.param(["submit", "--text-field", ""], "--text-field must not be empty", id="text-field-empty"),
    pytest.param(["submit", "--model", "/nonexistent"], "--model /nonexistent", id="model-missing-path"),
    pytest.param(["submit", "--model", "a/b/c"], "--model a/b/c", id="model-not-a-hub-name"),
    pytest.param(
        ["submit", "--storage", "ftp://host/runs"], "--storage ftp://host/runs: unknown scheme", id="storage-scheme"
    ),
    pytest.param(["submit", "--storage", "s3://"], "--storage s3://: needs a bucket", id="storage-no-bucket"),
    pytest.param(["submit", "--bogus"], "No such option: --bogus", id="unknown-flag"),
    pytest.param(["submit", "--num-workers"], "--num-workers", id="flag-without-value"),
    # ------------------------------------------------------------------ --set
    pytest.param(["submit", "--set", "lr=abc"], "--set lr: expected a number, got 'abc'", id="set-lr-abc"),
    pytest.param(["submit", "--set", "nonsense=1"], "--set nonsense", id="set-unknown-key"),
    pytest.param(["submit", "--set", "model.lrr=1"], "unknown key 'model.lrr'", id="set-unknown-dotted"),
    pytest.param(["submit", "--set", "lr"], "--set takes key=value", id="set-no-equals"),
    pytest.param(["submit", "--set", "num_workers=2"], "ambiguous", id="set-ambiguous"),
    pytest.param(["submit", "--set", "reinit_layers=9"], "--reinit-layers must be between 0 and 6", id="set-reinit-9"),
    pytest.param(
        ["submit", "--set", "batch_size=1.5"], "--set batch_size: expected an integer, got 1.5", id="set-int-float"
    ),
    pytest.param(["submit", "--set", "use_gpu=maybe"], "--set use_gpu: expected true or false", id="set-bool"),
    pytest.param(["submit", "--set", "precision=64"], "precision must be one of", id="set-precision"),
    pytest.param(["submit", "--set", "monitor=val_bogus"], "--metric must be one of", id="set-monitor"),
    pytest.param(
        ["submit", "--set", "chunk_pooling=mean", "--set", "reinit_pooler=true"], "reinit_pooler needs", id="set-pooler"
    ),
    pytest.param(
        ["submit", "--set", "encoder_config=5"], "--set encoder_config: expected a mapping", id="set-encoder-config"
    ),
    # ------------------------------------------------------------------ recipes (--config)
    pytest.param(
        ["submit", "--config", "{ws}/recipes/missing.yaml"], "recipes/missing.yaml: no such file", id="config-missing"
    ),
    pytest.param(["submit", "--config", "{ws}/recipes"], "is a directory", id="config-directory"),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/invalid.yaml"], "invalid.yaml: not valid YAML", id="config-invalid-yaml"
    ),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/list.yaml"], "list.yaml: expected a mapping", id="config-not-a-mapping"
    ),
    pytest.param(["submit", "--config", "{ws}/recipes/binary.yaml"], "binary.yaml: not valid YAML", id="config-binary"),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/unknown_top.yaml"],
        "unknown top-level config key(s): bogus",
        id="config-unknown-key",
    ),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/unknown_model_key.yaml"], "learning_rate", id="config-unknown-model-key"
    ),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/bad_type.yaml"],
        "bad_type.yaml: model.lr: expected a number, got 'abc'",
        id="config-bad-type",
    ),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/bad_section.yaml"],
        "bad_section.yaml: data: expected a mapping",
        id="config-bad-section",
    ),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/bad_range.yaml"],
        "--max-epochs must be at least 1, got 0",
        id="config-bad-range",
    ),
    pytest.param(
        ["tune", "--config", "{ws}/recipes/tune_bad.yaml"],
        "tune.num_samples: expected an integer",
        id="config-tune-bad-type",
    ),
    pytest.param(["tune", "--config", "{ws}/recipes/tune_unknown.yaml"], "trials", id="config-tune-unknown"),
    # ------------------------------------------------------------------ data files (schema-checked before submission)
    pytest.param(["submit", "--train", "{ws}/data/missing.parquet"], "--train", id="train-missing"),
    pytest.param(
        ["submit", "--train", "{ws}/data/nocol.parquet"], "missing column 'dialogue'", id="train-no-text-column"
    ),
    pytest.param(
        ["submit", "--train", "{ws}/data/good.parquet", "--label-field", "nope"], "'nope'", id="train-no-label-column"
    ),
    pytest.param(["submit", "--train", "{ws}/data/oneclass_str.parquet"], "single class", id="train-one-class-str"),
    pytest.param(["submit", "--train", "{ws}/data/oneclass_int.parquet"], "single class", id="train-one-class-int"),
    pytest.param(["submit", "--train", "{ws}/data/garbage.parquet"], "garbage.parquet", id="train-not-parquet"),
    pytest.param(["submit", "--train", "{ws}/data/empty.csv"], "empty.csv", id="train-empty-csv"),
    pytest.param(["submit", "--train", "{ws}/data/dupcol.csv"], "dupcol.csv", id="train-duplicate-column"),
    pytest.param(["submit", "--train", "{ws}/data/bad.jsonl"], "bad.jsonl", id="train-bad-jsonl"),
    pytest.param(["submit", "--train", "{ws}/data/notes.txt"], "notes.txt", id="train-unknown-type"),
    pytest.param(["submit", "--train", "{ws}/data/empty_dir"], "empty_dir", id="train-empty-dir"),
    pytest.param(
        ["submit", "--train", "{ws}/data/good.parquet", "--val", "{ws}/data/nocol.parquet"], "--val", id="val-no-column"
    ),
    pytest.param(
        ["submit", "--train", "{ws}/data/good.parquet", "--test", "{ws}/data/garbage.parquet"],
        "--test",
        id="test-not-parquet",
    ),
    # ------------------------------------------------------------------ tune
    pytest.param(["tune", "--num-samples", "0"], "--num-samples must be a positive integer", id="tune-num-samples-0"),
    pytest.param(["tune", "--scheduler", "hyperband"], "--scheduler must be one of", id="tune-scheduler"),
    pytest.param(["tune", "--metric", "val_bogus"], "--metric must be one of", id="tune-metric"),
    pytest.param(["tune", "--mode", "up"], "--mode must be max or min", id="tune-mode"),
    pytest.param(["tune", "--time-budget", "soon"], "--time-budget", id="tune-time-budget"),
    pytest.param(["tune", "--max-concurrent", "0"], "--max-concurrent must be at least 1", id="tune-max-concurrent"),
    pytest.param(["tune", "--num-workers", "0"], "--num-workers must be at least 1", id="tune-num-workers-0"),
    pytest.param(["tune", "--lr", "2"], "--lr must be in", id="tune-lr"),
    pytest.param(["tune", "--resume", "nosuchsweep"], "nosuchsweep", id="tune-resume-missing"),
    pytest.param(
        ["tune", "--resume", "notjson", "--storage", "{ws}/runs"],
        "bsm_sweep.json: not valid JSON",
        id="tune-resume-not-json",
    ),
    pytest.param(
        ["tune", "--resume", "nosettings", "--storage", "{ws}/runs"],
        "expected a JSON object",
        id="tune-resume-not-object",
    ),
    pytest.param(
        ["tune", "--resume", "emptysweep", "--storage", "{ws}/runs"],
        'no "run" and "tune"',
        id="tune-resume-no-settings",
    ),
    pytest.param(
        ["submit", "--resume", "brokenrun", "--storage", "{ws}/runs"],
        "bsm_config.json: not valid JSON",
        id="resume-damaged-record",
    ),
    pytest.param(["tune", "--resume", "s", "--lr", "0.1"], "drop --lr", id="tune-resume-with-flags"),
    pytest.param(
        ["tune", "--resume", "s", "--num-samples", "3"], "drop --num-samples", id="tune-resume-with-sweep-flags"
    ),
    # ------------------------------------------------------------------ search spaces
    pytest.param(
        ["tune", "--search-space", "{ws}/spaces/missing.yaml"], "missing.yaml: no such file", id="space-missing"
    ),
    pytest.param(
        ["tune", "--search-space", "{ws}/spaces/bad_dist.yaml"], "expected one of", id="space-bad-distribution"
    ),
    pytest.param(
        ["tune", "--search-space", "{ws}/spaces/unknown_key.yaml"],
        "unknown key 'learning_rate'",
        id="space-unknown-key",
    ),
    pytest.param(["tune", "--search-space", "{ws}/spaces/strings.yaml"], "'fast'", id="space-strings-for-lr"),
    pytest.param(["tune", "--search-space", "{ws}/spaces/list.yaml"], "expected a mapping", id="space-not-a-mapping"),
    pytest.param(
        ["tune", "--search-space", "{ws}/spaces/fixed.yaml"],
        "scaling.num_workers cannot be tuned",
        id="space-fixed-key",
    ),
    pytest.param(["tune", "--search-space", "{ws}/spaces/low_high.yaml"], "low < high", id="space-low-high"),
    pytest.param(
        ["tune", "--search-space", "{ws}/spaces/bad_value.yaml"],
        "data.batch_size: 0 is not a valid value",
        id="space-bad-value",
    ),
    pytest.param(["tune", "--search-space", "{ws}/spaces"], "is a directory", id="space-directory"),
    # ------------------------------------------------------------------ resume
    pytest.param(["submit", "--resume", "nosuchrun"], "--resume nosuchrun: no run", id="resume-missing"),
    pytest.param(["submit", "--resume", "r", "--max-epochs", "3"], "drop --max-epochs", id="resume-with-flags"),
    pytest.param(["submit", "--resume", "../etc"], "--resume must name a run", id="resume-path"),
    # ------------------------------------------------------------------ addresses (nothing is sent)
    pytest.param(["status"], "no Ray cluster to use", id="status-no-cluster", marks=()),
    pytest.param(["status", "--address", "ftp://host:8265"], "ftp://host:8265", id="status-bad-scheme"),
    pytest.param(["list", "--address", "http://127.0.0.1:1"], "127.0.0.1:1", id="list-refused"),
    pytest.param(["logs", "bsm-x", "--address", "http://[::1"], "--address", id="logs-bad-url"),
    pytest.param(["stop", "bsm-x", "--address", "http://127.0.0.1:99999"], "99999", id="stop-bad-port"),
    pytest.param(["submit", "--address", "ftp://host", "--name", "a"], "ftp://host", id="submit-bad-address", marks=()),
    # ------------------------------------------------------------------ local cluster
    pytest.param(["up", "--num-cpus", "0"], "--num-cpus must be >= 1, got 0", id="up-num-cpus-0"),
    pytest.param(["up", "--num-gpus", "-1"], "--num-gpus", id="up-num-gpus-negative"),
    # ------------------------------------------------------------------ demo-data
    pytest.param(["demo-data", "--out", "d", "--rows", "0"], "--rows", id="demo-rows-0"),
    pytest.param(["demo-data", "--out", "file.txt"], "file.txt", id="demo-out-is-a-file"),
    pytest.param(["demo-data"], "--out", id="demo-no-out"),
    # ------------------------------------------------------------------ export
    pytest.param(["export", "{ws}/ckpt/missing.ckpt", "--to", "x"], "missing.ckpt: no such file", id="export-missing"),
    pytest.param(
        ["export", "{ws}/ckpt/garbage.ckpt", "--to", "x"], "not a bsm Lightning checkpoint", id="export-garbage"
    ),
    pytest.param(["export", "{ws}/ckpt/no_ckpt_dir", "--to", "x"], "checkpoint.ckpt", id="export-dir-without-ckpt"),
    pytest.param(["export", "{ws}/ckpt/model.ckpt", "--to", "file.txt"], "file.txt", id="export-to-a-file"),
    pytest.param(["export", "{ws}/ckpt/model.ckpt", "--to", "notes"], "notes", id="export-to-users-dir"),
    pytest.param(["export", "{ws}/ckpt/model.ckpt", "--to", "ftp://host/x"], "ftp://host/x", id="export-to-bad-scheme"),
    # ------------------------------------------------------------------ fetch (manifests)
    pytest.param(
        ["fetch", "{ws}/fexports/notjson", "--to", "f"], "manifest.json is not valid JSON", id="fetch-manifest-not-json"
    ),
    pytest.param(["fetch", "{ws}/fexports/unsafe", "--to", "f"], "unsafe path", id="fetch-manifest-unsafe-path"),
    pytest.param(["fetch", "{ws}/fexports/nofiles", "--to", "f"], '"files"', id="fetch-manifest-no-files"),
    pytest.param(["fetch", "{ws}/fexports/nomanifest", "--to", "f"], "manifest", id="fetch-no-manifest"),
    pytest.param(["fetch", "{ws}/fexports/tampered", "--to", "f"], ".onnx: checksum mismatch", id="fetch-tampered"),
    pytest.param(["fetch", "{ws}/fexports/good", "--to", "file.txt"], "file.txt", id="fetch-to-a-file"),
    pytest.param(["fetch", "{ws}/fexports/good", "--to", "notes"], "notes", id="fetch-to-users-dir"),
    pytest.param(["fetch", "no-such-run"], "no-such-run", id="fetch-unknown-run"),
    # ------------------------------------------------------------------ report
    pytest.param(["report", "{ws}/runs/missing"], "runs/missing does not exist", id="report-missing"),
    pytest.param(["report", "{ws}/data"], "is not a run, sweep or export directory", id="report-not-a-run"),
    pytest.param(["report", "no-such-run"], "no-such-run", id="report-unknown-run"),
    pytest.param(
        ["report", "{ws}/data", "--threshold", "2"], "--threshold must be between 0 and 1", id="report-threshold"
    ),
    pytest.param(["report", "bsm-nope", "--address", "ftp://host"], "ftp://host", id="report-bad-address"),
    # ------------------------------------------------------------------ predict
    pytest.param(
        ["predict", "{ws}/exports/missing", "{ws}/data/good.parquet"], "exports/missing", id="predict-no-export"
    ),
    pytest.param(
        ["predict", "{ws}/exports/notjson", "{ws}/data/good.parquet", "--out", "p.parquet"],
        "not valid JSON",
        id="predict-manifest-not-json",
    ),
    pytest.param(
        ["predict", "{ws}/exports/tampered", "{ws}/data/good.parquet", "--out", "p.parquet"],
        "checksum mismatch",
        id="predict-tampered",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/missing.parquet", "--out", "p.parquet"],
        "missing.parquet",
        id="predict-no-data",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/nocol.parquet", "--out", "p.parquet"],
        "'dialogue'",
        id="predict-no-column",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--out", "{ws}/data/good.parquet"],
        "--out",
        id="predict-out-is-input",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--out", "p.xlsx"], "p.xlsx", id="predict-out-type"
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--out", "file.txt"],
        "file.txt",
        id="predict-out-existing-file",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--out", "p.parquet", "--batch-size", "0"],
        "--batch-size",
        id="predict-batch-0",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--out", "p.parquet", "--provider", "Bogus"],
        "Bogus",
        id="predict-provider",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/mixed_ids.jsonl", "--out", "p.parquet"],
        "order_id",
        id="predict-mixed-ids",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/garbage.parquet", "--out", "p.parquet"],
        "garbage.parquet",
        id="predict-not-parquet",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--out", "p.parquet", "--threads", "0"],
        "--threads",
        id="predict-threads-0",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--num-actors", "2"],
        "--num-actors only apply with --on-cluster",
        id="predict-actors-locally",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--on-cluster"],
        "--on-cluster needs --out",
        id="predict-cluster-no-out",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--on-cluster", "--out", "p.csv", "--dry-run"],
        "directory",
        id="predict-cluster-out-csv",
    ),
    pytest.param(
        ["predict", "{ws}/exports/good", "{ws}/data/good.parquet", "--on-cluster", "--out", "{ws}/data", "--dry-run"],
        "overlaps the input",
        id="predict-cluster-out-overlaps",
    ),
    pytest.param(
        ["serve", "up", "{ws}/exports/good", "--replicas", "2", "--autoscale", "1,2", "--dry-run"],
        "--replicas and --autoscale exclude each other",
        id="serve-replicas-and-autoscale",
    ),
    pytest.param(
        ["serve", "up", "{ws}/exports/good", "--name", "Bad/Name", "--dry-run"],
        "--name must be",
        id="serve-bad-name",
    ),
]
RUN_COMMANDS = {"submit", "tune"}


@pytest.mark.parametrize("args, needle", CASES)
def test_a_bad_input_is_one_line_exit_1_and_writes_nothing(ws, isolated, args, needle, request):
    if args[0] == "predict":
        request.getfixturevalue("exports")  # built once, before this case's snapshot
    args = [a.replace("{ws}", str(ws.root)) for a in args]
    if args[0] in RUN_COMMANDS and "--address" not in args and "--dry-run" not in args:
        args.append("--dry-run")
    needle = needle.replace("{ws}", str(ws.root))
    before = snapshot(isolated)
    r = CliRunner().invoke(app, args, prog_name="bsm")
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{type(r.exception).__name__}: {r.exception}"
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("bsm: error: ") and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0], lines[0]
    after = snapshot(isolated)
    assert after == before, {"new or changed": sorted(set(after.items()) - set(before.items()))}


def test_the_matrix_covers_every_command_with_at_least_60_cases():
    from typer.main import get_command

    commands = set(get_command(app).commands)
    covered = {p.values[0][0] for p in CASES}
    assert commands - {"down"} <= covered, commands - covered  # `down` takes no input
    assert len(CASES) >= 60
