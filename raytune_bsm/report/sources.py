"""What a report is drawn from: a run, a sweep or an export directory (a local path or a storage URI), read into
one `RunData`. Nothing is computed here; whatever the run did not store is listed in `notes`.

    run     bsm_config.json, bsm_result.json (Ray run) or config.json, metrics.json (local run),
            test_predictions.parquet or test_predictions/part-*.parquet, per-epoch metrics, export/
    sweep   bsm_sweep.json, bsm_result.json, trials.parquet, runs/<trial>/bsm_epochs.json, export/
    export  manifest.json, bsm_model.json (and the run around it, when it is `<run>/export`)
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raytune_bsm import layout
from raytune_bsm.config import default_metric
from raytune_bsm.errors import ConfigError, DataError
from raytune_bsm.layout import RunDir
from raytune_bsm.report.events import merge, tensorboard_epochs
from raytune_bsm.storage import exists, filesystem, is_uri, join, read_bytes, storage_path

# Optional per-record columns of the predictions: chunks kept, and whether the dialogue was cut to fit.
NUM_CHUNKS, TRUNCATED = "num_chunks", "truncated"


@dataclass
class Predictions:
    """The test split's stored predictions, as arrays."""

    path: str
    class_names: list[str]
    labels: Any  # [N] int64 class index (numpy)
    probs: Any  # [N, C] float64
    num_chunks: Any | None = None  # [N] int64, if the runner stored it
    truncated: Any | None = None  # [N] bool, if the runner stored it


@dataclass
class RunData:
    kind: str  # "run", "sweep" or "export"
    name: str
    root: str
    config: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)  # one dict of metrics per epoch, in order
    predictions: Predictions | None = None
    manifest: dict[str, Any] | None = None
    model: dict[str, Any] | None = None  # the export's bsm_model.json
    sweep: dict[str, Any] | None = None  # bsm_sweep.json: {"run": ..., "tune": ...}
    trials: list[dict[str, Any]] = field(default_factory=list)  # trials.parquet rows
    trial_epochs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def monitor(self) -> str | None:
        """The metric the run ranked its checkpoints by: as recorded, else the default for its class count."""
        given = self.result.get("monitor") or (self.config.get("train") or {}).get("monitor")
        if given:
            return str(given)
        n = (
            self.predictions.probs.shape[1]
            if self.predictions is not None
            else (self.config.get("model") or {}).get("num_classes")
        )
        return default_metric(int(n)) if isinstance(n, int) and n >= 2 else None


def _json(uri: str) -> Any:
    try:
        return json.loads(read_bytes(uri))
    except (OSError, ValueError) as e:
        raise DataError(f"{uri}: cannot be read as JSON ({e.__class__.__name__}: {e})") from None


def _maybe_json(uri: str) -> Any:
    return _json(uri) if exists(uri) else None


def _parent(uri: str) -> str:
    return posixpath.dirname(uri.rstrip("/")) if is_uri(uri) else str(Path(uri).parent)


def _basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/")) if is_uri(uri) else Path(uri).name


def load(source: str) -> RunData:
    """A run, sweep or export directory -> RunData. A ConfigError if `source` holds none of them."""
    if not source.strip():
        raise ConfigError("bsm report: no source given; give a run, sweep or export directory (or a job id)")
    root = storage_path(source)
    if not exists(root):
        raise ConfigError(f"bsm report: {source} does not exist; give a run, sweep or export directory")
    if exists(RunDir.at(root).sweep) or exists(RunDir.at(root).trials_table):
        return _sweep(root)
    if exists(join(root, layout.MANIFEST)) and exists(join(root, layout.MODEL_JSON)):
        parent = _parent(root)
        if _basename(root) == layout.EXPORT_DIR and _is_run(parent):
            return _run(parent)  # `<run>/export`: the run's report, its export included
        return _export_only(root)
    if _is_run(root):
        return _run(root)
    raise ConfigError(
        f"bsm report: {source} is not a run, sweep or export directory (no {layout.RESULT_JSON}, "
        f"{layout.CONFIG_JSON}, {layout.TRIALS_PARQUET} or {layout.MANIFEST} in it)"
    )


def _is_run(root: str) -> bool:
    run = RunDir.at(root)
    paths = (
        run.result,
        run.config,
        run.local_config,
        run.local_metrics,
        run.local_predictions,
        run.file(layout.PREDICTIONS),
    )
    return any(exists(p) for p in paths)


def _run(root: str) -> RunData:
    run = RunDir.at(root)
    config = _maybe_json(run.config) or _maybe_json(run.local_config) or {}
    result = _maybe_json(run.result)
    if result is None:  # a local run writes its final metrics only
        metrics = _maybe_json(run.local_metrics) or {}
        result = {"metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    data = RunData("run", str(result.get("name") or config.get("name") or _basename(root)), root, config, result)
    data.epochs = _epochs(root, result)
    if not data.epochs:
        data.notes.append(
            f'no per-epoch metrics stored (no "epochs" in {layout.RESULT_JSON}, no {layout.EPOCHS_JSON}, no '
            "tensorboard/ event files): no learning curves"
        )
    data.predictions = read_predictions(root, _class_names(config), data.notes)
    _add_export(data, run.export)
    return data


def _epochs(root: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-epoch metrics: bsm_result.json "epochs" (a list of dicts), else bsm_epochs.json (a trial's record),
    completed by the run's TensorBoard event files (or, with neither, those alone)."""
    rows = result.get("epochs")
    if not isinstance(rows, list):
        rows = _maybe_json(RunDir.at(root).epochs)
    rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    if rows and all(isinstance(r.get("epoch"), (int, float)) for r in rows):
        by_epoch = {int(r["epoch"]): r for r in rows}  # an epoch trained again after a failure: its last report
        rows = [by_epoch[e] for e in sorted(by_epoch)]
    return merge(rows, tensorboard_epochs(root))


def _class_names(config: dict[str, Any]) -> list[str] | None:
    names = (config.get("model") or {}).get("class_names")
    return [str(n) for n in names] if isinstance(names, list) and names else None


def _add_export(data: RunData, export_dir: str) -> None:
    if exists(join(export_dir, layout.MANIFEST)):
        data.manifest = layout.parse_manifest(read_bytes(join(export_dir, layout.MANIFEST)), export_dir)
        data.model = _maybe_json(join(export_dir, layout.MODEL_JSON))


def _export_only(root: str) -> RunData:
    data = RunData("export", _basename(root), root)
    _add_export(data, root)
    model = data.model or {}
    data.config = {"model": model.get("hyperparameters") or {}}
    data.result = {"metrics": model.get("metrics") or {}}
    data.notes.append(
        "an export alone holds no predictions or per-epoch metrics: only its tables are shown; "
        "report on the run directory for the plots"
    )
    return data


def read_predictions(root: str, class_names: list[str] | None, notes: list[str]) -> Predictions | None:
    """test_predictions(.parquet | /part-*.parquet): id, label, predicted, prob_<class>... (+ num_chunks, truncated)."""
    import numpy as np
    import pyarrow.parquet as pq

    for uri in (RunDir.at(root).local_predictions, RunDir.at(root).file(layout.PREDICTIONS)):
        if exists(uri):
            break
    else:
        notes.append("no test predictions stored (the run had no test split): no ROC, PR, confusion or calibration")
        return None
    fs, path = filesystem(uri)
    try:
        table = pq.read_table(path, filesystem=fs)
    except (OSError, ValueError) as e:
        raise DataError(f"{uri}: cannot be read as Parquet ({e.__class__.__name__}: {e})") from None
    if "id" in table.column_names:  # several workers may have scored the same record (padded shards): once each
        ids = table.column("id").to_pylist()
        first = sorted({v: i for i, v in reversed(list(enumerate(ids)))}.values())
        if len(first) < len(ids) and None not in ids:
            notes.append(
                f"{len(ids) - len(first)} duplicate prediction(s) (the same id from several workers) counted once"
            )
            table = table.take(first)
    prob_cols = [c for c in table.column_names if c.startswith("prob_")]
    names = [c.removeprefix("prob_") for c in prob_cols]
    if class_names and set(class_names) == set(names):
        names = class_names
    if "label" not in table.column_names or len(names) < 2:
        raise DataError(f"{uri}: expected a label column and a prob_<class> column per class, got {table.column_names}")
    index = {n: i for i, n in enumerate(names)}
    labels = [str(v) for v in table.column("label").to_pylist()]
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"{uri}: labels {unknown[:5]} have no prob_<class> column (classes {names})")
    probs = np.stack(
        [np.asarray(table.column(f"prob_{n}").to_numpy(zero_copy_only=False), dtype=np.float64) for n in names], axis=1
    )
    pred = Predictions(uri, names, np.asarray([index[v] for v in labels], dtype=np.int64), probs)
    if NUM_CHUNKS in table.column_names:
        pred.num_chunks = np.asarray(table.column(NUM_CHUNKS).to_numpy(zero_copy_only=False), dtype=np.int64)
    if TRUNCATED in table.column_names:
        pred.truncated = np.asarray(table.column(TRUNCATED).to_numpy(zero_copy_only=False), dtype=bool)
    if pred.num_chunks is None:
        notes.append(
            f"the predictions have no {NUM_CHUNKS!r} column (chunks kept per record; and {TRUNCATED!r}): "
            "no accuracy by dialogue length"
        )
    return pred


def _sweep(root: str) -> RunData:
    import pyarrow.parquet as pq

    sweep = RunDir.at(root)
    record = _maybe_json(sweep.sweep) or {}
    result = _maybe_json(sweep.result) or {}
    config = _maybe_json(sweep.best_config) or record.get("run") or {}
    data = RunData("sweep", str(result.get("name") or _basename(root)), root, config, result, sweep=record)
    table_uri = sweep.trials_table
    if exists(table_uri):
        fs, path = filesystem(table_uri)
        table = pq.read_table(path, filesystem=fs)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        data.result.setdefault("monitor", meta.get("metric"))
        data.result.setdefault("mode", meta.get("mode"))
        data.trials = table.to_pylist()
    else:
        data.notes.append(f"no {layout.TRIALS_PARQUET} yet: no trial plots")
    for row in data.trials:
        hp = row.get("hyperparameters")
        row["hyperparameters"] = json.loads(hp) if isinstance(hp, str) else (hp or {})
        data.trial_epochs[str(row["trial_id"])] = _epochs(sweep.trial(str(row["trial_id"])).path, {})
    best = (result.get("best_trial") or {}).get("trial_id")
    if best:  # the best trial's own curves and predictions
        data.epochs = data.trial_epochs.get(str(best), [])
        best_dir = sweep.trial(str(best)).path
        notes: list[str] = []
        data.predictions = read_predictions(best_dir, _class_names(config), notes)
        data.notes += [f"best trial {best}: {n}" for n in notes]
    _add_export(data, sweep.export)
    return data
