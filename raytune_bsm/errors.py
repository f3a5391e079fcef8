"""The project's own exceptions. The CLI prints their message as one line and exits non-zero."""


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
