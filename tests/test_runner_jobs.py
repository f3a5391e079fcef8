"""The jobs as the cluster runs them (`python -m raytune_bsm.runner.train bsm_job.json`, in processes this test
starts) on a Ray instance of this module's own whose processes have their own system temp directory:
a job driver killed and resumed, a sweep whose metric ties across epochs, no temporary files left behind, and
job logs made of bsm's lines."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TINY_ENCODER

from raytune_bsm import sweep as sw
from raytune_bsm.client.submission import build_submission
from raytune_bsm.config import RunConfig
from raytune_bsm.runner import tune as sr

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
NON_BSM_LINES = 5  # what may remain of Ray's and the libraries' output in a whole job's log (0 seen)


@pytest.fixture(scope="module")
def ray_tmp(tmp_path_factory):
    """(GCS address, the system temp dir of every Ray process, a snapshot of it after start-up)."""
    import ray

    watched = tmp_path_factory.mktemp("systmp")
    ray_dir = tempfile.mkdtemp(prefix="bsmr-", dir="/tmp")  # Ray's own session files: short socket paths
    saved = {k: os.environ.get(k) for k in ("TMPDIR", "RAY_TMPDIR")}
    os.environ.update(TMPDIR=str(watched), RAY_TMPDIR=ray_dir)
    # With its dashboard: Ray Train's placement-group cleaner asks the State API, as on a real cluster.
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address, watched
    finally:
        ray.shutdown()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        shutil.rmtree(ray_dir, ignore_errors=True)


def _tiny(name: str, max_epochs: int, **train) -> RunConfig:
    d = RunConfig(name=name).to_dict()
    d["model"].update(encoder_config=dict(TINY_ENCODER), lr=1e-3, max_tokens=64, max_chunks=4)
    d["data"].update(demo_rows=200, batch_size=16)
    d["train"].update(max_epochs=max_epochs, save_top_k=1, max_failures=0, **train)
    return RunConfig.from_dict(d)


def _job(tmp_path: Path, run: RunConfig, storage: str, **top) -> Path:
    job = tmp_path / f"bsm_job-{len(list(tmp_path.glob('bsm_job-*')))}.json"
    job.write_text(json.dumps({**build_submission(run, kind="train", storage=storage).config, **top}))
    return job


def _start(job: Path, gcs: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": gcs, "PYTHONUNBUFFERED": "1"}
    env.pop("BSM_VERBOSE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "raytune_bsm.runner.train", str(job)],
        cwd=job.parent,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def _wait_for_free_cpus(n: float, timeout: float = 120) -> None:
    import ray

    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < n:
        assert time.monotonic() < deadline, f"CPUs never freed: {ray.available_resources()}"
        time.sleep(0.5)


# Not a run's leftovers: fixed names created once per machine and reused, or owned by a live process.
NOT_LEFTOVERS = (
    "torchinductor_",  # PyTorch's compile cache directory, created (empty) when Lightning is imported
    ".ses",  # onnxruntime's telemetry session file (51 bytes), written when onnxruntime is imported
    "pymp-",  # Python multiprocessing's directory of a process still running (a pooled Ray worker)
)


def _leftovers(watched: Path) -> list[str]:
    return sorted(p.name for p in watched.iterdir() if not p.name.startswith(NOT_LEFTOVERS))


def _non_bsm(log_text: str) -> list[str]:
    """Lines not written by bsm (its lines carry " bsm " after the time, also when Ray prefixes a worker's)."""
    return [ln for ln in log_text.splitlines() if ln.strip() and " bsm " not in ln and not ln.startswith("bsm")]


def test_killed_job_driver_resumes_every_epoch_once(ray_tmp, tmp_path):
    """SIGKILL the job driver (by pid) once the first checkpoint is registered; the job run again with
    `"resume": true` trains only the remaining epochs and exports. Nothing is left in the temp directory;
    the log holds few lines that are not bsm's; TensorBoard curves are in the run's storage."""
    gcs, watched = ray_tmp
    storage = str(tmp_path / "runs")
    run = _tiny("driver-killed", max_epochs=3)
    run_dir = Path(storage) / "driver-killed"
    t0 = time.monotonic()
    first = _start(_job(tmp_path, run, storage), gcs, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoint_manager_snapshot.json").exists():
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint was registered"
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    before = [r["epoch"] for r in json.loads((run_dir / "bsm_epochs.json").read_text())]
    t_kill = time.monotonic() - t0
    _wait_for_free_cpus(2)  # Ray ends the killed driver's Train controller and workers

    # Without resume the name is taken: refused, one line, nothing changed.
    refused = subprocess.run(
        [sys.executable, "-m", "raytune_bsm.runner.train", str(_job(tmp_path, run, storage))],
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_ADDRESS": gcs},
    )
    assert refused.returncode == 1 and "already exists" in refused.stderr and "Traceback" not in refused.stderr

    t1 = time.monotonic()
    second = _start(_job(tmp_path, run, storage, resume=True), gcs, tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-4000:]
    t_resume = time.monotonic() - t1
    log_text = (tmp_path / "second.log").read_text()
    print(f"first run killed after {t_kill:.0f}s (epochs reported: {before}); resumed run {t_resume:.0f}s")

    result = json.loads((run_dir / "bsm_result.json").read_text())
    assert result["error"] is None and before and before == list(range(len(before)))
    assert result["epochs_trained"] == [0, 1, 2]  # every epoch reported once over both runs
    assert len(result["restarts"]) == 1 and result["restarts"][0]["resumed_from"].startswith(str(run_dir))
    assert Path(result["best_checkpoint"], "checkpoint.ckpt").exists()
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["source_checkpoint"] == result["best_checkpoint"]
    assert manifest["parity"]
    assert "(_export pid=" in log_text  # the export ran as a Ray task of its own, not in the driver

    from test_tracking import EXPECTED_TAGS, scalar_tags

    assert result["tensorboard_logdir"] == str(run_dir / "tensorboard")
    tags = scalar_tags(run_dir / "tensorboard")
    assert EXPECTED_TAGS - {"train_loss"} <= set(tags), sorted(tags)

    noise = _non_bsm(log_text)
    print(f"{len(noise)} non-bsm line(s) of {len(log_text.splitlines())}:\n" + "\n".join(noise))
    assert len(noise) <= NON_BSM_LINES
    assert not any("UNEXPECTED" in ln or "loss_type=None" in ln or "Tip:" in ln for ln in log_text.splitlines())
    _wait_for_free_cpus(2)
    assert _leftovers(watched) == []


def test_a_sweep_whose_metric_ties_exports_a_checkpoint_ray_kept(ray_tmp, tmp_path, monkeypatch):
    """A learning rate of 1e-9 leaves the model as it started: val_accuracy is the same after every epoch.
    Ray keeps one best checkpoint and the latest; the sweep names and exports one that exists."""
    _, watched = ray_tmp
    monkeypatch.setattr(tempfile, "tempdir", str(watched))  # the driver's own temporary files, watched too
    storage = str(tmp_path / "runs")
    run = _tiny("ties", max_epochs=3)
    sweep = sw.SweepConfig(
        num_samples=1, scheduler="fifo", metric="val_accuracy", mode="max", search_space={"lr": {"grid": [1e-9]}}
    )
    t0 = time.monotonic()
    summary = sr.run_sweep(run, sweep, storage=storage)
    print(f"1-trial sweep with export: {time.monotonic() - t0:.0f}s")
    (row,) = summary["leaderboard"]
    assert len(set(row["metric_per_epoch"])) == 1 and len(row["metric_per_epoch"]) == 3  # a tie across epochs
    best = Path(summary["best_checkpoint"])
    assert (best / "checkpoint.ckpt").exists()
    kept = sorted(p.name for p in (Path(row["best_checkpoint"]).parent).glob("checkpoint_*"))
    assert len(kept) <= 2  # retention deleted the others
    assert (
        row["best_epoch"]
        == min(
            e["epoch"]
            for e in json.loads((best.parent / "bsm_epochs.json").read_text())
            if Path(e["checkpoint_path"]).exists()
        )
        + 1
    )
    manifest = json.loads((Path(storage) / "ties" / "export" / "manifest.json").read_text())
    assert manifest["source_checkpoint"] == str(best)
    assert Path(summary["tensorboard_logdir"], best.parent.name, "tensorboard").is_dir()
    _wait_for_free_cpus(2)
    assert _leftovers(watched) == []
