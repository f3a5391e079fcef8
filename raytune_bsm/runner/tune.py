"""The cluster side of `bsm tune`: a Ray Tune sweep whose every trial is a Ray Train run (Train V2 API).

Pattern (Ray >= 2.43 with Train V2; `Tuner(trainer)` is deprecated): Tune runs a *function* trainable per trial
(`bsm_trial`, a light driver needing no CPU); it merges the trial's sampled hyperparameters into the run
config, builds that trial's own `TorchTrainer` with `ray_train.trainer_for` and calls `fit()`.
`TuneReportCallback` in the trainer's `RunConfig.callbacks` forwards every per-epoch `ray.train.report` (made by
`RayTrainReportCallback` in the worker loop) to Tune, so ASHA can stop weak trials after any epoch. How many
trials run at once is bounded by `max_concurrent_trials`, computed from the cluster's CPUs/GPUs and each trial's
workers, so no trial waits for resources that do not exist.

Layout under `<storage>/<sweep name>/`:

    tune/                    Tune's experiment (state, one directory per trial); `--resume` restores it
    runs/<trial id>/         each trial's Ray Train run: checkpoints (best k + latest), bsm_epochs.json
    trials.parquet           one row per trial: hyperparameters, metric per epoch, status (kept up to date)
    best_config.json         the best trial's resolved run config: a recipe for `bsm submit --config`
    bsm_result.json          summary for `bsm status` (same shape as a training run's, plus "leaderboard")
    bsm_sweep.json           the run config and sweep settings, for `bsm tune --resume NAME`
"""

from __future__ import annotations

import json
import logging
import sys
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from raytune_bsm.config import RunConfig, check_monitor_computed, dumps
from raytune_bsm.errors import ConfigError
from raytune_bsm.resources import ClusterResources, NodeResources
from raytune_bsm.storage import exists, join, read_bytes, storage_path, write_bytes, write_table

from raytune_bsm.sweep import (
    format_leaderboard,
    load_sweep_record,
    EPOCHS_FILE,
    LEADERBOARD_ROWS,
    PG_FILE,
    RELEASE_AFTER_S,
    SweepConfig,
    TRIAL_RESOURCES,
    _plain,
    apply_params,
    check_search_space,
    max_concurrent_trials,
    param_space,
    resolve_space,
)

log = logging.getLogger("raytune_bsm")

# ----------------------------------------------------------------------------------------------- trials


def _trainer(run: RunConfig, monitor: str, *, storage: str, callbacks: list[Any]) -> Any:
    """`ray_train.trainer_for` with Train callbacks (TuneReportCallback) in its RunConfig."""
    from raytune_bsm.runner import train as ray_train

    return ray_train.trainer_for(run, monitor, storage=storage, callbacks=callbacks)


def read_epochs(run_dir: str) -> list[dict[str, Any]]:
    """A trial run's per-epoch reports (rank 0's metrics + checkpoint_path), in epoch order."""
    path = join(run_dir, EPOCHS_FILE)
    try:
        return json.loads(read_bytes(path)) if exists(path) else []
    except (OSError, ValueError):
        return []


def _epoch_reporter(run_dir: str) -> Any:
    """TuneReportCallback that first appends each report to `<run dir>/bsm_epochs.json` (runs in the Train
    controller). Written before Tune sees the result, so a trial Tune stops right after still has its record."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReporter(TuneReportCallback):
        def __init__(self, run_dir: str) -> None:
            super().__init__()
            self.run_dir = run_dir

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            row = {k: _plain(v) for k, v in (metrics[0] if metrics else {}).items() if isinstance(_plain(v), (int, float, str))}
            if checkpoint is not None:
                row["checkpoint_path"] = checkpoint.path
            if "epoch" in row:
                by_epoch = {int(r["epoch"]): r for r in read_epochs(self.run_dir)}
                by_epoch[int(row["epoch"])] = row
                write_bytes(json.dumps([by_epoch[e] for e in sorted(by_epoch)], default=str).encode(),
                            join(self.run_dir, EPOCHS_FILE))  # fmt: skip
            super().after_report(run_context, metrics, checkpoint)

    return EpochReporter(run_dir)


def _placement_group_log(run_dir: str) -> Any | None:
    """A Train worker-group callback that records each placement group the trial's controller creates in
    `<run dir>/bsm_placement_groups.json`, so the sweep's driver can release it (see `release_placement_groups`).
    None if this Ray's Train internals differ (the sweep then relies on Ray's own cleaner alone)."""
    try:
        from ray.train.v2._internal.execution.callback import WorkerGroupCallback
    except ImportError:  # pragma: no cover - other Ray versions
        return None

    class PlacementGroupLog(WorkerGroupCallback):
        def __init__(self, run_dir: str) -> None:
            self.run_dir = run_dir

        def after_worker_group_start(self, worker_group: Any) -> None:
            try:
                pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
                path = join(self.run_dir, PG_FILE)
                ids = json.loads(read_bytes(path)) if exists(path) else []
                write_bytes(json.dumps(ids + [pg.id.hex()]).encode(), path)
            except Exception:  # noqa: BLE001 - bookkeeping must never fail a training run
                log.debug("could not record the placement group", exc_info=True)

    return PlacementGroupLog(run_dir)


def release_placement_groups(run_dir: str) -> int:
    """Remove placement groups a stopped trial's Train run left behind; returns how many.

    Tune stops a trial (ASHA) by ending its actor, so the trial's Train controller dies without removing its
    workers' placement group, which lives as long as the job. Ray 2.60 leaves that to a detached
    PlacementGroupCleaner that finds the cluster through the State API and auto-detection; on a machine with
    more than one Ray instance (or no dashboard) it fails, and every stopped trial would keep its CPUs/GPUs
    reserved until the sweep starves. Only call this once the trial's controller is gone."""
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    path = join(run_dir, PG_FILE)
    if not exists(path):
        return 0
    removed = 0
    for pg_hex in json.loads(read_bytes(path)):
        pg = PlacementGroup(PlacementGroupID.from_hex(pg_hex))
        try:
            if ray.util.placement_group_table(pg).get("state") not in ("REMOVED", None):
                ray.util.remove_placement_group(pg)
                removed += 1
        except Exception:  # noqa: BLE001 - already gone, or the GCS does not know it
            log.debug("could not remove placement group %s", pg_hex, exc_info=True)
    return removed


def bsm_trial(config: dict[str, Any], spec: dict[str, Any] | None = None) -> None:
    """One Tune trial: this trial's run config -> its own TorchTrainer -> fit (Tune sees every epoch)."""
    from ray import tune

    from raytune_bsm.logs import setup_logging

    setup_logging()
    assert spec is not None
    trial_id = tune.get_context().get_trial_id()
    runs_dir = spec["runs_dir"]
    run_dir = join(runs_dir, trial_id)
    done = read_epochs(run_dir)
    if len(done) >= spec["max_epochs"]:
        # Trained to the end before the sweep was interrupted (Tune's state predates it): report, don't retrain.
        log.info("trial %s finished before the interruption; reporting its %d epochs again", trial_id, len(done))
        for row in done:
            tune.report({k: v for k, v in row.items() if isinstance(v, (int, float))} | {"checkpoint_path": row.get("checkpoint_path")})
        return
    d = apply_params(spec["base"], config)
    d["name"] = trial_id  # the Train run's name: stable across restarts, so Train resumes its own checkpoints
    run = RunConfig.from_dict(d)
    log.info("trial %s: %s", trial_id, json.dumps({k: _plain(v) for k, v in config.items()}, default=str))
    callbacks = [_epoch_reporter(run_dir), _placement_group_log(run_dir)]
    _trainer(run, spec["monitor"], storage=runs_dir, callbacks=[c for c in callbacks if c is not None]).fit()


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


# ----------------------------------------------------------------------------------------------- the record


@dataclass
class _Spec:
    """What the recorder needs to turn Tune's trials into the sweep's record."""

    name: str
    sweep_dir: str
    monitor: str
    mode: str
    max_epochs: int
    base: dict[str, Any]
    params: list[str]


def trial_rows(trials: list[Any], spec: _Spec, cache: dict[str, list[dict[str, Any]]] | None = None,
               interrupted: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:  # fmt: skip
    """One row per Tune trial, in trial order. `interrupted`: trials the sweep's interruption stopped."""
    cache = {} if cache is None else cache
    rows = []
    for index, t in enumerate(trials):
        tid = t.trial_id
        epochs = cache.get(tid)
        if epochs is None:
            epochs = read_epochs(join(spec.sweep_dir, "runs", tid))
            if t.status in ("TERMINATED", "ERROR") and tid not in interrupted:
                cache[tid] = epochs
        values = [e.get(spec.monitor) for e in epochs]
        scored = [(v, i) for i, v in enumerate(values) if isinstance(v, (int, float)) and not math.isnan(v)]
        best_i = None
        if scored:
            best_v = max(v for v, _ in scored) if spec.mode == "max" else min(v for v, _ in scored)
            best_i = next(i for v, i in scored if v == best_v)  # the earliest epoch among equals
        status = {"ERROR": "error", "RUNNING": "running", "PENDING": "pending", "PAUSED": "paused"}.get(t.status)
        if tid in interrupted:
            status = "interrupted" if epochs else "pending"
        elif status is None:  # TERMINATED: trained to the end, or stopped early (ASHA, --time-budget)
            status = "completed" if len(epochs) >= spec.max_epochs else "early_stopped"
        hp = {k: _plain(t.config.get(k)) for k in spec.params if k in t.config}
        rows.append({
            "trial_id": tid,
            "trial_index": _trial_index(tid, index),
            "status": status,
            "iterations": len(epochs),
            "metric": values[best_i] if best_i is not None else None,
            "best_epoch": best_i + 1 if best_i is not None else None,
            "final_metric": values[-1] if values and isinstance(values[-1], (int, float)) else None,
            "metric_per_epoch": [float(v) if isinstance(v, (int, float)) else None for v in values],
            "best_checkpoint": epochs[best_i].get("checkpoint_path") if best_i is not None else None,
            "metrics": {k: v for k, v in epochs[best_i].items() if isinstance(v, (int, float))} if best_i is not None else {},
            "hyperparameters": hp,
            "run_dir": join(spec.sweep_dir, "runs", tid),
            "error": _error_text(t) if t.status == "ERROR" else None,
        })  # fmt: skip
    return rows


def _trial_index(trial_id: str, fallback: int) -> int:
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else fallback


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        if path and exists(path):
            lines = [ln for ln in read_bytes(path).decode(errors="replace").strip().splitlines() if ln.strip()]
            return lines[-1][:500] if lines else "failed"
    except Exception:  # noqa: BLE001 - the record must be written whatever the error file looks like
        pass
    return "failed"


def rank_rows(rows: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Best first by the metric (each trial's best epoch); ties go to the earlier trial; no metric last."""
    def key(r: dict[str, Any]) -> tuple:
        m = r.get("metric")
        if m is None or (isinstance(m, float) and math.isnan(m)):
            return (1, 0.0, r["trial_index"])
        return (0, -m if mode == "max" else m, r["trial_index"])

    return sorted(rows, key=key)



def write_record(rows: list[dict[str, Any]], spec: _Spec, *, finished: bool, started: float | None = None) -> dict[str, Any]:
    """trials.parquet, best_config.json and bsm_result.json, each written atomically. Returns the summary."""
    import pyarrow as pa

    ranked = rank_rows(rows, spec.mode)
    best = ranked[0] if ranked and ranked[0].get("metric") is not None else None
    columns: dict[str, Any] = {
        "trial_id": pa.array([r["trial_id"] for r in rows], pa.string()),
        "trial_index": pa.array([r["trial_index"] for r in rows], pa.int64()),
        "status": pa.array([r["status"] for r in rows], pa.string()),
        "iterations": pa.array([r["iterations"] for r in rows], pa.int64()),
        "metric": pa.array([r["metric"] for r in rows], pa.float64()),
        "best_epoch": pa.array([r["best_epoch"] for r in rows], pa.int64()),
        "final_metric": pa.array([r["final_metric"] for r in rows], pa.float64()),
        "metric_per_epoch": pa.array([r["metric_per_epoch"] for r in rows], pa.list_(pa.float64())),
        "rank": pa.array([ranked.index(r) + 1 for r in rows], pa.int64()),
    }
    for p in spec.params:
        values = [(r["hyperparameters"] or {}).get(p) for r in rows]
        try:
            columns[p] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[p] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    columns["hyperparameters"] = pa.array([json.dumps(r["hyperparameters"], sort_keys=True) for r in rows], pa.string())
    for k in ("best_checkpoint", "run_dir", "error"):
        columns[k] = pa.array([r[k] for r in rows], pa.string())
    meta = {"metric": spec.monitor, "mode": spec.mode, "max_epochs": str(spec.max_epochs)}
    write_table(pa.table(columns).replace_schema_metadata(meta), join(spec.sweep_dir, "trials.parquet"))

    if best is not None:
        recipe = apply_params(spec.base, best["hyperparameters"])
        recipe["name"] = f"{spec.name}-best"
        write_bytes(dumps(recipe).encode(), join(spec.sweep_dir, "best_config.json"))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    board = [{k: r[k] for k in ("trial_id", "trial_index", "status", "iterations", "metric", "best_epoch",
                                 "final_metric", "metric_per_epoch", "hyperparameters", "best_checkpoint")}
             for r in ranked[:LEADERBOARD_ROWS]]  # fmt: skip
    usable = [r for r in rows if r["metric"] is not None]
    summary = {
        "kind": "tune",
        "name": spec.name,
        "run_dir": spec.sweep_dir,
        "monitor": spec.monitor,
        "mode": spec.mode,
        "metrics": best["metrics"] if best else {},
        "best_checkpoint": best["best_checkpoint"] if best else None,
        "best_trial": {k: best[k] for k in ("trial_id", "metric", "best_epoch", "hyperparameters", "run_dir")} if best else None,
        "best_config": join(spec.sweep_dir, "best_config.json") if best else None,
        "trials_table": join(spec.sweep_dir, "trials.parquet"),
        "trials": {"total": len(rows), **counts},
        "leaderboard": board,
        "finished": finished,
        "elapsed_s": round(time.time() - started, 1) if started else None,
        "error": None if (usable or not finished) else f"no trial produced {spec.monitor} ({counts})",
        "restarts": [],
    }
    write_bytes(dumps(summary).encode(), join(spec.sweep_dir, "bsm_result.json"))
    return summary


def saved_trial_statuses(tune_dir: str) -> dict[str, str]:
    """Trial id -> status in Tune's newest saved experiment state (what `--resume` starts from); {} if none."""
    import pyarrow.fs as pafs

    from raytune_bsm.storage import filesystem

    try:
        fs, path = filesystem(tune_dir)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        states = sorted(i.base_name for i in infos if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json"))
        if not states:
            return {}
        d = json.loads(read_bytes(join(tune_dir, states[-1])))
        return {t["trial_id"]: t["status"] for t in (json.loads(s) for s, _ in d["trial_data"])}
    except Exception:  # noqa: BLE001 - an unreadable state only loses the "interrupted" label
        log.debug("could not read Tune's experiment state in %s", tune_dir, exc_info=True)
        return {}


def _recorder(spec: _Spec) -> Any:
    """A Tune callback (runs in the sweep's driver) that rewrites the record as trials start and end."""
    from ray import tune

    class Recorder(tune.Callback):
        def __init__(self, spec: _Spec) -> None:
            self.spec = spec
            self.started = time.time()
            self._cache: dict[str, list[dict[str, Any]]] = {}
            self._ended: dict[str, float] = {}  # trial id -> when the recorder first saw it stopped
            self._released: set[str] = set()
            self._last_release = 0.0

        def _write(self, trials: list[Any], finished: bool = False, interrupted: set[str] | None = None) -> None:
            try:
                rows = trial_rows(trials, self.spec, self._cache, interrupted or set())
                write_record(rows, self.spec, finished=finished, started=self.started)
            except Exception:  # noqa: BLE001 - a failed write must not end the sweep; the next event retries
                log.exception("could not update the sweep's record in %s", self.spec.sweep_dir)

        def _release(self, trials: list[Any], grace: float) -> None:
            now = time.monotonic()
            for t in trials:
                if t.status not in ("TERMINATED", "ERROR") or t.trial_id in self._released:
                    continue
                ended = self._ended.setdefault(t.trial_id, now)
                if now - ended < grace:
                    continue
                self._released.add(t.trial_id)
                try:
                    n = release_placement_groups(join(self.spec.sweep_dir, "runs", t.trial_id))
                except Exception:  # noqa: BLE001
                    log.debug("could not release trial %s's placement groups", t.trial_id, exc_info=True)
                    continue
                if n:
                    log.info("released %d placement group(s) left by stopped trial %s", n, t.trial_id)

        def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
            if time.monotonic() - self._last_release > 2.0:
                self._last_release = time.monotonic()
                self._release(trials, RELEASE_AFTER_S)

        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._write(trials)

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._write(trials)

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._write(trials)

        def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
            # Tune saved its state just before this; trials it still had running there were stopped by an
            # interruption (SIGINT / `bsm stop`), not by the scheduler, and `--resume` continues them.
            saved = saved_trial_statuses(join(self.spec.sweep_dir, "tune"))
            interrupted = {tid for tid, st in saved.items() if st not in ("TERMINATED", "ERROR")}
            finished = not interrupted and all(t.status in ("TERMINATED", "ERROR") for t in trials)
            self._write(trials, finished=finished, interrupted=interrupted)
            # Every trial actor is gone by now; give their controllers a moment to follow.
            pending = [t for t in trials if t.status in ("TERMINATED", "ERROR") and t.trial_id not in self._released]
            if pending:
                wait = max(0.0, 3.0 - (time.monotonic() - max(self._ended.get(t.trial_id, 0.0) for t in pending)))
                time.sleep(min(wait, 3.0))
                self._release(trials, 0.0)

        def __getstate__(self) -> dict[str, Any]:  # pickled into Tune's experiment state: settings only
            return {"spec": self.spec, "started": self.started}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__init__(state["spec"])
            self.started = state["started"]

    return Recorder(spec)


# ----------------------------------------------------------------------------------------------- the sweep


def _num_classes(run: RunConfig) -> int:
    """The class count, from the model config or the training labels (read only, nothing tokenized)."""
    from raytune_bsm.data.dataset import load_split
    from raytune_bsm.runner.worker import data_paths

    n = run.model.get("num_classes")
    if n:
        return int(n)
    _, labels = load_split(data_paths(run)["train"], run.data, None, None)
    return len(labels.names)



def run_sweep(run: RunConfig, sweep: SweepConfig, *, storage: str) -> dict[str, Any]:
    """Run (or with sweep.resume, continue) the sweep named run.name on the connected cluster; return the
    summary also written to `<storage>/<name>/bsm_result.json`."""
    import ray
    from ray import tune

    from raytune_bsm.logs import setup_logging

    setup_logging()
    storage = storage_path(storage)
    sweep_dir = join(storage, run.name)
    tune_dir = join(sweep_dir, "tune")
    record = join(sweep_dir, "bsm_sweep.json")
    if sweep.resume:
        if not exists(record) or not tune.Tuner.can_restore(tune_dir):
            raise ConfigError(f"--resume {run.name}: no sweep to resume in {sweep_dir}")
        saved = json.loads(read_bytes(record))
        run = RunConfig.from_dict(saved["run"])  # the sweep continues as it was started
        sweep = replace(SweepConfig.from_dict(saved["tune"]), resume=True)
    elif exists(join(tune_dir, "tuner.pkl")) or exists(record):
        raise ConfigError(f"a sweep named {run.name} already exists in {sweep_dir}; continue it with --resume "
                          f"{run.name} or choose another --name")  # fmt: skip

    space = resolve_space(run, sweep)
    sweep = replace(sweep, search_space=space)
    trial_run = sweep.apply(run)
    if trial_run.train.monitor is None:  # the default metric depends on the class count
        trial_run = sweep.apply(run, num_classes=_num_classes(run))
    check_search_space(trial_run, space)
    monitor, mode = trial_run.train.monitor, trial_run.train.mode
    check_monitor_computed(monitor, trial_run.model_config()["metric_choices"])

    if not ray.is_initialized():
        ray.init()
    concurrent = max_concurrent_trials(resources_from_ray(), sweep, trial_run)
    base = trial_run.to_dict()
    spec = _Spec(name=run.name, sweep_dir=sweep_dir, monitor=monitor, mode=mode,
                 max_epochs=trial_run.train.max_epochs, base=base, params=sorted(space))  # fmt: skip
    if not sweep.resume:
        write_bytes(dumps({"run": run.to_dict(), "tune": sweep.to_dict(), "storage": storage}).encode(), record)
    log.info("sweep %s: %d trial(s), %d at once, %s on %s (%s), %d worker(s) per trial; storage %s",
             run.name, sweep.total_trials(), concurrent, sweep.scheduler, monitor, mode,
             sweep.trial_workers(run), sweep_dir)  # fmt: skip

    # Experiment state is saved at most this often; the trials' own epoch records cover the gap on --resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    trainable = tune.with_resources(
        tune.with_parameters(bsm_trial, spec={"base": base, "runs_dir": join(sweep_dir, "runs"),
                                              "monitor": monitor, "max_epochs": trial_run.train.max_epochs}),
        TRIAL_RESOURCES,
    )  # fmt: skip
    if sweep.resume:
        log.info("resuming sweep %s from %s", run.name, tune_dir)
        tuner = tune.Tuner.restore(tune_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
        from ray.tune.search import BasicVariantGenerator

        scheduler = (
            ASHAScheduler(time_attr="training_iteration", max_t=trial_run.train.max_epochs,
                          grace_period=min(sweep.grace_period, trial_run.train.max_epochs),
                          reduction_factor=sweep.reduction_factor,
                          # A trial reaching max_t ends by itself: its Train run finishes (test set,
                          # predictions) and shuts down cleanly instead of being stopped mid-way.
                          stop_last_trials=False)  # fmt: skip
            if sweep.scheduler == "asha"
            else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(space),
            tune_config=tune.TuneConfig(
                metric=monitor,
                mode=mode,
                scheduler=scheduler,
                # What TuneConfig(max_concurrent_trials=N) builds, plus a seed: the same sweep samples the
                # same trials. (Tune ignores max_concurrent_trials next to a generator, so it is set here.)
                search_alg=BasicVariantGenerator(max_concurrent=concurrent, random_state=trial_run.train.seed),
                num_samples=sweep.num_samples,
                time_budget_s=sweep.time_budget_s,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=sweep_dir,
                callbacks=[_recorder(spec)],
                failure_config=tune.FailureConfig(max_failures=0),  # Train already retries worker failures
                verbose=1,
            ),
        )
    tuner.fit()
    summary = json.loads(read_bytes(join(sweep_dir, "bsm_result.json")))
    if summary.get("best_checkpoint") and run.train.export:
        summary["export"] = export_best_trial(summary, sweep_dir)
        write_bytes(dumps(summary).encode(), join(sweep_dir, "bsm_result.json"))
    log.info("sweep %s: %s\n%s", run.name, json.dumps(summary["trials"]),
             format_leaderboard(summary["leaderboard"], monitor))  # fmt: skip
    log.info("best: %s (%s %s); config %s", summary["best_checkpoint"], monitor,
             (summary.get("best_trial") or {}).get("metric"), summary.get("best_config"))  # fmt: skip
    return summary


def export_best_trial(summary: dict[str, Any], sweep_dir: str) -> str:
    """Export the best trial's best checkpoint to `<sweep>/export`, parity-checked on real validation batches
    processed with that trial's own settings."""
    from ray.train import Checkpoint

    from raytune_bsm.runner.train import validation_batches
    from raytune_bsm.runner.worker import prepare

    from raytune_bsm.model.export import export_checkpoint

    best_run = RunConfig.from_dict(json.loads(read_bytes(join(sweep_dir, "best_config.json"))))
    prep = prepare(best_run)
    dest = join(sweep_dir, "export")
    log.info("exporting the best trial's checkpoint %s to %s", summary["best_checkpoint"], dest)
    manifest = export_checkpoint(
        Checkpoint(summary["best_checkpoint"]).to_directory(), dest, val_batches=validation_batches(prep),
        metrics=summary.get("metrics"),
        hyperparameters={**prep.model_config, **(summary.get("best_trial") or {}).get("hyperparameters", {})},
    )  # fmt: skip
    log.info("export parity: %s", json.dumps(manifest.get("parity"), default=str))
    return dest



def resources_from_ray() -> Any:
    """The connected cluster's alive nodes as a ClusterResources (the cluster-side fallback for max_concurrent)."""
    import ray

    nodes = [NodeResources(str(n.get("NodeManagerAddress", "?")), float(n["Resources"].get("CPU", 0)),
                           float(n["Resources"].get("GPU", 0))) for n in ray.nodes() if n.get("Alive")]  # fmt: skip
    return ClusterResources(total_cpus=sum(n.cpus for n in nodes), total_gpus=sum(n.gpus for n in nodes),
                            nodes=nodes, can_autoscale=False, dashboard_url="this cluster")  # fmt: skip


def main(config_file: str) -> int:
    """`python -m raytune_bsm.runner.tune bsm_job.json`: run the sweep the job carries (bsm_job.json: the run config, "tune" and "storage")."""
    import signal

    import ray

    d = json.loads(Path(config_file).read_text())
    storage = d.pop("storage")
    sweep = SweepConfig.from_dict(d.pop("tune", None))
    run = RunConfig.from_dict(d)
    ray.init()  # the job's cluster (RAY_ADDRESS); before the handler below, as ray.init sets its own
    if hasattr(signal, "SIGUSR1"):  # `bsm stop` sends SIGTERM: let Tune save its state (it listens on SIGUSR1)
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGUSR1))
    summary = run_sweep(run, sweep, storage=storage)
    return 0 if summary.get("finished") and summary.get("best_trial") and not summary.get("error") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
