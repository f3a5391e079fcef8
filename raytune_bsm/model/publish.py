"""Publishing a finished export directory: whole or not at all, and never over anything bsm did not write.

A destination may be replaced only if it is missing, empty, or an earlier bsm export: a directory whose
manifest.json says `"format": "bsm-export"` and lists every file in it (a user's file added there would be lost,
so it is refused too). Locally the export is built in a sibling `<dest>.tmp-<random>` and renamed into place
(atomic on a local or NFS filesystem; an earlier export is moved aside first and deleted after). Object stores
(s3://, gs://) have no atomic directory rename: files are uploaded under `<dest>.tmp-<random>` and moved into
`dest` one by one, manifest.json last, so the manifest is the commit marker.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from raytune_bsm.errors import ConfigError, ExportError
from raytune_bsm.layout import EXPORT_FORMAT, MANIFEST, parse_manifest


def check_dest(fs: Any, path: str, dest: str) -> None:
    """A ConfigError unless `dest` may receive an export (see the module's docstring)."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return
    if info.type != pafs.FileType.Directory:
        raise ConfigError(f"--to {dest!r} exists and is a file, not a directory; give a new or empty directory")
    present = {
        posixpath.relpath(i.path, path)
        for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
        if i.type == pafs.FileType.File
    }
    if not present:
        return
    refuse = (
        f"--to {dest!r} is a non-empty directory that bsm did not export; refusing to replace it: give a "
        "new or empty directory"
    )
    if MANIFEST not in present:
        raise ConfigError(refuse + f" (no {MANIFEST})")
    try:
        with fs.open_input_stream(posixpath.join(path, MANIFEST)) as f:
            manifest = parse_manifest(f.read(), dest)
    except ExportError:
        raise ConfigError(refuse + f" (its {MANIFEST} is not a bsm manifest)") from None
    if manifest.get("format") != EXPORT_FORMAT:
        raise ConfigError(refuse + f" (its {MANIFEST} is not a bsm manifest)")
    unlisted = sorted(present - {MANIFEST} - {e["path"] for e in manifest["files"]})
    if unlisted:
        raise ConfigError(
            f"--to {dest!r} is an earlier export holding files it did not write ({unlisted[0]!r}"
            f"{f' and {len(unlisted) - 1} more' if len(unlisted) > 1 else ''}); refusing to delete "
            "them: move them away or give another directory"
        )


def publish_local(build: Path, dest: Path, token: str) -> None:
    """Rename the finished directory into place; an earlier export is moved aside first and deleted after."""
    if not dest.exists():
        os.rename(build, dest)
        return
    old = dest.with_name(f"{dest.name}.old-{token}")
    os.rename(dest, old)
    try:
        os.rename(build, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def publish_remote(fs: Any, build: Path, dest: str, token: str) -> None:
    """Upload under `<dest>.tmp-<token>`, then move into `dest`: files one by one, the manifest last (a reader
    checks it); an earlier export's manifest is deleted first so no reader takes a half-replaced directory for
    complete."""
    tmp = f"{dest}.tmp-{token}"
    files = sorted((p for p in build.rglob("*") if p.is_file()), key=lambda p: (p.name == MANIFEST, str(p)))
    try:
        for p in files:
            target = posixpath.join(tmp, p.relative_to(build).as_posix())
            fs.create_dir(posixpath.dirname(target), recursive=True)
            with open(p, "rb") as src, fs.open_output_stream(target) as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
        if fs.get_file_info(dest).type != pafs.FileType.NotFound:
            try:
                fs.delete_file(posixpath.join(dest, MANIFEST))
            except (FileNotFoundError, OSError):
                pass
            fs.delete_dir(dest)
        try:
            fs.move(tmp, dest)  # a real rename where the filesystem has one (HDFS)
            return
        except (NotImplementedError, OSError):
            pass  # S3/GCS: no directory move; file by file below, the manifest last
        for p in files:
            rel = p.relative_to(build).as_posix()
            fs.create_dir(posixpath.dirname(posixpath.join(dest, rel)), recursive=True)
            fs.move(posixpath.join(tmp, rel), posixpath.join(dest, rel))
    finally:
        try:
            fs.delete_dir(tmp)
        except (FileNotFoundError, OSError):
            pass


def missing_parents(path: Path) -> list[Path]:
    """The ancestors of `path` that do not exist yet, outermost first (removed again if the export fails)."""
    out = []
    for p in path.parents:
        if p.exists():
            break
        out.append(p)
    return out[::-1]
