"""Typed run configuration: model, data, training, scaling. Torch-free, so the CLI validates instantly.

A run's fully resolved config is one JSON-able dict {"name", "storage", "model", "data", "train", "scaling"};
every run writes it next to its checkpoints. Errors name the flag or YAML key and the bad value.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from raytune_bsm.errors import ConfigError
from raytune_bsm.pretrained import DEFAULT_MODEL

METRICS = ("accuracy", "f1_score", "auroc", "precision", "recall")
SCHEDULES = ("linear", "cosine", "polynomial", "constant")

# Reference keys and defaults (kept so existing configs keep working), plus the keys bsm adds.
MODEL_DEFAULTS: dict[str, Any] = {
    "text_name": None,  # required
    "label_name": None,  # required
    "id_name": None,
    "tokenizer": "bert-base-cased",  # pretrained name or local path; bsm's recipes default to the offline model
    "is_binary": True,
    "num_classes": 2,
    "hidden_common_dim": 100,
    "metric_choices": ["accuracy", "f1_score"],
    "weight_decay": 0.0,
    "warmup_steps": 0,
    "adam_epsilon": 1e-8,
    "lr": 2e-5,
    "run_scheduler": True,
    "reinit_pooler": False,
    "reinit_layers": 0,
    "model_path": ".",
    # bsm additions
    "encoder_config": None,  # a BertConfig dict: build a randomly initialised encoder instead (tests)
    "scheduler": "linear",  # linear | cosine | polynomial | constant (after warmup)
    "warmup_ratio": 0.0,  # used when warmup_steps is 0: warmup as a fraction of all steps
    "dropout": 0.1,
    "chunk_pooling": "pooler",  # pooler: BERT's pooled [CLS] (the reference); mean: mean of the chunk's tokens
    "freeze_layers": 0,  # freeze the embeddings and the bottom N encoder layers (cheaper steps on CPU)
    "class_names": None,  # label names in index order, saved with the model
    "max_chunks": 8,  # processor settings, saved so a checkpoint alone rebuilds the processor
    "max_tokens": 128,
    "keep_chunks": "last",
}


def resolve_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check every key; errors name the key and the bad value."""
    unknown = sorted(set(config) - set(MODEL_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown model config key(s): {', '.join(unknown)}")
    cfg = {**MODEL_DEFAULTS, **config}
    for key in ("text_name", "label_name"):
        if not cfg[key]:
            raise ConfigError(f"model config needs {key!r}")
    if cfg["is_binary"] is None and cfg["num_classes"] is None:
        pass  # both inferred from the training labels before the model is built
    elif cfg["is_binary"]:
        if cfg["num_classes"] not in (None, 2):
            raise ConfigError(f"is_binary is true but num_classes is {cfg['num_classes']}; set is_binary: false")
        cfg["num_classes"] = 2
    elif cfg["num_classes"] is None or cfg["num_classes"] < 2:
        raise ConfigError(f"num_classes must be at least 2, got {cfg['num_classes']}")
    names = cfg["class_names"]
    if names is not None and len(names) != cfg["num_classes"]:
        raise ConfigError(f"class_names has {len(names)} names but num_classes is {cfg['num_classes']}")
    bad = [m for m in cfg["metric_choices"] if m not in METRICS]
    if bad:
        raise ConfigError(f"metric_choices has unknown metric(s) {bad}; choose from {list(METRICS)}")
    if cfg["chunk_pooling"] not in ("pooler", "mean"):
        raise ConfigError(f"chunk_pooling must be 'pooler' or 'mean', got {cfg['chunk_pooling']!r}")
    if cfg["chunk_pooling"] == "mean" and cfg["reinit_pooler"]:
        raise ConfigError("reinit_pooler needs chunk_pooling: pooler (mean pooling has no pooler layer)")
    if int(cfg["freeze_layers"]) != cfg["freeze_layers"] or cfg["freeze_layers"] < 0:
        raise ConfigError(f"--freeze-layers must be a non-negative integer, got {cfg['freeze_layers']}")
    if cfg["scheduler"] not in SCHEDULES:
        raise ConfigError(f"scheduler must be one of {list(SCHEDULES)}, got {cfg['scheduler']!r}")
    for key, lo, hi in (("lr", 0.0, 1.0), ("dropout", 0.0, 1.0), ("warmup_ratio", 0.0, 1.0)):
        if not (lo <= float(cfg[key]) < hi) or (key == "lr" and cfg[key] <= 0):
            raise ConfigError(f"--{key.replace('_', '-')} must be in [{lo}, {hi}) (lr > 0), got {cfg[key]}")
    if int(cfg["reinit_layers"]) != cfg["reinit_layers"]:
        raise ConfigError(f"--reinit-layers must be an integer, got {cfg['reinit_layers']}")
    for key in ("warmup_steps", "hidden_common_dim"):
        if int(cfg[key]) != cfg[key] or cfg[key] < (1 if key == "hidden_common_dim" else 0):
            raise ConfigError(f"--{key.replace('_', '-')} must be a non-negative integer, got {cfg[key]}")
    from raytune_bsm.data.processor import ProcessorConfig  # validates max_chunks, max_tokens, keep_chunks; names the flags

    ProcessorConfig.of_model(cfg)
    if cfg["weight_decay"] < 0:
        raise ConfigError(f"--weight-decay must be >= 0, got {cfg['weight_decay']}")
    return cfg


def default_metric(num_classes: int) -> str:
    """What checkpoints and sweeps rank by unless told: AUROC for binary, macro-F1 for multiclass."""
    return "val_auroc" if num_classes == 2 else "val_f1_score"


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

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if self.empty_dialogues not in ("skip", "error"):
            raise ConfigError(f"empty_dialogues must be 'skip' or 'error', got {self.empty_dialogues!r}")
        for name in ("text_field", "label_field"):
            if not getattr(self, name):
                raise ConfigError(f"--{name.replace('_', '-')} must not be empty")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    limit_train_batches: float | int = 1.0  # fraction or count per epoch (smoke tests)
    limit_val_batches: float | int = 1.0
    log_every_n_steps: int = 10
    output_dir: str | None = None  # local runs: where checkpoints and predictions go
    export: bool = True  # export the best checkpoint (ONNX + TorchScript, verified) when the run ends
    max_failures: int = 2  # Ray Train: worker failures survived by resuming from the latest checkpoint
    runtime: Literal["local", "ray"] = "local"  # "ray": running as a Ray Train worker

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ConfigError(f"--max-epochs must be at least 1, got {self.max_epochs}")
        if self.mode not in ("max", "min"):
            raise ConfigError(f"--mode must be max or min, got {self.mode!r}")
        if self.save_top_k < 1:
            raise ConfigError(f"save_top_k must be at least 1, got {self.save_top_k}")
        if self.precision not in ("auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16-true"):
            raise ConfigError(f"precision must be auto, 32, bf16-mixed or 16-mixed, got {self.precision!r}")
        if self.monitor is not None:
            check_metric_name(self.monitor)


def check_monitor_computed(monitor: str, metric_choices: list[str]) -> None:
    """The ranking metric must be one the model logs: a wrong name would silently keep the wrong checkpoints."""
    if monitor.removeprefix("val_") not in list(metric_choices) + ["loss"]:
        raise ConfigError(f"--metric {monitor} is not computed; metric_choices are {list(metric_choices)}")


def check_metric_name(name: str) -> None:
    allowed = [f"{split}_{m}" for split in ("val",) for m in METRICS] + ["val_loss"]
    if name not in allowed:
        raise ConfigError(f"--metric must be one of {', '.join(allowed)}, got {name!r}")


@dataclass
class ScalingConfig:
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    gpus_per_worker: int = 1  # with use_gpu: one GPU per worker (NCCL)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"--num-workers must be at least 1, got {self.num_workers}")
        if self.cpus_per_worker < 1:
            raise ConfigError(f"--cpus-per-worker must be at least 1, got {self.cpus_per_worker}")
        if self.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ConfigError(f"placement_strategy must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, got {self.placement_strategy!r}")

    @classmethod
    def for_gpus(cls, num_gpus: int, cpus_per_worker: int = 4) -> "ScalingConfig":
        """--num-gpus N: N workers with one GPU each, placed across nodes by Ray."""
        if num_gpus < 1:
            raise ConfigError(f"--num-gpus must be at least 1, got {num_gpus}")
        return cls(num_workers=num_gpus, use_gpu=True, cpus_per_worker=cpus_per_worker)

    def resources_per_worker(self) -> dict[str, float]:
        res: dict[str, float] = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            res["GPU"] = self.gpus_per_worker
        return res


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) in {section}: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{section}: {e}") from None


@dataclass
class RunConfig:
    name: str = "bsm-run"
    storage: str | None = None  # where runs and exports go; None: the cluster's default
    model: dict[str, Any] = field(default_factory=dict)  # TextBertBase keys
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        d = copy.deepcopy(d)
        unknown = sorted(set(d) - {"name", "storage", "model", "data", "train", "scaling"})
        if unknown:
            raise ConfigError(f"unknown top-level config key(s): {', '.join(unknown)}")
        run = cls(
            name=d.get("name", "bsm-run"),
            storage=d.get("storage"),
            model=dict(d.get("model") or {}),
            data=_build(DataConfig, d.get("data") or {}, "data"),
            train=_build(TrainConfig, d.get("train") or {}, "train"),
            scaling=_build(ScalingConfig, d.get("scaling") or {}, "scaling"),
        )
        run.model_config()  # validate now, not on the cluster
        return run

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "storage": self.storage,
            "model": copy.deepcopy(self.model),
            "data": asdict(self.data),
            "train": asdict(self.train),
            "scaling": asdict(self.scaling),
        }

    def model_config(self, **extra: Any) -> dict[str, Any]:
        """The model's config: bsm's defaults, the data's column names, then the user's keys."""
        base = {
            "tokenizer": DEFAULT_MODEL,
            "lr": 2e-4,
            "weight_decay": 0.01,
            "warmup_ratio": 0.1,
            # One epoch on a 2-core CPU: the last 2 x 128 tokens hold the decisive messages, mean pooling suits
            # the sentence-embedding default model, and a frozen bottom (embeddings + 2 layers) makes steps cheaper.
            "chunk_pooling": "mean",
            "freeze_layers": 2,
            "max_chunks": 2,
            "max_tokens": 128,
            "metric_choices": list(METRICS),
            "hidden_common_dim": 128,
            "text_name": self.data.text_field,
            "label_name": self.data.label_field,
            "id_name": self.data.id_field,
        }
        return resolve_model_config({**base, **self.model, **extra})

    def monitor(self, num_classes: int) -> str:
        return self.train.monitor or default_metric(num_classes)


def parse_value(text: str) -> Any:
    """--set key=value: the value as YAML (numbers, booleans, lists), else the string."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def config_sections() -> dict[str, set[str]]:
    """Every run-config key, by section."""
    return {
        "model": set(MODEL_DEFAULTS),
        "data": {f.name for f in fields(DataConfig)},
        "train": {f.name for f in fields(TrainConfig)},
        "scaling": {f.name for f in fields(ScalingConfig)},
    }


def resolve_key(key: str, where: str) -> tuple[str, str]:
    """`section.key`, or a bare key found in exactly one section -> (section, key); errors name `where`."""
    sections = config_sections()
    key = str(key).strip()
    if "." in key:
        section, name = key.split(".", 1)
        if section not in sections or name not in sections[section]:
            raise ConfigError(f"{where}: unknown key {key!r}")
        return section, name
    owners = [s for s, names in sections.items() if key in names]
    if not owners:
        raise ConfigError(f"{where}: unknown key {key!r}; see the recipes in jobs/ for every key")
    if len(owners) > 1:
        raise ConfigError(f"{where}: key {key!r} is ambiguous; write one of {', '.join(f'{o}.{key}' for o in owners)}")
    return owners[0], key


def apply_overrides(d: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Apply `--set key=value` items. A key is `section.key` or a bare key found in exactly one section."""
    d = copy.deepcopy(d)
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        key, raw = item.split("=", 1)
        if key.strip() in ("name", "storage"):
            d[key.strip()] = parse_value(raw)
            continue
        section, name = resolve_key(key, f"--set {key.strip()}")
        d.setdefault(section, {})[name] = parse_value(raw)
    return d


def load_yaml(path: str | Path, flag: str = "--config") -> dict[str, Any]:
    """A YAML file holding a mapping; errors name `flag` and the file."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{flag} {path}: no such file")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{flag} {path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{flag} {path}: expected a mapping at the top level")
    return d


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, sort_keys=True, default=str)
