"""Listing: a directory (local, or on any pyarrow filesystem) -> every file under it, each once, a bounded number.

Every listing of data files goes through `walk` (via `readers.list_files`): training and validation splits, the
driver's Ray Data read, local and cluster predict. A local directory is walked here rather than by pyarrow's
recursive FileSelector, which follows symbolic links without remembering where it has been: a link back to a
parent (`sub/loop -> ..`) listed the data 41 times over, and two such links made the walk exponential. Here

- each directory is entered once, by its identity (device and inode), so a loop is never followed twice;
- each file is listed once, under its real path (what is read), whatever links lead to it; its shown name is
  the first path that reached it, real directories before linked ones (a file is named where it lies);
- a walk past MAX_FILES files stops with a DataError, locally and remotely (object stores have no links, but a
  listing is deduplicated and bounded there too).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from raytune_bsm.errors import DataError

MAX_FILES = 100_000  # files under one split or input: far beyond any real dataset, well before memory runs out


@dataclass(frozen=True)
class Found:
    """A file under the walked directory: `path` in its filesystem (a local file's real path), `rel` the path
    below the directory that reached it (`/`-separated), `size` in bytes."""

    path: str
    rel: str
    size: int | None


def walk(
    fs: Any, root: str, uri: str, descend: Callable[[list[str]], bool] | None = None, limit: int | None = None
) -> list[Found]:
    """Every file under the directory `root` of `fs`, each once. `descend(parts)`: whether to enter the directory
    at relative path `parts` (all by default); `uri` names the listing in errors; `limit`: MAX_FILES by default."""
    descend = descend or (lambda parts: True)
    limit = MAX_FILES if limit is None else limit
    if getattr(fs, "type_name", None) == "local":
        return _walk_local(root, uri, descend, limit)
    return _walk_remote(fs, root, uri, descend, limit)


def too_many(uri: str, limit: int) -> DataError:
    return DataError(
        f"{uri}: more than {limit:,} files to list; name a smaller directory or a narrower glob "
        "(a link to a big directory counts too)"
    )


def _walk_local(root: str, uri: str, descend: Callable[[list[str]], bool], limit: int) -> list[Found]:
    entered: set[tuple[int, int]] = set()  # directories by (device, inode): a loop is entered once
    listed: set[str] = set()  # files by real path
    found: list[Found] = []
    # Directories reached by their real names come first; those reached through a link wait, so a file is
    # named where it lies, and a link into the tree adds nothing.
    real: deque[tuple[str, str]] = deque([(root, "")])
    linked: deque[tuple[str, str]] = deque()
    while real or linked:
        path, rel = (real or linked).popleft()
        try:
            st = os.stat(path)
        except OSError:
            continue  # vanished since it was seen
        if (st.st_dev, st.st_ino) in entered:
            continue
        entered.add((st.st_dev, st.st_ino))
        real_dir = os.path.realpath(path)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise DataError(f"{uri}: cannot list {rel or 'this directory'}: {e.strerror or e}") from None
        for e in entries:
            sub = f"{rel}/{e.name}" if rel else e.name
            link = e.is_symlink()
            try:
                is_dir, is_file = e.is_dir(), e.is_file()  # through a link
            except OSError:  # a link that loops on itself (`self -> self`)
                continue
            if is_dir:
                if descend(sub.split("/")):
                    (linked if link else real).append((e.path, sub))
                continue
            if not is_file:
                continue  # a dangling link, a socket, a device
            target = os.path.realpath(e.path) if link else os.path.join(real_dir, e.name)
            if target in listed:
                continue
            listed.add(target)
            if len(found) >= limit:
                raise too_many(uri, limit)
            try:
                size = e.stat().st_size
            except OSError:
                size = None
            found.append(Found(target, sub, size))
    return found


def _walk_remote(fs: Any, root: str, uri: str, descend: Callable[[list[str]], bool], limit: int) -> list[Found]:
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{uri}: cannot list this directory: {(str(e).splitlines() or [type(e).__name__])[0]}"
        ) from None
    base = root.rstrip("/")
    found: dict[str, Found] = {}
    for i in infos:
        if i.type != pafs.FileType.File or i.path in found:
            continue
        rel = i.path[len(base) + 1 :]
        parts = rel.split("/")
        if not all(descend(parts[:k]) for k in range(1, len(parts))):
            continue
        if len(found) >= limit:
            raise too_many(uri, limit)
        found[i.path] = Found(i.path, rel, i.size)
    return list(found.values())
