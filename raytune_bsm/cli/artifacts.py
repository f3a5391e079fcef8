"""Local commands on data and artifacts: `demo-data`, `fetch`, `export`, `predict`."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from raytune_bsm import api
from raytune_bsm.cli.app import command, out
from raytune_bsm.cli.options import Address, AllowInsecure, BatchSize, DryRun, IdField, Json, TextField
from raytune_bsm.errors import ConfigError
from raytune_bsm.progress import bar_callback
from raytune_bsm.text import safe


def _listing(directory: Path) -> dict:
    """{"dir": ..., "files": [relative paths]}: what --json prints for a command that wrote a directory."""
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    return {"dir": str(directory), "files": files}


@command("demo-data")
def demo_data(
    out_dir: Annotated[str, typer.Option("--out", help="Directory for train/val/test.parquet.")],
    rows: Annotated[int, typer.Option("--rows", help="Dialogues in all (80/10/10).")] = 2000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace train/val/test.parquet already in --out.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Write synthetic buyer-seller dialogues (train/val/test Parquet). Prints the directory."""
    with bar_callback("generating", unit="dialogues") as update:
        paths = api.demo_data(out_dir, rows=rows, seed=seed, overwrite=overwrite, progress=update)
    directory = Path(paths["train"]).parent
    out({"dir": str(directory), "files": sorted(str(p) for p in paths.values())} if as_json else safe(directory))


@command("fetch")
def fetch(
    source: Annotated[str, typer.Argument(help="A job id, a run name, or the path/URI of an export directory.")],
    to: Annotated[Optional[str], typer.Option("--to", help="Local directory (default: ./<run>-export).")] = None,
    address: Address = None,
    as_json: Json = False,
) -> None:
    """Download a run's export and verify every file's sha256 against its manifest. Prints the directory."""
    with bar_callback("downloading", unit="MB", scale=1e6) as update:
        directory = Path(api.fetch(source, to, address=address, progress=update))
    out(_listing(directory) if as_json else safe(directory))


@command("export")
def export(
    checkpoint: Annotated[str, typer.Argument(help="A .ckpt file or a Ray checkpoint directory written by bsm.")],
    to: Annotated[str, typer.Option("--to", help="Export directory (path or URI); a new or empty one.")],
    as_json: Json = False,
) -> None:
    """Export a checkpoint to ONNX + TorchScript, verified against PyTorch. Prints the directory."""
    with bar_callback("exporting", unit="steps") as update:
        api.export(checkpoint, to, progress=lambda step, done, total: update(done, total, step))
    out(_listing(Path(to)) if as_json and "://" not in to else {"dir": to} if as_json else safe(to))


@command("report")
def report(
    source: Annotated[str, typer.Argument(help="A run, sweep or export: a path/URI, a job id or a run name.")],
    out_dir: Annotated[Optional[str], typer.Option("--out", help="Report directory (default: ./<run>-report).")] = None,
    threshold: Annotated[
        Optional[float], typer.Option("--threshold", help="Binary decision threshold (default: the run's).")
    ] = None,
    address: Address = None,
    as_json: Json = False,
) -> None:
    """Write report.html (self-contained: curves, confusion matrix, calibration, sweep plots) and its PNGs.
    Prints the path of report.html."""
    result = api.report(source, out_dir, address=address, threshold=threshold)
    out({k: result[k] for k in ("dir", "html", "pngs", "metrics")} if as_json else safe(result["html"]))


@command("predict")
def predict(
    export_dir: Annotated[str, typer.Argument(help="An export directory (from `bsm fetch` or `bsm export`).")],
    data: Annotated[
        str, typer.Argument(help="Parquet, CSV or JSON Lines: a file, a directory or a glob; local or a URI.")
    ],
    out_path: Annotated[
        Optional[str],
        typer.Option(
            "--out",
            help=".parquet, .csv or .jsonl (default: next to DATA); with --on-cluster a directory of Parquet files.",
        ),
    ] = None,
    provider: Annotated[
        str, typer.Option("--provider", help="ONNX Runtime execution provider, e.g. CUDAExecutionProvider.")
    ] = "CPUExecutionProvider",
    precision: Annotated[
        str, typer.Option("--precision", help="auto (int8 where the export's metrics allow it), fp32 or int8.")
    ] = "auto",
    batch_size: BatchSize = None,
    text_field: TextField = None,
    id_field: IdField = None,
    threads: Annotated[
        Optional[int], typer.Option("--threads", help="ONNX Runtime threads (default: the CPUs).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out file (never the input).")
    ] = False,
    on_cluster: Annotated[
        bool, typer.Option("--on-cluster", help="Score on a Ray cluster (Ray Data, an actor pool).")
    ] = False,
    num_actors: Annotated[
        Optional[int], typer.Option("--num-actors", help="--on-cluster: scoring actors (default: autoscale).")
    ] = None,
    address: Address = None,
    allow_insecure: AllowInsecure = False,
    dry_run: DryRun = False,
    as_json: Json = False,
) -> None:
    """Score a file with ONNX Runtime (no PyTorch needed), here or with --on-cluster as a Ray job. Prints the
    output path (the job id with --on-cluster)."""
    batch_size = 32 if batch_size is None else batch_size
    if on_cluster:
        if out_path is None:
            raise ConfigError(
                "--on-cluster needs --out DIR: a directory (path or URI) the cluster writes Parquet files to"
            )
        result = api.predict_on_cluster(
            export_dir,
            data,
            out_path,
            address=address,
            provider=provider,
            precision=precision,
            batch_size=batch_size,
            num_actors=num_actors,
            id_field=id_field,
            text_field=text_field,
            allow_insecure=allow_insecure,
            dry_run=dry_run,
        )
        out(result if dry_run else {"job_id": result} if as_json else safe(result))
        return
    _refuse_cluster_flags(num_actors=num_actors, address=address, dry_run=dry_run, allow_insecure=allow_insecure)
    with bar_callback("scoring", unit="records") as update:  # the bar starts with the scoring, not before
        written = api.predict(
            export_dir,
            data,
            out_path,
            provider=provider,
            batch_size=batch_size,
            precision=precision,
            text_field=text_field,
            id_field=id_field,
            threads=threads,
            overwrite=overwrite,
            progress=update,
        )
    out({"out": str(written)} if as_json else safe(written))


def _refuse_cluster_flags(**given: object) -> None:
    """A local `bsm predict` given flags that only mean something with --on-cluster: one line naming them."""
    flags = [f"--{name.replace('_', '-')}" for name, value in given.items() if value]
    if flags:
        raise ConfigError(f"{', '.join(flags)} only apply with --on-cluster")
