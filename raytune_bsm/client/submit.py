"""Building and submitting a job from the user's machine: options -> a validated RunConfig -> a Submission
(`--dry-run` prints it) -> checked against the cluster -> the Jobs API. Everything is validated before anything
touches a cluster: a bad flag, key, unreadable data file or a request the cluster cannot fit is an error first.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from raytune_bsm.client import connection
from raytune_bsm.client.submission import Submission, build_submission, default_name, stage
from raytune_bsm.config import RunConfig, apply_overrides, check_monitor_computed, load_yaml
from raytune_bsm.errors import ClusterError, ConfigError, DataError, JobError
from raytune_bsm.layout import bsm_home
from raytune_bsm.pretrained import model_dims

log = logging.getLogger("raytune_bsm")

# ----------------------------------------------------------------------------------------------- options


@dataclass
class SubmitOptions:
    """`bsm submit` / `bsm tune` options; None means "not given" (the recipe or the default applies)."""

    config: str | None = None
    address: str | None = None
    num_gpus: int | None = None
    num_workers: int | None = None
    cpus_per_worker: int | None = None
    train: str | None = None
    val: str | None = None
    test: str | None = None
    text_field: str | None = None
    label_field: str | None = None
    id_field: str | None = None
    model: str | None = None
    max_chunks: int | None = None
    max_tokens: int | None = None
    max_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    storage: str | None = None
    name: str | None = None
    sets: list[str] = field(default_factory=list)
    allow_insecure: bool = False


def recipe(opts: SubmitOptions) -> dict[str, Any]:
    """The --config YAML recipe ({} without one)."""
    return load_yaml(opts.config) if opts.config else {}


def resolve_run(opts: SubmitOptions, kind: str = "train", recipe_: dict[str, Any] | None = None) -> RunConfig:
    """Recipe (--config) <- flags <- --set items -> a validated RunConfig."""
    d: dict[str, Any] = recipe(opts) if recipe_ is None else recipe_
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items() if k != "tune"}  # `tune:`: api.tune
    for section in ("model", "data", "train", "scaling"):
        d.setdefault(section, {})

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            d[section][key] = value

    for key in ("train", "val", "test", "text_field", "label_field", "id_field", "batch_size"):
        put("data", key, getattr(opts, key))
    put("model", "tokenizer", opts.model)
    put("model", "max_chunks", opts.max_chunks)
    put("model", "max_tokens", opts.max_tokens)
    put("model", "lr", opts.lr)
    put("train", "max_epochs", opts.max_epochs)
    if opts.num_gpus is not None:
        if opts.num_workers is not None and opts.num_workers != opts.num_gpus:
            raise ConfigError("--num-gpus N runs N workers with one GPU each; do not combine it with --num-workers")
        if opts.num_gpus < 1:
            raise ConfigError(f"--num-gpus must be at least 1, got {opts.num_gpus}")
        d["scaling"].update(num_workers=opts.num_gpus, use_gpu=True)
        d["scaling"].setdefault("cpus_per_worker", 4)
    put("scaling", "num_workers", opts.num_workers)
    put("scaling", "cpus_per_worker", opts.cpus_per_worker)
    if opts.storage is not None:
        d["storage"] = opts.storage
    d["name"] = opts.name or d.get("name") or default_name(kind)
    d = apply_overrides(d, opts.sets)
    _check_name(d["name"])
    run = RunConfig.from_dict(d)  # also checks the metric's name
    _check_model(run)
    return run


def _check_name(name: str) -> None:

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", str(name)):
        raise ConfigError(f"--name must be letters, digits, '-', '_' or '.' (at most 100), got {name!r}")


def _check_model(run: RunConfig) -> None:
    """Checks that need the model's config.json, read without importing torch (local models only)."""

    cfg = run.model_config()
    check_monitor_computed(run.train.monitor or "val_loss", cfg["metric_choices"])
    dims = model_dims(cfg["tokenizer"], cfg["encoder_config"])
    if dims is None:
        return  # a hub name: checked on the cluster, where it is loaded
    layers, positions = dims.get("num_hidden_layers"), dims.get("max_position_embeddings")
    if layers is not None and not 0 <= cfg["reinit_layers"] <= layers:
        raise ConfigError(
            f"--reinit-layers must be between 0 and {layers} (the model has {layers} encoder layers), "
            f"got {cfg['reinit_layers']}"
        )
    if positions is not None and cfg["max_tokens"] > positions:
        raise ConfigError(f"--max-tokens must be at most {positions} for this model, got {cfg['max_tokens']}")


def check_local_data(run: RunConfig) -> None:
    """Schema-check local data files before submission (remote URIs are checked on the cluster)."""
    from raytune_bsm.data.dataset import load_split


    d = run.data
    if d.train is None or "://" in d.train:
        return
    flag = "--train"
    try:
        _, labels = load_split(d.train, d, None, run.model.get("num_classes"))
        for flag, path in (("--val", d.val), ("--test", d.test)):
            if path and "://" not in path:
                load_split(path, d, labels)
    except DataError as e:
        raise DataError(f"{flag}: {e}") from None


# ----------------------------------------------------------------------------------------------- cluster


def _connect(address: str | None, *, start: bool = True) -> tuple[Any, Any]:

    conn = connection.resolve_connection(address, start=start)
    return conn, connection.job_client(conn)


# ----------------------------------------------------------------------------------------------- submit


def plan(opts: SubmitOptions, kind: str = "train", extra: dict[str, Any] | None = None,
         conn: Any = None, run: RunConfig | None = None) -> Submission:  # fmt: skip
    """The submission, fully validated; with `conn`, also checked against that cluster's storage rules."""

    run = run or resolve_run(opts, kind)
    warnings: list[str] = []
    storage = run.storage
    if storage is None:
        if conn is None or conn.storage_default:
            storage = (conn.storage_default if conn is not None else None) or str(bsm_home() / "runs")
        else:
            raise ConfigError(
                f"--storage is required for the cluster at {conn.dashboard_url}: give storage that every node "
                "reaches (s3://bucket/runs, gs://..., or an NFS path mounted on every node)"
            )
    elif conn is not None and not conn.is_local and "://" not in storage:
        warnings.append(
            f"--storage {storage} is a local path on a remote cluster: multi-node runs need storage every node "
            "reaches (NFS mounted at that path on every node, or s3:// gs:// hdfs://)"
        )
    for flag, path in (("--train", run.data.train), ("--val", run.data.val), ("--test", run.data.test)):
        if path and conn is not None and not conn.is_local and "://" not in path:
            warnings.append(f"{flag} {path} is a local path; the remote cluster must see the same path")
    check_local_data(run)
    return build_submission(run, kind=kind, storage=storage, extra=extra, warnings=warnings)


def _submit(client: Any, conn: Any, sub: Submission, submission_id: str | None = None) -> str:
    """Stage the working_dir and submit through the Jobs API; return the job id."""
    submission_id = submission_id or sub.submission_id
    with tempfile.TemporaryDirectory(prefix="bsm-submit-") as tmp:
        runtime_env = stage(sub, Path(tmp))
        try:
            job_id = client.submit_job(
                entrypoint=sub.entrypoint,
                submission_id=submission_id,
                runtime_env=runtime_env,
                metadata=sub.metadata,
                entrypoint_num_cpus=0,  # the driver only coordinates; workers hold the resources
            )
        except RuntimeError as e:
            if "already exists" in str(e):
                raise JobError(f"a job named {submission_id} already exists; choose another --name") from None
            raise ClusterError(f"the cluster at {conn.dashboard_url} refused the job: {str(e).splitlines()[0]}") from None
    log.info("submitted %s to %s (run storage: %s)", job_id, conn.dashboard_url, sub.metadata["bsm_run_dir"])
    return job_id


def check_resources(sub: Submission, conn: Any, res: Any) -> None:
    """Refuse a job the cluster cannot fit (a warning when it can autoscale)."""
    workers = sub.scaling["num_workers"]
    per = sub.scaling["resources_per_worker"]
    need_gpus, need_cpus = workers * per.get("GPU", 0), workers * per["CPU"]
    biggest_cpu = max((n.cpus for n in res.nodes), default=0)
    biggest_gpu = max((n.gpus for n in res.nodes), default=0)
    short = []
    if need_gpus > res.total_gpus or per.get("GPU", 0) > biggest_gpu:
        short.append(f"{need_gpus:g} GPUs ({workers} workers x {per.get('GPU', 0):g}); the cluster has {res.total_gpus:g}")
    if need_cpus > res.total_cpus or per["CPU"] > biggest_cpu:
        short.append(
            f"{need_cpus:g} CPUs ({workers} workers x {per['CPU']:g}, largest node {biggest_cpu:g}); "
            f"the cluster has {res.total_cpus:g}"
        )
    if short:
        msg = f"the job needs {' and '.join(short)} at {conn.dashboard_url}"
        if res.can_autoscale:
            log.warning("%s; the cluster can autoscale, so the job will wait for new nodes", msg)
        else:
            raise ClusterError(f"{msg}; ask for fewer (--num-gpus/--num-workers/--cpus-per-worker) or use a bigger cluster")


def submit(opts: SubmitOptions, *, kind: str = "train", extra: dict[str, Any] | None = None,
           dry_run: bool = False) -> Submission | str:  # fmt: skip
    """Validate, check against the cluster, stage and submit; return the job id (or the plan when dry_run)."""
    if dry_run:
        return plan(opts, kind, extra)  # no cluster is contacted or started

    rec = recipe(opts)
    run = resolve_run(opts, kind, rec)  # flags first: a typo never starts a cluster
    conn, client = _connect(opts.address)
    connection.check_secure(conn, opts.allow_insecure)
    user_cpus = opts.cpus_per_worker is not None or "cpus_per_worker" in (rec.get("scaling") or {}) or any(
        s.split("=", 1)[0].endswith("cpus_per_worker") for s in opts.sets
    )
    res = connection.cluster_resources(conn)
    if not user_cpus and not run.scaling.use_gpu:
        run = _fit_cpus(run, res)
    sub = plan(opts, kind, extra, conn, run=run)
    for w in sub.warnings:
        log.warning("%s", w)
    check_resources(sub, conn, res)
    return _submit(client, conn, sub)


def _fit_cpus(run: RunConfig, res: Any) -> RunConfig:
    """CPU runs without --cpus-per-worker: share the largest node's CPUs among the workers (at most 8 each)."""

    biggest = max((n.cpus for n in res.nodes), default=1)
    per = max(1, min(8, int(biggest) // run.scaling.num_workers))
    return replace(run, scaling=replace(run.scaling, cpus_per_worker=per))


def tune(opts: SubmitOptions, sweep: dict[str, Any] | None = None, *, search_space: str | None = None,
         resume: str | None = None, dry_run: bool = False) -> Submission | str:  # fmt: skip
    """Submit a Ray Tune sweep (or resume one by name); return the job id, or the plan when dry_run.

    `sweep` holds sweep settings (SweepConfig fields) given as flags; they override the recipe's `tune:` keys.
    Before submission: the search space is checked against the config, and the number of trials that can run
    at once is computed from the cluster's resources (a sweep that cannot fit one trial is an error)."""

    from raytune_bsm.sweep import SweepConfig, check_search_space, load_search_space, max_concurrent_trials
    from raytune_bsm.sweep import model_layers, resolve_space

    if resume:
        return _resume_sweep(opts, resume, dry_run=dry_run)
    rec = recipe(opts)
    recipe_tune = dict(rec.get("tune") or {})
    settings = SweepConfig.from_dict({**recipe_tune, **{k: v for k, v in (sweep or {}).items() if v is not None}})
    run = resolve_run(opts, "tune", rec)
    if search_space:
        settings = replace(settings, search_space=load_search_space(search_space, model_layers(run)))
    settings = replace(settings, search_space=resolve_space(run, settings))  # the plan shows what is sampled
    check_search_space(settings.apply(run, num_classes=2), settings.search_space)
    if dry_run:
        return plan(opts, "tune", settings.to_dict(), run=settings.apply(run))
    conn, client = _connect(opts.address)
    connection.check_secure(conn, opts.allow_insecure)
    # Always bounded by what the cluster holds: no trial waits for resources that do not exist.
    fits = max_concurrent_trials(connection.cluster_resources(conn), settings, run)
    settings = replace(settings, max_concurrent=min(fits, settings.max_concurrent or fits))
    log.info("sweep: %d trial(s), at most %d at once", settings.total_trials(), settings.max_concurrent)
    sub = plan(opts, "tune", settings.to_dict(), conn, run=settings.apply(run))
    for w in sub.warnings:
        log.warning("%s", w)
    return _submit(client, conn, sub)


def _resume_sweep(opts: SubmitOptions, name: str, *, dry_run: bool) -> Submission | str:
    """`bsm tune --resume NAME`: the stored run and sweep settings, a new job that continues the sweep."""
    from raytune_bsm.sweep import load_sweep_record

    conn, client = (None, None) if dry_run else _connect(opts.address)
    storage = opts.storage or (conn.storage_default if conn is not None else None) or str(bsm_home() / "runs")
    record = load_sweep_record(storage, name)
    run = RunConfig.from_dict(record["run"])
    sub = build_submission(run, kind="tune", storage=record.get("storage") or storage,
                           extra={**record["tune"], "resume": True})  # fmt: skip
    if dry_run:
        return sub
    connection.check_secure(conn, opts.allow_insecure)
    return _submit(client, conn, sub, submission_id=f"bsm-{name}-resume-{time.strftime('%Y%m%d-%H%M%S')}")


