"""Finding and reading a checkpoint without running code from it.

A checkpoint is a Lightning .ckpt file, or a Ray Train checkpoint directory holding checkpoint.ckpt, local or
behind a URI. It is read with `torch.load(weights_only=True)`: the unpickler builds only tensors, plain
containers and the few classes allowed below, so a crafted file cannot run its payload; it is refused instead.
"""

from __future__ import annotations

import pathlib
import pickle
import posixpath
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from raytune_bsm.errors import ConfigError, ExportError
from raytune_bsm.layout import CHECKPOINT_NAME
from raytune_bsm.storage import filesystem, is_uri

# What a Lightning checkpoint of this project may hold beyond tensors and plain containers: a ModelCheckpoint
# callback's state keeps its directory as a path. Nothing else is ever constructed.
SAFE_GLOBALS: list[Any] = [pathlib.PosixPath]
NOT_TENSORS = "not a file of tensors and plain data as torch.save writes them"


def locate(checkpoint: str, scratch: Path) -> Path:
    """The checkpoint file (a .ckpt, or checkpoint.ckpt in a Ray checkpoint directory), copied into `scratch`
    first when it is behind a URI. A ConfigError if there is none."""
    if is_uri(checkpoint):
        import pyarrow.fs as pafs

        fs, path = filesystem(checkpoint)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            path = posixpath.join(path, CHECKPOINT_NAME)
            info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise ConfigError(f"checkpoint {checkpoint!r}: no such file (nor a directory holding {CHECKPOINT_NAME})")
        local = scratch / CHECKPOINT_NAME
        with fs.open_input_stream(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 16 << 20)
        return local
    local = Path(checkpoint.removeprefix("file://")).expanduser()
    if local.is_dir():
        if not (local / CHECKPOINT_NAME).is_file():
            found = sorted(p.name for p in local.glob("*.ckpt"))
            raise ConfigError(
                f"checkpoint {checkpoint!r} is a directory without {CHECKPOINT_NAME}"
                + (f" (it has {', '.join(found)}; give one of those files)" if found else "")
            )
        return local / CHECKPOINT_NAME
    if not local.is_file():
        raise ConfigError(f"checkpoint {checkpoint!r}: no such file or directory")
    return local


def safe_load(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The checkpoint's dict, unpickled with weights_only=True; an ExportError (one line) for anything that is
    not a checkpoint of tensors and plain data: such a file is refused before any of it runs. PyTorch's own text
    is never passed on: it advises turning weights_only off, which would run whatever the file holds."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4 ...": about the file we refuse below
            ckpt = torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        why = f"it asks for {found.group(1)}, which bsm never loads" if found else NOT_TENSORS
        raise ExportError(
            f"checkpoint {str(path)!r} is not a bsm Lightning checkpoint: {why}; refused unread"
        ) from None
    except OSError as e:
        raise ExportError(f"checkpoint {str(path)!r} cannot be read ({e.strerror or type(e).__name__})") from None
    except Exception:  # noqa: BLE001 - the unpickler raises anything (KeyError, IndexError, ...) on other files
        raise ExportError(
            f"checkpoint {str(path)!r} is not a bsm Lightning checkpoint: {NOT_TENSORS}; refused unread"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in (ckpt.get("hyper_parameters") or {}):
        raise ExportError(
            f"checkpoint {str(path)!r} is not a bsm Lightning checkpoint (no state_dict and hyper_parameters.config)"
        )
    return ckpt
