"""`bsm fetch`: find a run's export on cluster storage and bring it home, verified.

`layout.download_export` copies every file the export's `manifest.json` lists into a temporary directory,
checking each file's sha256 and size as it streams, and only then renames the directory into place. A missing
or tampered file is an error and leaves nothing behind. Here: finding the export (by job id, run name or
path) and refusing a destination that holds anything of the user's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from raytune_bsm import layout
from raytune_bsm.client import jobs
from raytune_bsm.client.submission import run_of_job
from raytune_bsm.errors import ClusterError, ExportError, JobError
from raytune_bsm.layout import EXPORT_DIR, MANIFEST, RunDir, default_storage
from raytune_bsm.storage import check_writable, exists, is_uri, join
from raytune_bsm.text import safe

log = logging.getLogger("raytune_bsm")


def locate_export(source: str, *, address: str | None = None) -> tuple[str, str]:
    """A job id, a run name or a path/URI -> (export directory, a name for it)."""
    if is_uri(source) or Path(source).expanduser().exists():
        path = source if is_uri(source) else str(Path(source).expanduser().resolve())
        if not exists(join(path, MANIFEST)) and exists(RunDir.at(path).manifest):
            path = RunDir.at(path).export  # a run directory was given
        name = Path(path.rstrip("/")).name
        return path, Path(path.rstrip("/")).parent.name if name == EXPORT_DIR else name
    if not jobs.JOB_ID.fullmatch(source):  # a run's --name has this form too
        raise ExportError(
            f"{safe(source)!r} is neither an existing path nor a job id or run name (letters, digits, '-', '_', "
            "'.'); give the export's directory, a job id (`bsm list`) or the run's --name"
        )
    if source.startswith(("bsm-", "raysubmit_")):
        try:
            info = jobs.status(source, address=address)
        except JobError:  # a job the cluster no longer knows (`bsm down` / `bsm up` since): its run, by name
            info = None
        except ClusterError:
            if address is not None:
                raise
            info = None  # no cluster running: the run is still in the default storage
        if info and info.run_dir:
            return RunDir.at(info.run_dir).export, info.run or source
        run = run_of_job(source)
        if run is not None and not exists(RunDir(default_storage(), source).manifest):
            return RunDir(default_storage(), run).export, run
    return RunDir(default_storage(), source).export, source  # a run name in the default storage


def fetch(
    source: str,
    to: str | None = None,
    *,
    address: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Download and verify an export; return the local directory (`to`, or ``<run>-export``).
    `progress(bytes_done, bytes_total)` as it downloads."""
    src, name = locate_export(source, address=address)
    dest = Path(to or f"{name}-export").expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"--to {safe(dest)} is an existing file, not a directory; give a new or empty directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise ExportError(f"--to {safe(dest)} exists and is not empty; choose another directory or remove it")
    check_writable(str(dest), "--to")
    manifest = layout.download_export(src, dest, progress=progress)
    log.info("fetched %d files from %s, every sha256 verified", len(manifest["files"]), safe(src))
    return dest
