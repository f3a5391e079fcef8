"""`bsm predict EXPORT DATA --on-cluster --out URI`: score a dataset on the cluster, from the user's machine.

Everything is checked here before a cluster is contacted: the flags, the export (its manifest and the graph
`--precision` picks), local input files (their columns; remote ones are checked by the job's driver), and the
output (a directory URI every node reaches, or a local path for a local cluster; never the input, never an
existing non-empty directory). Then a Submission of kind "predict" (entrypoint
`python -m raytune_bsm.runner.batch_predict bsm_job.json`) is planned and goes through the one pipeline every job
takes (client/submission.schedule): the package as `py_modules`, the job config as the staged `working_dir`, the
connection's token handling and security check, and `bind` (the paths' warnings, whether an actor fits).
`dry_run=True` returns the plan and contacts nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from raytune_bsm import layout, storage
from raytune_bsm.client.submission import (
    CONFIG_FILE,
    ENV_VARS,
    EXCLUDES,
    PACKAGE_DIR,
    Submission,
    check_storage,
    default_name,
    schedule,
)
from raytune_bsm.config import check_field_roles
from raytune_bsm.errors import ConfigError, DataError

log = logging.getLogger("raytune_bsm")

KIND = "predict"
ENTRYPOINT = f"python -m raytune_bsm.runner.batch_predict {CONFIG_FILE}"
PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider")
ID_CANDIDATES = ("order_id", "id", "record_id")  # as data/readers.py: the id column local predict picks


def predict_on_cluster(
    export: str,
    data: str,
    out: str,
    *,
    address: str | None = None,
    provider: str = "CPUExecutionProvider",
    precision: str = "auto",
    batch_size: int = 32,
    num_actors: int | None = None,
    cpus_per_actor: int = 1,
    rows_per_batch: int = 1024,
    id_field: str | None = None,
    text_field: str | None = None,
    name: str | None = None,
    allow_insecure: bool = False,
    dry_run: bool = False,
) -> str | dict[str, Any]:
    """Submit a batch-scoring job: `export` scores every row of `data` on an ONNX Runtime actor pool (one GPU per
    actor with CUDAExecutionProvider) and the predictions (`id`, `predicted`, `prob_<class>`) land in the
    directory `out` as Parquet files. Returns the job id, or with `dry_run` the plan (nothing contacted)."""
    job = job_config(
        export,
        data,
        out,
        provider=provider,
        precision=precision,
        batch_size=batch_size,
        num_actors=num_actors,
        cpus_per_actor=cpus_per_actor,
        rows_per_batch=rows_per_batch,
        id_field=id_field,
        text_field=text_field,
    )
    sub = build(job, name)
    return sub.plan() if dry_run else schedule(sub, address, allow_insecure=allow_insecure, bind=bind)


def bind(sub: Submission, conn: Any, res: Any) -> Submission:
    """The scoring job bound to the cluster `conn` reaches: its paths' warnings; refused if no actor fits."""
    warnings = check_paths_for(conn, sub.config)
    check_resources(sub.config, res)
    return replace(sub, warnings=[*sub.warnings, *warnings])


def job_config(
    export: str,
    data: str,
    out: str,
    *,
    provider: str,
    precision: str,
    batch_size: int,
    num_actors: int | None,
    cpus_per_actor: int,
    rows_per_batch: int = 1024,
    id_field: str | None = None,
    text_field: str | None = None,
) -> dict[str, Any]:
    """The job's bsm_job.json (runner/batch_predict.py's PredictJob), every value checked."""
    if provider not in PROVIDERS:
        raise ConfigError(f"--provider must be one of {', '.join(PROVIDERS)} with --on-cluster, got {provider!r}")
    for flag, value in (
        ("--batch-size", batch_size),
        ("--cpus-per-actor", cpus_per_actor),
        ("--rows-per-batch", rows_per_batch),
    ):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    if num_actors is not None and num_actors < 1:
        raise ConfigError(f"--num-actors must be at least 1, got {num_actors}")
    check_field_roles([("--text-field", text_field), ("--id-field", id_field)])
    export = check_storage(export, "EXPORT")  # local paths absolute: the job runs in its own working_dir
    data = data if storage.is_uri(data) else storage.storage_path(data)
    out = check_out(check_storage(out, "--out"), data)
    export_id = check_export(export, precision)
    if not storage.is_uri(data):
        check_local_data(data, text_field, id_field, export_id)
    return {
        "kind": KIND,
        "export": export,
        "data": data,
        "out": out,
        "provider": provider,
        "precision": precision,
        "batch_size": batch_size,
        "rows_per_batch": rows_per_batch,
        "num_actors": num_actors,
        "cpus_per_actor": cpus_per_actor,
        "id_field": id_field,
        "text_field": text_field,
    }


def build(job: dict[str, Any], name: str | None = None, warnings: list[str] | None = None) -> Submission:
    """The submission for `job`: pure, no cluster contact (what `--dry-run` prints)."""
    name = name or default_name(KIND)
    gpu = 1 if job["provider"] == "CUDAExecutionProvider" else 0
    per_actor = {"CPU": job["cpus_per_actor"], **({"GPU": gpu} if gpu else {})}
    return Submission(
        kind=KIND,
        submission_id=f"bsm-{name}",
        entrypoint=ENTRYPOINT,
        config=job,
        runtime_env={
            "working_dir": f"<staged: {CONFIG_FILE}>",
            "py_modules": [str(PACKAGE_DIR)],
            "excludes": EXCLUDES,
            "env_vars": ENV_VARS,
        },
        metadata={"bsm": "1", "bsm_kind": KIND, "bsm_run": name, "bsm_storage": job["out"], "bsm_run_dir": job["out"]},
        scaling={
            "actors": job["num_actors"] or "autoscaling, up to the cluster's " + ("GPUs" if gpu else "CPUs"),
            "resources_per_actor": per_actor,
            "num_gpus_per_actor": gpu,
            "provider": job["provider"],
            "batch_size": job["batch_size"],
            "driver_cpus": 0,
        },
        warnings=list(warnings or []),
    )


# ------------------------------------------------------------------------------------------------ the checks


def check_export(export: str, precision: str) -> str | None:
    """The export has a valid manifest, `precision` picks one of its graphs, and every file the job's actors read
    (that graph, bsm_model.json, the tokenizer) matches its sha256: a changed export is refused here, before a
    job is submitted (read where it lies, nothing copied). Returns the export's id field (training's --id-field)."""
    from raytune_bsm.scoring.sessions import choose_graph  # numpy: not on `bsm --help`'s path

    manifest = layout.download_export(export, None, only=[])
    read = [*choose_graph(manifest, precision).files, layout.MODEL_JSON, layout.TOKENIZER_JSON]
    layout.download_export(export, None, only=read)
    info = json.loads(storage.read_bytes(storage.join(export, layout.MODEL_JSON)))
    return info.get("id_field") if isinstance(info, dict) else None


def check_local_data(data: str, text_field: str | None, id_field: str | None, export_id: str | None = None) -> None:
    """Local input: its files exist and the first has an id column (the job checks every file's schema), the one
    the job will use: --id-field, else the export's id field, else the usual names."""
    from raytune_bsm.data.columns import shown, shown_all  # pyarrow: not on `bsm --help`'s path
    from raytune_bsm.data.readers import list_files, read_schema
    from raytune_bsm.scoring.files import id_column, no_id_error

    files = list_files(data)
    names = read_schema(files[0]).names
    for col, flag in ((text_field, "--text-field"), (id_field, "--id-field")):
        if col is not None and col not in names:
            raise DataError(f"{files[0].name}: missing column {shown(col)} (columns are {shown_all(names)}); {flag}")
    if id_column(id_field, export_id, names)[0] is None:
        raise no_id_error(data, export_id)


def check_out(out: str, data: str) -> str:
    """A directory for Parquet files, apart from the input, new or empty (when this machine can see it)."""
    import pyarrow.fs as pafs

    if Path(out.split("?")[0]).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        raise ConfigError(f"--out {out}: --on-cluster writes a directory of Parquet files; name a directory")
    storage.check_apart(out, data)
    storage.check_writable(out, "--out")  # a local path (a local cluster's): before anything is submitted
    try:
        fs, path = storage.filesystem(out)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            raise ConfigError(f"--out {out}: is a file; --on-cluster writes a directory of Parquet files")
        if info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(path)):
            raise ConfigError(f"--out {out}: the directory exists and is not empty; choose a new --out")
    except OSError:
        pass  # storage only the cluster reaches: the job checks it again before writing
    return out


def check_paths_for(conn: Any, job: dict[str, Any]) -> list[str]:
    """Local paths only work where every node sees them: `out` must be a URI unless the cluster is local."""
    if conn.is_local:
        return []
    if not storage.is_uri(job["out"]):
        raise ConfigError(
            f"--out {job['out']} is a local path, but the cluster at {conn.dashboard_url} is remote; "
            "give storage every node reaches (s3://bucket/predictions, gs://..., hdfs://...)"
        )
    return [
        f"{what} {job[key]} is a local path; every node of the remote cluster must see the same path"
        for what, key in (("EXPORT", "export"), ("DATA", "data"))
        if not storage.is_uri(job[key])
    ]


def check_resources(job: dict[str, Any], res: Any) -> None:
    """One GPU per actor needs GPUs; N actors need N x their CPUs (unless the cluster can autoscale)."""
    n = job["num_actors"] or 1
    gpus = n if job["provider"] == "CUDAExecutionProvider" else 0
    res.require(gpus=gpus, cpus=n * job["cpus_per_actor"], what=f"{n} scoring actor(s)")
