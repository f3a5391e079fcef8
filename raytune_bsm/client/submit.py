"""Building and submitting a job from the user's machine: options -> a validated RunConfig -> a Submission
(`--dry-run` prints it) -> checked against the cluster -> the Jobs API. Everything is validated before anything
touches a cluster: a bad flag, key, model, storage, unreadable data file or a request the cluster cannot fit is
an error first. `bsm submit` and `bsm tune` share SubmitOptions and resolve_run: a flag means the same in both
(per trial in a sweep).
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from raytune_bsm.client import connection
from raytune_bsm.client.submission import (
    Submission,
    build_submission,
    check_model_name,
    check_resume_options,
    check_storage,
    default_name,
    resume_id,
    stage,
    stored_run,
)
from raytune_bsm.coerce import check_fields
from raytune_bsm.config import (
    RunConfig,
    apply_overrides,
    check_monitor_computed,
    check_run_dict,
    load_yaml,
    resolve_key,
)
from raytune_bsm.errors import ClusterError, ConfigError, DataError, JobError
from raytune_bsm.layout import CONFIG_JSON, SWEEP_JSON, default_storage, read_record
from raytune_bsm.pretrained import model_dims
from raytune_bsm.storage import exists, is_uri, join, storage_path

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
    features: str | None = None  # side feature columns: a,b,c or auto (data/features.py)
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
    resume: str | None = None  # NAME: continue that run (or sweep) from its latest checkpoint


# Each run flag and the config key it sets (--num-gpus sets scaling.num_workers and use_gpu).
FLAG_KEYS = {
    "train": "data.train",
    "val": "data.val",
    "test": "data.test",
    "text_field": "data.text_field",
    "label_field": "data.label_field",
    "id_field": "data.id_field",
    "features": "data.feature_fields",
    "batch_size": "data.batch_size",
    "model": "model.tokenizer",
    "max_chunks": "model.max_chunks",
    "max_tokens": "model.max_tokens",
    "lr": "model.lr",
    "max_epochs": "train.max_epochs",
    "num_workers": "scaling.num_workers",
    "cpus_per_worker": "scaling.cpus_per_worker",
}


def recipe(opts: SubmitOptions) -> dict[str, Any]:
    """The --config YAML recipe ({} without one), every run key type-checked (the `tune:` section is the sweep's)."""
    if not opts.config:
        return {}
    d = load_yaml(opts.config)
    check_run_dict({k: v for k, v in d.items() if k != "tune"}, f"--config {opts.config}: ")
    return d


def explicit_keys(opts: SubmitOptions) -> set[str]:
    """The `section.key`s the command line sets (flags and --set): a sweep does not sample them."""
    keys = {FLAG_KEYS[k] for k in FLAG_KEYS if getattr(opts, k) is not None}
    keys |= {"scaling.num_workers", "scaling.use_gpu"} if opts.num_gpus is not None else set()
    for item in opts.sets:
        key = item.split("=", 1)[0].strip()
        if key not in ("name", "storage", "resume"):
            keys.add(".".join(resolve_key(key, f"--set {key}")))
    return keys


def resolve_run(opts: SubmitOptions, kind: str = "train", recipe_: dict[str, Any] | None = None) -> RunConfig:
    """Recipe (--config) <- flags <- --set items -> a validated RunConfig."""
    d: dict[str, Any] = recipe(opts) if recipe_ is None else recipe_
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items() if k != "tune"}  # `tune:`: api.tune
    for section in ("model", "data", "train", "scaling"):
        d[section] = dict(d.get(section) or {})
    for opt, key in FLAG_KEYS.items():
        if getattr(opts, opt) is not None:
            section, name = key.split(".")
            d[section][name] = getattr(opts, opt)
    if opts.num_gpus is not None:
        if opts.num_workers is not None and opts.num_workers != opts.num_gpus:
            raise ConfigError("--num-gpus N runs N workers with one GPU each; do not combine it with --num-workers")
        if opts.num_gpus < 1:
            raise ConfigError(f"--num-gpus must be at least 1, got {opts.num_gpus}")
        d["scaling"].update(num_workers=opts.num_gpus, use_gpu=True)
        d["scaling"].setdefault("cpus_per_worker", 4)
    if opts.storage is not None:
        d["storage"] = opts.storage
    d["name"] = opts.name or d.get("name") or default_name(kind)
    d = apply_overrides(d, opts.sets)
    _check_name(d["name"])
    if d.get("storage") is not None:
        d["storage"] = check_storage(str(d["storage"]))
    for key in ("train", "val", "test"):  # the job runs in its own working_dir: local paths must be absolute
        if d["data"].get(key) and not is_uri(str(d["data"][key])):
            d["data"][key] = storage_path(str(d["data"][key]))
    run = RunConfig.from_dict(d)  # also checks the metric's name
    _check_model(run)
    return run


def _check_name(name: Any) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", str(name)):
        raise ConfigError(f"--name must be letters, digits, '-', '_' or '.' (at most 100), got {name!r}")


def _check_model(run: RunConfig) -> None:
    """Checks that need the model's config.json, read without importing torch (local models only)."""
    cfg = run.model_config()
    check_model_name(cfg["tokenizer"])
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
    """Check every split before submission: local files are loaded and checked whole; remote URIs (s3://, gs://,
    ...) are listed and schema-checked from their footers when this machine can reach them, else on the cluster."""
    import pyarrow as pa  # pyarrow: not on `bsm --help`'s path

    from raytune_bsm.data.dataset import load_split
    from raytune_bsm.data.features import resolve_data
    from raytune_bsm.data.splits import check_schema

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


# ----------------------------------------------------------------------------------------------- submit


def plan(
    opts: SubmitOptions,
    kind: str = "train",
    extra: dict[str, Any] | None = None,
    conn: Any = None,
    run: RunConfig | None = None,
) -> Submission:
    """The submission, fully validated; with `conn`, also checked against that cluster's storage rules."""
    run = run or (stored_run(opts, opts.storage, conn) if opts.resume else resolve_run(opts, kind))
    warnings: list[str] = []
    storage = run.storage
    if storage is None:
        if conn is None or conn.storage_default:
            storage = (conn.storage_default if conn is not None else None) or default_storage()
        else:
            raise ConfigError(
                f"--storage is required for the cluster at {conn.dashboard_url}: give storage that every node "
                "reaches (s3://bucket/runs, gs://..., or an NFS path mounted on every node)"
            )
    elif conn is not None and not conn.is_local and not is_uri(storage):
        warnings.append(
            f"--storage {storage} is a local path on a remote cluster: multi-node runs need storage every node "
            "reaches (NFS mounted at that path on every node, or s3:// gs:// hdfs://)"
        )
    for flag_, path in (("--train", run.data.train), ("--val", run.data.val), ("--test", run.data.test)):
        if path and conn is not None and not conn.is_local and "://" not in path:
            warnings.append(f"{flag_} {path} is a local path; the remote cluster must see the same path")
    if not run.resume and kind == "train" and not is_uri(storage) and exists(join(storage, run.name, CONFIG_JSON)):
        raise JobError(
            f"a run named {run.name} already exists under {storage}; continue it with "
            f"`bsm submit --resume {run.name}` or choose another --name"
        )
    check_local_data(run)
    sub = build_submission(run, kind=kind, storage=storage, extra=extra, warnings=warnings)
    return replace(sub, submission_id=resume_id(run.name)) if run.resume else sub


def _submit(client: Any, conn: Any, sub: Submission) -> str:
    """Stage the working_dir and submit through the Jobs API; return the job id."""
    with tempfile.TemporaryDirectory(prefix="bsm-submit-") as tmp:
        runtime_env = stage(sub, Path(tmp))
        try:
            job_id = client.submit_job(
                entrypoint=sub.entrypoint,
                submission_id=sub.submission_id,
                runtime_env=runtime_env,
                metadata=sub.metadata,
                entrypoint_num_cpus=0,  # the driver only coordinates; workers hold the resources
            )
        except RuntimeError as e:
            if "already exists" in str(e):
                run = sub.metadata["bsm_run"]
                raise JobError(
                    f"a job named {sub.submission_id} already exists; continue the run with "
                    f"`bsm {'tune' if sub.kind == 'tune' else 'submit'} --resume {run}` "
                    "or choose another --name"
                ) from None
            raise ClusterError(
                f"the cluster at {conn.dashboard_url} refused the job: {str(e).splitlines()[0]}"
            ) from None
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
        short.append(
            f"{need_gpus:g} GPUs ({workers} workers x {per.get('GPU', 0):g}); the cluster has {res.total_gpus:g}"
        )
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
            raise ClusterError(
                f"{msg}; ask for fewer (--num-gpus/--num-workers/--cpus-per-worker) or use a bigger cluster"
            )


def submit(
    opts: SubmitOptions, *, kind: str = "train", extra: dict[str, Any] | None = None, dry_run: bool = False
) -> Submission | str:
    """Validate, check against the cluster, stage and submit; return the job id (or the plan when dry_run)."""
    if dry_run:
        return plan(opts, kind, extra)  # no cluster is contacted or started
    rec = {} if opts.resume else recipe(opts)
    run = None if opts.resume else resolve_run(opts, kind, rec)  # flags first: a typo never starts a cluster
    conn, client = connection.connect(opts.address, allow_insecure=opts.allow_insecure)
    run = run or stored_run(opts, opts.storage, conn)
    user_cpus = (
        opts.resume
        or opts.cpus_per_worker is not None
        or "cpus_per_worker" in (rec.get("scaling") or {})
        or any(s.split("=", 1)[0].endswith("cpus_per_worker") for s in opts.sets)
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
        max_concurrent_trials,
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
    if dry_run:
        return plan(opts, "tune", settings.to_dict(), run=settings.apply(run))
    conn, client = connection.connect(opts.address, allow_insecure=opts.allow_insecure)
    # Always bounded by what the cluster holds: no trial waits for resources that do not exist.
    fits = max_concurrent_trials(connection.cluster_resources(conn), settings, run)
    settings = replace(settings, max_concurrent=min(fits, settings.max_concurrent or fits))
    log.info("sweep: %d trial(s), at most %d at once", settings.total_trials(), settings.max_concurrent)
    sub = plan(opts, "tune", settings.to_dict(), conn, run=settings.apply(run))
    for w in sub.warnings:
        log.warning("%s", w)
    return _submit(client, conn, sub)


def _resume_sweep(opts: SubmitOptions, *, dry_run: bool) -> Submission | str:
    """`bsm tune --resume NAME`: the stored run and sweep settings, a new job that continues the sweep."""
    check_resume_options(opts)
    conn, client = (None, None) if dry_run else connection.connect(opts.address, allow_insecure=opts.allow_insecure)
    storage = (
        check_storage(opts.storage) if opts.storage else (conn.storage_default if conn else None) or default_storage()
    )
    path = join(storage_path(storage), opts.resume, SWEEP_JSON)
    if not exists(path):
        raise ConfigError(f"--resume {opts.resume}: no sweep named {opts.resume} in {storage}")
    record = read_record(path)
    if not isinstance(record.get("run"), dict) or not isinstance(record.get("tune"), dict):
        raise ConfigError(f'{path}: has no "run" and "tune" settings; the record is damaged')
    run = RunConfig.from_dict(record["run"], where=f"{join(storage, opts.resume)} sweep record: ")
    sub = build_submission(
        run, kind="tune", storage=record.get("storage") or storage, extra={**record["tune"], "resume": True}
    )
    sub = replace(sub, submission_id=resume_id(run.name))
    return sub if dry_run else _submit(client, conn, sub)
