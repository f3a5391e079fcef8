"""`bsm tune`'s settings: `SweepConfig`, the search space (default, YAML files, checks) and how many trials
the cluster's resources fit. Torch-free, so the CLI validates a sweep before anything is submitted.
The cluster side is `runner/tune.py` (the sweep) and `runner/trials.py` (its record)."""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from raytune_bsm.config import RunConfig, check_metric_name, default_metric, resolve_key
from raytune_bsm.errors import ClusterError, ConfigError
from raytune_bsm.pretrained import model_dims
from raytune_bsm.yamlsafe import load_yaml

log = logging.getLogger("raytune_bsm")

SCHEDULERS = ("asha", "fifo")
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint", "grid")
SPACE_MODES = ("extend", "replace")
# Keys a sweep cannot vary: per-trial resources are fixed (they bound the concurrency), and ASHA's time axis,
# the ranking metric and where a run lives are the sweep's own settings.
FIXED_KEYS = {"train.max_epochs", "train.monitor", "train.mode", "train.runtime", "train.output_dir"}
PG_FILE = "bsm_placement_groups.json"  # per trial run: the placement groups its Train controller created
RELEASE_AFTER_S = 5.0  # a stopped trial's placement group is released this long after the trial ended
LEADERBOARD_ROWS = 10
TRIAL_RESOURCES = {"CPU": 0, "memory": 1}  # the trial driver only waits on its trainer; Tune needs a non-empty bundle


# ----------------------------------------------------------------------------------------------- settings


@dataclass
class SweepConfig:
    """`bsm tune` settings. Validated on construction; errors name the flag."""

    num_samples: int = 8  # --num-samples: trials drawn from the search space (times every grid's size)
    scheduler: str = "asha"  # --scheduler asha|fifo; ASHA stops weak trials after any epoch
    metric: str | None = None  # --metric; None: the run's train.monitor, else default_metric(num_classes)
    mode: str | None = None  # --mode max|min; None: min for val_loss, max for every other metric
    workers_per_trial: int | None = None  # --workers-per-trial; None: the run's scaling.num_workers
    gpus_per_trial: int = 0  # --gpus-per-trial N: N workers with one GPU each
    max_concurrent: int | None = None  # --max-concurrent; None: as many as the cluster's resources fit
    time_budget_s: float | None = None  # --time-budget (seconds; parse_duration reads "30m", "2h")
    search_space: dict[str, Any] | None = None  # --search-space FILE (load_search_space); None: the default
    resume: bool = False  # --resume NAME: continue an interrupted sweep
    reduction_factor: float = 2  # --reduction-factor (ASHA): keep the top 1/rf of trials at each rung
    grace_period: int = 1  # ASHA: epochs every trial gets before it can be stopped

    def __post_init__(self) -> None:
        if int(self.num_samples) != self.num_samples or self.num_samples < 1:
            raise ConfigError(f"--num-samples must be a positive integer, got {self.num_samples}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.metric is not None:
            check_metric_name(self.metric)
        if self.mode not in (None, "max", "min"):
            raise ConfigError(f"--mode must be max or min, got {self.mode!r}")
        if self.workers_per_trial is not None and self.workers_per_trial < 1:
            raise ConfigError(f"--workers-per-trial must be at least 1, got {self.workers_per_trial}")
        if self.gpus_per_trial < 0:
            raise ConfigError(f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}")
        if self.gpus_per_trial and self.workers_per_trial not in (None, self.gpus_per_trial):
            raise ConfigError(
                "--gpus-per-trial N runs N workers with one GPU each; do not combine it with --workers-per-trial"
            )
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent must be at least 1, got {self.max_concurrent}")
        if self.time_budget_s is not None:
            self.time_budget_s = parse_duration(self.time_budget_s)
        if not self.reduction_factor > 1:
            raise ConfigError(f"--reduction-factor must be greater than 1, got {self.reduction_factor}")
        if self.grace_period < 1:
            raise ConfigError(f"grace_period must be at least 1, got {self.grace_period}")
        if self.search_space is not None:
            self.search_space = canonical_space(self.search_space, "--search-space")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "SweepConfig":
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown sweep setting(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def trial_workers(self, run: RunConfig) -> int:
        return self.gpus_per_trial or self.workers_per_trial or run.scaling.num_workers

    def resolved_mode(self, monitor: str | None) -> str:
        return self.mode or ("min" if monitor == "val_loss" else "max")

    def apply(self, run: RunConfig, num_classes: int | None = None) -> RunConfig:
        """The run each trial starts from: the sweep's per-trial workers, its metric and mode (which also rank
        each trial's checkpoints). The metric defaults to the run's train.monitor, else default_metric."""
        scaling = replace(run.scaling, num_workers=self.trial_workers(run))
        if self.gpus_per_trial:
            scaling = replace(scaling, use_gpu=True, gpus_per_worker=1)
        monitor = self.metric or run.train.monitor or (default_metric(num_classes) if num_classes else None)
        train = replace(run.train, monitor=monitor, mode=self.resolved_mode(monitor))
        return replace(run, scaling=scaling, train=train)

    def total_trials(self) -> int:
        """num_samples times the size of every grid in the search space."""
        n = self.num_samples
        for spec in (self.search_space or {}).values():
            if isinstance(spec, dict) and "grid" in spec:
                n *= len(spec["grid"])
        return n


def parse_duration(value: Any) -> float:
    """--time-budget: seconds as a number, or "90s", "30m", "2h", "1h30m", "1.5h"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ConfigError(f"--time-budget must be seconds or like 90s, 30m, 2h, 1h30m; got {value!r}")
            seconds = sum(float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if not seconds > 0:
        raise ConfigError(f"--time-budget must be positive, got {value!r}")
    return seconds


# ----------------------------------------------------------------------------------------------- search space


def default_search_space(num_layers: int | None = None) -> dict[str, Any]:
    """lr, warmup and how many top encoder layers to re-initialise (capped by the model's layer count)."""
    layers = [n for n in (0, 1, 2, 3) if num_layers is None or n <= num_layers]
    return {
        "model.lr": {"loguniform": [1e-5, 2e-4]},
        "model.warmup_ratio": {"uniform": [0.0, 0.2]},
        "model.reinit_layers": {"choice": layers},
    }


def canonical_key(key: str, where: str) -> str:
    """ "lr" / "model.lr" -> "model.lr" (a bare key must belong to exactly one section)."""
    section, name = resolve_key(key, where)
    full = f"{section}.{name}"
    if section == "scaling":
        raise ConfigError(
            f"{where}: {full} cannot be tuned: every trial gets the same resources "
            "(set them with --num-workers, --num-gpus or --cpus-per-worker)"
        )
    if full in FIXED_KEYS:
        raise ConfigError(f"{where}: {full} cannot be tuned; it is a setting of the sweep itself")
    return full


def check_spec(spec: Any, where: str) -> Any:
    """One search-space entry: {distribution: args} or a constant (a number, string, bool or list)."""
    if not isinstance(spec, dict):
        return spec
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: expected one of {{{', '.join(DISTRIBUTIONS)}}}: [...] or a constant, got {spec!r}")
    kind, args = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {kind} needs a non-empty list of values, got {args!r}")
        return {kind: list(args)}
    if (
        not isinstance(args, list)
        or len(args) != 2
        or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    ):
        raise ConfigError(f"{where}: {kind} needs [low, high], got {args!r}")
    lo, hi = args
    if not lo < hi:
        raise ConfigError(f"{where}: {kind} needs low < high, got {args!r}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {args!r}")
    if kind == "randint" and (int(lo) != lo or int(hi) != hi):
        raise ConfigError(f"{where}: randint needs integers [low, high) (high excluded), got {args!r}")
    return {kind: [int(lo), int(hi)] if kind == "randint" else [float(lo), float(hi)]}


def canonical_space(space: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(space, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys to distributions, got {type(space).__name__}")
    out: dict[str, Any] = {}
    for key, spec in space.items():
        full = canonical_key(key, where)
        if full in out:
            raise ConfigError(f"{where}: {full} is given twice (as {key!r} and another spelling)")
        out[full] = check_spec(spec, f"{where}: key {key!r}")
    return out


def load_search_space(path: str | Path, num_layers: int | None = None) -> dict[str, Any]:
    """Read a search-space YAML file (see jobs/search_space.yaml).

    Top-level keys are config keys ("lr", "model.lr", "data.batch_size", ...), each mapped to
    {loguniform: [a, b]} | {uniform: [a, b]} | {choice: [...]} | {randint: [a, b]} (b excluded) |
    {grid: [...]} (every value, times --num-samples) | a constant. An optional top-level `mode: extend`
    (the default) adds to / overrides the default search space; `mode: replace` uses the file alone.
    """
    where = f"--search-space {path}"
    d = dict(load_yaml(path, flag="--search-space"))
    mode = d.pop("mode", "extend")
    if mode not in SPACE_MODES:
        raise ConfigError(f"{where}: mode must be extend or replace, got {mode!r} (train.mode cannot be tuned)")
    space = canonical_space(d, where)
    if mode == "replace":
        if not space:
            raise ConfigError(f"{where}: mode replace with no keys leaves nothing to tune")
        return space
    return {**default_search_space(num_layers), **space}


def model_layers(run: RunConfig) -> int | None:
    """The encoder's layer count, when it is known without loading the model (a local config.json)."""
    cfg = run.model_config()
    dims = model_dims(cfg["tokenizer"], cfg["encoder_config"])
    return dims.get("num_hidden_layers") if dims else None


def resolve_space(run: RunConfig, sweep: SweepConfig) -> dict[str, Any]:
    return sweep.search_space if sweep.search_space is not None else default_search_space(model_layers(run))


def _candidates(spec: Any) -> list[Any]:
    """Values that stand for a distribution when checking it: its ends (just inside an open end) or every value."""
    if not isinstance(spec, dict):
        return [spec]
    kind, args = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        return list(args)
    lo, hi = args
    if kind == "randint":
        return [lo, hi - 1]
    return [lo, lo + (hi - lo) * 0.999]


def check_search_space(run: RunConfig, space: dict[str, Any]) -> None:
    """Every value the sweep can sample is a valid config, checked here rather than in N failed trials."""
    base = run.to_dict()
    layers = model_layers(run)
    for key, spec in space.items():
        for value in _candidates(spec):
            try:
                trial = RunConfig.from_dict(apply_params(base, {key: value}))
            except ConfigError as e:
                raise ConfigError(f"--search-space {key}: {value!r} is not a valid value: {e}") from None
            if (
                key == "model.reinit_layers"
                and layers is not None
                and not 0 <= trial.model_config()["reinit_layers"] <= layers
            ):
                raise ConfigError(f"--search-space {key}: {value!r} is outside 0..{layers}, the model's encoder layers")


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A run-config dict with the trial's {"section.key": value} hyperparameters set."""
    d = copy.deepcopy(base)
    for key, value in params.items():
        section, name = key.split(".", 1)
        d.setdefault(section, {})[name] = plain_value(value)
    return d


def param_space(space: dict[str, Any]) -> dict[str, Any]:
    """Our JSON-able search space -> Tune's domains."""
    from ray import tune

    make = {
        "loguniform": tune.loguniform,
        "uniform": tune.uniform,
        "randint": tune.randint,
        "choice": tune.choice,
        "grid": tune.grid_search,
    }
    out: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, dict):
            kind, args = next(iter(spec.items()))
            out[key] = make[kind](list(args)) if kind in ("choice", "grid") else make[kind](*args)
        else:
            out[key] = spec
    return out


def plain_value(v: Any) -> Any:
    """numpy scalars (what Tune samples) -> Python values, so configs serialise everywhere."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, dict, str)) else v


def max_concurrent_trials(resources: Any, sweep: SweepConfig, run: RunConfig) -> int:
    """How many trials can train at once: trial workers that fit on the nodes (a worker's CPUs and GPU sit on
    one node; STRICT_PACK keeps a trial on one node), divided by the workers per trial, capped by
    --max-concurrent and the number of trials. Raises ClusterError when not even one trial fits (unless the
    cluster can autoscale), before anything is submitted."""
    workers = sweep.trial_workers(run)
    cpus = run.scaling.cpus_per_worker
    gpus = 1 if (sweep.gpus_per_trial or run.scaling.use_gpu) else 0
    slots = []
    for n in resources.nodes:
        s = int(n.cpus // cpus) if cpus else 10**9
        if gpus:
            s = min(s, int(n.gpus // gpus))
        slots.append(max(0, s))
    if run.scaling.placement_strategy == "STRICT_PACK":
        fit = sum(s // workers for s in slots)
    elif run.scaling.placement_strategy == "STRICT_SPREAD":  # one worker per node
        fit = sum(slots) // workers if sum(1 for s in slots if s) >= workers else 0
    else:
        fit = sum(slots) // workers
    total = sweep.total_trials()
    if fit == 0:
        # Name the flags the user typed: --num-gpus / --num-workers (the old --gpus-per-trial / --workers-per-trial
        # are hidden from --help, and named only when given).
        if gpus:
            gpu_flag = "--gpus-per-trial" if sweep.gpus_per_trial else "--num-gpus"
            flag = f"{gpu_flag} {workers}"
            need = f"{workers} GPU(s) ({workers} workers x 1 GPU and {cpus} CPUs each)"
            have = f"{resources.total_gpus:g} GPU(s) (largest node {resources.max_gpus_per_node:g})"
            fix = f"ask for fewer GPUs per trial ({gpu_flag})"
        else:
            workers_flag = "--workers-per-trial" if sweep.workers_per_trial else "--num-workers"
            flag = f"{workers_flag} {workers} with --cpus-per-worker {cpus}"
            need = f"{workers * cpus} CPUs ({workers} workers x {cpus} CPUs)"
            biggest = max((n.cpus for n in resources.nodes), default=0)
            have = f"{resources.total_cpus:g} CPUs (largest node {biggest:g})"
            fix = f"ask for fewer workers per trial or CPUs per worker ({workers_flag} / --cpus-per-worker)"
        msg = (
            f"a sweep that cannot fit even one trial: {flag} needs {need} per trial, but the Ray cluster at "
            f"{resources.dashboard_url} has {have}"
        )
        if not resources.can_autoscale:
            raise ClusterError(f"{msg}; {fix}, or use a bigger cluster")
        log.warning("%s; the cluster can autoscale, so trials will wait for new nodes", msg)
        return max(1, min(sweep.max_concurrent or 1, total))
    if sweep.max_concurrent is not None and sweep.max_concurrent > fit:
        if resources.can_autoscale:
            return min(sweep.max_concurrent, total)
        log.warning(
            "--max-concurrent %d: the cluster fits only %d trial(s) at once; running %d",
            sweep.max_concurrent,
            fit,
            min(fit, total),
        )
    return max(1, min(fit, sweep.max_concurrent or fit, total))


def format_leaderboard(rows: list[dict[str, Any]], metric: str = "metric", limit: int | None = None) -> str:
    """A text table, best first (rows as in bsm_result.json's "leaderboard" or rank_rows' output)."""
    if not rows:
        return "no trials yet"
    params = sorted({k for r in rows for k in (r.get("hyperparameters") or {})})

    def num(v: Any) -> str:
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    head = ["rank", "trial", "status", "epochs", metric, "final"] + [p.split(".", 1)[-1] for p in params]
    body = [
        [str(i + 1), r["trial_id"], r["status"], str(r["iterations"]), num(r.get("metric")), num(r.get("final_metric"))]
        + [num((r.get("hyperparameters") or {}).get(p)) for p in params]
        for i, r in enumerate(rows[:limit] if limit else rows)
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head] + body)
