"""`bsm`: a thin Typer CLI over `raytune_bsm.api`.

stdout carries what a script wants (a job id, a path, JSON); progress and logs go to stderr. A user's mistake
is one line on stderr and exit code 1; no traceback. Heavy libraries are imported inside the API functions, so
`bsm --help` is instant.
"""

from __future__ import annotations

import json
import sys
from functools import wraps
from typing import Any, Callable, List, Optional

import typer

from raytune_bsm import api
from raytune_bsm.errors import BsmError

app = typer.Typer(
    help="Train, sweep and export a chunked-BERT classifier for buyer-seller dialogues on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # tokens live in local variables: never print them
)


def _out(obj: Any) -> None:
    typer.echo(obj if isinstance(obj, str) else json.dumps(obj, indent=2, default=str))


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def command(name: str | None = None) -> Callable:
    """Register a command whose BsmErrors become one line on stderr and exit code 1."""

    def deco(fn: Callable) -> Callable:
        @wraps(fn)
        def run(*a: Any, **k: Any) -> Any:
            from raytune_bsm.logs import setup_logging

            setup_logging()
            try:
                return fn(*a, **k)
            except BsmError as e:
                _err(f"bsm: error: {e}")
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                _err("bsm: interrupted")
                raise typer.Exit(130) from None

        return app.command(name)(run)

    return deco


# Options shared by submit and tune.
Config = typer.Option(None, "--config", help="YAML recipe (see jobs/*.yaml in the source tree); flags override it.")
Address = typer.Option(None, "--address", help="Ray dashboard/Jobs API, e.g. http://HEAD:8265. "
                       "Default: RAY_ADDRESS / RAY_API_SERVER_ADDRESS, else the cluster `bsm up` started, else one bsm starts.")  # fmt: skip
Sets = typer.Option([], "--set", help="Any config key: key=value or section.key=value (repeatable).")


def _submit_options(**kw: Any) -> api.SubmitOptions:
    kw["sets"] = list(kw.pop("set_") or [])
    return api.SubmitOptions(**kw)


@command("submit")
def submit(
    config: Optional[str] = Config,
    address: Optional[str] = Address,
    num_gpus: Optional[int] = typer.Option(None, "--num-gpus", help="N workers with one GPU each (NCCL, bf16)."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="CPU workers (DDP over gloo)."),
    cpus_per_worker: Optional[int] = typer.Option(None, "--cpus-per-worker"),
    train: Optional[str] = typer.Option(None, "--train", help="Parquet file/dir/glob, CSV or JSONL. Default: demo data."),
    val: Optional[str] = typer.Option(None, "--val", help="Default: a seeded fraction of --train."),
    test: Optional[str] = typer.Option(None, "--test"),
    text_field: Optional[str] = typer.Option(None, "--text-field"),
    label_field: Optional[str] = typer.Option(None, "--label-field"),
    id_field: Optional[str] = typer.Option(None, "--id-field"),
    model: Optional[str] = typer.Option(None, "--model", help="HF model name or local dir. Default: all-MiniLM-L6-v2 (offline)."),
    max_chunks: Optional[int] = typer.Option(None, "--max-chunks"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Run storage: path, NFS, s3://, gs://, hdfs://."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: train-<time>-<hex>)."),
    set_: List[str] = Sets,
    allow_insecure: bool = typer.Option(False, "--allow-insecure", help="Submit to a remote cluster without token auth."),
    follow: bool = typer.Option(False, "--follow", help="Stream the logs; exit with the job's result."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan as JSON; submit nothing."),
) -> None:
    """Submit a training job to a Ray cluster (Ray Train, DDP). Prints the job id."""
    opts = _submit_options(**{k: v for k, v in locals().items() if k not in ("follow", "dry_run")})
    _submit(opts, "train", None, follow, dry_run)


def _submit(opts: api.SubmitOptions, kind: str, extra: Any, follow: bool, dry_run: bool) -> None:
    result = api.submit(opts, kind=kind, extra=extra, dry_run=dry_run)
    if dry_run:
        _out(result.plan())  # type: ignore[union-attr]
        return
    job_id = str(result)
    _out(job_id)
    sys.stdout.flush()
    if follow:
        state = api.wait(job_id, address=opts.address, on_log=sys.stderr)
        _report_end(job_id, opts.address, state)


def _report_end(job_id: str, address: str | None, state: str) -> None:
    info = api.status(job_id, address=address)
    _err(f"job {job_id}: {state}")
    if info.get("metrics"):
        shown = {k: round(v, 4) for k, v in info["metrics"].items() if k.startswith("val_") and isinstance(v, float)}
        _err(f"validation: {json.dumps(shown, sort_keys=True)}")
    if info.get("run_dir"):
        _err(f"checkpoints: {info['run_dir']}" + (f" (best: {info['best_checkpoint']})" if info.get("best_checkpoint") else ""))
    if info.get("export"):
        _err(f"export: {info['export']}")
    if state != "SUCCEEDED":
        raise typer.Exit(1)


@command("tune")
def tune(
    config: Optional[str] = Config,
    address: Optional[str] = Address,
    num_samples: Optional[int] = typer.Option(None, "--num-samples", help="Trials to draw (default 8)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="asha (default: stop weak trials early) or fifo."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Default: val_auroc (binary), val_f1_score (multiclass)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="max or min (default: min for val_loss, else max)."),
    gpus_per_trial: Optional[int] = typer.Option(None, "--gpus-per-trial", help="N workers with one GPU each per trial."),
    workers_per_trial: Optional[int] = typer.Option(None, "--workers-per-trial"),
    max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent", help="Default: what the cluster's resources fit."),
    time_budget: Optional[str] = typer.Option(None, "--time-budget", help="e.g. 30m, 2h, or seconds."),
    search_space: Optional[str] = typer.Option(None, "--search-space", help="YAML (see jobs/search_space.yaml)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the interrupted sweep NAME."),
    cpus_per_worker: Optional[int] = typer.Option(None, "--cpus-per-worker"),
    train: Optional[str] = typer.Option(None, "--train"),
    val: Optional[str] = typer.Option(None, "--val"),
    test: Optional[str] = typer.Option(None, "--test"),
    text_field: Optional[str] = typer.Option(None, "--text-field"),
    label_field: Optional[str] = typer.Option(None, "--label-field"),
    id_field: Optional[str] = typer.Option(None, "--id-field"),
    model: Optional[str] = typer.Option(None, "--model"),
    max_chunks: Optional[int] = typer.Option(None, "--max-chunks"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Per trial (ASHA's max_t)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    storage: Optional[str] = typer.Option(None, "--storage"),
    name: Optional[str] = typer.Option(None, "--name"),
    set_: List[str] = Sets,
    allow_insecure: bool = typer.Option(False, "--allow-insecure"),
    follow: bool = typer.Option(False, "--follow", help="Stream the logs; exit with the sweep's result."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan as JSON; submit nothing."),
) -> None:
    """Submit a Ray Tune sweep over lr, warmup and reinit_layers; the best trial is exported. Prints the job id."""
    sweep = {"num_samples": num_samples, "scheduler": scheduler, "metric": metric, "mode": mode,
             "gpus_per_trial": gpus_per_trial, "workers_per_trial": workers_per_trial,
             "max_concurrent": max_concurrent, "time_budget_s": time_budget}  # fmt: skip
    opts = _submit_options(
        config=config, address=address, cpus_per_worker=cpus_per_worker, train=train, val=val, test=test,
        text_field=text_field, label_field=label_field, id_field=id_field, model=model, max_chunks=max_chunks,
        max_tokens=max_tokens, max_epochs=max_epochs, batch_size=batch_size, storage=storage, name=name,
        set_=set_, allow_insecure=allow_insecure,
    )  # fmt: skip
    result = api.tune(opts, sweep, search_space=search_space, resume=resume, dry_run=dry_run)
    if dry_run:
        _out(result.plan())  # type: ignore[union-attr]
        return
    _out(str(result))
    sys.stdout.flush()
    if follow:
        _report_end(str(result), address, api.wait(str(result), address=address, on_log=sys.stderr))


@command("status")
def status(
    job_id: Optional[str] = typer.Argument(None, help="Default: the newest bsm job."),
    address: Optional[str] = Address,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A job's state, times, latest metrics and where its artifacts are."""
    info = api.status(job_id, address=address)
    if as_json:
        _out(info)
        return
    for key in ("job_id", "status", "run", "start_time", "end_time", "run_dir", "best_checkpoint", "export", "restarts"):
        if info.get(key) is not None:
            _out(f"{key:16} {info[key]}")
    if info.get("metrics"):
        _out(f"{'metrics':16} {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in info['metrics'].items()})}")
    if info.get("leaderboard"):
        from raytune_bsm.sweep import format_leaderboard

        _out(format_leaderboard(info["leaderboard"], info.get("monitor") or "metric"))


@command("logs")
def logs(
    job_id: str,
    address: Optional[str] = Address,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep following until the job ends."),
) -> None:
    """A job's logs (to stderr); with --follow, exit with the job's result."""
    state = api.logs(job_id, address=address, follow=follow)
    if follow and state != "SUCCEEDED":
        raise typer.Exit(1)


@command("stop")
def stop(job_id: str, address: Optional[str] = Address) -> None:
    """Stop a running or pending job."""
    _out(api.stop(job_id, address=address))


@command("list")
def list_(address: Optional[str] = Address, as_json: bool = typer.Option(False, "--json")) -> None:
    """bsm's jobs on the cluster, newest first."""
    rows = api.list_jobs(address=address)
    if as_json:
        _out(rows)
        return
    for r in rows:
        _out(f"{r['job_id']:44} {r['status']:10} {r['kind'] or '':6} {r['start_time'] or ''}")


@command("up")
def up(
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus"),
    num_gpus: Optional[int] = typer.Option(None, "--num-gpus"),
) -> None:
    """Start a local Ray cluster in the background (loopback only, token auth on). Prints its address."""
    _out(api.up(num_cpus, num_gpus).dashboard_url)


@command("down")
def down() -> None:
    """Stop the local Ray cluster that `bsm up` (or `bsm submit`) started, and nothing else."""
    rec = api.down()
    _err(f"stopped the local Ray cluster at {rec.dashboard_url}" if rec else "no local cluster started by bsm is running")


@command("demo-data")
def demo_data(
    out: str = typer.Option(..., "--out", help="Directory for train/val/test.parquet."),
    rows: int = typer.Option(2000, "--rows"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write synthetic buyer-seller dialogues (train/val/test Parquet). Prints the directory."""
    paths = api.demo_data(out, rows=rows, seed=seed)
    _out(str(paths["train"].parent))


@command("fetch")
def fetch(
    source: str = typer.Argument(..., help="A job id, a run name, or the path/URI of an export directory."),
    to: Optional[str] = typer.Option(None, "--to", help="Local directory (default: ./<run>-export)."),
    address: Optional[str] = Address,
) -> None:
    """Download a run's export and verify every file's sha256 against its manifest. Prints the directory."""
    _out(str(api.fetch(source, to, address=address)))


@command("export")
def export(
    checkpoint: str = typer.Argument(..., help="A .ckpt file or a Ray checkpoint directory written by bsm."),
    to: str = typer.Option(..., "--to", help="Export directory (path or URI)."),
) -> None:
    """Export a checkpoint to ONNX + TorchScript, verified against PyTorch. Prints the directory."""
    api.export(checkpoint, to)
    _out(to)


@command("predict")
def predict(
    export_dir: str = typer.Argument(..., help="An export directory (from `bsm fetch` or `bsm export`)."),
    data: str = typer.Argument(..., help="Parquet, CSV or JSON Lines file to score."),
    out: Optional[str] = typer.Option(None, "--out", help=".parquet, .csv or .jsonl (default: next to DATA)."),
    provider: str = typer.Option("CPUExecutionProvider", "--provider", help="ONNX Runtime execution provider, e.g. CUDAExecutionProvider."),
    batch_size: int = typer.Option(32, "--batch-size"),
) -> None:
    """Score a file with ONNX Runtime (no PyTorch needed). Prints the output path."""

    def progress(done: int, total: int) -> None:
        _err(f"\rscored {done}/{total} records")

    _out(api.predict(export_dir, data, out, provider=provider, batch_size=batch_size, progress=progress))


def main() -> None:
    app()


