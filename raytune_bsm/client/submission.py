"""Every job bsm sends goes through two steps: a plan (`Submission`, built by a pure function after every check that
needs no cluster, local data included, so `--dry-run` shows exactly what runs) and `schedule(submission, ...)`, which
connects (starting the local cluster if need be), lets the kind settle what depends on that cluster (`bind`), and
sends it through the Jobs API. Training runs, sweeps, resumes and cluster predict are plans of different kinds.

A submission carries the raytune_bsm package as it is on the submitting machine (`py_modules`) and the fully
resolved config (`working_dir`, staged in a temporary directory), so what runs on the cluster is what was
submitted. The entrypoints are modules of the package (`python -m raytune_bsm.runner.train`), so a plain wheel
install submits jobs. Nothing else is uploaded: no .git, virtual environments, data files
or checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable

from raytune_bsm.client import connection
from raytune_bsm.config import RunConfig
from raytune_bsm.errors import ClusterError, ConfigError, JobError
from raytune_bsm.layout import CONFIG_JSON, RunDir, default_storage, read_record
from raytune_bsm.logs import VERBOSE_ENV, verbose
from raytune_bsm.pretrained import resolve_model
from raytune_bsm.storage import exists, join, storage_path

log = logging.getLogger("raytune_bsm")

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # raytune_bsm/, uploaded as a py_module
CONFIG_FILE = "bsm_job.json"
# Never uploaded, whatever a user drops into the package directory.
EXCLUDES = [
    "__pycache__",
    "*.pyc",
    ".git",
    ".venv",
    "venv",
    "*.ckpt",
    "*.pt",
    "*.onnx",
    "*.parquet",
    "*.csv",
    "*.jsonl",
    "*.safetensors",
    "*.bin",
    "lightning_logs",
    "runs",
]
UPLOAD_LIMIT = 100 * 2**20  # well under the Jobs API's 512 MiB package limit; code and a config are ~1 MiB
ENV_VARS = {
    "HF_HUB_OFFLINE": "1",  # nothing is downloaded at run time: models come from installed packages or paths
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",  # progress lines reach `bsm logs` as they are written
}

# Schemes pyarrow.fs.FileSystem.from_uri knows (Ray Train writes its storage through pyarrow).
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file", "mock")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
# What --resume NAME may be combined with: where to find the run and how to reach the cluster.
RESUME_OPTIONS = {"address", "storage", "name", "resume", "allow_insecure"}


@dataclass
class Submission:
    kind: str  # "train" | "tune"
    submission_id: str
    entrypoint: str
    config: dict[str, Any]  # the fully resolved run config
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    scaling: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    run: RunConfig | None = field(default=None, repr=False, compare=False)  # what `bind` settles against a cluster
    cluster_decides: frozenset[str] = frozenset()  # what the cluster settles: "storage", "cpus_per_worker"

    def plan(self) -> dict[str, Any]:
        """What `--dry-run` prints."""
        return {
            "kind": self.kind,
            "submission_id": self.submission_id,
            "entrypoint": self.entrypoint,
            "runtime_env": self.runtime_env,
            "metadata": self.metadata,
            "scaling": self.scaling,
            "config": self.config,
            "warnings": self.warnings,
        }


def default_name(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def build_submission(
    run: RunConfig,
    *,
    kind: str = "train",
    storage: str,
    extra: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> Submission:
    """The submission for `run`: pure, no cluster contact. `extra` goes into the config (the sweep's settings)."""
    config = run.to_dict()
    config["storage"] = storage
    # Every model key resolved; the class count stays open (null) unless given: the training labels decide it.
    user = run.model
    config["model"] = {
        **run.model_config(),
        "is_binary": user.get("is_binary"),
        "num_classes": user.get("num_classes"),
        "class_names": user.get("class_names"),
    }
    if extra:
        config[kind] = extra
    scaling = {
        "num_workers": run.scaling.num_workers,
        "use_gpu": run.scaling.use_gpu,
        "resources_per_worker": run.scaling.resources_per_worker(),
        "placement_strategy": run.scaling.placement_strategy,
        "backend": "nccl" if run.scaling.use_gpu else "gloo",
        "precision": "bf16-mixed where the GPU supports it, else 16-mixed" if run.scaling.use_gpu else "32-true",
    }
    return Submission(
        kind=kind,
        submission_id=f"bsm-{run.name}",
        entrypoint=f"python -m raytune_bsm.runner.{kind} {CONFIG_FILE}",
        config=config,
        runtime_env={
            "working_dir": f"<staged: {CONFIG_FILE}>",
            "py_modules": [str(PACKAGE_DIR)],
            "excludes": EXCLUDES,
            "env_vars": {**ENV_VARS, **({VERBOSE_ENV: "1"} if verbose() else {})},  # --verbose reaches the job
        },
        metadata={
            "bsm": "1",
            "bsm_kind": kind,
            "bsm_run": run.name,
            "bsm_storage": storage,
            "bsm_run_dir": join(storage, run.name),
        },
        scaling=scaling,
        warnings=list(warnings or []),
    )


# ------------------------------------------------------------------------------------- checks and resume


def check_storage(storage: str, flag: str = "--storage") -> str:
    """Storage every later command sees the same: a URI of a scheme pyarrow knows, or an absolute path."""
    scheme, sep, rest = storage.partition("://")
    if not storage.strip():
        raise ConfigError(f"{flag} must not be empty")
    if sep and scheme.lower() not in STORAGE_SCHEMES:
        raise ConfigError(
            f"{flag} {storage}: unknown scheme {scheme}://; use a path or one of "
            f"{', '.join(s + '://' for s in STORAGE_SCHEMES[:5])}"
        )
    if sep and scheme.lower() != "file" and not rest.strip("/"):
        raise ConfigError(f"{flag} {storage}: needs a bucket or host after {scheme}://")
    return storage_path(storage)


def check_model_name(name: str) -> None:
    """--model: an existing directory, the offline default, or a plausible hub name (org/name), loaded there."""
    if resolve_model(name) != name or Path(name).expanduser().exists():
        return  # an alias of the installed default, or a local directory (resolve_model checked config.json)
    if name.startswith(("/", ".", "~")) or "\\" in name or not _HUB_NAME.fullmatch(name):
        raise ConfigError(f"--model {name}: no such directory, and not a Hugging Face model name (org/name)")


def check_resume_options(opts: Any) -> None:
    """--resume NAME continues a run as it was submitted: only where it is and how to reach the cluster."""
    given = sorted(
        "--" + f.name.replace("_", "-")
        for f in fields(opts)
        if f.name not in RESUME_OPTIONS and getattr(opts, f.name) not in (None, [], False)
    )
    if given:
        raise ConfigError(f"--resume {opts.resume} continues the run as it was submitted; drop {', '.join(given)}")
    if opts.name and opts.name != opts.resume:
        raise ConfigError(f"--resume {opts.resume} keeps the run's name; drop --name {opts.name}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", opts.resume):
        raise ConfigError(f"--resume must name a run (letters, digits, '-', '_' or '.'), got {opts.resume!r}")


def stored_run(opts: Any, storage: str | None, conn: Any = None) -> RunConfig:
    """`--resume NAME`: the run as it was submitted (<storage>/NAME/bsm_config.json), marked to resume."""
    check_resume_options(opts)
    name = opts.resume
    storage = check_storage(storage) if storage else (conn.storage_default if conn else None) or default_storage()
    path = RunDir(storage, name).config
    try:
        found = exists(path)
    except OSError as e:  # storage this machine cannot reach (e.g. cloud credentials only on the cluster)
        raise JobError(f"--resume {name}: cannot read {path} ({str(e).splitlines()[0]})") from None
    if not found:
        raise JobError(
            f"--resume {name}: no run {name!r} under {storage} (no {CONFIG_JSON}); "
            "give the --storage it was submitted with"
        )
    d = read_record(path)
    run = RunConfig.from_dict({**d, "resume": True}, where=f"{path}: ")
    return replace(run, name=name, storage=run.storage or storage)


def resume_id(name: str) -> str:
    return f"bsm-{name}-resume-{time.strftime('%Y%m%d-%H%M%S')}"


def run_of_job(job_id: str) -> str | None:
    """The run a job id bsm issued is for: ``bsm-RUN`` (`plan`) and ``bsm-RUN-resume-DATE-TIME`` -> RUN."""
    m = re.fullmatch(r"bsm-(.+?)(?:-resume-\d{8}-\d{6})?", job_id)
    return m.group(1) if m else None


# ----------------------------------------------------------------------------------------------- staging


def stage(sub: Submission, dest: Path) -> dict[str, Any]:
    """Write the working_dir (the resolved config) into `dest`; return the real runtime_env."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / CONFIG_FILE).write_text(json.dumps(sub.config, indent=2, sort_keys=True))
    check_upload_size([dest, PACKAGE_DIR])
    return {**sub.runtime_env, "working_dir": str(dest)}


def check_upload_size(roots: list[Path], limit: int = UPLOAD_LIMIT) -> int:
    """Total bytes Ray would upload from `roots` (after EXCLUDES); an error names the largest files."""
    sizes: list[tuple[int, str]] = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not any(fnmatch(d, p) for p in EXCLUDES)]
            for name in filenames:
                if any(fnmatch(name, p) for p in EXCLUDES):
                    continue
                path = os.path.join(dirpath, name)
                sizes.append((os.path.getsize(path), path))
    total = sum(s for s, _ in sizes)
    if total > limit:
        worst = ", ".join(f"{p} ({s / 2**20:.1f} MiB)" for s, p in sorted(sizes, reverse=True)[:5])
        raise ConfigError(
            f"the job would upload {total / 2**20:.1f} MiB (limit {limit / 2**20:.0f} MiB); largest: {worst}. "
            "Move data and checkpoints out of the package directory; pass data with --train/--val/--test."
        )
    return total


# ----------------------------------------------------------------------------------------------- scheduling

Bind = Callable[[Submission, Any, Any], Submission]  # (plan, connection, cluster resources) -> what is sent


def schedule(sub: Submission, address: str | None, *, allow_insecure: bool = False, bind: Bind | None = None) -> str:
    """Send a planned submission: connect (starting the local cluster if need be), let `bind` settle what depends
    on that cluster (and refuse what it cannot fit), stage and submit through the Jobs API; the job id."""
    conn, client = connection.connect(address, allow_insecure=allow_insecure)
    if bind is not None:
        sub = bind(sub, conn, connection.cluster_resources(conn))
    for w in sub.warnings:
        log.warning("%s", w)
    return send(client, conn, sub)


def send(client: Any, conn: Any, sub: Submission) -> str:
    """Stage the working_dir and submit through the Jobs API; the job id."""
    with tempfile.TemporaryDirectory(prefix="bsm-submit-") as tmp:
        runtime_env = stage(sub, Path(tmp))
        try:
            job_id = client.submit_job(
                entrypoint=sub.entrypoint,
                submission_id=sub.submission_id,
                runtime_env=runtime_env,
                metadata=sub.metadata,
                entrypoint_num_cpus=0,  # the driver only coordinates; workers hold the resources
            )
        except RuntimeError as e:
            if "already exists" not in str(e):
                raise ClusterError(
                    f"the cluster at {conn.dashboard_url} refused the job: {str(e).splitlines()[0]}"
                ) from None
            if sub.kind in ("train", "tune"):
                raise JobError(
                    f"a job named {sub.submission_id} already exists; continue the run with "
                    f"`bsm {'tune' if sub.kind == 'tune' else 'submit'} --resume {sub.metadata['bsm_run']}` "
                    "or choose another --name"
                ) from None
            raise JobError(f"a job named {sub.submission_id} already exists; choose another --name") from None
    log.info(
        "submitted %s to %s (%s: %s)",
        job_id,
        conn.dashboard_url,
        _OUTPUT.get(sub.kind, "run storage"),
        sub.metadata["bsm_run_dir"],
    )
    return job_id


_OUTPUT = {"predict": "predictions"}
