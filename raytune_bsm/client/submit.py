"""Training runs and sweeps from the user's machine: options (client/options.py) -> a validated RunConfig ->
`plan` (a Submission, every check that needs no cluster, local data included; `--dry-run` prints it) ->
`schedule` with `bind`, which settles what the cluster decides and refuses what it cannot fit -> the Jobs API.
`bsm submit` and `bsm tune` share SubmitOptions and resolve_run: a flag means the same in both (per trial in a
sweep).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from raytune_bsm.client.options import SubmitOptions, explicit_keys, recipe, resolve_run
from raytune_bsm.client.submission import (
    Submission,
    build_submission,
    check_resume_options,
    check_storage,
    resume_id,
    schedule,
    stored_run,
)
from raytune_bsm.coerce import check_fields
from raytune_bsm.config import (
    RunConfig,
)
from raytune_bsm.errors import ClusterError, ConfigError, DataError, JobError
from raytune_bsm.layout import RunDir, default_storage, read_record
from raytune_bsm.storage import exists, is_uri, join, storage_path

log = logging.getLogger("raytune_bsm")


def check_local_data(run: RunConfig) -> None:
    """Check every split before submission: local files are loaded and checked whole; remote URIs (s3://, gs://,
    ...) are listed and schema-checked from their footers when this machine can reach them, else on the cluster."""
    import pyarrow as pa  # pyarrow: not on `bsm --help`'s path

    from raytune_bsm.data.features import resolve_data
    from raytune_bsm.data.splits import check_schema, load_split

    d = run.data
    if d.train is None:
        return
    flag_ = "--train"
    try:
        if d.feature_fields is not None:  # `auto` and the names checked on the training files' schema
            try:
                d = resolve_data(d, d.train)
            except (OSError, pa.ArrowException):  # unreachable from here: the cluster checks it
                pass
        labels = None
        for flag_, path in (("--train", d.train), ("--val", d.val), ("--test", d.test)):
            if not path:
                continue
            if "://" in path:
                try:
                    check_schema(path, d)
                except (OSError, pa.ArrowException) as e:  # unreachable from here: the cluster checks it
                    log.warning(
                        "%s %s: cannot be read from this machine (%s); it is checked on the cluster",
                        flag_,
                        path,
                        str(e).splitlines()[0][:200],
                    )
            elif flag_ == "--train":
                _, labels = load_split(path, d, None, run.model.get("num_classes"))
            elif labels is not None:
                load_split(path, d, labels)
    except DataError as e:
        raise DataError(f"{flag_}: {e}") from None


# ----------------------------------------------------------------------------------------------- plan


def plan(
    opts: SubmitOptions,
    kind: str = "train",
    extra: dict[str, Any] | None = None,
    run: RunConfig | None = None,
) -> Submission:
    """The submission, after every check that needs no cluster (flags, recipe, model, storage, local data): what
    `--dry-run` prints. What depends on the cluster it goes to (the default storage, CPUs per worker, a sweep's
    concurrency) is settled by `bind` when it is scheduled."""
    run = run or (stored_run(opts, opts.storage) if opts.resume else resolve_run(opts, kind))
    decides = set() if run.resume else {"storage"} if run.storage is None else set()
    if kind == "train" and not (run.resume or run.scaling.use_gpu or _cpus_given(opts)):
        decides.add("cpus_per_worker")
    storage = run.storage or default_storage()
    _check_new_run(run, kind, storage)
    check_local_data(run)
    sub = build_submission(run, kind=kind, storage=storage, extra=extra)
    sub = replace(sub, run=run, cluster_decides=frozenset(decides))
    return replace(sub, submission_id=resume_id(run.name)) if run.resume else sub


def _cpus_given(opts: SubmitOptions) -> bool:
    """--cpus-per-worker given somewhere (flag, recipe or --set): the cluster does not choose it."""
    rec = recipe(opts) if opts.config else {}
    return (
        opts.cpus_per_worker is not None
        or "cpus_per_worker" in (rec.get("scaling") or {})
        or any(s.split("=", 1)[0].strip().endswith("cpus_per_worker") for s in opts.sets)
    )


def _check_new_run(run: RunConfig, kind: str, storage: str) -> None:
    if not run.resume and kind == "train" and not is_uri(storage) and exists(RunDir(storage, run.name).config):
        raise JobError(
            f"a run named {run.name} already exists under {storage}; continue it with "
            f"`bsm submit --resume {run.name}` or choose another --name"
        )


def bind(sub: Submission, conn: Any, res: Any) -> Submission:
    """A training run or sweep bound to the cluster `conn` reaches: its storage rules and default storage, CPUs per
    worker from its nodes, a sweep's concurrency from its resources; refused if the cluster cannot fit it."""
    run, warnings = sub.run, list(sub.warnings)
    extra = sub.config.get(sub.kind) if sub.kind == "tune" else None
    if sub.kind == "tune" and not extra.get("resume"):
        from raytune_bsm.sweep import SweepConfig, max_concurrent_trials

        settings = SweepConfig.from_dict(extra)
        # Always bounded by what the cluster holds: no trial waits for resources that do not exist.
        fits = max_concurrent_trials(res, settings, run)
        extra = {**extra, "max_concurrent": min(fits, settings.max_concurrent or fits)}
        log.info("sweep: %d trial(s), at most %d at once", settings.total_trials(), extra["max_concurrent"])
    storage = sub.metadata["bsm_storage"]
    if "storage" in sub.cluster_decides:
        if not conn.storage_default:
            raise ConfigError(
                f"--storage is required for the cluster at {conn.dashboard_url}: give storage that every node "
                "reaches (s3://bucket/runs, gs://..., or an NFS path mounted on every node)"
            )
        storage = conn.storage_default
        _check_new_run(run, sub.kind, storage)
    elif not conn.is_local and not is_uri(storage):
        warnings.append(
            f"--storage {storage} is a local path on a remote cluster: multi-node runs need storage every node "
            "reaches (NFS mounted at that path on every node, or s3:// gs:// hdfs://)"
        )
    for flag_, path in (("--train", run.data.train), ("--val", run.data.val), ("--test", run.data.test)):
        if path and not conn.is_local and "://" not in path:
            warnings.append(f"{flag_} {path} is a local path; the remote cluster must see the same path")
    if sub.kind == "train" and "cpus_per_worker" in sub.cluster_decides:
        run = _fit_cpus(run, res)  # a sweep's trials share the cluster: each keeps its own size
    bound = build_submission(run, kind=sub.kind, storage=storage, extra=extra, warnings=warnings)
    bound = replace(bound, submission_id=sub.submission_id, run=run)
    if sub.kind == "train":
        check_resources(bound, conn, res)  # a sweep: max_concurrent_trials refused what cannot fit one trial
    return bound


def check_resources(sub: Submission, conn: Any, res: Any) -> None:
    """Refuse a job the cluster cannot fit (a warning when it can autoscale): one sentence per missing resource,
    naming the flags that ask for it."""
    workers, per = sub.scaling["num_workers"], sub.scaling["resources_per_worker"]
    biggest_cpu = max((n.cpus for n in res.nodes), default=0)
    cpu_fix = f"ask for fewer ({'--num-gpus' if per.get('GPU') else '--num-workers'} or --cpus-per-worker)"
    gpu_fix = "train on CPUs (--num-workers, not --num-gpus)" if not res.total_gpus else "ask for fewer (--num-gpus)"
    short = [
        sentence
        for sentence in (
            _shortfall("GPUs", workers, per.get("GPU", 0), res.total_gpus, res.max_gpus_per_node, gpu_fix),
            _shortfall("CPUs", workers, per["CPU"], res.total_cpus, biggest_cpu, cpu_fix),
        )
        if sentence
    ]
    if short:
        msg = f"the Ray cluster at {conn.dashboard_url} cannot fit the job. {' '.join(short)}"
        if res.can_autoscale:
            log.warning("%s The cluster can autoscale, so the job will wait for new nodes.", msg)
        else:
            raise ClusterError(f"{msg} Or use a bigger cluster.")


def _shortfall(name: str, workers: int, per: float, total: float, largest: float, fix: str) -> str | None:
    """One sentence: what the job needs of one resource, what the cluster has, what to do (`fix`)."""
    each = f"{workers} worker{'s' if workers != 1 else ''} x {per:g}"
    if per and workers * per > total:
        return f"The job needs {workers * per:g} {name} ({each}) and the cluster has {total:g}: {fix}."
    if per > largest:
        return f"Each worker needs {per:g} {name} on one node and the largest node has {largest:g}: {fix}."
    return None


def _fit_cpus(run: RunConfig, res: Any) -> RunConfig:
    """CPU runs without --cpus-per-worker: share the largest node's CPUs among the workers (at most 8 each)."""
    biggest = max((n.cpus for n in res.nodes), default=1)
    per = max(1, min(8, int(biggest) // run.scaling.num_workers))
    return replace(run, scaling=replace(run.scaling, cpus_per_worker=per))


# ----------------------------------------------------------------------------------------------- submit


def submit(
    opts: SubmitOptions, *, kind: str = "train", extra: dict[str, Any] | None = None, dry_run: bool = False
) -> Submission | str:
    """Plan (every check; nothing contacted or started), then schedule on the cluster; the job id, or the plan
    when dry_run."""
    sub = plan(opts, kind, extra)
    return sub if dry_run else schedule(sub, opts.address, allow_insecure=opts.allow_insecure, bind=bind)


def tune(
    opts: SubmitOptions, sweep: dict[str, Any] | None = None, *, search_space: str | None = None, dry_run: bool = False
) -> Submission | str:
    """Submit a Ray Tune sweep (or, with opts.resume, continue one); return the job id, or the plan when dry_run.

    `sweep` holds sweep settings (SweepConfig fields) given as flags; they override the recipe's `tune:` keys.
    Keys the command line sets (--lr, --set dropout=0.2, ...) are the same in every trial: the search space does
    not sample them. Before submission the search space is checked against the config, and the trials that
    can run at once are computed from the cluster's resources (a sweep that cannot fit one trial is an error)."""
    from raytune_bsm.sweep import (
        SweepConfig,
        check_search_space,
        load_search_space,
        model_layers,
        resolve_space,
    )

    if opts.resume:
        given = [
            flag
            for flag, v in (
                ("--search-space", search_space),
                *((f"--{k.replace('_', '-').removesuffix('-s')}", v) for k, v in (sweep or {}).items()),
            )
            if v is not None
        ]
        if given:
            raise ConfigError(f"--resume {opts.resume} continues the sweep as it was started; drop {', '.join(given)}")
        return _resume_sweep(opts, dry_run=dry_run)
    rec = recipe(opts)
    recipe_tune = check_fields(
        SweepConfig, rec.get("tune") or {}, f"--config {opts.config}: tune.", skip=("time_budget_s", "search_space")
    )
    settings = SweepConfig.from_dict({**recipe_tune, **{k: v for k, v in (sweep or {}).items() if v is not None}})
    run = resolve_run(opts, "tune", rec)
    if search_space:
        settings = replace(settings, search_space=load_search_space(search_space, model_layers(run)))
    fixed = explicit_keys(opts)
    space = {k: v for k, v in resolve_space(run, settings).items() if k not in fixed}  # the plan shows what is sampled
    settings = replace(settings, search_space=space)
    check_search_space(settings.apply(run, num_classes=2), settings.search_space)
    sub = plan(opts, "tune", settings.to_dict(), run=settings.apply(run))
    return sub if dry_run else schedule(sub, opts.address, allow_insecure=opts.allow_insecure, bind=bind)


def _resume_sweep(opts: SubmitOptions, *, dry_run: bool) -> Submission | str:
    """`bsm tune --resume NAME`: the stored run and sweep settings, a new job that continues the sweep."""
    check_resume_options(opts)
    storage = check_storage(opts.storage) if opts.storage else default_storage()
    path = RunDir(storage_path(storage), opts.resume).sweep
    if not exists(path):
        raise ConfigError(f"--resume {opts.resume}: no sweep named {opts.resume} in {storage}")
    record = read_record(path)
    if not isinstance(record.get("run"), dict) or not isinstance(record.get("tune"), dict):
        raise ConfigError(f'{path}: has no "run" and "tune" settings; the record is damaged')
    run = RunConfig.from_dict(record["run"], where=f"{join(storage, opts.resume)} sweep record: ")
    sub = build_submission(
        run, kind="tune", storage=record.get("storage") or storage, extra={**record["tune"], "resume": True}
    )
    sub = replace(sub, submission_id=resume_id(run.name), run=run)
    return sub if dry_run else schedule(sub, opts.address, allow_insecure=opts.allow_insecure, bind=bind)
