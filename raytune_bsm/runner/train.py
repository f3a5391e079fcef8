"""The cluster side of `bsm submit`: run the training loop under Ray Train (Train V2 API) on every worker.

`fit(run)` builds a `TorchTrainer` over `worker.train_loop`: N workers (one GPU each with --num-gpus, NCCL;
CPU workers with gloo otherwise), checkpoints kept by Ray in `<storage>/<name>/` (the best k by the validation
metric, plus the latest), and `FailureConfig` retries that resume from the latest checkpoint. At the end the
best checkpoint Ray kept is exported by a Ray task of its own (`export_task`).

Resuming (`"resume": true` in bsm_job.json, `bsm submit --resume NAME`): the same name and storage. Ray Train V2
restores the run's checkpoint manager from `<storage>/<name>/checkpoint_manager_snapshot.json`, and the workers
get its latest checkpoint from `ray.train.get_checkpoint()`; Lightning continues from there, so only the
remaining epochs are trained. Without resume, a run directory that already holds a run is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any

import pyarrow.fs as pafs

from raytune_bsm.config import RunConfig, dumps
from raytune_bsm.errors import BsmError, ConfigError
from raytune_bsm.layout import RunDir
from raytune_bsm.logs import QUIET_ENV, quiet_libraries, setup_logging, verbose
from raytune_bsm.records import RunResult
from raytune_bsm.runner.callbacks import (
    best_kept,
    checkpoint_uri,
    epoch_record,
    kept_checkpoints,
    read_first_step,
    read_reports,
)
from raytune_bsm.runner.export_task import export_best
from raytune_bsm.runner.prepare import DATA_KEY, RayPrepared, prepare_ray
from raytune_bsm.runner.tracking import TRACKING_KEY, end_mlflow, start_mlflow
from raytune_bsm.storage import exists, filesystem, join, read_bytes, write_bytes

log = logging.getLogger("raytune_bsm")


def trainer_for(
    run: RunConfig,
    monitor: str,
    *,
    storage: str,
    callbacks: list[Any] | None = None,
    tracking: dict[str, Any] | None = None,
    data: RayPrepared | None = None,
) -> Any:
    """The TorchTrainer for one run (also the trainer each Tune trial starts). Every run keeps its epoch record.
    `data`: the splits prepared once (`prepare_ray`); each worker streams its equal shard of every one."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from raytune_bsm.runner.process_group import BoundTorchConfig
    from raytune_bsm.runner.shards import EqualShards
    from raytune_bsm.runner.worker import train_loop

    # Ray Train's preemption watcher logs a core_worker "E" line (ray-project/ray#53727) on every start; it only
    # acts when a node is drained (spot/preemptible nodes): set RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1 there.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    loop_config = run.to_dict()
    loop_config["train"]["runtime"] = "ray"
    loop_config["storage"] = storage
    if tracking:
        loop_config[TRACKING_KEY] = tracking
    if data is not None:
        loop_config[DATA_KEY] = data.shards().to_dict()
    return TorchTrainer(
        datasets=data.datasets if data is not None else None,
        # every split cut into equal shares, in place (runner/shards.py): the same batch count on every rank
        dataset_config=EqualShards(data.shares if data is not None else None),
        train_loop_per_worker=train_loop,
        train_loop_config=loop_config,
        # torch's store and Gloo listen on the rank-0 node's IP only (127.0.0.1 on the local cluster)
        torch_config=BoundTorchConfig(backend="nccl" if run.scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=run.scaling.num_workers,
            use_gpu=run.scaling.use_gpu,
            resources_per_worker=run.scaling.resources_per_worker(),
            placement_strategy=run.scaling.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=run.train.save_top_k,  # Ray V2 keeps the latest checkpoint on top of these
                checkpoint_score_attribute=monitor,
                checkpoint_score_order=run.train.mode,
            ),
            failure_config=ray.train.FailureConfig(max_failures=run.train.max_failures),
            # Train's own INFO lines (worker-group start, every report) only with BSM_VERBOSE=1; warnings stay
            logging_config=ray.train.LoggingConfig(log_level="INFO" if verbose() else "WARNING"),
            # the epoch record first: it is on disk before Tune (TuneReportCallback, in a trial) sees the report
            callbacks=[epoch_record(RunDir(storage, run.name).path)] + list(callbacks or []),
        ),
    )


def as_started(run: RunConfig, saved: dict[str, Any]) -> RunConfig:
    """A resumed run chunks its dialogues as it did when it started (`saved`: its bsm_config.json): a run started
    before `pack_from` existed packed from the dialogue's start, whatever a new run's default is now."""
    started = (saved.get("model") or {}).get("pack_from", "start")
    if run.model_config().get("pack_from") == started:
        return run
    return dataclasses.replace(run, model={**run.model, "pack_from": started})


def fit(run: RunConfig, *, storage: str, resume: bool = False) -> dict[str, Any]:
    """Train `run` on the connected Ray cluster (or continue it, with resume); return and store a summary
    (metrics, checkpoints, failures, the export)."""
    setup_logging()
    quiet_libraries()
    connect()
    where = RunDir(storage, run.name)
    run_dir = where.path
    if resume and not exists(where.config):
        raise ConfigError(f"--resume {run.name}: no run to resume in {run_dir}")
    if not resume and exists(where.config):
        raise ConfigError(
            f"a run named {run.name} already exists in {run_dir}; continue it with --resume "
            f"{run.name} or choose another --name"
        )
    if resume:
        run = as_started(run, json.loads(read_bytes(where.config)))
    # Read, check and tokenize every split once, on the cluster, before any worker starts: a bad file fails here.
    # The driver holds references to the tokenized datasets (in the object store) and their row counts.
    started = time.time()
    data = prepare_ray(run)
    timings = {"prepare_s": round(time.time() - started, 2)}
    model_config, num_classes = data.model_config, len(data.labels.names)
    monitor = run.monitor(num_classes)
    if resume:
        log.info("resuming run %s from its latest checkpoint in %s", run.name, run_dir)
    else:
        write_bytes(dumps({**run.to_dict(), "storage": storage, "model": model_config}).encode(), where.config)
    tracking = start_mlflow(run, {**run.to_dict(), "model": model_config})

    t = time.time()
    result = trainer_for(run, monitor, storage=storage, tracking=tracking, data=data).fit()
    timings["fit_s"] = round(time.time() - t, 2)
    first = read_first_step(run_dir)
    if first is not None:
        timings["first_step_s"] = round(first - started, 2)  # from the driver's start, data preparation included
    kept = kept_checkpoints(result)
    best = best_kept(kept, monitor, run.train.mode)  # what retention left on disk; ties: the earliest epoch
    export = None
    if best is not None and run.train.export and result.error is None:
        t = time.time()
        export = export_best(best[0], run_dir, run, model_config, metrics=best[1], hyperparameters=model_config)
        timings["export_s"] = round(time.time() - t, 2)
    end_mlflow(tracking, export, failed=result.error is not None)
    record = RunResult(
        name=run.name,
        run_dir=run_dir,
        monitor=monitor,
        metrics={k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))},
        best_checkpoint=best[0] if best else None,
        checkpoints=[{"path": p, **{k: m.get(k) for k in (monitor, "epoch")}} for p, m in kept.items()],
        latest_checkpoint=checkpoint_uri(result.checkpoint) if result.checkpoint else None,
        epochs_trained=[r["epoch"] for r in read_reports(run_dir)],
        error=repr(result.error) if result.error else None,
        restarts=_restarts(where),
        export=export,
        tensorboard_logdir=where.tensorboard,
        mlflow_run_id=tracking.get("mlflow_run_id"),
        data={name: {"rows": n, **data.sources.get(name, {})} for name, n in data.rows.items()},
        timings=timings,
    )
    summary = record.to_dict()
    write_bytes(dumps(summary).encode(), where.result)
    log.info(
        "validation metrics: %s",
        json.dumps({k: round(v, 4) for k, v in (record.metrics or {}).items() if k.startswith("val")}),
    )
    log.info("checkpoints: %s (best: %s)", run_dir, record.best_checkpoint)
    log.info("curves: tensorboard --logdir %s", record.tensorboard_logdir)
    return summary


def connect() -> None:
    """Connect this job driver to its cluster (RAY_ADDRESS) without the connection chatter. Every task and actor
    of the job gets RAY_ADDRESS too: Ray Train's placement-group cleaner finds the cluster's State API by
    auto-detection, which fails (a traceback in the job log) on a machine running more than one Ray instance.
    Without --verbose they also get the libraries' own switches for their INFO lines and progress bars
    (logs.QUIET_ENV: Ray Data's, transformers')."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    env = {"RAY_ADDRESS": address} if address else {}
    if not verbose():  # for every process of the job: the libraries' switches read when they are imported
        env.update(
            QUIET_ENV,
            # a deprecation inside Ray Train's own DatasetManager actor (Ray 2.60), nothing a user can change
            PYTHONWARNINGS="ignore:`ExecutionOptions.exclude_resources` is deprecated",
        )
        os.environ.update(QUIET_ENV)
    ray.init(
        logging_level=logging.INFO if verbose() else logging.WARNING, runtime_env={"env_vars": env} if env else None
    )


def _restarts(where: RunDir) -> list[dict[str, Any]]:
    """The failures this run survived: one record per resume from a checkpoint (written by the workers)."""
    fs, path = filesystem(where.restarts)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return [json.loads(read_bytes(join(where.restarts, i.base_name))) for i in sorted(infos, key=lambda i: i.base_name)]


def main(config_file: str) -> int:
    """`python -m raytune_bsm.runner.train bsm_job.json`: train the resolved config the job carries (with
    `"resume": true`: continue the run of that name); exit non-zero if the run failed."""
    d = json.loads(open(config_file).read())
    storage = d.pop("storage")
    resume = bool(d.pop("resume", False))
    try:
        summary = fit(RunConfig.from_dict(d), storage=storage, resume=resume)
    except BsmError as e:  # the user's mistake: one line in the job's log, no traceback
        print(f"bsm: error: {e}", file=sys.stderr)
        return 1
    return 1 if summary["error"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
