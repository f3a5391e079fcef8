"""The cluster side of `bsm tune`: a Ray Tune sweep whose every trial is a Ray Train run (Train V2 API).

Pattern (Ray >= 2.43 with Train V2; `Tuner(trainer)` is deprecated): Tune runs a *function* trainable per trial
(`bsm_trial`, a light driver needing no CPU); it merges the trial's sampled hyperparameters into the run
config, builds that trial's own `TorchTrainer` with `train.trainer_for` and calls `fit()`.
`TuneReportCallback` in the trainer's `RunConfig.callbacks` forwards every per-epoch `ray.train.report` (made by
`RayTrainReportCallback` in the worker loop) to Tune, so ASHA can stop weak trials after any epoch. How many
trials run at once is bounded by `max_concurrent_trials`, computed from the cluster's CPUs/GPUs and each trial's
workers, so no trial waits for resources that do not exist.

Layout under `<storage>/<sweep name>/`:

    tune/                    Tune's experiment (state, one directory per trial); `--resume` restores it
    runs/<trial id>/         each trial's Ray Train run: checkpoints (best k + latest), bsm_epochs.json, tensorboard/
    trials.parquet           one row per trial: hyperparameters, metric per epoch, status (kept up to date)
    best_config.json         the best trial's resolved run config: a recipe for `bsm submit --config`
    bsm_result.json          summary for `bsm status` (same shape as a training run's, plus "leaderboard")
    bsm_sweep.json           the run config and sweep settings, for `bsm tune --resume NAME`
    export/                  the best trial's best kept checkpoint, exported by a Ray task (`export_task`)

The record (trials.parquet, ...) is `trials.py`; the Train callbacks every trial's run uses are `callbacks.py`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from raytune_bsm.config import RunConfig, check_monitor_computed, dumps
from raytune_bsm.data import features as side
from raytune_bsm.data.splits import load_split
from raytune_bsm.errors import BsmError, ConfigError
from raytune_bsm.layout import TUNE_DIR, RunDir
from raytune_bsm.logs import quiet_libraries, setup_logging, verbose
from raytune_bsm.records import SweepResult
from raytune_bsm.resources import ClusterResources, NodeResources
from raytune_bsm.runner.callbacks import placement_group_log, read_epochs
from raytune_bsm.runner.export_task import export_best
from raytune_bsm.runner.prepare import RayPrepared, data_paths, model_config_for, prepare_ray
from raytune_bsm.runner.train import connect, trainer_for
from raytune_bsm.runner.trials import Recorder, SweepSpec
from raytune_bsm.storage import exists, join, read_bytes, storage_path, write_bytes
from raytune_bsm.sweep import (
    TRIAL_RESOURCES,
    SweepConfig,
    apply_params,
    check_search_space,
    format_leaderboard,
    max_concurrent_trials,
    param_space,
    plain_value,
    resolve_space,
)

log = logging.getLogger("raytune_bsm")

PROCESSOR_KEYS = {
    "tokenizer",
    "max_tokens",
    "max_chunks",
    "keep_chunks",
    "pack_from",
}  # a trial with its own: its own tokens


def bsm_trial(config: dict[str, Any], spec: dict[str, Any] | None = None) -> None:
    """One Tune trial: this trial's run config -> its own TorchTrainer -> fit (Tune sees every epoch)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    setup_logging()
    quiet_libraries()
    assert spec is not None
    trial_id = tune.get_context().get_trial_id()
    runs_dir = spec["runs_dir"]
    run_dir = RunDir(runs_dir, trial_id).path
    done = read_epochs(run_dir)
    if len(done) >= spec["max_epochs"]:
        # Trained to the end before the sweep was interrupted (Tune's state predates it): report, don't retrain.
        log.info("trial %s finished before the interruption; reporting its %d epochs again", trial_id, len(done))
        for row in done:
            tune.report(
                {k: v for k, v in row.items() if isinstance(v, (int, float))}
                | {"checkpoint_path": row.get("checkpoint_path")}
            )
        return
    d = apply_params(spec["base"], config)
    d["name"] = trial_id  # the Train run's name: stable across restarts, so Train resumes its own checkpoints
    run = RunConfig.from_dict(d)
    log.info("trial %s: %s", trial_id, json.dumps({k: plain_value(v) for k, v in config.items()}, default=str))
    # trainer_for puts the epoch record first; TuneReportCallback then forwards each report to Tune (ASHA)
    callbacks = [TuneReportCallback(), placement_group_log(run_dir)]
    trainer_for(
        run,
        spec["monitor"],
        storage=runs_dir,
        callbacks=[c for c in callbacks if c is not None],
        data=_for_trial(spec.get("data"), run),
    ).fit()


def _for_trial(data: RayPrepared | None, run: RunConfig) -> RayPrepared | None:
    """The sweep's prepared datasets with this trial's model config (its lr, warmup, reinit_layers...)."""
    if data is None:
        return None
    prepared = data.model_config  # the side features and their statistics, from the shared preparation
    model_config = model_config_for(
        run, data.labels.names, prepared.get("feature_fields"), prepared.get("feature_stats")
    )
    return replace(data, model_config=model_config)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


# ----------------------------------------------------------------------------------------------- the sweep


def _num_classes(run: RunConfig) -> int:
    """The class count, from the model config or the training labels (read only, nothing tokenized)."""
    n = run.model.get("num_classes")
    if n:
        return int(n)
    _, labels = load_split(data_paths(run)["train"], run.data, None, None)
    return len(labels.names)


def run_sweep(run: RunConfig, sweep: SweepConfig, *, storage: str) -> dict[str, Any]:
    """Run (or with sweep.resume, continue) the sweep named run.name on the connected cluster; return the
    summary also written to `<storage>/<name>/bsm_result.json`."""
    from ray import tune

    setup_logging()
    quiet_libraries()
    where = RunDir(storage_path(storage), run.name)
    run, sweep = _started_as(run, sweep, where)
    space = resolve_space(run, sweep)
    sweep = replace(sweep, search_space=space)
    check_search_space(sweep.apply(run), space)
    connect()
    data = _shared_data(run, space)
    trial_run = sweep.apply(run)
    if trial_run.train.monitor is None:  # the default metric depends on the class count
        trial_run = sweep.apply(run, num_classes=len(data.labels.names) if data else _num_classes(run))
    check_search_space(trial_run, space)
    monitor = trial_run.train.monitor
    check_monitor_computed(monitor, trial_run.model_config()["metric_choices"])

    concurrent = max_concurrent_trials(resources_from_ray(), sweep, trial_run)
    base = trial_run.to_dict()
    spec = SweepSpec(
        name=run.name,
        sweep_dir=where.path,
        monitor=monitor,
        mode=trial_run.train.mode,
        max_epochs=trial_run.train.max_epochs,
        base=base,
        params=sorted(space),
    )
    if not sweep.resume:
        write_bytes(
            dumps({"run": run.to_dict(), "tune": sweep.to_dict(), "storage": where.storage}).encode(), where.sweep
        )
    log.info(
        "sweep %s: %d trial(s), %d at once, %s on %s (%s), %d worker(s) per trial; storage %s",
        run.name,
        sweep.total_trials(),
        concurrent,
        sweep.scheduler,
        monitor,
        spec.mode,
        sweep.trial_workers(run),
        where.path,
    )

    # Experiment state is saved at most this often; the trials' own epoch records cover the gap on --resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    trial_spec = {
        "base": base,
        "runs_dir": where.trials,
        "data": data,
        "monitor": monitor,
        "max_epochs": spec.max_epochs,
    }
    trainable = tune.with_resources(tune.with_parameters(bsm_trial, spec=trial_spec), TRIAL_RESOURCES)
    if sweep.resume:
        log.info("resuming sweep %s from %s", run.name, where.tune)
        tuner = tune.Tuner.restore(where.tune, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = _new_tuner(trainable, space, sweep, trial_run, spec, concurrent)
    started = time.monotonic()
    tuner.fit()
    result = SweepResult.from_dict(json.loads(read_bytes(where.result)))  # written by the sweep's recorder
    check_budget(result.to_dict(), sweep.time_budget_s, time.monotonic() - started)
    if result.best_checkpoint and run.train.export:
        result.export = export_best_trial(result, where.path)
        write_bytes(dumps(result.to_dict()).encode(), where.result)
    summary = result.to_dict()
    log.info(
        "sweep %s: %s\n%s", run.name, json.dumps(summary["trials"]), format_leaderboard(summary["leaderboard"], monitor)
    )
    log.info(
        "best: %s (%s %s); config %s",
        summary["best_checkpoint"],
        monitor,
        (summary.get("best_trial") or {}).get("metric"),
        summary.get("best_config"),
    )
    return summary


def _started_as(run: RunConfig, sweep: SweepConfig, where: RunDir) -> tuple[RunConfig, SweepConfig]:
    """A resumed sweep's run and settings as it was started (its bsm_sweep.json); a new one must not exist yet."""
    from ray import tune

    if sweep.resume:
        if not exists(where.sweep) or not tune.Tuner.can_restore(where.tune):
            raise ConfigError(f"--resume {run.name}: no sweep to resume in {where.path}")
        saved = json.loads(read_bytes(where.sweep))
        return RunConfig.from_dict(saved["run"]), replace(SweepConfig.from_dict(saved["tune"]), resume=True)
    if exists(join(where.tune, "tuner.pkl")) or exists(where.sweep):
        raise ConfigError(
            f"a sweep named {run.name} already exists in {where.path}; continue it with --resume "
            f"{run.name} or choose another --name"
        )
    return run, sweep


def _shared_data(run: RunConfig, space: dict[str, Any]) -> RayPrepared | None:
    """Every trial's data, tokenized once (materialized in the object store); None when the search space changes
    how dialogues are tokenized: then each trial prepares its own."""
    tokenizing = PROCESSOR_KEYS & {k.rsplit(".", 1)[-1] for k in space}
    if run.data.feature_fields and side.fusion_retokenizes(run.model_config()["fusion"], space):
        tokenizing = {*tokenizing, "fusion"}  # `fusion: text` writes the features into the dialogues
    if tokenizing:
        log.info("the search space sets %s: each trial tokenizes its own data", sorted(tokenizing))
        return None
    return prepare_ray(run)


def _new_tuner(
    trainable: Any, space: dict[str, Any], sweep: SweepConfig, trial_run: RunConfig, spec: SweepSpec, concurrent: int
) -> Any:
    """The Tuner of a new sweep: ASHA (or FIFO) on the monitored metric, seeded sampling, at most `concurrent`
    trials at once, its state in `<sweep>/tune`, the sweep's record kept by `Recorder`."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    max_epochs = trial_run.train.max_epochs
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_epochs,
            grace_period=min(sweep.grace_period, max_epochs),
            reduction_factor=sweep.reduction_factor,
            # A trial reaching max_t ends by itself: its Train run finishes (test set,
            # predictions) and shuts down cleanly instead of being stopped mid-way.
            stop_last_trials=False,
        )
        if sweep.scheduler == "asha"
        else FIFOScheduler()
    )
    return tune.Tuner(
        trainable,
        param_space=param_space(space),
        tune_config=tune.TuneConfig(
            metric=spec.monitor,
            mode=spec.mode,
            scheduler=scheduler,
            # What TuneConfig(max_concurrent_trials=N) builds, plus a seed: the same sweep samples the
            # same trials. (Tune ignores max_concurrent_trials next to a generator, so it is set here.)
            search_alg=BasicVariantGenerator(max_concurrent=concurrent, random_state=trial_run.train.seed),
            num_samples=sweep.num_samples,
            time_budget_s=sweep.time_budget_s,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,  # Tune's experiment directory: `<sweep>/tune`
            storage_path=spec.sweep_dir,
            callbacks=[Recorder(spec)],
            failure_config=tune.FailureConfig(max_failures=0),  # Train already retries worker failures
            verbose=1 if verbose() else 0,  # Tune's status tables; bsm logs each trial's end
        ),
    )


def check_budget(summary: dict[str, Any], budget_s: float | None, ran_s: float) -> None:
    """A ConfigError when --time-budget ended the sweep before any trial reported its first epoch."""
    if budget_s is None or ran_s < budget_s or summary.get("best_trial") or (summary.get("trials") or {}).get("ERROR"):
        return
    hint = next((f"{m:g}m" for m in (1, 2, 5, 10, 30, 60, 120) if m * 60 >= 2 * ran_s), f"{2 * ran_s / 3600:.0f}h")
    raise ConfigError(
        f"--time-budget {budget_s:g}s ended the sweep after {ran_s:.0f}s, before any trial reported an epoch: the "
        f"first epoch needs more than {ran_s:.0f}s; give --time-budget above {ran_s:.0f}s, e.g. --time-budget {hint}"
    )


def export_best_trial(result: SweepResult, sweep_dir: str) -> str:
    """Export the best trial's best kept checkpoint to `<sweep>/export` (a Ray task), parity-checked on a few
    validation records processed with that trial's own settings."""
    best_run = RunConfig.from_dict(json.loads(read_bytes(RunDir.at(sweep_dir).best_config)))
    # the processor's settings and column names; the class count does not change how text is processed
    model_config = model_config_for(best_run, None)
    assert result.best_checkpoint is not None
    return export_best(result.best_checkpoint, sweep_dir, best_run, model_config, metrics=result.metrics or {})


def resources_from_ray() -> Any:
    """The connected cluster's alive nodes as a ClusterResources (the cluster-side fallback for max_concurrent)."""
    import ray

    nodes = [
        NodeResources(
            str(n.get("NodeManagerAddress", "?")),
            float(n["Resources"].get("CPU", 0)),
            float(n["Resources"].get("GPU", 0)),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return ClusterResources(
        total_cpus=sum(n.cpus for n in nodes),
        total_gpus=sum(n.gpus for n in nodes),
        nodes=nodes,
        can_autoscale=False,
        dashboard_url="this cluster",
    )


def main(config_file: str) -> int:
    """`python -m raytune_bsm.runner.tune bsm_job.json`: run the sweep the job carries (bsm_job.json: the run config, "tune" and "storage")."""
    d = json.loads(Path(config_file).read_text())
    storage = d.pop("storage")
    sweep = SweepConfig.from_dict(d.pop("tune", None))
    run = RunConfig.from_dict(d)
    connect()  # the job's cluster (RAY_ADDRESS); before the handler below, as ray.init sets its own
    if hasattr(signal, "SIGUSR1"):  # `bsm stop` sends SIGTERM: let Tune save its state (it listens on SIGUSR1)
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGUSR1))
    try:
        summary = run_sweep(run, sweep, storage=storage)
    except BsmError as e:  # the user's mistake: one line in the job's log, no traceback
        print(f"bsm: error: {e}", file=sys.stderr)
        return 1
    return 0 if summary.get("finished") and summary.get("best_trial") and not summary.get("error") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
