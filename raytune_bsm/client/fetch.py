"""The artifact store: finding a run's export on cluster storage and fetching it home, verified.

`fetch` downloads every file listed in the export's `manifest.json` into a temporary directory, checks each
file's sha256 and size as it streams, and only then renames the directory into place. A missing or tampered
file is an error and leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from raytune_bsm.errors import ExportError, JobError
from raytune_bsm import layout
from raytune_bsm.client import jobs
from raytune_bsm.layout import MANIFEST, default_storage
from raytune_bsm.storage import exists, filesystem, is_uri, join, read_bytes

log = logging.getLogger("raytune_bsm")


def locate_export(source: str, *, address: str | None = None) -> tuple[str, str]:
    """A job id, a run name or a path/URI -> (export directory, a name for it)."""
    if is_uri(source) or Path(source).expanduser().exists():
        path = source if is_uri(source) else str(Path(source).expanduser().resolve())
        if not exists(join(path, MANIFEST)) and exists(join(path, "export", MANIFEST)):
            path = join(path, "export")  # a run directory was given
        return path, Path(path.rstrip("/")).name if Path(path).name != "export" else Path(path).parent.name
    if source.startswith("bsm-") or source.startswith("raysubmit_"):
        try:
            info = jobs.status(source, address=address)
        except JobError:
            info = None
        if info and info.get("run_dir"):
            return join(info["run_dir"], "export"), info.get("run") or source
    return join(default_storage(), source, "export"), source  # a run name in the default storage


def fetch(source: str, to: str | None = None, *, address: str | None = None) -> Path:
    """Download and verify an export; return the local directory."""
    src, name = locate_export(source, address=address)
    manifest_uri = join(src, MANIFEST)
    if not exists(manifest_uri):
        raise ExportError(f"no export at {src} (no manifest.json); the run may not have finished or exported")
    manifest_bytes = read_bytes(manifest_uri)
    manifest = layout.parse_manifest(manifest_bytes, manifest_uri)
    dest = Path(to or f"{name}-export").expanduser().resolve()
    if dest.exists() and any(dest.iterdir()):
        raise ExportError(f"--to {dest} exists and is not empty; choose another directory or remove it")
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    fs, base = filesystem(src)
    try:
        for entry in manifest["files"]:
            _download(fs, f"{base.rstrip('/')}/{entry['path']}", tmp / entry["path"], entry)
        (tmp / MANIFEST).write_bytes(manifest_bytes)
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("fetched %d files from %s, every sha256 verified", len(manifest["files"]), src)
    return dest


def _download(fs: Any, src: str, dest: Path, entry: dict[str, Any]) -> None:
    import pyarrow as pa

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with fs.open_input_stream(src) as f, open(dest, "wb") as out:
            layout.copy_verified(f, out, entry, entry["path"])
    except (FileNotFoundError, pa.ArrowException, OSError) as e:
        raise ExportError(f"{entry['path']}: listed in the manifest but cannot be read ({e.__class__.__name__})") from None
