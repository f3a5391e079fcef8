"""Per-epoch metrics from a run's TensorBoard event files (`<run dir>/tensorboard/`, written by rank 0), read
with TensorBoard's own EventAccumulator; for a run on remote storage the event files are copied here first.

Lightning logs the validation metrics at the global step where each epoch ends, next to an `epoch` scalar; the
epoch means bsm adds (train_loss_epoch_mean, records_per_s) are logged with the epoch index as their step.
"""

from __future__ import annotations

import bisect
import shutil
import tempfile
from pathlib import Path
from typing import Any

from raytune_bsm.layout import RunDir
from raytune_bsm.storage import exists, filesystem, is_uri

BY_EPOCH_INDEX = ("train_loss_epoch_mean", "records_per_s")  # logged with step = epoch (0-based)


def tensorboard_epochs(run_dir: str) -> list[dict[str, Any]]:
    """One dict per epoch ({"epoch": 0-based, "val_loss": ..., "train_loss_epoch_mean": ..., ...}); [] if the
    run has no event files."""
    logdir = RunDir.at(run_dir).tensorboard
    if not exists(logdir):
        return []
    local, scratch = logdir, None
    if is_uri(logdir):
        scratch = tempfile.mkdtemp(prefix="bsm-report-tb-")
        _copy_down(logdir, Path(scratch))
        local = scratch
    try:
        return _read(local)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _copy_down(uri: str, dest: Path) -> None:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.type == pafs.FileType.File and "tfevents" in info.base_name:
            target = dest / info.path[len(path.rstrip("/")) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as f:
                target.write_bytes(f.read())


def _read(logdir: str) -> list[dict[str, Any]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    tags = acc.Tags().get("scalars", [])
    if "epoch" not in tags:
        return []
    marks = sorted((s.step, int(s.value)) for s in acc.Scalars("epoch"))  # (global step, epoch)
    steps = [s for s, _ in marks]

    def epoch_at(step: int) -> int:
        i = bisect.bisect_right(steps, step) - 1
        return marks[max(i, 0)][1]

    rows: dict[int, dict[str, Any]] = {}
    for tag in tags:
        if tag == "epoch" or tag.startswith("test_") or tag.startswith("lr-"):
            continue
        if tag == "train_loss":  # logged every few steps: the epoch mean stands for it
            continue
        for s in acc.Scalars(tag):
            e = s.step if tag in BY_EPOCH_INDEX else epoch_at(s.step)
            rows.setdefault(e, {"epoch": e})[tag] = float(s.value)
    return [rows[e] for e in sorted(rows) if len(rows[e]) > 1]


def merge(primary: list[dict[str, Any]], extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Epoch rows of `primary`, completed by `extra`'s keys for the same epoch (primary wins)."""
    if not primary:
        return extra
    by_epoch = {r.get("epoch"): r for r in extra}
    return [{**by_epoch.get(r.get("epoch"), {}), **r} for r in primary]
