"""Run storage: local paths, NFS paths, or s3:// gs:// hdfs:// URIs, all through pyarrow's filesystems.

Everything written here is written to a temporary name first and then moved into place, so a reader never sees
a half-written file.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import uuid
from pathlib import Path
from typing import Any

from raytune_bsm.errors import ConfigError


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return posixpath.join(base, *parts)
    return str(Path(base.removeprefix("file://")).expanduser().joinpath(*parts))


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, path inside it) for a local path or a URI."""
    import pyarrow.fs as pafs

    if not is_uri(uri):
        return pafs.LocalFileSystem(), str(Path(uri.removeprefix("file://")).expanduser().resolve())
    return pafs.FileSystem.from_uri(uri)


def write_bytes(data: bytes, dest: str) -> None:
    fs, path = filesystem(dest)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def write_table(table: Any, dest: str) -> None:
    """A pyarrow table -> Parquet at `dest`, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes(sink.getvalue().to_pybytes(), dest)


def read_bytes(src: str) -> bytes:
    fs, path = filesystem(src)
    with fs.open_input_stream(path) as f:
        return f.read()


def exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def storage_path(storage: str) -> str:
    """A URI as given; a local path made absolute (every node and every later command sees the same path)."""
    return storage if is_uri(storage) else str(Path(storage.removeprefix("file://")).expanduser().resolve())


def check_apart(out: str, data: str) -> None:
    """An output directory that is neither the input, nor inside it, nor around it (a glob's directory counts)."""

    def norm(p: str) -> str:
        p = p.split("?")[0]
        return p.rstrip("/") if is_uri(p) else storage_path(p).rstrip("/")

    o, d = norm(out), norm(data)
    d = d if not any(ch in d for ch in "*?[") else posixpath.dirname(d.split("*")[0].split("[")[0])
    if o == d or o.startswith(d + "/") or d.startswith(o + "/"):
        raise ConfigError(f"--out {out}: overlaps the input {data}; predictions are written outside the input")


def check_writable(dest: str, flag: str) -> None:
    """A ConfigError, before any work starts, if bsm cannot write the local destination `dest` (a file or a
    directory, new or not): what is written is a temporary sibling of `dest`, renamed into place, so the nearest
    existing folder above it must take a new file (and `dest` too when it is an existing directory). Checked by
    creating and removing an empty hidden file there: mode bits, read-only filesystems and a file standing where a
    folder must be are all caught alike. A URI is left to the write itself (storage says no only then)."""
    if is_uri(dest):
        return
    path = Path(dest.removeprefix("file://")).expanduser().absolute()
    above = path.parent
    while not above.exists() and not above.is_symlink() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise ConfigError(
            f"{flag} {dest}: cannot be written: {above} is a file, not a directory; choose another {flag}"
        )
    for folder in (above, path) if path.is_dir() else (above,):
        try:
            fd, probe = tempfile.mkstemp(prefix=".bsm-write-check-", dir=folder)
        except OSError as e:
            raise ConfigError(
                f"{flag} {dest}: cannot be written: {folder}: {e.strerror or type(e).__name__}; choose another {flag}"
            ) from None
        os.close(fd)
        os.unlink(probe)
