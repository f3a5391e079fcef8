"""Typed run configuration: model, data, training, scaling. Torch-free, so the CLI validates instantly.

A run's fully resolved config is one JSON-able dict {"name", "storage", "resume", "model", "data", "train",
"scaling"}; every run writes it next to its checkpoints.

Every value is type-checked where it enters (flags, `--set`, YAML recipes, stored records): `coerce` turns it
into its field's type (`1e-5` is a float, also where PyYAML reads it as a string) or raises a ConfigError that
names where it came from, the key and the value (`--set lr: expected a number, got 'abc'`). Ranges are checked
when a section is built and name the flag (`--max-epochs must be at least 1, got 0`).

One default per key, here: the field defaults below are bsm's (the README's: the last 2 chunks of 128 tokens,
mean pooling, 2 frozen layers, lr 2e-4, batch 8). The bare `TextBertBase(config)` keeps the reference design's
constructor defaults (REFERENCE_DEFAULTS) for configs written for it; a bsm run passes every key, so none of
those reaches a run.
"""

from __future__ import annotations

import copy
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Literal

from raytune_bsm import side_settings
from raytune_bsm.coerce import check_fields, coerce, field_types
from raytune_bsm.errors import ConfigError
from raytune_bsm.pretrained import DEFAULT_MODEL
from raytune_bsm.yamlsafe import parse_value

METRICS = ("accuracy", "f1_score", "auroc", "precision", "recall")
PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16-true")

# ----------------------------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """The model's keys with bsm's defaults. RunConfig.model holds only what the user set; model_config()
    resolves it against these. Checked on construction; errors name the flag."""

    text_name: str | None = None  # filled from data.text_field
    label_name: str | None = None  # filled from data.label_field
    id_name: str | None = None
    tokenizer: str = DEFAULT_MODEL  # encoder + tokenizer: HF name, local dir, or the offline default
    is_binary: bool | None = True  # None (with num_classes None): inferred from the training labels
    num_classes: int | None = 2
    hidden_common_dim: int = 128
    metric_choices: list[str] = field(default_factory=lambda: list(METRICS))
    weight_decay: float = 0.01
    warmup_steps: int = 0
    adam_epsilon: float = 1e-8
    lr: float = 2e-4
    run_scheduler: bool = True
    reinit_pooler: bool = False
    reinit_layers: int = 0  # checked against the encoder's layer count where that is known
    model_path: str = "."
    encoder_config: dict[str, Any] | None = None  # a BertConfig dict: a randomly initialised encoder (tests)
    scheduler: Literal["linear", "cosine", "polynomial", "constant"] = "linear"  # after warmup
    warmup_ratio: float = 0.1  # used when warmup_steps is 0: warmup as a fraction of all steps
    dropout: float = 0.1
    chunk_pooling: Literal["pooler", "mean"] = "mean"  # mean of the chunk's tokens | BERT's pooled [CLS]
    freeze_layers: int = 2  # freeze the embeddings and the bottom N encoder layers (cheaper steps on CPU)
    class_names: list[str] | None = None  # label names in index order, saved with the model
    max_chunks: int = 2  # C; processor settings travel with the model, so a checkpoint rebuilds its processor
    max_tokens: int = 128  # T, special tokens included
    keep_chunks: Literal["first", "last"] = "last"
    # start: the last kept chunk holds the closing messages, and the chunk mean weighs them as much as the rest
    # (first run: val AUROC 0.95); kept_end tokenizes only the kept text (long texts), first run 0.89
    pack_from: Literal["start", "kept_end"] = "start"
    feature_fields: list[str] | None = None  # side features, filled from data.feature_fields (data/features.py)
    feature_stats: dict[str, Any] | None = None  # their training statistics, filled when the data is prepared
    fusion: Literal["concat", "gated", "text"] = "concat"  # how they join the text (data/features.py FUSIONS)
    side_hidden: int = 64  # the side MLP's width: small, the features are few

    def __post_init__(self) -> None:
        for key in ("text_name", "label_name"):
            if not getattr(self, key):
                raise ConfigError(f"model config needs {key!r}")
        if self.is_binary and self.num_classes not in (None, 2):
            raise ConfigError(f"is_binary is true but num_classes is {self.num_classes}; set is_binary: false")
        if self.is_binary is False and (self.num_classes is None or self.num_classes < 2):
            raise ConfigError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.is_binary:
            self.num_classes = 2
        if self.class_names is not None and self.num_classes is not None and len(self.class_names) != self.num_classes:
            raise ConfigError(f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}")
        bad = [m for m in self.metric_choices if m not in METRICS]
        if bad:
            raise ConfigError(f"metric_choices has unknown metric(s) {bad}; choose from {list(METRICS)}")
        if self.chunk_pooling == "mean" and self.reinit_pooler:
            raise ConfigError("reinit_pooler needs chunk_pooling: pooler (mean pooling has no pooler layer)")
        for key, lo in (("freeze_layers", 0), ("warmup_steps", 0), ("hidden_common_dim", 1), ("side_hidden", 1)):
            if getattr(self, key) < lo:
                raise ConfigError(f"--{key.replace('_', '-')} must be at least {lo}, got {getattr(self, key)}")
        if not 0.0 < self.lr < 1.0:
            raise ConfigError(f"--lr must be in (0, 1), got {self.lr}")
        for key in ("dropout", "warmup_ratio"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"--{key.replace('_', '-')} must be in [0, 1), got {getattr(self, key)}")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.adam_epsilon <= 0:
            raise ConfigError(f"adam_epsilon must be > 0, got {self.adam_epsilon}")
        check_chunking(self.max_chunks, self.max_tokens, self.keep_chunks, self.pack_from)
        if self.feature_fields:
            side_settings.check_model(asdict(self))


def check_chunking(max_chunks: int, max_tokens: int, keep_chunks: str, pack_from: str) -> None:
    """The chunking settings' ranges, naming the flags (ModelConfig and data/processor.ProcessorConfig)."""
    if not 1 <= max_chunks <= 4096:
        raise ConfigError(f"--max-chunks must be between 1 and 4096, got {max_chunks}")
    if not 8 <= max_tokens <= 8192:
        raise ConfigError(f"--max-tokens must be between 8 and 8192, got {max_tokens}")
    if keep_chunks not in ("first", "last"):
        raise ConfigError(f"keep_chunks must be 'first' or 'last', got {keep_chunks!r}")
    if pack_from not in ("start", "kept_end"):
        raise ConfigError(f"pack_from must be 'start' or 'kept_end', got {pack_from!r}")


# The reference TextBertBase's constructor defaults where they differ from bsm's. They belong to the bare module
# (`TextBertBase({"text_name": ..., "label_name": ...})`, tests/test_models.py), never to a bsm run.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "tokenizer": "bert-base-cased",
    "hidden_common_dim": 100,
    "lr": 2e-5,
    "metric_choices": ["accuracy", "f1_score"],
    "weight_decay": 0.0,
    "warmup_ratio": 0.0,
    "chunk_pooling": "pooler",
    "freeze_layers": 0,
    "max_chunks": 8,
}


def resolve_model_config(config: dict[str, Any], *, reference: bool = True) -> dict[str, Any]:
    """Every model key, type-checked and range-checked: `config` over bsm's defaults (over the reference's
    where `reference`, as the bare TextBertBase does)."""
    unknown = sorted(map(str, set(config) - set(field_types(ModelConfig))))
    if unknown:
        raise ConfigError(f"unknown model config key(s): {', '.join(unknown)}")
    base = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(ModelConfig)}
    values = {**base, **(REFERENCE_DEFAULTS if reference else {}), **check_fields(ModelConfig, config, "model.")}
    return asdict(ModelConfig(**values))


def default_metric(num_classes: int) -> str:
    """What checkpoints and sweeps rank by unless told: AUROC for binary, macro-F1 for multiclass."""
    return "val_auroc" if num_classes == 2 else "val_f1_score"


def check_monitor_computed(monitor: str, metric_choices: list[str]) -> None:
    """The ranking metric must be one the model logs: a wrong name would silently keep the wrong checkpoints."""
    if monitor.removeprefix("val_") not in list(metric_choices) + ["loss"]:
        raise ConfigError(f"--metric {monitor} is not computed; metric_choices are {list(metric_choices)}")


def check_metric_name(name: str) -> None:
    allowed = [f"val_{m}" for m in METRICS] + ["val_loss"]
    if name not in allowed:
        raise ConfigError(f"--metric must be one of {', '.join(allowed)}, got {name!r}")


# ----------------------------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    train: str | None = None  # None: the demo data
    val: str | None = None  # None: split off `train` by `val_fraction`
    test: str | None = None
    text_field: str = "dialogue"
    label_field: str = "reversal_flag"
    id_field: str | None = None  # None: the first of ID_CANDIDATES that is present, if any
    val_fraction: float = 0.1
    split_seed: int = 0
    batch_size: int = 8  # small batches: more optimizer steps in the one CPU epoch of the default run
    eval_batch_size: int = 32
    group_by_length: bool = True
    empty_dialogues: Literal["skip", "error"] = "skip"
    num_workers: int = 0
    demo_rows: int = 2000  # with no --train: the size of the generated demo data (train/val/test 80/10/10)
    # On Ray, inputs up to this many MiB of files are tokenized by the job driver (Ray Data's start-up costs more
    # there; 8 MiB: ~17,000 demo dialogues, ~150 MB held by the driver at its peak). 0: always Ray Data.
    driver_prepare_mib: float = 8.0
    feature_fields: list[str] | str | None = None  # side features: --features a,b,c | auto (data/features.py)

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        for key in ("batch_size", "eval_batch_size", "demo_rows"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.driver_prepare_mib < 0:
            raise ConfigError(f"data.driver_prepare_mib must be >= 0, got {self.driver_prepare_mib}")
        for name in ("text_field", "label_field"):
            if not getattr(self, name):
                raise ConfigError(f"--{name.replace('_', '-')} must not be empty")
        if self.feature_fields is not None:
            self.feature_fields = side_settings.wanted(self.feature_fields)
        check_field_roles(self.field_roles())

    def field_roles(self) -> list[tuple[str, str | None]]:
        """(flag, column) for every column the data config gives a role: text, label, id and each side feature."""
        features = self.feature_fields if isinstance(self.feature_fields, list) else []
        return [
            ("--text-field", self.text_field),
            ("--label-field", self.label_field),
            ("--id-field", self.id_field),
            *(("--features", name) for name in features),
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_field_roles(roles: list[tuple[str, str | None]]) -> None:
    """Each column plays one role: a label that is also the text (or an id, or a feature) leaks into the input."""
    seen: dict[str, str] = {}
    for flag, column in roles:
        if column is None:
            continue
        if column in seen:
            raise ConfigError(
                f"{flag} {column!r} is also the {seen[column]}: a column can play one role (text, label, id, feature); "
                "give another column"
            )
        seen[column] = flag


@dataclass
class TrainConfig:
    max_epochs: int = 1
    seed: int = 0
    precision: str = "auto"  # auto: bf16-mixed on GPUs that support it, 16-mixed on older GPUs, 32 on CPU
    gradient_clip_val: float = 1.0
    accumulate_grad_batches: int = 1
    monitor: str | None = None  # None: default_metric(num_classes)
    mode: Literal["max", "min"] = "max"
    save_top_k: int = 2  # best k checkpoints by `monitor`, plus the latest
    limit_train_batches: int | float = 1.0  # fraction or count per epoch (smoke tests)
    limit_val_batches: int | float = 1.0
    log_every_n_steps: int = 10
    output_dir: str | None = None  # local runs: where checkpoints and predictions go
    export: bool = True  # export the best checkpoint (ONNX + TorchScript, verified) when the run ends
    max_failures: int = 2  # Ray Train: worker failures survived by resuming from the latest checkpoint
    mlflow_uri: str | None = (
        None  # an MLflow tracking URI (pip install 'raytune-bsm[mlflow]'); None: MLFLOW_TRACKING_URI
    )
    runtime: Literal["local", "ray"] = "local"  # "ray": running as a Ray Train worker

    def __post_init__(self) -> None:
        for key in ("max_epochs", "save_top_k", "accumulate_grad_batches", "log_every_n_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        for key in ("max_failures", "gradient_clip_val"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.monitor is not None:
            check_metric_name(self.monitor)


@dataclass
class ScalingConfig:
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1  # CPU runs without --cpus-per-worker share the largest node's CPUs (submit)
    gpus_per_worker: int = 1  # with use_gpu: one GPU per worker (NCCL)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"

    def __post_init__(self) -> None:
        for key in ("num_workers", "cpus_per_worker", "gpus_per_worker"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")

    def resources_per_worker(self) -> dict[str, float]:
        res: dict[str, float] = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            res["GPU"] = self.gpus_per_worker
        return res


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "scaling": ScalingConfig}
TOP_LEVEL: dict[str, Any] = {"name": str, "storage": str | None, "resume": bool}


def check_run_dict(d: Any, where: str = "") -> dict[str, Any]:
    """A run-config dict (a recipe, a record) with every value coerced to its type; errors name `where`."""
    if not isinstance(d, dict):
        raise ConfigError(
            f"{where.rstrip(': ') or 'config'}: expected a mapping at the top level, got {type(d).__name__}"
        )
    unknown = sorted(map(str, set(d) - set(TOP_LEVEL) - set(SECTIONS)))
    if unknown:
        raise ConfigError(
            f"{where}unknown top-level config key(s): {', '.join(unknown)} "
            f"(known: {', '.join([*TOP_LEVEL, *SECTIONS])})"
        )
    out = {k: coerce(TOP_LEVEL[k], v, f"{where}{k}") for k, v in d.items() if k in TOP_LEVEL}
    for section, cls in SECTIONS.items():
        if d.get(section) is not None:
            out[section] = check_fields(cls, d[section], f"{where}{section}.")
    return out


@dataclass
class RunConfig:
    name: str = "bsm-run"
    storage: str | None = None  # where runs and exports go; None: the cluster's default
    resume: bool = False  # continue the run `name` under `storage` from its latest checkpoint (`bsm submit --resume`)
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig keys the user set
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> "RunConfig":
        """A validated RunConfig from a dict; `where` prefixes errors ("--config r.yaml: ")."""
        d = check_run_dict(copy.deepcopy(d), where)
        run = cls(
            name=d.get("name", "bsm-run"),
            storage=d.get("storage"),
            resume=d.get("resume", False),
            model=dict(d.get("model") or {}),
            data=DataConfig(**d.get("data", {})),
            train=TrainConfig(**d.get("train", {})),
            scaling=ScalingConfig(**d.get("scaling", {})),
        )
        run.model_config()  # validate now, not on the cluster
        return run

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "storage": self.storage,
            "resume": self.resume,
            "model": copy.deepcopy(self.model),
            "data": asdict(self.data),
            "train": asdict(self.train),
            "scaling": asdict(self.scaling),
        }

    def model_config(self, **extra: Any) -> dict[str, Any]:
        """The model's config: bsm's defaults, the data's column names, then the user's keys."""
        names = {"text_name": self.data.text_field, "label_name": self.data.label_field, "id_name": self.data.id_field}
        return resolve_model_config({**names, **self.model, **extra}, reference=False)

    def monitor(self, num_classes: int) -> str:
        return self.train.monitor or default_metric(num_classes)


# ----------------------------------------------------------------------------------------------- --set


def resolve_key(key: str, where: str) -> tuple[str, str]:
    """`section.key`, or a bare key found in exactly one section -> (section, key); errors name `where`."""
    key = str(key).strip()
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS or name not in field_types(SECTIONS[section]):
            raise ConfigError(f"{where}: unknown key {key!r}")
        return section, name
    owners = [s for s, cls in SECTIONS.items() if key in field_types(cls)]
    if not owners:
        raise ConfigError(f"{where}: unknown key {key!r}; see the recipes in jobs/ for every key")
    if len(owners) > 1:
        raise ConfigError(f"{where}: key {key!r} is ambiguous; write one of {', '.join(f'{o}.{key}' for o in owners)}")
    return owners[0], key


def apply_overrides(d: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Apply `--set key=value` items, each value type-checked against its key (errors name `--set KEY`)."""
    d = copy.deepcopy(d)
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key in TOP_LEVEL:
            d[key] = coerce(TOP_LEVEL[key], parse_value(raw, f"--set {key}"), f"--set {key}")
            continue
        section, name = resolve_key(key, f"--set {key}")
        value = coerce(field_types(SECTIONS[section])[name], parse_value(raw, f"--set {key}"), f"--set {key}")
        d.setdefault(section, {})[name] = value
    return d


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, sort_keys=True, default=str)
