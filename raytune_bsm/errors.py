"""The project's own exceptions. The CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class BsmError(Exception):
    """Base class: a problem the user can fix; its message says what, the value given, and what to do."""


class ConfigError(BsmError, ValueError):
    """A bad option or config key. The message names the flag or key."""


class DataError(BsmError, ValueError):
    """Bad input data. The message names the file, the column and the first offending rows."""


class ClusterError(BsmError):
    """The Ray cluster cannot be reached, refused us, or cannot fit the request."""


class JobError(BsmError):
    """A job does not exist or ended badly."""


class ExportError(BsmError):
    """An export failed its checks (parity, manifest, checksums)."""


def raised_inside(e: BaseException | None) -> BsmError | None:
    """The project's own error that a Ray task or actor raised, from what Ray raised here (a RayTaskError, an
    actor's failed constructor), as one line; None if there is none. Ray's wrapper of a BsmError is an instance of
    it too, but its text is the remote traceback, and Ray Data appends its retry advice to the original's text."""
    found = None
    for _ in range(10):  # the deepest BsmError: the one raised, under Ray's wrappers
        if e is None:
            break
        if isinstance(e, BsmError):
            found = e
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    if found is None:
        return None
    return type(found)((str(found).splitlines() or [""])[0])


@contextmanager
def raised_in_ray() -> Iterator[None]:
    """Inside: a BsmError that a Ray task or actor raised is re-raised as itself, one line (`raised_inside`)."""
    try:
        yield
    except Exception as e:
        err = raised_inside(e)
        if err is None:
            raise
        raise err from None
