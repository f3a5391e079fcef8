"""`bsm report`: a run, sweep or export directory -> `<out>/report.html` (self-contained) plus its PNGs.

The report is drawn in a temporary directory next to `out` and renamed into place when complete; `out` may be
missing, empty, or an earlier bsm report (it carries a `.bsm-report` marker listing the files bsm wrote), never
anything else. Of an earlier report only bsm's files are replaced: a file of the user's put there stays.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from raytune_bsm.errors import ConfigError
from raytune_bsm.layout import EXPORT_DIR
from raytune_bsm.report import features as side_features
from raytune_bsm.report import html as page
from raytune_bsm.report.metrics import Evaluation, evaluate
from raytune_bsm.report.plots import Figure, run_figures
from raytune_bsm.report.sources import RunData, load
from raytune_bsm.report.sweep_plots import param_keys, sweep_figures
from raytune_bsm.storage import check_writable, join

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
MARKER = ".bsm-report"  # what tells a directory bsm may replace from one it must not touch
TRIAL_COLUMNS = [
    "rank",
    "trial_id",
    "status",
    "iterations",
    "metric",
    "best_epoch",
    "final_metric",
]  # + one per hyperparameter


def build_report(source: str, out: str | None = None, *, threshold: float | None = None) -> dict[str, Any]:
    """Write the report of `source` (a run, sweep or export directory or URI) to `out` (default
    `<name>-report/` here). Returns {"dir", "html", "pngs", "metrics"}; "metrics" are the test figures shown."""
    data = load(source)
    dest = Path(out or f"{_safe_name(data.name)}-report").expanduser().absolute()
    _check_dest(dest, given=out is not None)
    check_writable(str(dest), "--out" if out is not None else "the default output directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        ev = evaluate(data.predictions, _threshold(data, threshold)) if data.predictions is not None else None
        figs = run_figures(data.epochs, data.monitor, ev, tmp)
        if data.kind == "sweep" and data.trials:
            tune = (data.sweep or {}).get("tune") or {}
            max_epochs = int(
                ((data.config.get("train") or {}).get("max_epochs"))
                or max(t.get("iterations") or 0 for t in data.trials)
            )
            figs += sweep_figures(
                data.trials, data.monitor or "metric", data.result.get("mode") or "max", tune, max_epochs, tmp
            )
        export_dir = join(data.root, EXPORT_DIR) if data.kind != "export" else data.root
        side_fig, _ = side_features.report_section(export_dir if data.manifest else None, data.config, tmp)
        figs += [side_fig] if side_fig else []
        (tmp / REPORT_HTML).write_text(render(data, ev, figs, tmp), encoding="utf-8")
        files = [REPORT_HTML, *(f.file for f in figs)]
        (tmp / MARKER).write_text(json.dumps({"source": source, "kind": data.kind, "files": files}) + "\n")
        _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "dir": str(dest),
        "html": str(dest / REPORT_HTML),
        "pngs": [str(dest / f.file) for f in figs],
        "metrics": ev.summary if ev else {},
    }


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "bsm"


def _check_dest(dest: Path, given: bool) -> None:
    flag = f"--out {dest}" if given else f"the default output directory {dest}"
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{flag} is a file; choose a directory")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MARKER).is_file():
        raise ConfigError(f"{flag} exists, is not empty and is not a bsm report; choose another --out or remove it")


def _bsm_files(dest: Path) -> set[str]:
    """The files an earlier report in `dest` says bsm wrote (its marker's "files"; a marker of an older bsm lists
    none: report.html and the PNGs beside it), the marker included."""
    try:
        listed = json.loads((dest / MARKER).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    if not isinstance(listed, list):
        listed = [REPORT_HTML, *(p.name for p in dest.glob("*.png"))]
    return {MARKER, *(f for f in listed if isinstance(f, str) and "/" not in f)}


def _publish(tmp: Path, dest: Path) -> None:
    """Rename the finished report into place; an earlier report there goes only once the new one is in. If the
    user put files of their own in it, those stay: bsm's files are replaced one by one, the marker last."""
    old = None
    if dest.is_dir() and (dest / MARKER).is_file():
        ours = _bsm_files(dest)
        found = (p.relative_to(dest) for p in dest.rglob("*") if not p.is_dir())
        theirs = sorted(rel.as_posix() for rel in found if rel.parts[0] not in ours)
        if theirs:
            new = sorted(p.name for p in tmp.iterdir())
            for name in sorted(new, key=lambda n: n == MARKER):
                os.replace(tmp / name, dest / name)
            for name in ours - set(new):  # the earlier report's figures this one does not have
                (dest / name).unlink(missing_ok=True)
            tmp.rmdir()
            log.info("kept %d file(s) of yours in %s: %s", len(theirs), dest, ", ".join(theirs[:5]))
            return
    if dest.exists():
        if any(dest.iterdir()):
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(dest, old)
        else:
            dest.rmdir()
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _threshold(data: RunData, given: float | None) -> float | None:
    if given is not None:
        return given
    for d in (data.config.get("model") or {}, data.config.get("train") or {}, data.model or {}):
        if isinstance(d.get("threshold"), (int, float)):
            return float(d["threshold"])
    return None


def render(data: RunData, ev: Evaluation | None, figs: list[Figure], folder: Path) -> str:
    by_file = {f.file: page.figure(f, (folder / f.file).read_bytes()) for f in figs}

    def fig(name: str) -> str:
        return by_file.get(name, "")

    where = "best trial's test split" if data.kind == "sweep" else "test split"
    headline = (
        page.metrics_table(ev.summary, f"{where}, {ev.records} records, from the stored predictions (torchmetrics)")
        if ev
        else ""
    )
    stored = {k: v for k, v in (data.result.get("metrics") or {}).items() if isinstance(v, (int, float))}
    sections = [
        page.section(
            "Summary",
            page.row(headline, page.metrics_table(stored, "as the run reported them") if stored else ""),
            page.notes(data.notes),
        ),
        page.section("Learning curves", fig("learning_curves.png")),
    ]
    if ev is not None:
        cols = ["class", "support", "precision", "recall", "f1_score", "auroc"]
        length_table = page.table(ev.by_length, ["chunks", "records", "accuracy", "truncated"])
        sections += [
            page.section("ROC and precision-recall", fig("roc_pr.png"), page.table(ev.per_class, cols, "per class")),
            page.section("Confusion matrix", fig("confusion.png")),
            page.section("Calibration", fig("calibration.png")),
            page.section("Accuracy by dialogue length", fig("accuracy_by_length.png"), length_table),
        ]
    if data.kind == "sweep":
        ranked = sorted(data.trials, key=lambda t: t.get("rank") or 1 << 30)
        keys = param_keys(ranked)
        rows = [
            {**{c: t.get(c) for c in TRIAL_COLUMNS}, **{k: (t.get("hyperparameters") or {}).get(k) for k in keys}}
            for t in ranked
        ]
        sections.append(
            page.section(
                "Sweep",
                fig("sweep_parallel.png"),
                fig("sweep_lr.png"),
                fig("sweep_trials.png"),
                page.table(rows, TRIAL_COLUMNS + keys, f"trials, ranked by {data.monitor} ({data.result.get('mode')})"),
                page.kv_table((data.sweep or {}).get("tune") or {}),
            )
        )
    if fig(side_features.FILE):
        sections.append(page.section("Side features", fig(side_features.FILE)))
    sections += [
        page.section("Configuration", page.kv_table(data.config) if data.config else ""),
        page.section("Data", page.table(data_sizes(data, ev), ["what", "value"])),
        page.section("Timings", page.table(timings(data), ["what", "seconds"])),
        page.section("Export", *export_tables(data)),
    ]
    title = f"bsm report: {data.name}"
    return page.page(title, f"{data.kind} {data.root}", sections)


def data_sizes(data: RunData, ev: Evaluation | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for k, v in page.flatten(data.result.get("data") or {}).items():  # what the runner records, if it does
        rows.append({"what": k, "value": v})
    if ev is not None:
        rows.append({"what": "test records (predictions)", "value": ev.records})
        rows += [{"what": f"test records of class {c['class']}", "value": c["support"]} for c in ev.per_class]
        if ev.by_length and ev.by_length[0]["truncated"] is not None:
            rows.append({"what": "test records truncated", "value": sum(r["truncated"] for r in ev.by_length)})
    d = data.config.get("data") or {}
    for k in ("train", "val", "test", "demo_rows", "val_fraction", "batch_size"):
        if d.get(k) is not None:
            rows.append({"what": f"data.{k}", "value": d[k]})
    m = data.config.get("model") or {}
    for k in ("max_tokens", "max_chunks", "keep_chunks", "num_classes"):
        if m.get(k) is not None:
            rows.append({"what": f"model.{k}", "value": m[k]})
    if data.trials:
        rows.append({"what": "trials", "value": len(data.trials)})
    return rows


def timings(data: RunData) -> list[dict[str, Any]]:
    rows = [{"what": k, "seconds": v} for k, v in page.flatten(data.result.get("timings") or {}).items()]
    if isinstance(data.result.get("elapsed_s"), (int, float)):
        rows.append({"what": "sweep elapsed", "seconds": data.result["elapsed_s"]})
    epochs_t = [e.get("time_this_iter_s") or e.get("epoch_seconds") for e in data.epochs]
    if epochs_t and all(isinstance(t, (int, float)) for t in epochs_t):
        rows += [{"what": f"epoch {i + 1}", "seconds": t} for i, t in enumerate(epochs_t)]
    m = data.manifest or {}
    rows += [
        {"what": f"export {k.removesuffix('_seconds')}", "seconds": v} for k, v in (m.get("timings") or {}).items()
    ]
    if isinstance(m.get("export_seconds"), (int, float)):
        rows.append({"what": "export total", "seconds": m["export_seconds"]})
    return rows


def export_tables(data: RunData) -> list[str]:
    m = data.manifest
    if not m:
        return []
    parity = m.get("parity") or {}
    runtimes = [{"runtime": k, **v} for k, v in parity.items() if isinstance(v, dict)]
    info = {k: v for k, v in parity.items() if not isinstance(v, dict)}
    head = {k: m.get(k) for k in ("created", "source_checkpoint", "example_input_shape") if m.get(k) is not None}
    files = [{"path": f["path"], "size": f["size"], "sha256": f["sha256"][:16] + "..."} for f in m.get("files", [])]
    return [
        page.table(runtimes, None, "parity against PyTorch"),
        page.kv_table(info, "parity check", "value"),
        page.kv_table({**head, "versions": m.get("versions") or {}}),
        page.table(files, ["path", "size", "sha256"], "files (manifest)"),
    ]
