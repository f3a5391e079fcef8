"""The typed records between the two sides (raytune_bsm/records.py): bsm_result.json and `bsm status --json`
keep their exact keys and order through the dataclasses."""

from __future__ import annotations

import dataclasses
import json

from raytune_bsm.records import JobInfo, RunResult, SweepResult, result_from_dict

RUN = {
    "name": "r",
    "run_dir": "/s/r",
    "monitor": "val_auroc",
    "metrics": {"val_auroc": 0.9, "epoch": 1},
    "best_checkpoint": "/s/r/checkpoint_000001",
    "checkpoints": [{"path": "/s/r/checkpoint_000001", "val_auroc": 0.9, "epoch": 1}],
    "latest_checkpoint": "/s/r/checkpoint_000001",
    "epochs_trained": [0, 1],
    "error": None,
    "restarts": [{"time": 1.0}],
    "export": "/s/r/export",
    "tensorboard_logdir": "/s/r/tensorboard",
    "mlflow_run_id": None,
    "data": {"train": {"rows": 10}},
    "timings": {"prepare_s": 1.0},
}
SWEEP = {
    "kind": "tune",
    "name": "sw",
    "run_dir": "/s/sw",
    "monitor": "val_auroc",
    "mode": "max",
    "metrics": {},
    "best_checkpoint": None,
    "best_trial": None,
    "best_config": None,
    "trials_table": "/s/sw/trials.parquet",
    "tensorboard_logdir": "/s/sw/runs",
    "trials": {"total": 2, "ERROR": 2},
    "leaderboard": [],
    "finished": True,
    "elapsed_s": 3.5,
    "error": "no trial produced val_auroc",
    "restarts": [],
}


def test_a_run_and_a_sweep_result_read_back_to_the_same_json():
    run, sweep = result_from_dict(RUN), result_from_dict(SWEEP)
    assert isinstance(run, RunResult) and isinstance(sweep, SweepResult)
    assert json.dumps(run.to_dict()) == json.dumps(RUN)  # same keys, same order
    assert json.dumps(sweep.to_dict()) == json.dumps(SWEEP)  # "export" stays absent until the sweep exports
    exported = dataclasses.replace(sweep, export="/s/sw/export")
    assert list(exported.to_dict()) == [*SWEEP, "export"]
    assert result_from_dict({}) is None and result_from_dict([1]) is None
    assert RunResult.from_dict({"name": "old", "unknown": 1}).to_dict()["checkpoints"] == []  # an older record


BASE = ["job_id", "status", "message", "start_time", "end_time", "run", "kind", "run_dir"]


def test_job_info_keys_are_those_bsm_status_json_always_had():
    running = JobInfo("bsm-r", "RUNNING", metrics={"val_auroc": 0.5})
    assert list(running.to_dict()) == [*BASE, "metrics"]  # no result yet: the log's metrics, no "error"
    failed = JobInfo("bsm-r", "FAILED", error="boom", result=result_from_dict(RUN))
    d = failed.to_dict()
    assert list(d) == [*BASE, "error", "metrics", "best_checkpoint", "restarts", "export"]
    assert d["restarts"] == 1 and d["metrics"] == RUN["metrics"] and d["export"] == "/s/r/export"
    swept = JobInfo("bsm-sw", "SUCCEEDED", result=result_from_dict(SWEEP)).to_dict()
    assert list(swept)[-7:] == ["metrics", "best_checkpoint", "restarts", "export", "leaderboard", "monitor", "trials"]
    assert swept["export"] is None and swept["trials"] == {"total": 2, "ERROR": 2}
