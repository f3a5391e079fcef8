"""`bsm submit`, `bsm tune` and job control: `status`, `logs`, `stop`, `list`."""

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Optional

import typer

from raytune_bsm import api
from raytune_bsm.cli.app import command, err, out
from raytune_bsm.cli.options import Address, DryRun, Follow, JobId, Json, run_options
from raytune_bsm.progress import follow_progress
from raytune_bsm.text import safe


@command("submit")
@run_options
def submit(opts: api.SubmitOptions, follow: Follow = False, dry_run: DryRun = False, as_json: Json = False) -> None:
    """Submit a training job to a Ray cluster (Ray Train, DDP). Prints the job id."""
    _submitted(api.submit(opts, dry_run=dry_run), opts, follow, as_json)


@command("tune")
@run_options
def tune(
    opts: api.SubmitOptions,
    num_samples: Annotated[Optional[int], typer.Option("--num-samples", help="Trials to draw (default 8).")] = None,
    scheduler: Annotated[
        Optional[str], typer.Option("--scheduler", help="asha (default: stop weak trials early) or fifo.")
    ] = None,
    metric: Annotated[
        Optional[str], typer.Option("--metric", help="Default: val_auroc (binary), val_f1_score (multiclass).")
    ] = None,
    mode: Annotated[
        Optional[str], typer.Option("--mode", help="max or min (default: min for val_loss, else max).")
    ] = None,
    max_concurrent: Annotated[
        Optional[int], typer.Option("--max-concurrent", help="Default: what the cluster's resources fit.")
    ] = None,
    time_budget: Annotated[Optional[str], typer.Option("--time-budget", help="e.g. 30m, 2h, or seconds.")] = None,
    search_space: Annotated[
        Optional[str], typer.Option("--search-space", help="YAML (see jobs/search_space.yaml).")
    ] = None,
    gpus_per_trial: Annotated[Optional[int], typer.Option("--gpus-per-trial", hidden=True)] = None,  # old: --num-gpus
    workers_per_trial: Annotated[
        Optional[int], typer.Option("--workers-per-trial", hidden=True)
    ] = None,  # --num-workers
    follow: Follow = False,
    dry_run: DryRun = False,
    as_json: Json = False,
) -> None:
    """Submit a Ray Tune sweep over lr, warmup and reinit_layers; the best trial is exported. Prints the job id.

    Every `bsm submit` option applies per trial; a key given as a flag or --set is fixed, not sampled."""
    sweep = {
        "num_samples": num_samples,
        "scheduler": scheduler,
        "metric": metric,
        "mode": mode,
        "gpus_per_trial": gpus_per_trial,
        "workers_per_trial": workers_per_trial,
        "max_concurrent": max_concurrent,
        "time_budget_s": time_budget,
    }
    _submitted(api.tune(opts, sweep, search_space=search_space, dry_run=dry_run), opts, follow, as_json)


def _submitted(result: Any, opts: api.SubmitOptions, follow: bool, as_json: bool) -> None:
    if not isinstance(result, str):  # --dry-run: the plan
        out(result.plan())
        return
    out({"job_id": result} if as_json else safe(result))
    sys.stdout.flush()
    if follow:
        with _keeps_running(result, opts.address), follow_progress() as stream:
            state = api.wait(result, address=opts.address, on_log=stream, allow_insecure=opts.allow_insecure)
        _report_end(result, state, opts.address, opts.allow_insecure)


@contextmanager
def _keeps_running(job_id: str, address: str | None) -> Iterator[None]:
    """Ctrl-C while following a job stops bsm, not the job: say so, and how to follow or stop it."""
    try:
        yield
    except KeyboardInterrupt:
        where = f" --address {safe(address)}" if address else ""
        job = safe(job_id)
        err(
            f"bsm: interrupted; job {job} keeps running on the cluster: follow it with `bsm logs {job} --follow"
            f"{where}`, stop it with `bsm stop {job}{where}`"
        )
        raise typer.Exit(130) from None


def _report_end(job_id: str, state: str, address: str | None, allow_insecure: bool = False) -> None:
    """The job's end as `--follow` shows it: `job ID: STATE`, why it failed, its metrics and artifacts."""
    info = api.status(job_id, address=address, allow_insecure=allow_insecure)
    err(f"job {safe(job_id)}: {safe(state)}")
    if info.get("error"):
        err(f"error: {safe(info['error'])}")
    if info.get("metrics"):
        shown = {k: round(v, 4) for k, v in info["metrics"].items() if k.startswith("val_") and isinstance(v, float)}
        err(f"validation: {safe(json.dumps(shown, sort_keys=True))}")
    if info.get("run_dir") and state == "SUCCEEDED":
        best = f" (best: {safe(info['best_checkpoint'])})" if info.get("best_checkpoint") else ""
        err(f"checkpoints: {safe(info['run_dir'])}{best}")
    if info.get("export"):
        err(f"export: {safe(info['export'])}")
    if state != "SUCCEEDED":
        raise typer.Exit(1)


STATUS_KEYS = (
    "job_id",
    "status",
    "error",
    "run",
    "start_time",
    "end_time",
    "run_dir",
    "best_checkpoint",
    "export",
    "restarts",
)


@command("status")
def status(
    job_id: Annotated[Optional[str], typer.Argument(help="Default: the newest bsm job.")] = None,
    address: Address = None,
    as_json: Json = False,
) -> None:
    """A job's state, why it failed, times, latest metrics and where its artifacts are."""
    info = api.status(job_id, address=address)
    if as_json:
        out(info)
        return
    for key in STATUS_KEYS:
        if info.get(key) is not None:
            out(f"{key:16} {safe(info[key])}")
    if info.get("metrics"):
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in info["metrics"].items()}
        out(f"{'metrics':16} {safe(json.dumps(shown))}")
    if info.get("leaderboard"):
        from raytune_bsm.sweep import format_leaderboard  # not on `bsm --help`'s path

        out(safe(format_leaderboard(info["leaderboard"], info.get("monitor") or "metric"), multiline=True))
    if info.get("run_dir"):  # TensorBoard finds every run's (and every trial's) event files below it
        out(f"{'curves':16} tensorboard --logdir {safe(info['run_dir'])}")


@command("logs")
def logs(job_id: JobId, address: Address = None, follow: Follow = False) -> None:
    """A job's logs (to stderr); with --follow, exit with the job's result."""
    if not follow:
        with follow_progress() as stream:
            api.logs(job_id, address=address, out=stream)
        return
    with _keeps_running(job_id, address), follow_progress() as stream:
        state = api.logs(job_id, address=address, follow=True, out=stream)
    _report_end(job_id, state, address)


@command("stop")
def stop(job_id: JobId, address: Address = None, as_json: Json = False) -> None:
    """Stop a running or pending job. Prints its final status."""
    state = api.stop(job_id, address=address)
    out({"job_id": job_id, "status": state} if as_json else safe(state))


@command("list")
def list_(address: Address = None, as_json: Json = False) -> None:
    """bsm's jobs on the cluster, newest first."""
    rows = api.list_jobs(address=address)
    if as_json:
        out(rows)
        return
    for r in rows:
        out(safe(f"{r['job_id']:44} {r['status']:10} {r['kind'] or '':6} {r['start_time'] or ''}"))
