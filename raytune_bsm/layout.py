"""The contract between the two sides: where bsm keeps its state, what a run directory and an export hold, and
the export's manifest (writing, reading, verifying). The only sha256 code in bsm is here.

    <storage>/<run>/
        bsm_config.json         the fully resolved run config
        bsm_result.json         metrics, checkpoints, restarts (written by the job)
        bsm_epochs.json         every report's metrics, in order
        tensorboard/            rank 0's event files
        export/                 EXPORT_FILES + manifest.json (written last)
    <storage>/<sweep>/bsm_sweep.json, trials.parquet, best_config.json, runs/<trial>/...
RunDir names each of them; RunResult / SweepResult (records.py) are what bsm_result.json holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from raytune_bsm.errors import ConfigError, ExportError
from raytune_bsm.storage import filesystem, join, read_bytes
from raytune_bsm.text import visible as shown  # text from the manifest, unprintables escaped

# ------------------------------------------------------------------------------------------------ bsm's home


def bsm_home() -> Path:
    """bsm's own state directory: ``$BSM_HOME`` if set, else ``~/.bsm`` (the local cluster, default storage)."""
    env = os.environ.get("BSM_HOME", "").strip()
    return Path(env).expanduser().absolute() if env else Path.home() / ".bsm"


def default_storage() -> str:
    return str(bsm_home() / "runs")


# ------------------------------------------------------------------------------------------- run directories

FIRST_STEP_JSON = "bsm_first_step.json"  # rank 0's wall-clock time of the first training step
CONFIG_JSON = "bsm_config.json"
RESULT_JSON = "bsm_result.json"
EXPORT_DIR = "export"
SWEEP_JSON = "bsm_sweep.json"
TRIALS_PARQUET = "trials.parquet"
BEST_CONFIG_JSON = "best_config.json"
EPOCHS_JSON = "bsm_epochs.json"  # per run (a trial's too): every report's metrics, in order, by its Train controller
TENSORBOARD_DIR = "tensorboard"  # rank 0's TensorBoard event files
TRIALS_DIR = "runs"  # a sweep's trials, one run directory each (their event files beneath)
TUNE_DIR = "tune"  # a sweep's Tune experiment state (what --resume restores)
RESTARTS_DIR = "bsm_restarts"  # one record per worker-group restart
WORKERS_DIR = "bsm_workers"  # rank-N.json per Train worker: where it ran and, at the end, its weights' digest
PREDICTIONS = "test_predictions"  # the test step's rows: .parquet (a local run) or a directory of part-N.parquet
# A local (in-process, `runtime: local`) run's own files, in its output directory
LOCAL_CONFIG_JSON = "config.json"
LOCAL_METRICS_JSON = "metrics.json"
LOCAL_CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class RunDir:
    """A run's (or a sweep's) directory, `<storage>/<name>`, and the path of every file bsm keeps in it:
    `RunDir(storage, name).result`. `RunDir.at(path)` for a directory known by its path only."""

    storage: str
    name: str = ""  # "" when `storage` is the run directory itself (RunDir.at)

    @classmethod
    def at(cls, path: str) -> RunDir:
        return cls(path)

    @property
    def path(self) -> str:
        return join(self.storage, self.name) if self.name else self.storage

    def file(self, *parts: str) -> str:
        return join(self.path, *parts)

    @property
    def config(self) -> str:
        return self.file(CONFIG_JSON)

    @property
    def result(self) -> str:
        return self.file(RESULT_JSON)

    @property
    def first_step(self) -> str:
        return self.file(FIRST_STEP_JSON)

    @property
    def epochs(self) -> str:
        return self.file(EPOCHS_JSON)

    @property
    def tensorboard(self) -> str:
        return self.file(TENSORBOARD_DIR)

    @property
    def export(self) -> str:
        return self.file(EXPORT_DIR)

    @property
    def manifest(self) -> str:
        """The export's manifest (its last file: an export is whole when this exists)."""
        return self.file(EXPORT_DIR, MANIFEST)

    @property
    def sweep(self) -> str:
        return self.file(SWEEP_JSON)

    @property
    def trials_table(self) -> str:
        return self.file(TRIALS_PARQUET)

    @property
    def best_config(self) -> str:
        return self.file(BEST_CONFIG_JSON)

    @property
    def trials(self) -> str:
        return self.file(TRIALS_DIR)

    def trial(self, trial_id: str) -> RunDir:
        """A sweep's trial: a run directory of its own."""
        return RunDir(self.trials, trial_id)

    @property
    def tune(self) -> str:
        return self.file(TUNE_DIR)

    @property
    def restarts(self) -> str:
        return self.file(RESTARTS_DIR)

    def worker(self, rank: int) -> str:
        return self.file(WORKERS_DIR, f"rank-{rank}.json")

    def predictions_part(self, rank: int) -> str:
        """A Ray run's test predictions, one part per worker: the directory reads as one Parquet dataset."""
        return self.file(PREDICTIONS, f"part-{rank}.parquet")

    @property
    def local_predictions(self) -> str:
        return self.file(f"{PREDICTIONS}.parquet")

    @property
    def local_config(self) -> str:
        return self.file(LOCAL_CONFIG_JSON)

    @property
    def local_metrics(self) -> str:
        return self.file(LOCAL_METRICS_JSON)

    @property
    def local_checkpoints(self) -> str:
        return self.file(LOCAL_CHECKPOINTS_DIR)


def read_record(path: str) -> dict[str, Any]:
    """A JSON record bsm wrote (bsm_config.json, bsm_sweep.json, ...), read back; a damaged one is one clear line."""
    try:
        d = json.loads(read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e.__class__.__name__}); the record is damaged") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(d).__name__}; the record is damaged")
    return d


# --------------------------------------------------------------------------------------------------- exports

ONNX_FILE = "model.onnx"  # input_ids, attention_mask int64 [batch, chunks, tokens] -> logits [batch, classes]
INT8_ONNX_FILE = "model.int8.onnx"  # the same interface, dynamically quantized to int8
# Real chunks only: input_ids, attention_mask int64 [chunks, tokens] (the non-empty chunks, padded to the longest),
# pool float32 [records, chunks] (pool[r, c] = 1/n_r if chunk c is one of record r's n_r >= 1 chunks, else 0)
# -> logits float32 [records, classes]
PACKED_ONNX_FILE = "model.packed.onnx"
PACKED_INT8_ONNX_FILE = "model.packed.int8.onnx"
PACKED_INPUT_NAMES = ("input_ids", "attention_mask", "pool")
# Chunk level: input_ids, attention_mask int64 [chunks, tokens] -> features float32 [chunks, hidden], each chunk's
# pooled vector; the head (features float32 [records, hidden], a record's mean over its chunks -> logits float32
# [records, classes]) is its own small graph, so one call can hold chunks of many records, grouped by length.
CHUNKS_ONNX_FILE = "model.chunks.onnx"
CHUNKS_INT8_ONNX_FILE = "model.chunks.int8.onnx"
HEAD_ONNX_FILE = "model.head.onnx"
FEATURES_NAME = "features"
TORCHSCRIPT_FILE = "model.torchscript.pt"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_JSON = "tokenizer/tokenizer.json"
MODEL_JSON = "bsm_model.json"
MANIFEST = "manifest.json"
CHECKPOINT_NAME = "checkpoint.ckpt"  # the file inside a Ray Train checkpoint directory
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
FORMAT_VERSION = 1
EXPORT_FORMAT = "bsm-export"  # the manifest's "format": how bsm knows a directory is an export it may replace
# What `bsm predict` reads of an export (a remote export is copied locally first).
PREDICT_FILES = (MANIFEST, ONNX_FILE, MODEL_JSON, TOKENIZER_JSON)
_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_entries(root: Path) -> list[dict[str, Any]]:
    """Every file under `root` but the manifest: relative path, sha256, size in bytes (the manifest's "files")."""
    links = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_symlink())
    if links:
        raise ExportError(f"{root}: {links[0]} is a symbolic link; an export holds its own files only")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p != root / MANIFEST)
    return [{"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size} for p in files]


def write_manifest(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write `manifest` (plus the "files" list) as root/manifest.json: the last file of an export."""
    manifest = {"format_version": FORMAT_VERSION, **manifest, "files": file_entries(root)}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """A manifest's bytes -> dict, checked enough that every later use is safe; an ExportError names `where`."""
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(
            f"{where}: {MANIFEST} is not valid JSON ({e.__class__.__name__}); re-export the model"
        ) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("path"), str)
        and isinstance(f.get("sha256"), str)
        and isinstance(f.get("size"), int)
        for f in files
    ):
        raise ExportError(f'{where}: {MANIFEST} has no valid "files" list (path, sha256, size); re-export the model')
    for f in files:
        safe_relpath(f["path"], where)
    return manifest


def safe_relpath(rel: str, where: str) -> str:
    """A manifest path that stays inside its export; anything else is refused, never followed."""
    parts = Path(rel).parts
    if not rel or rel.startswith(("/", "\\")) or ".." in parts or ":" in rel.split("/")[0]:
        raise ExportError(f"{where}: {MANIFEST} lists an unsafe path {rel!r}; refusing it")
    return rel


def copy_verified(
    src: BinaryIO, dest: BinaryIO, entry: dict[str, Any], where: str, on_block: Callable[[int], None] | None = None
) -> None:
    """Stream `src` into `dest`, hashing as it goes; an ExportError if size or sha256 differ from `entry`.
    `on_block(n)` after each block of n bytes (a progress bar)."""
    h, size = hashlib.sha256(), 0
    while block := src.read(_BLOCK):
        h.update(block)
        size += len(block)
        dest.write(block)
        if on_block:
            on_block(len(block))
    _check(h.hexdigest(), size, entry, where)


def verify_file(path: Path, entry: dict[str, Any]) -> None:
    """A local file (`<export>/<entry's path>`) against its manifest entry; an ExportError naming the file if it is
    missing, differs, or it or a folder on its way from the export's root is a link (never followed)."""
    root = path.parents[len(Path(entry["path"]).parts) - 1]
    try:
        f = open_in_export(root, entry["path"], str(path))
    except (FileNotFoundError, NotADirectoryError):
        raise ExportError(f"{path}: missing (listed in {MANIFEST})") from None
    with f:
        _check(hashlib.file_digest(f, "sha256").hexdigest(), os.fstat(f.fileno()).st_size, entry, str(path))


def open_in_export(root: Path, rel: str, where: str) -> BinaryIO:
    """`root/rel` opened for reading, if it is a regular file reached without a symbolic link: a link inside an
    export (to /etc/passwd, to another model's bsm_model.json) is refused, never read, so nothing outside the
    export is copied, used or described in a message. The export's root itself may be reached through a link.
    FileNotFoundError if it is missing."""
    here = root
    for part in Path(rel).parts:
        here = here / part
        mode = here.lstat().st_mode  # FileNotFoundError if missing
        if stat.S_ISLNK(mode):
            link = here.relative_to(root).as_posix()
            which = "" if link == Path(rel).as_posix() else f" (its folder {link})"
            raise ExportError(
                f"{where}: a symbolic link inside the export{which}; bsm never follows one: re-export the model"
            )
    if not stat.S_ISREG(mode):
        raise ExportError(f"{where}: not a regular file (listed in {MANIFEST}); re-export the model")
    fd = os.open(here, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # a link swapped in meanwhile: refused by the OS
    return os.fdopen(fd, "rb")


def _check(digest: str, size: int, entry: dict[str, Any], where: str) -> None:
    """Only the manifest's figures are shown: what was read could be a file that is not the export's."""
    if size != entry["size"] or digest != entry["sha256"]:
        raise ExportError(
            f"{where}: checksum mismatch (the manifest says sha256 {entry['sha256'][:16]}..., {entry['size']} bytes; "
            "the file differs): the export is corrupt or was changed; re-export it"
        )


def download_export(
    src: str,
    dest: Path | None,
    only: Collection[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Copy the export at `src` (a local path or any URI pyarrow reads) into `dest`, every file verified against
    its manifest: all the files it lists, or those named in `only`. Written to a temporary sibling of `dest` and
    renamed into place, so `dest` appears whole or not at all (an existing `dest` must be an empty directory).
    `dest` None: the files are read and verified, nothing is written. No file is read through a link.
    `progress(bytes_done, bytes_total)` as the bytes arrive (the manifest gives the total).
    Returns the parsed manifest; an ExportError for a missing or invalid manifest or a missing or changed file."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    errors = (FileNotFoundError, NotADirectoryError, pa.ArrowException, OSError)
    fs, base = filesystem(src)
    base = base.rstrip("/")

    def open_listed(rel: str) -> Any:  # a file of the export, never through a link (see open_in_export)
        if fs.type_name == "local":
            return open_in_export(Path(base), rel, shown(rel))
        if fs.get_file_info(f"{base}/{rel}").type not in (pafs.FileType.File, pafs.FileType.NotFound):
            raise ExportError(f"{shown(rel)}: not a regular file in the export (a link?); re-export the model")
        return fs.open_input_stream(f"{base}/{rel}")

    try:
        with open_listed(MANIFEST) as f:
            data = f.read()
    except errors:
        raise ExportError(f"no export at {src} (no {MANIFEST}); the run may not have finished or exported") from None
    manifest = parse_manifest(data, f"{src.rstrip('/')}/{MANIFEST}")
    entries = manifest["files"]
    if only is not None:
        missing = set(only) - {e["path"] for e in entries} - {MANIFEST}
        if missing:
            raise ExportError(f"{src}: {MANIFEST} does not list {shown(str(sorted(missing)))}; re-export the model")
        entries = [e for e in entries if e["path"] in set(only)]
    total, done = sum(int(e["size"]) for e in entries), [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], total)

    def copy(entry: dict[str, Any], target: Path | None) -> None:
        try:
            with open_listed(entry["path"]) as f, open(target or os.devnull, "wb") as out:
                copy_verified(f, out, entry, shown(entry["path"]), advance)
        except errors as e:
            raise ExportError(
                f"{shown(entry['path'])}: listed in the manifest but cannot be read ({type(e).__name__})"
            ) from None

    if dest is None:
        for entry in entries:
            copy(entry, None)
        return manifest
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        for entry in entries:
            target = tmp / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            copy(entry, target)
        (tmp / MANIFEST).write_bytes(data)
        try:
            os.replace(tmp, dest)  # onto an empty directory too; never onto a file or a non-empty directory
        except OSError as e:
            raise ExportError(
                f"{dest}: cannot put the export there ({e.strerror}); give a new or empty directory"
            ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
