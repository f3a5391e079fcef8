"""Building and submitting a job from the user's machine: options -> a validated RunConfig -> a Submission
(`--dry-run` prints it) -> checked against the cluster -> the Jobs API. Everything is validated before anything
touches a cluster: a bad flag, key, model, storage, unreadable data file or a request the cluster cannot fit is
an error first. `bsm submit` and `bsm tune` share SubmitOptions and resolve_run: a flag means the same in both
(per trial in a sweep).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from raytune_bsm.client.submission import (
    Submission,
    build_submission,
    check_model_name,
    check_resume_options,
    check_storage,
    default_name,
    resume_id,
    schedule,
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


def run_option(
    flag: str, help: str, key: str | None = None, *, default: Any = None, default_factory: Any = None
) -> Any:
    """A run option declared once: its flag and help (cli/options.py builds the Typer option from them) and the
    config key it sets (`FLAG_KEYS`)."""
    meta = {"flag": flag, "help": help, "key": key}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SubmitOptions:
    """`bsm submit` / `bsm tune` options; None means "not given" (the recipe or the default applies). Each field is
    the option's one declaration: flag, help, and the config key it sets."""

    config: str | None = run_option("--config", "YAML recipe (jobs/*.yaml in the source tree); flags override it.")
    address: str | None = run_option(
        "--address",
        "Ray dashboard/Jobs API, e.g. http://HEAD:8265. Default: RAY_API_SERVER_ADDRESS / RAY_ADDRESS, "
        "else the cluster `bsm up` started, else one bsm starts.",
    )
    num_gpus: int | None = run_option(  # sets scaling.num_workers and scaling.use_gpu (resolve_run)
        "--num-gpus", "N workers with one GPU each (NCCL, bf16); per trial in `bsm tune`."
    )
    num_workers: int | None = run_option(
        "--num-workers", "CPU workers (DDP over gloo); per trial in `bsm tune`.", "scaling.num_workers"
    )
    cpus_per_worker: int | None = run_option(
        "--cpus-per-worker", "Default: the largest node's CPUs shared among the workers.", "scaling.cpus_per_worker"
    )
    train: str | None = run_option("--train", "Parquet file/dir/glob, CSV or JSONL. Default: demo data.", "data.train")
    val: str | None = run_option("--val", "Default: a seeded fraction of --train.", "data.val")
    test: str | None = run_option("--test", "Scored once after training.", "data.test")
    text_field: str | None = run_option("--text-field", "Default: dialogue (predict: the export's).", "data.text_field")
    label_field: str | None = run_option("--label-field", "Default: reversal_flag.", "data.label_field")
    id_field: str | None = run_option("--id-field", "Default: order_id / id / record_id when present.", "data.id_field")
    model: str | None = run_option(
        "--model", "HF model name (org/name) or local dir. Default: all-MiniLM-L6-v2 (offline).", "model.tokenizer"
    )
    max_chunks: int | None = run_option("--max-chunks", "C: chunks kept per dialogue (default 2).", "model.max_chunks")
    max_tokens: int | None = run_option("--max-tokens", "T: tokens per chunk (default 128).", "model.max_tokens")
    max_epochs: int | None = run_option(
        "--max-epochs", "Default 1; per trial (ASHA's max_t) in `bsm tune`.", "train.max_epochs"
    )
    batch_size: int | None = run_option("--batch-size", "Records per batch.", "data.batch_size")
    lr: float | None = run_option(
        "--lr", "AdamW peak learning rate (default 2e-4); fixed in every trial of `bsm tune`.", "model.lr"
    )
    storage: str | None = run_option("--storage", "Run storage: path (made absolute), NFS, s3://, gs://, hdfs://.")
    name: str | None = run_option("--name", "Run name (default: <kind>-<time>-<hex>).")
    sets: list[str] = run_option(
        "--set", "Any config key: key=value or section.key=value (repeatable).", default_factory=list
    )
    allow_insecure: bool = run_option(
        "--allow-insecure",
        "Use a remote cluster without token auth, or send the token over plain http.",
        default=False,
    )
    resume: str | None = run_option(
        "--resume", "Continue the failed, stopped or interrupted run NAME from its latest checkpoint."
    )


# Each run flag and the config key it sets, from the declarations above.
FLAG_KEYS = {f.name: f.metadata["key"] for f in fields(SubmitOptions) if f.metadata["key"]}


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

    from raytune_bsm.data.splits import check_schema, load_split

    d = run.data
    if d.train is None:
        return
    flag_ = "--train"
    try:
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
    if not run.resume and kind == "train" and not is_uri(storage) and exists(join(storage, run.name, CONFIG_JSON)):
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
    sub = replace(sub, submission_id=resume_id(run.name), run=run)
    return sub if dry_run else schedule(sub, opts.address, allow_insecure=opts.allow_insecure, bind=bind)
