"""The report's figures from stored predictions, computed with torchmetrics' functional API (the same code the
model's own test metrics use), so the report's AUROC is the run's AUROC. Curves come back as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raytune_bsm.report.sources import Predictions

CALIBRATION_BINS = 10
DEFAULT_THRESHOLD = 0.5  # the model predicts argmax; for two classes that is P(class 1) > 0.5


@dataclass
class Curve:
    name: str  # the class (one-vs-rest) or the positive class
    x: Any
    y: Any
    area: float


@dataclass
class Evaluation:
    class_names: list[str]
    records: int
    binary: bool
    threshold: float | None  # binary only
    summary: dict[str, float]  # accuracy, auroc, average_precision, precision, recall, f1_score, ece
    per_class: list[dict[str, Any]]  # class, support, precision, recall, f1_score, auroc
    roc: list[Curve]
    pr: list[Curve]
    confusion: Any  # [C, C] int counts, rows = true class
    calibration: dict[str, Any]  # edges, confidence, accuracy, count per bin
    by_length: list[dict[str, Any]] = field(default_factory=list)  # chunks, records, accuracy, truncated
    threshold_point: dict[str, float] | None = None  # binary: (fpr, tpr) and (recall, precision) at the threshold


def evaluate(pred: Predictions, threshold: float | None = None) -> Evaluation:
    """Every figure of the report from the stored test predictions; `threshold`: binary only (default 0.5)."""
    import torch

    probs = torch.as_tensor(pred.probs, dtype=torch.float32)  # [N, C]
    target = torch.as_tensor(pred.labels, dtype=torch.long)  # [N]
    n, c = probs.shape
    binary = c == 2
    t = (DEFAULT_THRESHOLD if threshold is None else float(threshold)) if binary else None
    s = _binary(probs, target, pred.class_names, t) if t is not None else _multiclass(probs, target, pred.class_names)
    return Evaluation(
        class_names=pred.class_names,
        records=n,
        binary=binary,
        threshold=t,
        summary=s.summary,
        per_class=_per_class(s, target, pred),
        roc=s.roc,
        pr=s.pr,
        confusion=s.confusion,
        calibration=reliability(s.confidence, s.correct),
        by_length=by_length(pred, (s.hard == target).numpy()),
        threshold_point=s.point,
    )


@dataclass
class _Scored:
    """What the binary and the multiclass ways compute alike."""

    hard: Any  # [N] predicted class (torch)
    summary: dict[str, float]
    roc: list[Curve]
    pr: list[Curve]
    confusion: Any  # [C, C]
    confidence: Any  # [N] what calibration bins: P(positive) (binary) or the top probability
    correct: Any  # [N] float: positive (binary) or right (multiclass), as torchmetrics bins it
    per_auc: list[float]  # per class
    point: dict[str, float] | None = None


def _binary(probs: Any, target: Any, names: list[str], t: float) -> _Scored:
    import torchmetrics.functional.classification as tm

    score = probs[:, 1].contiguous()  # [N] P(positive)
    summary = {
        "accuracy": float(tm.binary_accuracy(score, target, threshold=t)),
        "auroc": float(tm.binary_auroc(score, target)),
        "average_precision": float(tm.binary_average_precision(score, target)),
        "precision": float(tm.binary_precision(score, target, threshold=t)),
        "recall": float(tm.binary_recall(score, target, threshold=t)),
        "f1_score": float(tm.binary_f1_score(score, target, threshold=t)),
        "ece": float(tm.binary_calibration_error(score, target, n_bins=CALIBRATION_BINS, norm="l1")),
    }
    fpr, tpr, _ = tm.binary_roc(score, target)
    prec, rec, _ = tm.binary_precision_recall_curve(score, target)
    confusion = tm.binary_confusion_matrix(score, target, threshold=t).numpy()
    tn, fp, fn, tp = (int(v) for v in confusion.ravel())
    return _Scored(
        hard=(score > t).long(),
        summary=summary,
        roc=[Curve(names[1], fpr.numpy(), tpr.numpy(), summary["auroc"])],
        pr=[Curve(names[1], rec.numpy(), prec.numpy(), summary["average_precision"])],
        confusion=confusion,
        confidence=score.numpy(),
        correct=target.numpy().astype(float),
        per_auc=[1.0 - summary["auroc"], summary["auroc"]],
        point={
            "fpr": fp / max(fp + tn, 1),
            "tpr": tp / max(tp + fn, 1),
            "recall": tp / max(tp + fn, 1),
            "precision": tp / max(tp + fp, 1),
        },
    )


def _multiclass(probs: Any, target: Any, names: list[str]) -> _Scored:
    import torchmetrics.functional.classification as tm

    c = probs.shape[1]
    kw: dict[str, Any] = {"num_classes": c}
    hard = probs.argmax(-1)
    summary = {
        "accuracy": float(tm.multiclass_accuracy(probs, target, average="micro", **kw)),
        "auroc": float(tm.multiclass_auroc(probs, target, average="macro", **kw)),
        "average_precision": float(tm.multiclass_average_precision(probs, target, average="macro", **kw)),
        "precision": float(tm.multiclass_precision(probs, target, average="macro", **kw)),
        "recall": float(tm.multiclass_recall(probs, target, average="macro", **kw)),
        "f1_score": float(tm.multiclass_f1_score(probs, target, average="macro", **kw)),
        "ece": float(tm.multiclass_calibration_error(probs, target, n_bins=CALIBRATION_BINS, norm="l1", **kw)),
    }
    aucs = tm.multiclass_auroc(probs, target, average=None, **kw)
    aps = tm.multiclass_average_precision(probs, target, average=None, **kw)
    fprs, tprs, _ = tm.multiclass_roc(probs, target, **kw)
    precs, recs, _ = tm.multiclass_precision_recall_curve(probs, target, **kw)
    return _Scored(
        hard=hard,
        summary=summary,
        roc=[Curve(names[i], fprs[i].numpy(), tprs[i].numpy(), float(aucs[i])) for i in range(c)],
        pr=[Curve(names[i], recs[i].numpy(), precs[i].numpy(), float(aps[i])) for i in range(c)],
        confusion=tm.multiclass_confusion_matrix(probs, target, **kw).numpy(),
        confidence=probs.max(-1).values.numpy(),
        correct=(hard == target).numpy().astype(float),
        per_auc=[float(a) for a in aucs],
    )


def _per_class(s: _Scored, target: Any, pred: Predictions) -> list[dict[str, Any]]:
    """Per class, from the hard predictions (so a binary threshold applies): support, precision, recall, F1, AUROC."""
    import numpy as np
    import torchmetrics.functional.classification as tm

    c = len(pred.class_names)
    per_p = tm.multiclass_precision(s.hard, target, num_classes=c, average=None)
    per_r = tm.multiclass_recall(s.hard, target, num_classes=c, average=None)
    per_f = tm.multiclass_f1_score(s.hard, target, num_classes=c, average=None)
    support = np.bincount(pred.labels, minlength=c)
    return [
        {
            "class": pred.class_names[i],
            "support": int(support[i]),
            "precision": float(per_p[i]),
            "recall": float(per_r[i]),
            "f1_score": float(per_f[i]),
            "auroc": s.per_auc[i],
        }
        for i in range(c)
    ]


def reliability(confidence: Any, correct: Any, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Per confidence bin (the bins torchmetrics' calibration error uses): mean confidence, observed accuracy
    (for two classes: P(positive) and the fraction positive), count."""
    import numpy as np

    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    safe = np.maximum(count, 1)
    return {
        "edges": edges,
        "confidence": np.bincount(idx, weights=confidence, minlength=bins) / safe,
        "accuracy": np.bincount(idx, weights=correct, minlength=bins) / safe,
        "count": count,
    }


def by_length(pred: Predictions, right: Any) -> list[dict[str, Any]]:
    """Accuracy per number of chunks kept (the dialogue's length as the model saw it), and how many of each
    bucket were truncated. Empty if the predictions do not say how many chunks each record kept."""
    import numpy as np

    if pred.num_chunks is None:
        return []
    rows = []
    for k in np.unique(pred.num_chunks):
        sel = pred.num_chunks == k
        rows.append(
            {
                "chunks": int(k),
                "records": int(sel.sum()),
                "accuracy": float(right[sel].mean()),
                "truncated": int(pred.truncated[sel].sum()) if pred.truncated is not None else None,
            }
        )
    return rows
