"""The side features' share of a model's quality, for `bsm report`: the test split scored by the export with each
feature's column shuffled (permutation importance: the metric lost), and with every feature missing (the model's
text alone, the numbers imputed to their training means), beside the metric with them.

Only for an export whose model reads side features, and a run whose test split this machine can read; the
figures are the export's own (ONNX Runtime, fp32), on the rows as stored in the test file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from raytune_bsm.errors import BsmError
from raytune_bsm.report.plots import Figure, save

log = logging.getLogger(__name__)

FILE = "side_features.png"
REPEATS = 3  # shuffles per feature; their mean is shown
MAX_ROWS = 5000  # test rows scored (each feature costs REPEATS more passes over them)


def auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Binary AUROC (the Mann-Whitney statistic, ties counted half); None with one class only."""
    pos, neg = p[y == 1], p[y == 0]
    if not len(pos) or not len(neg):
        return None
    _, inverse, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based ranks, ties sharing their mean rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def importance(export_dir: str, test: str, label_field: str, seed: int = 0) -> dict[str, Any] | None:
    """{"metric", "with", "without", "importance": {feature: metric lost}} on the test file, or None when the export
    reads no side features."""
    from raytune_bsm.data.features import to_matrix
    from raytune_bsm.data.splits import read_table
    from raytune_bsm.scoring.predict import Predictor

    predictor = Predictor(export_dir, precision="fp32")
    names = predictor.feature_names
    if not names or predictor.features_as_text:
        return None
    columns = {predictor.text_field: "--text-field", label_field: "--label-field", **{n: "--features" for n in names}}
    table = read_table(test, columns).slice(0, MAX_ROWS)
    index = {c: i for i, c in enumerate(predictor.class_names)}
    labels = [index.get(str(v)) for v in table.column(label_field).to_pylist()]
    keep = [i for i, v in enumerate(labels) if v is not None]
    texts = [table.column(predictor.text_field)[i].as_py() for i in keep]
    y = np.asarray([labels[i] for i in keep], np.int64)
    x = to_matrix(table, names)[keep]
    binary = predictor.num_classes == 2

    def metric(features: np.ndarray) -> float:
        _, probs = predictor.predict_texts(texts, features=features)
        if binary:
            return auroc(y, probs[:, 1]) or float("nan")
        return float((probs.argmax(1) == y).mean())

    base = metric(x)
    rng = np.random.default_rng(seed)
    lost = {}
    for k, name in enumerate(names):
        drops = []
        for _ in range(REPEATS):
            shuffled = x.copy()
            shuffled[:, k] = x[rng.permutation(len(x)), k]
            drops.append(base - metric(shuffled))
        lost[name] = float(np.mean(drops))
    without = metric(np.full_like(x, np.nan))
    return {
        "metric": "auroc" if binary else "accuracy",
        "with": base,
        "without": without,
        "records": len(y),
        "importance": lost,
    }


def side_figure(result: dict[str, Any], out: Path) -> Figure:
    """A bar chart of the metric each feature's shuffle loses, largest first."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    items = sorted(result["importance"].items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.5))
    ax.barh([n for n, _ in items], [v for _, v in items], color="#4c72b0")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"test {result['metric']} lost when the column is shuffled")
    caption = (
        f"test {result['metric']} {result['with']:.4f} with the side features, {result['without']:.4f} with every "
        f"one missing (the text alone); {result['records']} records, {REPEATS} shuffles per feature"
    )
    return save(fig, out, FILE, "Side features: permutation importance", caption)


def report_section(export_dir: str | None, config: dict[str, Any], out: Path) -> tuple[Figure | None, dict]:
    """(the figure, the with/without figures) for a run's report; (None, {}) where there is nothing to show or
    the test split cannot be read here (logged)."""
    data = config.get("data") or {}
    if not export_dir or not data.get("test") or not data.get("feature_fields"):
        return None, {}
    try:
        result = importance(export_dir, str(data["test"]), data.get("label_field") or "reversal_flag")
    except (BsmError, OSError) as e:
        log.warning("side-feature importance skipped: %s", str(e).splitlines()[0])
        return None, {}
    if result is None:
        return None, {}
    summary = {f"test_{result['metric']}_with_side_features": result["with"]}
    summary[f"test_{result['metric']}_without_side_features"] = result["without"]
    return side_figure(result, out), summary
