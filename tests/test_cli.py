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
        (["--set", "reinit_layers=9"], "--reinit-layers must be between 0 and 6 (the model has 6 encoder layers), got 9"),
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


def test_every_recipe_in_jobs_loads_and_validates(tmp_path):
    recipes = sorted(Path(__file__).resolve().parent.parent.joinpath("jobs").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        if recipe.name == "search_space.yaml":
            continue
        command = "tune" if recipe.name.startswith("tune") else "submit"
        r = bsm(command, "--config", str(recipe), "--dry-run", env={"BSM_HOME": str(tmp_path)})
        assert r.returncode == 0, (recipe, r.stderr)
