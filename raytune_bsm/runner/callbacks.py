"""Ray Train callbacks that run in a run's Train controller: the per-epoch record every run keeps, and the
placement-group log a sweep's trials keep so the sweep can release what a stopped trial left behind."""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import shutil
import tempfile
from typing import Any

from raytune_bsm.layout import CHECKPOINT_NAME, RunDir
from raytune_bsm.storage import exists, join, read_bytes, write_bytes
from raytune_bsm.sweep import PG_FILE, plain_value

log = logging.getLogger("raytune_bsm")


def remove_staged_checkpoints(name: str, rank: int | None = None) -> int:
    """Remove the run `name`'s staging directories on this machine (rank `rank`, or every rank); how many.

    Ray's report callback stages each epoch's checkpoint in ``<tmp>/lightning_checkpoints-job_id=..-name=<run>-
    world_rank=<rank>/`` and removes it when training ends; a worker that was killed (its job driver killed,
    `bsm stop`, a trial ASHA stopped) leaves it behind. A run's name is unique in its storage, so such a
    directory of a run that is not training is a leftover."""
    pattern = f"lightning_checkpoints-job_id=*-name={glob.escape(name)}-world_rank={'*' if rank is None else rank}"
    stale = glob.glob(os.path.join(tempfile.gettempdir(), pattern))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def read_reports(run_dir: str) -> list[dict[str, Any]]:
    """Every report of a run, in the order they were made (an epoch trained again after a failure shows twice)."""
    path = RunDir.at(run_dir).epochs
    try:
        return json.loads(read_bytes(path)) if exists(path) else []
    except (OSError, ValueError):
        return []


def read_first_step(run_dir: str) -> float | None:
    """The wall-clock time of the run's first training step (rank 0 writes it), if it got that far."""
    try:
        return float(json.loads(read_bytes(RunDir.at(run_dir).first_step))["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_epochs(run_dir: str) -> list[dict[str, Any]]:
    """A run's per-epoch reports (rank 0's metrics + checkpoint_path), one per epoch (the last), in epoch order."""
    by_epoch = {int(r["epoch"]): r for r in read_reports(run_dir) if "epoch" in r}
    return [by_epoch[e] for e in sorted(by_epoch)]


def epoch_record(run_dir: str) -> Any:
    """A Train callback appending each report to `<run dir>/bsm_epochs.json`. Listed before Tune's report
    callback, so a trial Tune stops right after a report still has it on record."""
    import ray.train

    class EpochRecord(ray.train.UserCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            row = {
                k: plain_value(v)
                for k, v in (metrics[0] if metrics else {}).items()
                if isinstance(plain_value(v), (int, float, str))
            }
            if checkpoint is not None:
                row["checkpoint_path"] = checkpoint.path
            if "epoch" in row:
                write_bytes(json.dumps(read_reports(run_dir) + [row], default=str).encode(), RunDir.at(run_dir).epochs)

    return EpochRecord()


def placement_group_log(run_dir: str) -> Any | None:
    """A Train worker-group callback that records each placement group the trial's controller creates in
    `<run dir>/bsm_placement_groups.json`, so the sweep's driver can release it (see `release_placement_groups`).
    None if this Ray's Train internals differ (the sweep then relies on Ray's own cleaner alone)."""
    try:
        from ray.train.v2._internal.execution.callback import WorkerGroupCallback
    except ImportError:  # pragma: no cover - other Ray versions
        return None

    class PlacementGroupLog(WorkerGroupCallback):
        def after_worker_group_start(self, worker_group: Any) -> None:
            try:
                pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
                path = join(run_dir, PG_FILE)
                ids = json.loads(read_bytes(path)) if exists(path) else []
                write_bytes(json.dumps(ids + [pg.id.hex()]).encode(), path)
            except Exception:  # noqa: BLE001 - bookkeeping must never fail a training run
                log.debug("could not record the placement group", exc_info=True)

    return PlacementGroupLog()


def release_placement_groups(run_dir: str) -> int:
    """Remove placement groups a stopped trial's Train run left behind; returns how many.

    Tune stops a trial (ASHA) by ending its actor, so the trial's Train controller dies without removing its
    workers' placement group, which lives as long as the job. Ray 2.60 leaves that to a detached
    PlacementGroupCleaner that finds the cluster through the State API and auto-detection; on a machine with
    more than one Ray instance (or no dashboard) it fails, and every stopped trial would keep its CPUs/GPUs
    reserved until the sweep starves. Only call this once the trial's controller is gone."""
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    path = join(run_dir, PG_FILE)
    if not exists(path):
        return 0
    removed = 0
    for pg_hex in json.loads(read_bytes(path)):
        pg = PlacementGroup(PlacementGroupID.from_hex(pg_hex))
        try:
            if ray.util.placement_group_table(pg).get("state") not in ("REMOVED", None):
                ray.util.remove_placement_group(pg)
                removed += 1
        except Exception:  # noqa: BLE001 - already gone, or the GCS does not know it
            log.debug("could not remove placement group %s", pg_hex, exc_info=True)
    return removed


def run_result(run_dir: str) -> Any | None:
    """The Ray Train `Result` of the run stored in `run_dir` (its checkpoint manager's snapshot); None if none yet."""
    from ray.train import Result

    try:
        return Result.from_path(run_dir)
    except Exception:  # noqa: BLE001 - no checkpoint registered yet, or a run of another Ray
        log.debug("no Train result in %s", run_dir, exc_info=True)
        return None


def kept_checkpoints(result: Any) -> dict[str, dict[str, Any]]:
    """Checkpoint path -> its metrics, for every checkpoint Ray's retention kept (the best k and the latest):
    the only ones that still exist."""
    kept = {checkpoint_uri(c): dict(m or {}) for c, m in (result.best_checkpoints or [])} if result is not None else {}
    if result is not None and result.checkpoint is not None:
        kept.setdefault(checkpoint_uri(result.checkpoint), dict(result.metrics or {}))
    return kept


def checkpoint_uri(checkpoint: Any) -> str:
    """A checkpoint's URI. Ray gives its path within its filesystem (`bucket/run/checkpoint_...` on S3), which
    nothing else can open; bsm passes checkpoints on as URIs (`Checkpoint(uri)`, the summary, the export)."""
    kind = getattr(getattr(checkpoint, "filesystem", None), "type_name", "local")
    if kind in ("local", "mock") or "://" in checkpoint.path:
        return checkpoint.path
    scheme = "gs" if kind == "gcs" else kind  # pyarrow's name for the filesystem -> its URI scheme
    return f"{scheme}://{checkpoint.path}"


def best_kept(kept: dict[str, dict[str, Any]], monitor: str, mode: str) -> tuple[str, dict[str, Any]] | None:
    """The best of the kept checkpoints by `monitor`; among equal values the earliest epoch. None if none scored."""
    scored = [
        (p, m) for p, m in kept.items() if isinstance(m.get(monitor), (int, float)) and not math.isnan(m[monitor])
    ]
    if not scored:
        return None
    sign = -1.0 if mode == "max" else 1.0
    return min(scored, key=lambda pm: (sign * pm[1][monitor], pm[1].get("epoch", 0), pm[0]))


def kept_in(run_dir: str, epochs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The checkpoints of a run that still exist, with their metrics: Ray's own record of what its retention
    kept when the run has one, else those of the epochs' checkpoints still on storage."""
    result = run_result(run_dir)
    if result is not None:
        return kept_checkpoints(result)
    return {p: e for e in epochs if (p := e.get("checkpoint_path")) and exists(join(p, CHECKPOINT_NAME))}
