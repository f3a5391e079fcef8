"""The report's figures for one run, drawn with matplotlib (Agg: no display needed) into PNGs of fixed pixel
sizes (figure inches x DPI; never a "tight" bounding box, so the sizes are known before drawing)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytune_bsm.report.metrics import Evaluation

DPI = 100
WIDE = (10.0, 4.2)  # two panels side by side: 1000 x 420 px
SQUARE = (6.4, 4.8)  # one panel: 640 x 480 px


@dataclass
class Figure:
    """One PNG of the report."""

    file: str  # its name in the report directory
    title: str
    caption: str
    width: int  # pixels
    height: int


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out: Path, file: str, title: str, caption: str) -> Figure:
    plt = pyplot()
    w, h = fig.get_size_inches()
    fig.savefig(out / file, dpi=DPI, format="png")
    plt.close(fig)
    return Figure(file, title, caption, int(round(w * DPI)), int(round(h * DPI)))


def _epoch_number(row: dict[str, Any], i: int) -> int:
    e = row.get("epoch")
    return int(e) + 1 if isinstance(e, (int, float)) else i + 1  # Lightning's epoch is 0-based


def learning_curves(epochs: list[dict[str, Any]], monitor: str | None, out: Path) -> Figure | None:
    """Loss and the monitored metric per epoch, train and validation (what the run reported each epoch)."""
    if not epochs:
        return None
    plt = pyplot()
    x = [_epoch_number(r, i) for i, r in enumerate(epochs)]
    metric = (monitor or "val_loss").removeprefix("val_").removeprefix("train_")
    if metric == "loss":  # ranked by loss: the second panel shows a score instead
        metric = next(
            (m for m in ("auroc", "f1_score", "accuracy") if any(f"val_{m}" in r for r in epochs)), "accuracy"
        )
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=WIDE)
    for ax, name in ((ax_loss, "loss"), (ax_metric, metric)):
        drawn = False
        for split, style in (("train", "o--"), ("val", "o-")):
            for key in (f"{split}_{name}_epoch_mean", f"{split}_{name}_epoch", f"{split}_{name}"):  # epoch means first
                ys = [r.get(key) for r in epochs]
                if any(isinstance(v, (int, float)) for v in ys):
                    ax.plot(x, [v if isinstance(v, (int, float)) else math.nan for v in ys], style, label=key)
                    drawn = True
                    break
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name if drawn else f"{name}: not reported")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend()
        ax.set_xticks(x)
    fig.tight_layout()
    last_step = any("train_loss" in r and not {"train_loss_epoch", "train_loss_epoch_mean"} & set(r) for r in epochs)
    caption = "Per epoch, as reported at each epoch's end" + (
        "; train_loss is the epoch's last step (no epoch mean stored)." if last_step else "."
    )
    return save(fig, out, "learning_curves.png", "Learning curves", caption)


def roc_pr(ev: Evaluation, out: Path) -> Figure:
    """ROC and precision-recall curves (one-vs-rest per class for more than two), the threshold marked."""
    plt = pyplot()
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=WIDE)
    for c in ev.roc:
        ax_roc.plot(c.x, c.y, label=f"{c.name} (AUROC {c.area:.3f})")
    for c in ev.pr:
        ax_pr.plot(c.x, c.y, label=f"{c.name} (AP {c.area:.3f})")
    ax_roc.plot([0, 1], [0, 1], ":", color="grey")
    if ev.threshold_point:
        p = ev.threshold_point
        ax_roc.plot([p["fpr"]], [p["tpr"]], "ko", label=f"threshold {ev.threshold:g}")
        ax_pr.plot([p["recall"]], [p["precision"]], "ko", label=f"threshold {ev.threshold:g}")
        positives = ev.per_class[1]["support"] / max(ev.records, 1)
        ax_pr.axhline(positives, ls=":", color="grey")
    kind = "" if ev.binary else " (one-vs-rest)"
    for ax, title, xl, yl in (
        (ax_roc, f"ROC{kind}", "false positive rate", "true positive rate"),
        (ax_pr, f"Precision-recall{kind}", "recall", "precision"),
    ):
        ax.set(title=title, xlabel=xl, ylabel=yl, xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize="small")
    fig.tight_layout()
    s = ev.summary
    return save(
        fig,
        out,
        "roc_pr.png",
        "ROC and precision-recall",
        f"Test split, {ev.records} records: AUROC {s['auroc']:.4f}, AP {s['average_precision']:.4f}.",
    )


def confusion(ev: Evaluation, out: Path) -> Figure:
    """The confusion matrix: counts, and normalised by row (each true class sums to 1)."""
    import numpy as np

    plt = pyplot()
    counts = np.asarray(ev.confusion, dtype=float)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=WIDE)
    n = len(ev.class_names)
    for ax, m, title, fmt in ((axes[0], counts, "counts", "{:.0f}"), (axes[1], rows, "row-normalised", "{:.2f}")):
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=m.max() if m.max() > 0 else 1)
        ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
        ax.set_xticklabels(ev.class_names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticklabels(ev.class_names)
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    dark = m[i, j] > 0.6 * (m.max() or 1)
                    ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", color="white" if dark else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    t = f" at threshold {ev.threshold:g}" if ev.binary else ""
    return save(fig, out, "confusion.png", "Confusion matrix", f"Rows: the true class; columns: the predicted one{t}.")


def calibration(ev: Evaluation, out: Path) -> Figure:
    """Reliability diagram (observed vs predicted, per bin) over a histogram of the predictions."""
    import numpy as np

    plt = pyplot()
    cal = ev.calibration
    fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=SQUARE, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges, used = cal["edges"], cal["count"] > 0
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    ax.bar(centres[used], cal["accuracy"][used], width=width * 0.9, alpha=0.7, label="observed")
    ax.plot(cal["confidence"][used], cal["accuracy"][used], "o", color="C1", label="bin mean")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    ylabel = "fraction positive" if ev.binary else "accuracy"
    ax.set(ylabel=ylabel, ylim=(0, 1.02), title=f"Reliability (ECE {ev.summary['ece']:.4f})")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    ax_hist.bar(centres, cal["count"], width=width * 0.9, color="grey")
    ax_hist.set(xlabel="P(positive)" if ev.binary else "confidence (max probability)", ylabel="records", xlim=(0, 1))
    fig.tight_layout()
    return save(
        fig,
        out,
        "calibration.png",
        "Calibration",
        f"{len(edges) - 1} equal-width bins; expected calibration error {ev.summary['ece']:.4f} "
        f"(torchmetrics, L1); {int(np.sum(cal['count']))} records.",
    )


def accuracy_by_length(ev: Evaluation, out: Path) -> Figure | None:
    """Accuracy per number of chunks kept, with each bucket's size and its truncated records."""
    if not ev.by_length:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=SQUARE)
    xs = [r["chunks"] for r in ev.by_length]
    ax.bar(xs, [r["accuracy"] for r in ev.by_length], color="C0", alpha=0.8)
    for r in ev.by_length:
        trunc = f"\n{r['truncated']} truncated" if r["truncated"] else ""
        ax.text(r["chunks"], min(r["accuracy"], 0.9) + 0.02, f"n={r['records']}{trunc}", ha="center", fontsize="small")
    ax.axhline(ev.summary["accuracy"], ls=":", color="grey", label=f"overall {ev.summary['accuracy']:.3f}")
    ax.set(xlabel="chunks kept", ylabel="accuracy", ylim=(0, 1.05), xticks=xs, title="Accuracy by dialogue length")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    total_trunc = sum(r["truncated"] or 0 for r in ev.by_length)
    return save(
        fig,
        out,
        "accuracy_by_length.png",
        "Accuracy by dialogue length",
        f"Records bucketed by the chunks the model kept; {total_trunc} record(s) were longer and truncated.",
    )


def run_figures(epochs: list[dict[str, Any]], monitor: str | None, ev: Evaluation | None, out: Path) -> list[Figure]:
    figs = [learning_curves(epochs, monitor, out)]
    if ev is not None:
        figs += [roc_pr(ev, out), confusion(ev, out), calibration(ev, out), accuracy_by_length(ev, out)]
    return [f for f in figs if f is not None]
