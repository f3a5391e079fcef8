"""What the user asks for, resolved: the run options (`SubmitOptions`, each option's flag, help and config key
declared once) and the validated RunConfig they make with a recipe and `--set` items. Nothing here contacts a
cluster; `client/submit.py` plans and schedules the run.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, fields
from typing import Any

from raytune_bsm.client.submission import (
    check_model_name,
    check_storage,
    default_name,
)
from raytune_bsm.config import (
    RunConfig,
    apply_overrides,
    check_monitor_computed,
    check_run_dict,
    resolve_key,
)
from raytune_bsm.errors import ConfigError
from raytune_bsm.pretrained import model_dims
from raytune_bsm.storage import is_uri, storage_path
from raytune_bsm.yamlsafe import load_yaml

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
    features: str | None = run_option(
        "--features",
        "Side feature columns (numbers, booleans) read next to the text: a,b,c or auto (predict: the export's).",
        "data.feature_fields",
    )
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
