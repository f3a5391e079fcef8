"""A sweep's figures: parallel coordinates of the hyperparameters against the metric, the metric against the
learning rate, and how far each trial got (the epochs ASHA let it train, with the rungs where it decides)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from raytune_bsm.report.plots import SQUARE, WIDE, Figure, pyplot, save

LOG_SCALE = ("lr", "weight_decay", "adam_epsilon")  # hyperparameters drawn on a log axis


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _scored(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in trials if _number(t.get("metric")) is not None]


def param_keys(trials: list[dict[str, Any]]) -> list[str]:
    """The sampled hyperparameters, in a stable order: lr, warmup, reinit first, then the rest."""
    keys = sorted({k for t in trials for k in (t.get("hyperparameters") or {})})
    first = [k for p in ("lr", "warmup_ratio", "reinit_layers") for k in keys if _short(k) == p]
    return first + [k for k in keys if k not in first]


def parallel_coordinates(trials: list[dict[str, Any]], metric: str, mode: str, out: Path) -> Figure | None:
    """One line per scored trial across one axis per hyperparameter and a last axis for the metric; colour =
    the metric. Each axis is scaled to its own range (log10 for learning rates); categories get even spacing."""
    import numpy as np

    rows = _scored(trials)
    keys = param_keys(rows)
    if not rows or not keys:
        return None
    plt = pyplot()
    axes_vals: list[list[float]] = []
    labels: list[tuple[str, str, str]] = []  # axis name, bottom label, top label
    for k in keys + ["metric"]:
        raw = [t["metric"] if k == "metric" else (t.get("hyperparameters") or {}).get(k) for t in rows]
        nums = [_number(v) for v in raw]
        if all(v is not None for v in nums):
            log = _short(k) in LOG_SCALE and all(v > 0 for v in nums)  # type: ignore[operator]
            vals = [math.log10(v) if log else v for v in nums]  # type: ignore[arg-type]
            lo, hi = min(vals), max(vals)
            fmt = (lambda v: f"{10**v:.2g}") if log else (lambda v: f"{v:.3g}")
            labels.append((metric if k == "metric" else _short(k) + (" (log)" if log else ""), fmt(lo), fmt(hi)))
        else:  # categorical: even spacing in first-seen order
            cats = list(dict.fromkeys(str(v) for v in raw))
            vals = [float(cats.index(str(v))) for v in raw]
            lo, hi = 0.0, float(max(len(cats) - 1, 1))
            labels.append((_short(k), cats[0], cats[-1]))
        span = (hi - lo) or 1.0
        axes_vals.append([(v - lo) / span if hi > lo else 0.5 for v in vals])
    ys = np.asarray(axes_vals).T  # [trials, axes]
    metric_vals = np.asarray([t["metric"] for t in rows], dtype=float)
    norm = plt.Normalize(
        metric_vals.min(), metric_vals.max() if metric_vals.max() > metric_vals.min() else metric_vals.min() + 1
    )
    cmap = plt.get_cmap("viridis" if mode == "max" else "viridis_r")
    fig, ax = plt.subplots(figsize=WIDE)
    xs = np.arange(ys.shape[1])
    for row, m in zip(ys, metric_vals):
        ax.plot(xs, row, "-o", color=cmap(norm(m)), alpha=0.85, lw=1.5, ms=3)
    for x, (_name, lo, hi) in zip(xs, labels):
        ax.axvline(x, color="black", lw=0.8)
        ax.text(x, -0.08, lo, ha="center", va="top", fontsize="small")
        ax.text(x, 1.06, hi, ha="center", va="bottom", fontsize="small")
    ax.set_xticks(xs)
    ax.set_xticklabels([n for n, _, _ in labels])
    ax.tick_params(axis="x", pad=18)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    ax.set_xlim(-0.3, xs[-1] + 0.3)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric, format="%.4g")
    ax.set_title(f"Hyperparameters vs {metric} ({'higher' if mode == 'max' else 'lower'} is better)")
    fig.tight_layout()
    return save(
        fig,
        out,
        "sweep_parallel.png",
        "Parallel coordinates",
        f"{len(rows)} scored trial(s); each trial's best epoch; axes scaled to their own range.",
    )


def metric_vs_lr(trials: list[dict[str, Any]], metric: str, out: Path) -> Figure | None:
    rows = _scored(trials)
    lr_key = next((k for k in param_keys(rows) if _short(k) == "lr"), None)
    pts = [(_number((t.get("hyperparameters") or {}).get(lr_key)), t) for t in rows] if lr_key else []
    pts = [(x, t) for x, t in pts if x is not None and x > 0]
    if not pts:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=SQUARE)
    for status, marker in (("completed", "o"), ("early_stopped", "x"), ("interrupted", "s"), ("error", "^")):
        sel = [(x, t["metric"]) for x, t in pts if t.get("status") == status]
        if sel:
            ax.plot(*zip(*sel), marker, ls="none", ms=8, label=status.replace("_", " "))
    others = [
        (x, t["metric"])
        for x, t in pts
        if t.get("status") not in ("completed", "early_stopped", "interrupted", "error")
    ]
    if others:
        ax.plot(*zip(*others), "d", ls="none", ms=8, label="other")
    ax.set_xscale("log")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set(xlabel="learning rate (log)", ylabel=metric, title=f"{metric} vs learning rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return save(fig, out, "sweep_lr.png", "Metric vs learning rate", "Each trial's best epoch; markers: how it ended.")


def rungs(max_epochs: int, grace: int, factor: int) -> list[int]:
    """ASHA's milestones: grace * factor**k below max_t (where it compares trials and stops the weak ones)."""
    out, r = [], max(1, grace)
    while r < max_epochs:
        out.append(r)
        r *= max(2, factor)
    return out


def trial_progress(trials: list[dict[str, Any]], max_epochs: int, asha: list[int], out: Path) -> Figure | None:
    """Epochs reached per trial, coloured by how it ended, with ASHA's rungs as vertical lines."""
    if not trials:
        return None
    plt = pyplot()
    rows = sorted(trials, key=lambda t: t.get("trial_index") or 0)
    fig, ax = plt.subplots(figsize=WIDE)
    colours = {
        "completed": "C2",
        "early_stopped": "C1",
        "error": "C3",
        "interrupted": "C7",
        "running": "C0",
        "pending": "C9",
        "paused": "C8",
    }
    y = list(range(len(rows)))
    ax.barh(y, [t.get("iterations") or 0 for t in rows], color=[colours.get(t.get("status"), "C7") for t in rows])
    ax.set_yticks(y)
    ax.set_yticklabels([str(t.get("trial_id")) for t in rows], fontsize="small" if len(rows) < 30 else 5)
    ax.invert_yaxis()
    for r in asha:
        ax.axvline(r, ls="--", color="black", lw=1)
        ax.text(r, 1.01, f"rung {r}", ha="center", va="bottom", fontsize="small", transform=ax.get_xaxis_transform())
    ax.axvline(max_epochs, color="black", lw=1.5)
    ax.set_xticks(range(0, max_epochs + 1))
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=c) for s, c in colours.items() if any(t.get("status") == s for t in rows)
    ]
    names = [s.replace("_", " ") for s in colours if any(t.get("status") == s for t in rows)]
    ax.legend(handles, names, loc="lower right", fontsize="small")
    ax.set(xlabel="epochs trained", xlim=(0, max_epochs + 0.5))
    ax.set_title("Epochs reached per trial", pad=16)
    fig.tight_layout()
    caption = (
        f"ASHA rungs at epoch(s) {', '.join(map(str, asha))}; max {max_epochs}."
        if asha
        else f"Max {max_epochs} epochs."
    )
    return save(fig, out, "sweep_trials.png", "Trials and where they stopped", caption)


def sweep_figures(
    trials: list[dict[str, Any]], metric: str, mode: str, tune: dict[str, Any], max_epochs: int, out: Path
) -> list[Figure]:
    asha = (
        rungs(max_epochs, int(tune.get("grace_period") or 1), int(tune.get("reduction_factor") or 2))
        if tune.get("scheduler", "asha") == "asha"
        else []
    )
    figs = [
        parallel_coordinates(trials, metric, mode, out),
        metric_vs_lr(trials, metric, out),
        trial_progress(trials, max_epochs, asha, out),
    ]
    return [f for f in figs if f is not None]
