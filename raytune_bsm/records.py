"""The typed records between the two sides: what a job writes as its bsm_result.json (`RunResult` for a training
run, `SweepResult` for a sweep) and what `bsm status` reports of a job (`JobInfo`).

Each is written and shown through its `to_dict()`, whose keys and order are the JSON's: the dataclass drops
nothing and adds nothing. `from_dict` reads a record an older bsm wrote too (a missing key: its default; an
unknown key: ignored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

R = TypeVar("R", bound="_Record")


class _Record:
    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclass
class RunResult(_Record):
    """A training run's summary (runner/train.py `fit`), `<run>/bsm_result.json`."""

    name: str | None = None
    run_dir: str | None = None
    monitor: str | None = None  # the metric that ranks checkpoints
    metrics: dict[str, float] | None = None  # the last report's numbers
    best_checkpoint: str | None = None  # the best kept checkpoint's path, by `monitor`
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # each kept one: path, monitor, epoch
    latest_checkpoint: str | None = None
    epochs_trained: list[int] = field(default_factory=list)  # one per report, in order (a retried epoch twice)
    error: str | None = None  # repr of the error that ended the run
    restarts: list[dict[str, Any]] = field(default_factory=list)  # the worker failures it survived
    export: str | None = None  # the export directory
    tensorboard_logdir: str | None = None
    mlflow_run_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # per split: rows, skipped_empty, files
    timings: dict[str, float] = field(default_factory=dict)  # prepare_s, fit_s, first_step_s, export_s


@dataclass
class SweepResult(_Record):
    """A sweep's summary (runner/trials.py `write_record`, runner/tune.py adds the export), `<sweep>/bsm_result.json`:
    a run's shape plus the trials and their leaderboard."""

    kind: str = "tune"
    name: str | None = None
    run_dir: str | None = None
    monitor: str | None = None
    mode: str | None = None  # "max" | "min"
    metrics: dict[str, float] | None = None  # the best trial's
    best_checkpoint: str | None = None
    best_trial: dict[str, Any] | None = None  # trial_id, metric, best_epoch, hyperparameters, run_dir
    best_config: str | None = None  # best_config.json's path: the best trial's recipe
    trials_table: str | None = None  # trials.parquet's path
    tensorboard_logdir: str | None = None
    trials: dict[str, int] = field(default_factory=dict)  # "total" and a count per status
    leaderboard: list[dict[str, Any]] = field(default_factory=list)  # the best trials, best first
    finished: bool = False
    elapsed_s: float | None = None
    error: str | None = None
    restarts: list[dict[str, Any]] = field(default_factory=list)
    export: str | None = None  # absent from the JSON until the sweep's best trial is exported

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.export is None:
            del d["export"]
        return d


def result_from_dict(d: Any) -> RunResult | SweepResult | None:
    """A bsm_result.json's content as its record: a sweep's has a "leaderboard"; None for an empty or odd one."""
    if not d or not isinstance(d, dict):
        return None
    return SweepResult.from_dict(d) if "leaderboard" in d else RunResult.from_dict(d)


@dataclass
class JobInfo:
    """What `bsm status` reports of a job: the cluster's view (state, times, bsm's metadata), the job's result
    when its run directory can be read (else the metrics of its newest validation log line), and for a FAILED
    job why. `to_dict()` is `bsm status --json`."""

    job_id: str
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    message: str | None = None
    start_time: str | None = None  # ISO 8601, local time
    end_time: str | None = None
    run: str | None = None
    kind: str | None = None  # "train" | "tune" | ...
    run_dir: str | None = None
    error: str | None = None  # a FAILED job's reason; the key is absent otherwise
    metrics: dict[str, Any] | None = None  # from the log, when there is no result
    result: RunResult | SweepResult | None = None  # bsm_result.json, when the client can read it

    def to_dict(self) -> dict[str, Any]:
        keys = ("job_id", "status", "message", "start_time", "end_time", "run", "kind", "run_dir")
        d: dict[str, Any] = {k: getattr(self, k) for k in keys}
        if self.error is not None:
            d["error"] = self.error
        r = self.result
        if r is None:
            d["metrics"] = self.metrics
            return d
        d.update(metrics=r.metrics, best_checkpoint=r.best_checkpoint, restarts=len(r.restarts or []), export=r.export)
        if isinstance(r, SweepResult):
            d.update(leaderboard=r.leaderboard, monitor=r.monitor, trials=r.trials)
        return d
