"""`bsm up` / `bsm down`: the local Ray cluster bsm manages (only that one)."""

import sys
from typing import Annotated, Optional

import typer

from raytune_bsm import api
from raytune_bsm.cli.app import command, err, out
from raytune_bsm.cli.options import Json, NumGpus
from raytune_bsm.text import safe


@command("up")
def up(
    num_cpus: Annotated[Optional[int], typer.Option("--num-cpus", help="Default: every CPU of this machine.")] = None,
    num_gpus: NumGpus = None,
    as_json: Json = False,
) -> None:
    """Start a local Ray cluster in the background (loopback only, token auth on). Prints its address."""
    url = api.up(num_cpus, num_gpus).dashboard_url
    out({"address": url} if as_json else safe(url))


@command("down")
def down(
    force: Annotated[
        bool, typer.Option("--force", help="Stop it even while jobs run on it (they are stopped).")
    ] = False,
) -> None:
    """Stop the local Ray cluster that `bsm up` (or `bsm submit`) started, and nothing else."""
    if not force and sys.stdin.isatty() and sys.stderr.isatty():
        active = api.running_jobs()
        if active:
            names = ", ".join(f"{safe(job)} ({state})" for job, state in active)
            if not typer.confirm(f"jobs are running on the local Ray cluster: {names}; stop them too?", err=True):
                err("the local Ray cluster and its jobs keep running")
                raise typer.Exit(1)
            force = True
    rec = api.down(force=force)
    err(
        f"stopped the local Ray cluster at {safe(rec.dashboard_url)}"
        if rec
        else "no local cluster started by bsm is running"
    )
