"""`bsm serve up | status | down`: an export answering HTTP requests on the cluster's Ray Serve."""

from typing import Annotated, Optional

import typer

from raytune_bsm import api
from raytune_bsm.cli.app import BsmGroup, app, command, err, out
from raytune_bsm.cli.options import Address, DryRun, Json
from raytune_bsm.logs import verbose
from raytune_bsm.serving import DEFAULT_HOST, DEFAULT_NAME, DEFAULT_PORT, Limits
from raytune_bsm.text import safe

serve = typer.Typer(cls=BsmGroup, no_args_is_help=True, help="Serve an export over HTTP on the cluster's Ray Serve.")
app.add_typer(serve, name="serve")

Name = Annotated[str, typer.Option("--name", help="The application's name; it answers under /NAME.")]


@command("up", serve)
def up(
    source: Annotated[str, typer.Argument(help="An export directory/URI, a job id or a run name (as `bsm fetch`).")],
    address: Address = None,
    name: Name = DEFAULT_NAME,
    replicas: Annotated[Optional[int], typer.Option("--replicas", help="Replicas (default 1).")] = None,
    autoscale: Annotated[
        Optional[str], typer.Option("--autoscale", help="MIN,MAX replicas, scaled with the load.")
    ] = None,
    cpus_per_replica: Annotated[
        int, typer.Option("--cpus-per-replica", help="CPUs per replica = its ONNX Runtime threads.")
    ] = 1,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", help="Requests scored together in one batch.")
    ] = 16,
    batch_wait_ms: Annotated[
        float, typer.Option("--batch-wait-ms", help="How long a batch waits for more requests.")
    ] = 5.0,
    max_records: Annotated[
        int, typer.Option("--max-records", help="Records per request, at most.")
    ] = Limits.max_records,
    max_body_kb: Annotated[
        int, typer.Option("--max-body-kb", help="Request body size, at most (KiB).")
    ] = Limits.max_body_bytes // 1024,
    host: Annotated[
        str, typer.Option("--host", help="Where the HTTP proxy listens; not loopback needs a bearer token.")
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", help="The HTTP proxy's port.")] = DEFAULT_PORT,
    precision: Annotated[
        str, typer.Option("--precision", help="auto|fp32|int8 (auto: int8 within 0.5 point of fp32).")
    ] = "auto",
    token_file: Annotated[
        Optional[str],
        typer.Option("--token-file", help="The bearer token (default: BSM_HOME/serve-NAME.token, made 0600)."),
    ] = None,
    dry_run: DryRun = False,
    as_json: Json = False,
) -> None:
    """Deploy an export as a Ray Serve application; prints its URL."""
    result = api.serve_up(
        source,
        address=address,
        dry_run=dry_run,
        name=name,
        replicas=replicas,
        autoscale=autoscale,
        cpus_per_replica=cpus_per_replica,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        max_records=max_records,
        max_body_kb=max_body_kb,
        host=host,
        port=port,
        precision=precision,
        token_file=token_file,
        verbose=verbose(),
    )
    if dry_run or as_json:
        out(result)
        return
    if result["token_file"]:
        err(f"requests need 'Authorization: Bearer <the token in {safe(result['token_file'])}>'")
    out(safe(result["url"]))


@command("status", serve)
def status(
    name: Annotated[Optional[str], typer.Argument(help="One application (default: all).")] = None,
    address: Address = None,
    as_json: Json = False,
) -> None:
    """The cluster's Serve applications: status, URL, replicas, export."""
    apps = api.serve_status(name, address=address)
    if as_json:
        out(apps)
        return
    if not apps:
        err("no Serve application is running")
    for a in apps:
        states = ", ".join(f"{r['state']} (pid {r['pid']})" for r in a["replicas"]) or "no replicas"
        line = f"{a['name']}  {a['status']}  {a['url']}  {a['export'] or '-'}  replicas: {states}"
        out(safe(line + (f"  ({a['message']})" if a["message"] else "")))


@command("down", serve)
def down(
    name: Annotated[str, typer.Argument(help="The application.")] = DEFAULT_NAME,
    address: Address = None,
) -> None:
    """Remove an application; with the last one, Ray Serve stops (proxy and controller too)."""
    left = api.serve_down(name, address=address)
    err(f"removed {safe(name)}" + (f"; still serving: {safe(', '.join(left))}" if left else "; Ray Serve stopped"))
