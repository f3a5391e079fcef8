"""Scoring a dataset on the cluster: `python -m raytune_bsm.runner.batch_predict bsm_job.json`.

    input files (listed and schema-checked on the driver: metadata only; a file, a directory or a glob)
      -> ray.data.read_parquet / read_csv / read_json on their pyarrow filesystem (the text and id columns only)
      -> map_batches(Score) in an actor pool: each actor holds the ONNX Runtime sessions of `predict.Predictor`
         (the export's tokenizer and processor settings, the graph and precision `bsm predict` picks, every
         file verified against the manifest), created once, on CPU, or one GPU per actor with CUDAExecutionProvider
      -> write_parquet into a temporary sibling of `out`, published when every block is written

The output directory's Parquet files hold the columns of local `bsm predict` (`id`, `predicted`, `prob_<class>`,
same types). Rows are scored in parallel and written in any order, so an id column is required. `out` appears
whole or not at all: a local (or NFS, HDFS) directory is renamed into place; on S3/GCS, where nothing renames,
the files are copied from the temporary prefix and `_bsm_predict.json` (rows, files, graph) is written last:
a reader waits for it. An existing non-empty `out` is refused. The driver reserves no CPU; it holds metadata.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raytune_bsm import layout, storage
from raytune_bsm.data import features as side
from raytune_bsm.data.columns import is_text, plain, shown, shown_all
from raytune_bsm.data.ray_data import read_files
from raytune_bsm.data.readers import DataFile, list_files, read_schema
from raytune_bsm.data.splits import check_text_type
from raytune_bsm.errors import ConfigError, DataError, ExportError, raised_in_ray, raised_inside
from raytune_bsm.logs import setup_logging, verbose
from raytune_bsm.scoring.files import id_column, no_id_error
from raytune_bsm.scoring.predict import Predictor
from raytune_bsm.scoring.sessions import choose_graph

log = logging.getLogger("raytune_bsm.runner.batch_predict")

SUMMARY = "_bsm_predict.json"  # written last: the output is complete (names starting with "_" are not data)
CUDA = "CUDAExecutionProvider"
PROVIDERS = ("CPUExecutionProvider", CUDA)


@dataclass(frozen=True)
class PredictJob:
    """What the job carries in bsm_job.json (built by client/cluster_predict.py)."""

    export: str  # the export directory: a local path every node sees, or a URI
    data: str  # a file, a directory or a glob of Parquet/CSV/JSONL files
    out: str  # the output directory (a URI every node reaches, or a local path on a local cluster)
    provider: str = "CPUExecutionProvider"
    precision: str = "auto"
    batch_size: int = 32  # records per ONNX Runtime call, as in local `bsm predict`
    rows_per_batch: int = 1024  # records per actor call (tokenized, then scored in batch_size calls)
    num_actors: int | None = None  # None: an autoscaling pool up to what the cluster holds
    cpus_per_actor: int = 1  # also ONNX Runtime's intra-op threads
    id_field: str | None = None
    text_field: str | None = None  # default: the export's own
    format: str | None = None  # default: by file suffix
    progress_every: int = 10_000  # a bsm line per actor every this many rows

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PredictJob:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"kind"})
        if unknown:
            raise ConfigError(f"bsm_job.json: unknown keys {unknown}; the client and the cluster run different bsm")
        job = cls(**{k: v for k, v in d.items() if k in known})
        if job.provider not in PROVIDERS:
            raise ConfigError(f"--provider must be one of {', '.join(PROVIDERS)} on the cluster, got {job.provider!r}")
        for name in ("batch_size", "rows_per_batch", "cpus_per_actor", "progress_every"):
            if int(getattr(job, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(job, name)}")
        if job.num_actors is not None and job.num_actors < 1:
            raise ConfigError(f"--num-actors must be at least 1, got {job.num_actors}")
        return job


class Score:
    """The map_batches stage: a block of (text, id) rows -> its predictions. One per actor: the export is
    downloaded (a URI) and verified, and its ONNX Runtime session created, once, when the actor starts."""

    def __init__(
        self,
        job: dict[str, Any],
        text_field: str,
        id_field: str,
        id_name: str,
        id_type: pa.DataType,
        class_names: list[str],
    ) -> None:
        setup_logging()
        self.job = PredictJob(**job)
        self.predictor = Predictor(
            self.job.export, self.job.provider, precision=self.job.precision, threads=self.job.cpus_per_actor
        )
        if self.predictor.class_names != class_names:
            raise ExportError(f"{self.job.export}: its classes changed while the job ran; score a stable export")
        self.text_field, self.id_field, self.id_type, self.class_names = text_field, id_field, id_type, class_names
        self.id_name = id_name  # the output's id column: "id", or the export's id field under its own name
        self.rows, self.shown, self.t0 = 0, 0, time.monotonic()

    def __call__(self, batch: pa.Table) -> pa.Table:
        p = self.predictor
        texts, x = p.block_inputs(batch, self.text_field)  # x: raw side features [N, F], if the model reads any
        probs = p.score(len(texts), p.calls(texts, self.job.batch_size, x))  # float64 [N, K]
        ids = plain(batch.column(self.id_field))  # text ids as string
        if ids.type != self.id_type:  # as local predict: ints widen to the first file's type, nulls adopt it
            ids = ids.cast(self.id_type)
        self.rows += len(texts)
        if self.rows - self.shown >= self.job.progress_every:
            self.shown = self.rows
            log.info(
                "actor %d: %d rows scored (%.0f rows/s)",
                os.getpid(),
                self.rows,
                self.rows / max(time.monotonic() - self.t0, 1e-9),
            )
        return predictions(ids, probs, self.class_names, self.id_name)


def predictions(ids: Any, probs: Any, names: list[str], id_name: str = "id") -> pa.Table:
    """The columns of local `bsm predict`: the id (`id_name`), predicted (the class name), prob_<class> float64 per
    class."""
    pred = probs.argmax(axis=1)
    return pa.table(
        {
            id_name: ids,
            "predicted": pa.array([names[i] for i in pred], pa.string()),
            **{f"prob_{c}": pa.array(probs[:, k], pa.float64()) for k, c in enumerate(names)},
        }
    )


# ------------------------------------------------------------------------------------------------ the driver


def run(job: PredictJob) -> dict[str, Any]:
    """Check everything, score `job.data` on the cluster, publish `job.out`; returns the summary written."""
    t0 = time.monotonic()
    files = list_files(job.data, job.format)
    storage.check_apart(job.out, job.data)
    fs, out_path = storage.filesystem(job.out)
    refuse_existing(fs, out_path, job.out)
    info, manifest = export_info(job.export)
    choice = choose_graph(manifest, job.precision)  # a bad --precision fails here, before any actor starts
    # Every file the actors read, verified once here: a changed export is one line and exit 1, not an actor pool
    # that Ray Data restarts without end
    layout.download_export(job.export, None, only=[*choice.files, layout.TOKENIZER_JSON])
    text_field = job.text_field or info.get("text_field") or info["processor"].get("text_field") or "dialogue"
    id_field, id_name, id_type = check_inputs(files, text_field, job.id_field, info.get("id_field"), job.data)
    feature_names = list((info.get("features") or {}).get("names") or [])  # side features the model reads
    for f in files if feature_names else []:
        side.check_present(read_schema(f), feature_names, f.name)
    class_names = [str(c) for c in info["class_names"]]

    connect()
    ds = read_files(files, [text_field, id_field, *feature_names])
    scored = ds.map_batches(
        Score,
        fn_constructor_kwargs=dict(
            job=asdict(job),
            text_field=text_field,
            id_field=id_field,
            id_name=id_name,
            id_type=id_type,
            class_names=class_names,
        ),
        batch_size=job.rows_per_batch,
        batch_format="pyarrow",
        compute=pool(job),
        num_cpus=job.cpus_per_actor,
        num_gpus=1 if job.provider == CUDA else None,
    )
    tmp = posixpath.join(
        posixpath.dirname(out_path.rstrip("/")),
        f".{posixpath.basename(out_path.rstrip('/'))}.tmp-{uuid.uuid4().hex[:8]}",
    )
    try:
        with raised_in_ray():  # a file that fails to parse midway: the reader's error, naming the file and row
            scored.write_parquet(tmp, filesystem=fs)
        parts = written(fs, tmp)
        if not parts:  # no rows at all: one file with the columns and no rows, as local predict writes
            empty = predictions(pa.array([], id_type), np.zeros((0, len(class_names))), class_names, id_name)
            pq.write_table(empty, posixpath.join(tmp, "part-empty.parquet"), filesystem=fs)
            parts = written(fs, tmp)
        summary = {
            "kind": "predict",
            "out": job.out,
            "rows": sum(parts.values()),
            "files": len(parts),
            "export": job.export,
            "data": job.data,
            "inputs": len(files),
            "graph": choice.file,
            "precision": choice.precision,
            "provider": job.provider,
            "id_field": id_field,
            "text_field": text_field,
            "seconds": round(time.monotonic() - t0, 1),
        }
        publish(fs, tmp, out_path, job.out, json.dumps(summary, indent=2).encode())
    except BaseException:
        _delete_dir_quietly(fs, tmp)
        raise
    log.info(
        "wrote %d predictions in %d files to %s (%s, %s; %.1fs)",
        summary["rows"],
        summary["files"],
        job.out,
        choice.file,
        job.provider,
        summary["seconds"],
    )
    return summary


def connect() -> None:
    """This job's cluster (RAY_ADDRESS, or a job's own); its actors get RAY_ADDRESS too (see runner/train.py)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    ray.init(
        logging_level=logging.INFO if verbose() else logging.WARNING,
        runtime_env={"env_vars": {"RAY_ADDRESS": address}} if address else None,
    )


def pool(job: PredictJob) -> Any:
    """`--num-actors N`: N actors. Else an autoscaling pool up to the cluster's GPUs (CUDA), or its CPUs but one
    (CPU: the read tasks need a CPU too, or the pool would starve them)."""
    import ray
    import ray.data

    if job.num_actors is not None:
        return ray.data.ActorPoolStrategy(size=job.num_actors)
    res = ray.cluster_resources()
    most = int(res.get("GPU", 0)) if job.provider == CUDA else int(res.get("CPU", 1)) // job.cpus_per_actor - 1
    return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, most))


# ------------------------------------------------------------------------------------------------ the checks


def export_info(export: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bsm_model.json, the manifest) of an export, read from storage and verified."""
    with tempfile.TemporaryDirectory(prefix="bsm-predict-") as tmp:
        manifest = layout.download_export(export, Path(tmp) / "export", only=[layout.MODEL_JSON])
        return json.loads((Path(tmp) / "export" / layout.MODEL_JSON).read_text()), manifest


def check_inputs(
    files: list[DataFile], text_field: str, id_field: str | None, export_id: str | None, data: str
) -> tuple[str, str, pa.DataType]:
    """Every file has the text and id columns, the text a string (list) and one id type: (id column, its name in
    the output, its type). The id column is chosen as local predict chooses it (`id_column`: --id-field, else the
    export's id field, else the usual names); on the cluster it must exist (rows come back in any order)."""
    first = read_schema(files[0])
    id_field, id_name, note = id_column(id_field, export_id, first.names)
    if id_field is None:
        raise no_id_error(data, export_id)
    log.info("%s", note)
    id_type: pa.DataType | None = None
    for f in files:
        schema = first if f is files[0] else read_schema(f)
        for col, flag in ((text_field, "--text-field"), (id_field, "--id-field")):
            if col not in schema.names:
                raise DataError(
                    f"{f.name}: missing column {shown(col)} (columns are {shown_all(schema.names)}); "
                    f"name the right one with {flag}"
                )
        check_text_type(schema.field(text_field).type, f.name, text_field)
        t = pa.string() if is_text(schema.field(id_field).type) else schema.field(id_field).type  # dictionaries too
        id_type = id_type or t
        if t != id_type and not (pa.types.is_null(t) or (pa.types.is_integer(t) and pa.types.is_integer(id_type))):
            raise DataError(
                f"{f.name}: column {shown(id_field)} holds {t} values, but {files[0].name} holds {id_type} "
                "values; give every input file one id type (or name another column with --id-field)"
            )
    assert id_type is not None
    return id_field, id_name, id_type


def refuse_existing(fs: Any, path: str, out: str) -> None:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        raise ConfigError(f"--out {out}: is a file; --on-cluster writes a directory of Parquet files")
    if info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(path)):
        raise ConfigError(f"--out {out}: the directory exists and is not empty; choose a new --out")


# ------------------------------------------------------------------------------------------------ publishing


def written(fs: Any, root: str) -> dict[str, int]:
    """The Parquet files under `root` and their rows (from their footers)."""
    out = {}
    for i in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if i.type == pafs.FileType.File and i.path.endswith(".parquet"):
            with fs.open_input_file(i.path) as f:
                out[i.path] = pq.ParquetFile(f).metadata.num_rows
    return out


def publish(fs: Any, tmp: str, final: str, out: str, summary: bytes) -> None:
    """Move the finished `tmp` directory to `final`: a rename where the filesystem has one, else (S3, GCS) a
    server-side copy of every file and the summary last."""
    refuse_existing(fs, final, out)  # again: another job may have written there meanwhile
    if fs.type_name in ("s3", "gcs"):
        for i in fs.get_file_info(pafs.FileSelector(tmp, recursive=True)):
            if i.type == pafs.FileType.File:
                fs.copy_file(i.path, posixpath.join(final, i.path[len(tmp) + 1 :]))
        _delete_dir_quietly(fs, tmp)
        with fs.open_output_stream(posixpath.join(final, SUMMARY)) as f:
            f.write(summary)
        return
    with fs.open_output_stream(posixpath.join(tmp, SUMMARY)) as f:
        f.write(summary)
    if fs.get_file_info(final).type == pafs.FileType.Directory:
        fs.delete_dir(final)  # empty (checked above): a rename does not replace a directory everywhere
    fs.move(tmp, final)


def _delete_dir_quietly(fs: Any, path: str) -> None:
    try:
        fs.delete_dir(path)
    except (OSError, FileNotFoundError, pa.ArrowException):
        pass


def main(config_file: str) -> int:
    """`python -m raytune_bsm.runner.batch_predict bsm_job.json`: score, print the summary (JSON) to stdout."""
    setup_logging()
    try:
        summary = run(PredictJob.from_dict(json.loads(Path(config_file).read_text())))
    except Exception as e:  # the user's mistake: one line in the job's log, no traceback
        err = raised_inside(e)
        if err is None:
            raise
        print(f"bsm: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
