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
    import numpy as np
    import torch
    import torchmetrics.functional.classification as tm

    probs = torch.as_tensor(pred.probs, dtype=torch.float32)  # [N, C]
    target = torch.as_tensor(pred.labels, dtype=torch.long)  # [N]
    n, c = probs.shape
    names = pred.class_names
    binary = c == 2

    def f(t: Any) -> float:
        return float(t)

    if binary:
        t = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        score = probs[:, 1].contiguous()  # [N] P(positive)
        hard = (score > t).long()
        summary = {
            "accuracy": f(tm.binary_accuracy(score, target, threshold=t)),
            "auroc": f(tm.binary_auroc(score, target)),
            "average_precision": f(tm.binary_average_precision(score, target)),
            "precision": f(tm.binary_precision(score, target, threshold=t)),
            "recall": f(tm.binary_recall(score, target, threshold=t)),
            "f1_score": f(tm.binary_f1_score(score, target, threshold=t)),
            "ece": f(tm.binary_calibration_error(score, target, n_bins=CALIBRATION_BINS, norm="l1")),
        }
        fpr, tpr, _ = tm.binary_roc(score, target)
        prec, rec, _ = tm.binary_precision_recall_curve(score, target)
        roc = [Curve(names[1], fpr.numpy(), tpr.numpy(), summary["auroc"])]
        pr = [Curve(names[1], rec.numpy(), prec.numpy(), summary["average_precision"])]
        confusion = tm.binary_confusion_matrix(score, target, threshold=t).numpy()
        tn, fp, fn, tp = (int(v) for v in confusion.ravel())
        point = {
            "fpr": fp / max(fp + tn, 1),
            "tpr": tp / max(tp + fn, 1),
            "recall": tp / max(tp + fn, 1),
            "precision": tp / max(tp + fp, 1),
        }
        conf, correct = score.numpy(), target.numpy().astype(float)  # as torchmetrics bins it
        per_auc = [1.0 - summary["auroc"], summary["auroc"]]
    else:
        t, point = None, None
        hard = probs.argmax(-1)
        kw: dict[str, Any] = {"num_classes": c}
        summary = {
            "accuracy": f(tm.multiclass_accuracy(probs, target, average="micro", **kw)),
            "auroc": f(tm.multiclass_auroc(probs, target, average="macro", **kw)),
            "average_precision": f(tm.multiclass_average_precision(probs, target, average="macro", **kw)),
            "precision": f(tm.multiclass_precision(probs, target, average="macro", **kw)),
            "recall": f(tm.multiclass_recall(probs, target, average="macro", **kw)),
            "f1_score": f(tm.multiclass_f1_score(probs, target, average="macro", **kw)),
            "ece": f(tm.multiclass_calibration_error(probs, target, n_bins=CALIBRATION_BINS, norm="l1", **kw)),
        }
        aucs = tm.multiclass_auroc(probs, target, average=None, **kw)
        aps = tm.multiclass_average_precision(probs, target, average=None, **kw)
        fprs, tprs, _ = tm.multiclass_roc(probs, target, **kw)
        precs, recs, _ = tm.multiclass_precision_recall_curve(probs, target, **kw)
        roc = [Curve(names[i], fprs[i].numpy(), tprs[i].numpy(), f(aucs[i])) for i in range(c)]
        pr = [Curve(names[i], recs[i].numpy(), precs[i].numpy(), f(aps[i])) for i in range(c)]
        confusion = tm.multiclass_confusion_matrix(probs, target, **kw).numpy()
        conf, correct = probs.max(-1).values.numpy(), (hard == target).numpy().astype(float)
        per_auc = [f(a) for a in aucs]

    # per class, from the hard predictions (so a binary threshold applies)
    per_p = tm.multiclass_precision(hard, target, num_classes=c, average=None)
    per_r = tm.multiclass_recall(hard, target, num_classes=c, average=None)
    per_f = tm.multiclass_f1_score(hard, target, num_classes=c, average=None)
    support = np.bincount(pred.labels, minlength=c)
    per_class = [
        {
            "class": names[i],
            "support": int(support[i]),
            "precision": f(per_p[i]),
            "recall": f(per_r[i]),
            "f1_score": f(per_f[i]),
            "auroc": per_auc[i],
        }
        for i in range(c)
    ]
    right = (hard == target).numpy()
    return Evaluation(
        class_names=names,
        records=n,
        binary=binary,
        threshold=t,
        summary=summary,
        per_class=per_class,
        roc=roc,
        pr=pr,
        confusion=confusion,
        calibration=reliability(conf, correct),
        by_length=by_length(pred, right),
        threshold_point=point,
    )


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
