"""The CLI: parsing, exit codes, what goes to stdout and stderr. The work itself is tested through `api`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq


def bsm(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raytune_bsm.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_help_is_fast_and_imports_no_heavy_library():
    t = time.perf_counter()
    r = bsm("--help")
    assert r.returncode == 0 and "submit" in r.stdout and "predict" in r.stdout
    assert time.perf_counter() - t < 5  # a fresh interpreter included; the import itself is ~0.2 s
    probe = "import sys, raytune_bsm.cli; print(sorted(m for m in ('torch','ray','transformers','lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_dry_run_with_8_gpus_plans_8_workers_with_one_gpu_each(tmp_path):
    r = bsm("submit", "--num-gpus", "8", "--dry-run", "--name", "big", env={"BSM_HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["scaling"]["num_workers"] == 8
    assert plan["scaling"]["use_gpu"] is True
    assert plan["scaling"]["resources_per_worker"]["GPU"] == 1
    assert plan["scaling"]["backend"] == "nccl"
    assert plan["scaling"]["placement_strategy"] in ("PACK", "SPREAD")
    assert plan["entrypoint"] == "python -m raytune_bsm.runner.train bsm_job.json"
    assert plan["config"]["scaling"]["num_workers"] == 8
    assert plan["metadata"]["bsm_run"] == "big"
    assert not (tmp_path / "cluster.json").exists()  # a dry run starts no cluster


def test_user_mistake_is_one_line_on_stderr_and_exit_1(tmp_path):
    for args, needle in [
        (
            ["--set", "reinit_layers=9"],
            "--reinit-layers must be between 0 and 6 (the model has 6 encoder layers), got 9",
        ),
        (["--max-chunks", "0"], "--max-chunks must be between 1"),
        (["--train", str(tmp_path / "missing.parquet")], "--train"),
        (["--num-gpus", "2", "--num-workers", "3"], "--num-gpus"),
        (["--set", "nonsense=1"], "--set nonsense"),
    ]:
        r = bsm("submit", "--dry-run", *args, env={"BSM_HOME": str(tmp_path)})
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bsm: error: ") and needle in lines[0], r.stderr
        assert "Traceback" not in r.stderr


def test_demo_data_prints_the_directory(tmp_path):
    r = bsm("demo-data", "--out", str(tmp_path / "d"), "--rows", "50", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == tmp_path / "d"
    assert pq.read_table(tmp_path / "d" / "train.parquet").num_rows == 40


def test_demo_data_never_replaces_data_already_there_without_overwrite(tmp_path):
    bsm("demo-data", "--out", str(tmp_path), "--rows", "20", "--seed", "1")
    before = (tmp_path / "val.parquet").read_bytes()
    r = bsm("demo-data", "--out", str(tmp_path), "--rows", "50")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"bsm: error: --out {tmp_path} already holds train.parquet, val.parquet, test.parquet; "
        "choose another directory or add --overwrite"
    ]
    assert (tmp_path / "val.parquet").read_bytes() == before
    r = bsm("demo-data", "--out", str(tmp_path), "--rows", "50", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert pq.read_table(tmp_path / "train.parquet").num_rows == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.parquet", "train.parquet", "val.parquet"]  # no temp


def test_every_recipe_in_jobs_loads_and_validates(tmp_path):
    recipes = sorted(Path(__file__).resolve().parent.parent.joinpath("jobs").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        if recipe.name == "search_space.yaml":
            continue
        command = "tune" if recipe.name.startswith("tune") else "submit"
        r = bsm(command, "--config", str(recipe), "--dry-run", env={"BSM_HOME": str(tmp_path)})
        assert r.returncode == 0, (recipe, r.stderr)


def _options(command: str) -> set[str]:
    import typer.main

    from raytune_bsm.cli import app

    group = typer.main.get_command(app)
    return {o for p in group.commands[command].params for o in p.opts if o.startswith("--")}


def test_tune_takes_every_option_of_submit():
    submit, tune = _options("submit"), _options("tune")
    assert {"--num-workers", "--num-gpus", "--cpus-per-worker", "--lr", "--resume", "--json"} <= submit
    assert submit <= tune, submit - tune
    assert tune - submit >= {"--num-samples", "--scheduler", "--search-space", "--metric", "--mode"}


def test_every_command_that_returns_data_can_print_json():
    for command in (
        "submit",
        "tune",
        "status",
        "list",
        "stop",
        "fetch",
        "export",
        "predict",
        "demo-data",
        "up",
        "report",
    ):
        assert "--json" in _options(command), command


def test_shell_completion_is_on():
    from typer.testing import CliRunner

    from raytune_bsm.cli import app

    r = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="bsm")
    assert r.exit_code == 0 and "complete -o default -F _bsm_completion bsm" in r.stdout, (r.output, r.exception)
    assert "--install-completion" in CliRunner().invoke(app, ["--help"]).stdout


def test_a_bad_flag_value_is_one_line_and_exit_1_like_every_mistake():
    for args, needle in [
        (["submit", "--lr", "abc"], "Invalid value for '--lr'"),
        (["submit", "--bogus"], "No such option: --bogus"),
        (["logs"], "Missing argument"),
        (["nonsense"], "No such command 'nonsense'"),
    ]:
        r = bsm(*args)
        assert r.returncode == 1 and r.stdout == "", (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bsm: error: ") and needle in lines[0], r.stderr


def test_status_prints_why_a_job_failed_escaped_with_api_status_stubbed(monkeypatch):
    """The CLI's printing only (the cluster side is tested in test_submit_jobs): api.status is a stub here."""
    from typer.testing import CliRunner

    from raytune_bsm import api
    from raytune_bsm.cli import app

    info = {
        "job_id": "bsm-x",
        "status": "FAILED",
        "error": "DataError: bad row\x1b]0;pwned\x07 \x1b[2J",
        "run_dir": "/runs/x\r",
        "metrics": None,
    }
    monkeypatch.setattr(api, "status", lambda job_id=None, **kw: info)
    r = CliRunner().invoke(app, ["status", "bsm-x"])
    assert r.exit_code == 0
    assert "error            DataError: bad row" in r.stdout
    assert "curves           tensorboard --logdir /runs/x\\x0d" in r.stdout  # the run's event files, escaped
    assert "\x1b" not in r.stdout and "\r" not in r.stdout and "\x07" not in r.stdout
    assert json.loads(CliRunner().invoke(app, ["status", "bsm-x", "--json"]).stdout)["error"] == info["error"]


def test_submit_and_tune_print_the_job_id_as_json_with_api_stubbed(monkeypatch):
    """--json output only; submitting for real is tested in test_submit_jobs. api.submit/api.tune are stubs."""
    from typer.testing import CliRunner

    from raytune_bsm import api
    from raytune_bsm.cli import app

    seen = {}
    monkeypatch.setattr(api, "submit", lambda opts, **kw: seen.setdefault("submit", opts) and "bsm-a")
    monkeypatch.setattr(api, "tune", lambda opts, sweep, **kw: seen.setdefault("tune", (opts, sweep)) and "bsm-b")
    assert json.loads(CliRunner().invoke(app, ["submit", "--json", "--lr", "0.1"]).stdout) == {"job_id": "bsm-a"}
    assert seen["submit"].lr == 0.1
    r = CliRunner().invoke(app, ["tune", "--json", "--num-workers", "2", "--num-samples", "3"])
    assert json.loads(r.stdout) == {"job_id": "bsm-b"}
    opts, sweep = seen["tune"]
    assert opts.num_workers == 2 and sweep["num_samples"] == 3


def test_verbose_reaches_the_job_through_the_submission(tmp_path):
    quiet = json.loads(bsm("submit", "--dry-run", "--name", "q", env={"BSM_HOME": str(tmp_path)}).stdout)
    loud = json.loads(bsm("--verbose", "submit", "--dry-run", "--name", "q", env={"BSM_HOME": str(tmp_path)}).stdout)
    assert "BSM_VERBOSE" not in quiet["runtime_env"]["env_vars"]
    assert loud["runtime_env"]["env_vars"]["BSM_VERBOSE"] == "1"
