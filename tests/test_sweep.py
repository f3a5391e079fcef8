"""`bsm tune`'s cluster side (raytune_bsm.sweep): settings, search spaces, concurrency from cluster resources,
and real sweeps (Ray Tune over Ray Train V2 runs) on a local 2-CPU Ray instance with the tiny encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import TINY_ENCODER

from raytune_bsm import sweep as sw
from raytune_bsm.client.connection import ClusterResources, NodeResources
from raytune_bsm.config import RunConfig
from raytune_bsm.errors import ClusterError, ConfigError
from raytune_bsm.layout import EPOCHS_JSON
from raytune_bsm.runner import trials as tr
from raytune_bsm.runner import tune as sr

REPO = Path(__file__).resolve().parents[1]


def tiny_run(name: str = "sweep", max_epochs: int = 3, **scaling) -> RunConfig:
    d = RunConfig(name=name).to_dict()
    d["model"].update(encoder_config=dict(TINY_ENCODER), max_tokens=64, max_chunks=4)
    d["data"].update(demo_rows=200, batch_size=32)
    d["train"].update(max_epochs=max_epochs, save_top_k=1, max_failures=0)
    d["scaling"].update(scaling)
    return RunConfig.from_dict(d)


def nodes(*spec: tuple[float, float], autoscale: bool = False) -> ClusterResources:
    """Plain ClusterResources (the dataclass `cluster_resources` returns) for (cpus, gpus) per node."""
    ns = [NodeResources(f"10.0.0.{i}", c, g) for i, (c, g) in enumerate(spec)]
    return ClusterResources(sum(n.cpus for n in ns), sum(n.gpus for n in ns), ns, autoscale, "http://head:8265")


# ----------------------------------------------------------------------------------------------- settings


def test_sweep_config_validates_and_names_the_flag():
    for kwargs, flag in [
        ({"num_samples": 0}, "--num-samples"),
        ({"scheduler": "hyperband"}, "--scheduler"),
        ({"metric": "val_bogus"}, "--metric"),
        ({"mode": "up"}, "--mode"),
        ({"workers_per_trial": 0}, "--workers-per-trial"),
        ({"gpus_per_trial": 2, "workers_per_trial": 3}, "--gpus-per-trial"),
        ({"max_concurrent": 0}, "--max-concurrent"),
        ({"time_budget_s": "soon"}, "--time-budget"),
        ({"reduction_factor": 1}, "--reduction-factor"),
        ({"search_space": {"bogus_key": 1}}, "--search-space"),
    ]:
        with pytest.raises(ConfigError, match=flag):
            sw.SweepConfig(**kwargs)
    s = sw.SweepConfig(time_budget_s="1h30m", gpus_per_trial=2, search_space={"lr": {"loguniform": [1e-5, 1e-4]}})
    assert s.time_budget_s == 5400 and s.search_space == {"model.lr": {"loguniform": [1e-5, 1e-4]}}
    assert sw.SweepConfig.from_dict(json.loads(json.dumps(s.to_dict()))) == s  # travels in bsm_job.json
    with pytest.raises(ConfigError, match="unknown sweep setting"):
        sw.SweepConfig.from_dict({"num_trials": 3})
    assert [sw.parse_duration(v) for v in (90, "90", "90s", "30m", "2h", "1.5h")] == [90, 90, 90, 1800, 7200, 5400]
    # per-trial scaling: --gpus-per-trial N is N one-GPU workers; the metric/mode rank the trials' checkpoints too
    run = sw.SweepConfig(gpus_per_trial=2, metric="val_loss", mode="min").apply(tiny_run())
    assert (run.scaling.num_workers, run.scaling.use_gpu, run.train.monitor, run.train.mode) == (
        2,
        True,
        "val_loss",
        "min",
    )
    assert sw.SweepConfig(metric="val_loss").apply(tiny_run()).train.mode == "min"  # loss is minimised unless told
    multi = sw.SweepConfig(workers_per_trial=2).apply(tiny_run(), num_classes=3)
    assert (multi.scaling.num_workers, multi.train.monitor, multi.train.mode) == (2, "val_f1_score", "max")


def test_the_tune_recipe_and_search_space_file_are_valid():
    import yaml

    recipe = yaml.safe_load((REPO / "jobs" / "tune.yaml").read_text())
    sweep = sw.SweepConfig.from_dict(recipe.pop("tune"))
    run = RunConfig.from_dict(recipe)
    assert sweep.scheduler == "asha" and run.train.max_epochs == 3
    space = sw.load_search_space(REPO / "jobs" / "search_space.yaml", num_layers=sw.model_layers(run))
    assert {"model.lr", "model.warmup_ratio", "model.reinit_layers", "model.dropout"} <= set(space)
    sw.check_search_space(sweep.apply(run, num_classes=2), space)


# ----------------------------------------------------------------------------------------------- search space


def test_default_search_space_is_capped_by_the_models_layers():
    assert sw.default_search_space()["model.reinit_layers"] == {"choice": [0, 1, 2, 3]}
    run = tiny_run()
    assert sw.model_layers(run) == 2
    space = sw.resolve_space(run, sw.SweepConfig())
    assert set(space) == {"model.lr", "model.warmup_ratio", "model.reinit_layers"}
    assert space["model.reinit_layers"] == {"choice": [0, 1, 2]}
    sw.check_search_space(run, space)  # every value it can sample is a valid config


def test_load_search_space_extend_replace_and_errors(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("lr: {loguniform: [1.0e-4, 1.0e-3]}\ndata.batch_size: {choice: [16, 32]}\ndropout: 0.2\n")
    extended = sw.load_search_space(f, num_layers=2)  # mode defaults to extend
    assert extended["model.lr"] == {"loguniform": [1e-4, 1e-3]}  # overrides the default's lr
    assert extended["data.batch_size"] == {"choice": [16, 32]} and extended["model.dropout"] == 0.2
    assert extended["model.reinit_layers"] == {"choice": [0, 1, 2]} and "model.warmup_ratio" in extended

    f.write_text("mode: replace\nwarmup_steps: {randint: [0, 50]}\nlr: {grid: [1.0e-5, 3.0e-5]}\n")
    assert sw.load_search_space(f) == {"model.warmup_steps": {"randint": [0, 50]}, "model.lr": {"grid": [1e-5, 3e-5]}}
    assert sw.SweepConfig(num_samples=3, search_space=sw.load_search_space(f)).total_trials() == 6

    for text, needle in [
        ("learning_rate: {uniform: [0, 1]}\n", "unknown key 'learning_rate'"),
        ("model.lrr: 0.1\n", "unknown key 'model.lrr'"),
        ("lr: {normal: [0.0, 1.0]}\n", "key 'lr'.*expected one of"),
        ("lr: {uniform: [0.1]}\n", "key 'lr'.*uniform needs \\[low, high\\]"),
        ("lr: {loguniform: [0.0, 0.1]}\n", "key 'lr'.*low > 0"),
        ("lr: {uniform: [0.2, 0.1]}\n", "key 'lr'.*low < high"),
        ("reinit_layers: {choice: []}\n", "key 'reinit_layers'.*non-empty"),
        ("scaling.num_workers: {choice: [1, 2]}\n", "scaling.num_workers cannot be tuned"),
        ("cpus_per_worker: 2\n", "scaling.cpus_per_worker cannot be tuned"),
        ("num_workers: 2\n", "ambiguous; write one of data.num_workers, scaling.num_workers"),
        ("max_epochs: {choice: [1, 2]}\n", "train.max_epochs cannot be tuned"),
        ("mode: sideways\n", "mode must be extend or replace"),
        ("lr: 1.0e-4\nmodel.lr: 2.0e-4\n", "model.lr is given twice"),
        ("- lr\n", "expected a mapping"),
    ]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=needle) as e:
            sw.load_search_space(f)
        assert str(f) in str(e.value)  # errors name the file
    with pytest.raises(ConfigError, match="no such file"):
        sw.load_search_space(tmp_path / "missing.yaml")


def test_values_a_space_can_sample_are_checked_before_any_trial():
    run = tiny_run()
    with pytest.raises(ConfigError, match="model.lr: 0.0 is not a valid value"):
        sw.check_search_space(run, sw.canonical_space({"lr": {"uniform": [0.0, 1e-3]}}, "x"))
    with pytest.raises(ConfigError, match="model.reinit_layers: 3 is outside 0..2"):
        sw.check_search_space(run, sw.canonical_space({"reinit_layers": {"choice": [0, 3]}}, "x"))
    with pytest.raises(ConfigError, match="data.batch_size: 0 is not a valid value"):
        sw.check_search_space(run, sw.canonical_space({"batch_size": {"randint": [0, 4]}}, "x"))


def test_param_space_maps_to_tune_domains():
    from ray import tune

    space = sw.param_space(
        {
            "model.lr": {"loguniform": [1e-5, 1e-4]},
            "model.warmup_ratio": {"uniform": [0.0, 0.2]},
            "data.batch_size": {"choice": [16, 32]},
            "train.seed": {"randint": [0, 3]},
            "model.dropout": {"grid": [0.1, 0.2]},
            "model.scheduler": "cosine",
        }
    )
    assert isinstance(space["model.lr"], tune.search.sample.Float) and space["model.scheduler"] == "cosine"
    assert isinstance(space["data.batch_size"], tune.search.sample.Categorical)
    assert isinstance(space["train.seed"], tune.search.sample.Integer)
    assert space["model.dropout"] == {"grid_search": [0.1, 0.2]}


# ----------------------------------------------------------------------------------------------- resources


def test_max_concurrent_trials_from_cluster_resources():
    cpu = tiny_run(cpus_per_worker=2)
    s = sw.SweepConfig(num_samples=16)
    assert sw.max_concurrent_trials(nodes((8, 0), (8, 0)), s, cpu) == 8  # 16 CPUs / 2 per trial
    assert sw.max_concurrent_trials(nodes((8, 0), (3, 0)), s, cpu) == 5  # a worker's CPUs sit on one node
    assert (
        sw.max_concurrent_trials(nodes((8, 0), (8, 0)), sw.SweepConfig(num_samples=3), cpu) == 3
    )  # no more than trials
    assert sw.max_concurrent_trials(nodes((8, 0)), sw.SweepConfig(num_samples=16, max_concurrent=2), cpu) == 2
    assert sw.max_concurrent_trials(nodes((8, 0)), sw.SweepConfig(num_samples=16, max_concurrent=9), cpu) == 4  # capped
    assert (
        sw.max_concurrent_trials(nodes((8, 0), (8, 0)), sw.SweepConfig(num_samples=16, workers_per_trial=3), cpu) == 2
    )
    strict = tiny_run(cpus_per_worker=2, placement_strategy="STRICT_PACK")
    assert (
        sw.max_concurrent_trials(nodes((6, 0), (6, 0)), sw.SweepConfig(num_samples=16, workers_per_trial=2), strict)
        == 2
    )

    gpu = tiny_run(cpus_per_worker=4)
    g = nodes((16, 4), (16, 4), (32, 0))
    assert sw.max_concurrent_trials(g, sw.SweepConfig(num_samples=16, gpus_per_trial=1), gpu) == 8
    assert sw.max_concurrent_trials(g, sw.SweepConfig(num_samples=16, gpus_per_trial=2), gpu) == 4
    assert (
        sw.max_concurrent_trials(nodes((8, 4)), sw.SweepConfig(num_samples=16, gpus_per_trial=1), gpu) == 2
    )  # CPU-bound


def test_a_sweep_that_cannot_fit_one_trial_is_refused_before_submission():
    gpu = tiny_run(cpus_per_worker=4)
    with pytest.raises(ClusterError, match="cannot fit even one trial: --gpus-per-trial 4 needs 4 GPU") as e:
        sw.max_concurrent_trials(nodes((32, 2), (32, 0)), sw.SweepConfig(gpus_per_trial=4), gpu)
    assert "has 2 GPU(s)" in str(e.value) and "http://head:8265" in str(e.value)
    with pytest.raises(ClusterError, match="cannot fit even one trial: --gpus-per-trial 1"):
        sw.max_concurrent_trials(nodes((8, 0)), sw.SweepConfig(gpus_per_trial=1), gpu)
    with pytest.raises(ClusterError, match="--workers-per-trial 2 with --cpus-per-worker 8"):
        sw.max_concurrent_trials(
            nodes((8, 0)), sw.SweepConfig(workers_per_trial=2, num_samples=4), tiny_run(cpus_per_worker=8)
        )
    # an autoscaling cluster gets the sweep anyway (trials wait for nodes)
    assert (
        sw.max_concurrent_trials(nodes((8, 0), autoscale=True), sw.SweepConfig(gpus_per_trial=4, max_concurrent=2), gpu)
        == 2
    )


# ----------------------------------------------------------------------------------------------- the record


def test_ranking_ties_go_to_the_earlier_trial_and_the_leaderboard_prints():
    def row(i: int, metric: float | None, status: str = "completed") -> dict:
        return {
            "trial_id": f"abc_{i:05d}",
            "trial_index": i,
            "status": status,
            "iterations": 3,
            "metric": metric,
            "final_metric": metric,
            "hyperparameters": {"model.lr": 1e-4 * (i + 1)},
        }

    rows = [row(0, 0.7), row(1, 0.9), row(2, None, "error"), row(3, 0.9), row(4, 0.8, "early_stopped")]
    assert [r["trial_index"] for r in tr.rank_rows(rows, "max")] == [1, 3, 4, 0, 2]
    assert [r["trial_index"] for r in tr.rank_rows(rows, "min")] == [0, 4, 1, 3, 2]
    text = sw.format_leaderboard(tr.rank_rows(rows, "max"), "val_auroc")
    lines = text.splitlines()
    assert lines[0].split() == ["rank", "trial", "status", "epochs", "val_auroc", "final", "lr"]
    assert lines[1].split()[:2] == ["1", "abc_00001"] and "0.0002" in lines[1] and len(lines) == 6


def test_the_record_from_trials(tmp_path):
    """trials.parquet / best_config.json / bsm_result.json from Tune's trials and the runs' epoch records. A
    trial's best checkpoint is one that still exists (retention deletes the others), ties going to the earliest."""
    from types import SimpleNamespace

    spec = tr.SweepSpec(
        name="s",
        sweep_dir=str(tmp_path),
        monitor="val_auroc",
        mode="max",
        max_epochs=3,
        base=tiny_run("s").to_dict(),
        params=["model.lr"],
    )
    per_trial = {
        "t_00000": [0.6, 0.8],
        "t_00001": [0.7, 0.8, 0.75],
        "t_00002": [0.5],
        "t_00003": [0.55, 0.9],
        "t_00004": [0.4, 0.4, 0.4],
    }
    deleted = {("t_00004", 0)}  # retention kept t_00004's epochs 1 and 2 of three equal ones
    ckpt = tmp_path / "ckpt"
    for tid, values in per_trial.items():
        epochs = [
            {"epoch": i, "val_auroc": v, "checkpoint_path": str(ckpt / tid / str(i))} for i, v in enumerate(values)
        ]
        for i in range(len(values)):
            if (tid, i) not in deleted:
                (ckpt / tid / str(i)).mkdir(parents=True)
                (ckpt / tid / str(i) / "checkpoint.ckpt").write_bytes(b"x")
        (tmp_path / "runs" / tid).mkdir(parents=True)
        (tmp_path / "runs" / tid / EPOCHS_JSON).write_text(json.dumps(epochs))
    trials = [
        SimpleNamespace(trial_id=tid, status=st, config={"model.lr": lr}, error_file=None)
        for tid, st, lr in [
            ("t_00000", "TERMINATED", 1e-4),
            ("t_00001", "TERMINATED", 2e-4),
            ("t_00002", "ERROR", 3e-4),
            ("t_00003", "TERMINATED", 4e-4),
            ("t_00004", "TERMINATED", 5e-4),
        ]
    ]
    rows = tr.trial_rows(trials, spec, interrupted={"t_00003"})
    assert [r["status"] for r in rows] == ["early_stopped", "completed", "error", "interrupted", "completed"]
    assert (rows[4]["best_checkpoint"], rows[4]["best_epoch"]) == (str(ckpt / "t_00004" / "1"), 2)  # not the deleted 0
    summary = tr.write_record(rows, spec, finished=False)
    # t_00003 has the highest value but was interrupted mid-way: it still ranks (its checkpoint exists);
    # t_00000 and t_00001 tie at 0.8: the earlier trial ranks first.
    assert [r["trial_id"] for r in summary["leaderboard"]] == ["t_00003", "t_00000", "t_00001", "t_00002", "t_00004"]
    table = pq.read_table(tmp_path / "trials.parquet").to_pylist()
    assert [r["rank"] for r in table] == [2, 3, 4, 1, 5] and table[1]["metric_per_epoch"] == [0.7, 0.8, 0.75]
    assert (table[1]["best_epoch"], table[1]["final_metric"], table[1]["model.lr"]) == (2, 0.75, 2e-4)
    assert summary["best_checkpoint"] == str(ckpt / "t_00003" / "1") and summary["trials"]["interrupted"] == 1
    assert summary["tensorboard_logdir"] == str(tmp_path / "runs")
    assert json.loads((tmp_path / "best_config.json").read_text())["model"]["lr"] == 4e-4
    assert json.loads((tmp_path / "bsm_result.json").read_text()) == json.loads(json.dumps(summary))


# ----------------------------------------------------------------------------------------------- real sweeps


@pytest.fixture(scope="module")
def ray_local():
    """A Ray instance of this module's own: 2 CPUs, started here (`address="local"`: never another cluster)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _wait_for_free_cpus(n: float, timeout: float = 90) -> None:
    import ray

    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < n:
        assert time.monotonic() < deadline, f"CPUs never freed: {ray.available_resources()}"
        time.sleep(0.5)


@pytest.mark.slow
def test_asha_sweep_stops_weak_trials_and_records_the_best(ray_local, tmp_path, monkeypatch):
    """4 trials, 2 at a time: two sane learning rates, then two that diverge (lr 0.9: val_loss in the hundreds
    after one epoch). ASHA (reduction factor 2, rungs at epochs 1 and 2) must stop the diverging ones after
    their first epoch, whichever good trial reported first. The data are tokenized once, in the sweep's driver,
    and every trial's workers stream shards of those datasets."""
    prepared = []
    real_prepare = sr.prepare_ray
    monkeypatch.setattr(sr, "prepare_ray", lambda run: prepared.append(real_prepare(run)) or prepared[-1])
    storage = str(tmp_path / "runs")
    run = tiny_run("asha", max_epochs=3)
    space = {"lr": {"grid": [1e-3, 1e-3, 0.9, 0.9]}}
    t0 = time.monotonic()
    summary = sr.run_sweep(
        run, sw.SweepConfig(num_samples=1, metric="val_loss", mode="min", search_space=space), storage=storage
    )
    elapsed = time.monotonic() - t0
    print(f"4-trial ASHA sweep: {elapsed:.0f}s\n" + sw.format_leaderboard(summary["leaderboard"], "val_loss"))

    sweep_dir = Path(storage) / "asha"
    table = pq.read_table(sweep_dir / "trials.parquet")
    assert table.schema.metadata[b"metric"] == b"val_loss" and table.schema.metadata[b"mode"] == b"min"
    rows = table.to_pylist()
    assert len(rows) == 4 and len({r["trial_id"] for r in rows}) == 4
    assert {r["status"] for r in rows} <= {"completed", "early_stopped"}
    assert len(prepared) == 1  # one tokenization for the sweep
    for r in rows:  # every worker of every trial read its shard of those datasets, none tokenized its own
        workers = [
            json.loads(w.read_text()) for w in (sweep_dir / "runs" / r["trial_id"] / "bsm_workers").glob("rank-*.json")
        ]
        assert workers and all(w["data"] == "shard" for w in workers), r["trial_id"]
    by_lr = {}
    for r in rows:
        assert len(r["metric_per_epoch"]) == r["iterations"] >= 1
        by_lr.setdefault(r["model.lr"], []).append(r)
    assert all(r["status"] == "early_stopped" and r["iterations"] == 1 for r in by_lr[0.9])  # < max_t = 3
    assert any(r["status"] == "completed" and r["iterations"] == 3 for r in by_lr[1e-3])

    # The best trial: lowest val_loss over its epochs; ties go to the earlier trial.
    best = min((r for r in rows if r["metric"] is not None), key=lambda r: (r["metric"], r["trial_index"]))
    assert best["metric"] == min(v for v in best["metric_per_epoch"] if v is not None)
    assert summary["best_trial"]["trial_id"] == best["trial_id"] == summary["leaderboard"][0]["trial_id"]
    assert best["rank"] == 1 and best["model.lr"] == 1e-3
    assert Path(summary["best_checkpoint"], "checkpoint.ckpt").exists()
    assert summary["metrics"]["val_loss"] == pytest.approx(best["metric"])

    best_config = json.loads((sweep_dir / "best_config.json").read_text())
    assert best_config["model"]["lr"] == best["model.lr"] and best_config["train"]["monitor"] == "val_loss"
    assert RunConfig.from_dict(best_config).name == "asha-best"  # a recipe `bsm submit --config` takes

    result = json.loads((sweep_dir / "bsm_result.json").read_text())
    assert result["finished"] and result["error"] is None and result["trials"]["total"] == 4
    assert result["name"] == "asha" and result["run_dir"] == str(sweep_dir) and result["monitor"] == "val_loss"
    _wait_for_free_cpus(2)  # stopped trials left nothing reserved

    # The best trial was exported; `bsm fetch` verifies it; ONNX Runtime, TorchScript and PyTorch agree on
    # fresh inputs whose batch, chunk and token counts differ from the export's own examples.
    assert result["export"] == str(sweep_dir / "export")
    from raytune_bsm import api

    local = api.fetch(str(sweep_dir / "export"), str(tmp_path / "fetched"))
    _fresh_parity(local, Path(summary["best_checkpoint"], "checkpoint.ckpt"))


def _fresh_parity(export_dir: Path, checkpoint: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    from raytune_bsm.model.text_bert import load_checkpoint

    model = load_checkpoint(checkpoint)
    session = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(export_dir / "model.torchscript.pt"))
    g = torch.Generator().manual_seed(7)
    for B, C, T in [(5, 1, 9), (1, 6, 33), (3, 2, 64)]:
        ids = torch.randint(1000, 2000, (B, C, T), generator=g)
        mask = torch.ones_like(ids)
        mask[0, -1, T // 2 :] = 0  # a partly padded chunk
        if C > 1:
            mask[-1, 1:] = 0  # all-padding chunks
        ids = ids * mask
        with torch.no_grad():
            ref = model.logits(ids, mask).numpy()
            ts = scripted(ids, mask).numpy()
        onnx_out = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        assert np.abs(onnx_out - ref).max() <= 1e-4 and np.abs(ts - ref).max() <= 1e-4, (B, C, T)
        assert (onnx_out.argmax(1) == ref.argmax(1)).all() and (ts.argmax(1) == ref.argmax(1)).all()


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(ray_local, tmp_path):
    """The sweep runs as a job would (`python -m raytune_bsm.runner.tune bsm_job.json`, in a process this test starts) and is
    killed (SIGKILL, by pid) once one trial has finished and another is between its epochs (batch sizes make
    the first fast and the second slow). Resumed here, every trial ends up finished exactly once: finished
    trials are not trained again, the interrupted one continues from its checkpoint, the rest start."""
    from raytune_bsm.client.submission import build_submission

    storage = str(tmp_path / "runs")
    run = tiny_run("resumable", max_epochs=2)
    space = {"data.batch_size": {"grid": [32, 2, 16]}}
    sweep = sw.SweepConfig(num_samples=1, scheduler="fifo", metric="val_loss", mode="min", search_space=space)
    job = tmp_path / "bsm_job.json"
    job.write_text(json.dumps(build_submission(run, kind="tune", storage=storage, extra=sweep.to_dict()).config))
    sweep_dir = Path(storage) / "resumable"
    log = open(tmp_path / "job.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raytune_bsm.runner.tune", str(job)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RAY_ADDRESS": ray_local},
    )
    try:
        finished, partial, first_done = [], [], None
        deadline = time.monotonic() + 300
        while not finished or not (partial or time.monotonic() - first_done > 60):
            assert proc.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.3)
            epochs = {p.parent.name: len(json.loads(p.read_text())) for p in sweep_dir.glob("runs/*/bsm_epochs.json")}
            finished = [t for t, n in epochs.items() if n == 2]
            partial = [t for t, n in epochs.items() if n == 1]
            first_done = first_done or (time.monotonic() if finished else None)
    finally:
        proc.kill()
        proc.wait()
        log.close()
    before = {t: _trial_files(sweep_dir / "runs" / t) for t in finished}
    _wait_for_free_cpus(2)  # Ray ends the killed driver's trials
    # Interrupted between epochs: still one epoch on record once they have ended. Ray ends a killed driver's trial
    # controllers a moment after the driver, and a trial can finish its last epoch in that moment (the sweep then
    # reports it as finished before the interruption, and there is no checkpoint to resume from).
    partial = [t for t in partial if len(json.loads((sweep_dir / "runs" / t / "bsm_epochs.json").read_text())) == 1]

    summary = sr.run_sweep(RunConfig(name="resumable"), sw.SweepConfig(resume=True), storage=storage)

    print(f"killed with finished={finished} between-epochs={partial}")
    rows = pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    assert sorted(r["data.batch_size"] for r in rows) == [2, 16, 32] and len({r["trial_id"] for r in rows}) == 3
    assert all(r["status"] == "completed" and r["iterations"] == 2 for r in rows), rows
    assert summary["finished"] and summary["trials"] == {"total": 3, "completed": 3}
    for trial_id, files in before.items():  # finished before the kill: not trained again
        assert _trial_files(sweep_dir / "runs" / trial_id) == files, trial_id
    for r in rows:  # each trial's run reported each epoch once
        epochs = json.loads((sweep_dir / "runs" / r["trial_id"] / "bsm_epochs.json").read_text())
        assert [e["epoch"] for e in epochs] == [0, 1]
    for t in partial:  # interrupted between epochs: Train resumed it from its epoch-1 checkpoint
        assert list((sweep_dir / "runs" / t / "bsm_restarts").glob("*.json")), t
    with pytest.raises(ConfigError, match="already exists"):  # starting it afresh again is refused
        sr.run_sweep(run, sweep, storage=storage)


def _trial_files(run_dir: Path) -> dict[str, object]:
    """What retraining a trial would change: its epoch record and its rank-0 worker's record (pid, weights)."""
    return {
        "epochs_mtime": (run_dir / "bsm_epochs.json").stat().st_mtime_ns,
        "worker": (run_dir / "bsm_workers" / "rank-0.json").read_text(),
    }
