"""bsm's Python API: one function per CLI command. The CLI only parses options and prints what these return.

What runs on the user's machine lives in `raytune_bsm.client` (submitting, job control, fetch); the local
commands that need the model (`export`) load it only when called, so `bsm --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raytune_bsm.client import jobs as _jobs
from raytune_bsm.client import serve as _serve
from raytune_bsm.client.cluster_predict import predict_on_cluster
from raytune_bsm.client.fetch import fetch
from raytune_bsm.client.jobs import TERMINAL, latest_metrics, list_jobs, logs, stop, wait
from raytune_bsm.client.local_cluster import down, running_jobs, up
from raytune_bsm.client.options import SubmitOptions, resolve_run
from raytune_bsm.client.submission import check_storage
from raytune_bsm.client.submit import plan, submit, tune
from raytune_bsm.config import check_field_roles
from raytune_bsm.errors import ConfigError
from raytune_bsm.layout import default_storage
from raytune_bsm.resources import cap_threads
from raytune_bsm.storage import check_writable, is_uri, join

__all__ = [
    "SubmitOptions",
    "TERMINAL",
    "demo_data",
    "down",
    "export",
    "fetch",
    "latest_metrics",
    "list_jobs",
    "logs",
    "plan",
    "predict",
    "predict_on_cluster",
    "report",
    "resolve_run",
    "running_jobs",
    "serve_down",
    "serve_status",
    "serve_up",
    "status",
    "stop",
    "submit",
    "tune",
    "up",
    "wait",
]


# ---------------------------------------------------------------------------------------------- serve


def serve_up(source: str, *, address: str | None = None, dry_run: bool = False, **settings: Any) -> dict[str, Any]:
    """Serve an export (EXPORT|JOB|RUN) on the cluster's Ray Serve: {name, url, token_file}; with `dry_run` the
    Serve config it would apply (nothing contacted, nothing written). `settings`: client/serve.py's `plan`."""
    plan_ = _serve.plan(source, address=address, **settings)
    return plan_.shown() if dry_run else _serve.up(plan_, address=address)


def status(job_id: str | None = None, *, address: str | None = None, allow_insecure: bool = False) -> dict[str, Any]:
    """`bsm status`: a job's state, times, latest metrics and artifacts (the newest bsm job without `job_id`), as
    the `--json` dict; `client.jobs.status` gives the typed record (records.JobInfo)."""
    return _jobs.status(job_id, address=address, allow_insecure=allow_insecure).to_dict()


def serve_status(name: str | None = None, *, address: str | None = None) -> list[dict[str, Any]]:
    """The cluster's Serve applications (or `name`): status, URL, replicas, export."""
    return _serve.status(name, address=address)


def serve_down(name: str = "bsm", *, address: str | None = None) -> list[str]:
    """Remove an application; Serve itself stops with the last one. The applications left."""
    return _serve.down(name, address=address)


# ----------------------------------------------------------------------------------------------- data


def demo_data(
    out: str, rows: int = 2000, seed: int = 0, *, overwrite: bool = False, progress: Any = None
) -> dict[str, Path]:
    """`bsm demo-data`: train/val/test.parquet in `out`; files already there are replaced only with `overwrite`.
    `progress(done, rows)` as dialogues are generated."""
    from raytune_bsm.demo.generator import write_demo_data

    directory = Path(out).expanduser()
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--out {out}: a file, not a directory; give a directory for train/val/test.parquet")
    there = [f"{s}.parquet" for s in ("train", "val", "test") if (directory / f"{s}.parquet").exists()]
    if there and not overwrite:
        raise ConfigError(f"--out {out} already holds {', '.join(there)}; choose another directory or add --overwrite")
    check_writable(out, "--out")
    return write_demo_data(directory, rows=rows, seed=seed, progress=progress)


# ----------------------------------------------------------------------------------------------- artifacts


def report(
    source: str, out: str | None = None, *, address: str | None = None, threshold: float | None = None
) -> dict[str, Any]:
    """`bsm report`: report.html and PNGs of a run, sweep or export (a path/URI, a job id or a run name in the
    default storage). Returns {"dir", "html", "pngs", "metrics"}."""
    from raytune_bsm.report import build_report  # matplotlib: not on `bsm --help`'s path

    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {threshold}")
    where = source
    if not (is_uri(source) or Path(source).expanduser().exists()):
        info = _jobs.status(source, address=address) if source.startswith(("bsm-", "raysubmit_")) else None
        where = (info and info.run_dir) or join(default_storage(), source)  # a job's run, or a run name
    return build_report(where, out, threshold=threshold)


def export(checkpoint: str, to: str, *, progress: Any = None) -> dict[str, Any]:
    """Export any checkpoint this project wrote (a .ckpt file or a Ray checkpoint directory) to `to`.
    `progress(step, steps_done, steps_total)` after each step of the export."""
    if not Path(checkpoint).expanduser().exists() and "://" not in checkpoint:
        raise ConfigError(f"CHECKPOINT {checkpoint}: no such file or directory")
    if "://" in to:
        check_storage(to, "--to")
    check_writable(to, "--to")  # before the checkpoint is loaded and the graphs are built
    from raytune_bsm.model.export import export_checkpoint  # torch: only once the arguments are right

    return export_checkpoint(checkpoint, to, progress=progress)


def predict(
    export_dir: str,
    data: str,
    out: str | None = None,
    *,
    provider: str = "CPUExecutionProvider",
    batch_size: int = 32,
    precision: str = "auto",
    text_field: str | None = None,
    id_field: str | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    progress: Any = None,
) -> str:
    """Score Parquet/CSV/JSONL data with ONNX Runtime using the export's own tokenizer and settings; the output
    path. (`predict_on_cluster` does it as a Ray job.)"""
    from raytune_bsm.scoring.predict import predict_file  # onnxruntime: not on `bsm --help`'s path

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    check_field_roles([("--text-field", text_field), ("--id-field", id_field)])
    threads = cap_threads(threads)
    return predict_file(
        export_dir,
        data,
        out,
        provider=provider,
        batch_size=batch_size,
        precision=precision,
        text_field=text_field,
        id_field=id_field,
        threads=threads,
        overwrite=overwrite,
        progress=progress,
    )
