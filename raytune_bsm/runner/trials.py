"""The sweep's record, kept up to date while it runs: one row per trial (hyperparameters, the metric per epoch,
status, the best checkpoint Ray kept), ranked; written as trials.parquet, best_config.json and bsm_result.json
by a Tune callback in the sweep's driver (`recorder`)."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from raytune_bsm.config import dumps
from raytune_bsm.layout import RunDir
from raytune_bsm.records import SweepResult
from raytune_bsm.runner.callbacks import (
    best_kept,
    kept_in,
    read_epochs,
    release_placement_groups,
    remove_staged_checkpoints,
)
from raytune_bsm.storage import exists, filesystem, join, read_bytes, write_bytes, write_table
from raytune_bsm.sweep import LEADERBOARD_ROWS, RELEASE_AFTER_S, apply_params, plain_value

log = logging.getLogger("raytune_bsm")


@dataclass
class SweepSpec:
    """What the recorder needs to turn Tune's trials into the sweep's record."""

    name: str
    sweep_dir: str
    monitor: str
    mode: str
    max_epochs: int
    base: dict[str, Any]
    params: list[str]


def trial_rows(
    trials: list[Any],
    spec: SweepSpec,
    cache: dict[str, tuple[list, dict]] | None = None,
    interrupted: set[str] | frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """One row per Tune trial, in trial order. `interrupted`: trials the sweep's interruption stopped.

    A trial's best checkpoint is the best of those Ray's retention kept (ties: the earliest epoch): with
    `num_to_keep`, a tie across epochs would otherwise name a checkpoint Ray has already deleted."""
    cache = {} if cache is None else cache
    rows = []
    for index, t in enumerate(trials):
        tid = t.trial_id
        run_dir = RunDir.at(spec.sweep_dir).trial(tid).path
        cached = cache.get(tid)
        if cached is None:
            epochs = read_epochs(run_dir)
            cached = (epochs, kept_in(run_dir, epochs))
            if t.status in ("TERMINATED", "ERROR") and tid not in interrupted:
                cache[tid] = cached
        epochs, kept = cached
        values = [e.get(spec.monitor) for e in epochs]
        scored = [(v, i) for i, v in enumerate(values) if isinstance(v, (int, float)) and not math.isnan(v)]
        best_i = None
        if scored:
            best_v = max(v for v, _ in scored) if spec.mode == "max" else min(v for v, _ in scored)
            best_i = next(i for v, i in scored if v == best_v)  # the earliest epoch among equals
        pick = best_kept(kept, spec.monitor, spec.mode)
        if pick is not None:  # the row names the epoch whose checkpoint exists
            best_i = next((i for i, e in enumerate(epochs) if e.get("epoch") == pick[1].get("epoch")), best_i)
        status = {"ERROR": "error", "RUNNING": "running", "PENDING": "pending", "PAUSED": "paused"}.get(t.status)
        if tid in interrupted:
            status = "interrupted" if epochs else "pending"
        elif status is None:  # TERMINATED: trained to the end, or stopped early (ASHA, --time-budget)
            status = "completed" if len(epochs) >= spec.max_epochs else "early_stopped"
        hp = {k: plain_value(t.config.get(k)) for k in spec.params if k in t.config}
        rows.append(
            {
                "trial_id": tid,
                "trial_index": _trial_index(tid, index),
                "status": status,
                "iterations": len(epochs),
                "metric": values[best_i] if best_i is not None else None,
                "best_epoch": best_i + 1 if best_i is not None else None,
                "final_metric": values[-1] if values and isinstance(values[-1], (int, float)) else None,
                "metric_per_epoch": [float(v) if isinstance(v, (int, float)) else None for v in values],
                "best_checkpoint": pick[0] if pick is not None else None,
                "metrics": {k: v for k, v in epochs[best_i].items() if isinstance(v, (int, float))}
                if best_i is not None
                else {},
                "hyperparameters": hp,
                "run_dir": run_dir,
                "error": _error_text(t) if t.status == "ERROR" else None,
            }
        )
    return rows


def _trial_index(trial_id: str, fallback: int) -> int:
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else fallback


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        if path and exists(path):
            lines = [ln for ln in read_bytes(path).decode(errors="replace").strip().splitlines() if ln.strip()]
            return lines[-1][:500] if lines else "failed"
    except Exception:  # noqa: BLE001 - the record must be written whatever the error file looks like
        pass
    return "failed"


def rank_rows(rows: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Best first by the metric (each trial's best epoch); ties go to the earlier trial; no metric last."""

    def key(r: dict[str, Any]) -> tuple:
        m = r.get("metric")
        if m is None or (isinstance(m, float) and math.isnan(m)):
            return (1, 0.0, r["trial_index"])
        return (0, -m if mode == "max" else m, r["trial_index"])

    return sorted(rows, key=key)


LEADERBOARD_KEYS = (
    "trial_id",
    "trial_index",
    "status",
    "iterations",
    "metric",
    "best_epoch",
    "final_metric",
    "metric_per_epoch",
    "hyperparameters",
    "best_checkpoint",
)  # a leaderboard row in bsm_result.json (`bsm status`, `bsm report`)


def trials_table(rows: list[dict[str, Any]], ranked: list[dict[str, Any]], spec: SweepSpec) -> Any:
    """trials.parquet: one row per trial, a column per searched hyperparameter, the metric and mode as metadata."""
    import pyarrow as pa

    columns: dict[str, Any] = {
        "trial_id": pa.array([r["trial_id"] for r in rows], pa.string()),
        "trial_index": pa.array([r["trial_index"] for r in rows], pa.int64()),
        "status": pa.array([r["status"] for r in rows], pa.string()),
        "iterations": pa.array([r["iterations"] for r in rows], pa.int64()),
        "metric": pa.array([r["metric"] for r in rows], pa.float64()),
        "best_epoch": pa.array([r["best_epoch"] for r in rows], pa.int64()),
        "final_metric": pa.array([r["final_metric"] for r in rows], pa.float64()),
        "metric_per_epoch": pa.array([r["metric_per_epoch"] for r in rows], pa.list_(pa.float64())),
        "rank": pa.array([ranked.index(r) + 1 for r in rows], pa.int64()),
    }
    for p in spec.params:
        values = [(r["hyperparameters"] or {}).get(p) for r in rows]
        try:
            columns[p] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[p] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    columns["hyperparameters"] = pa.array([json.dumps(r["hyperparameters"], sort_keys=True) for r in rows], pa.string())
    for k in ("best_checkpoint", "run_dir", "error"):
        columns[k] = pa.array([r[k] for r in rows], pa.string())
    meta = {"metric": spec.monitor, "mode": spec.mode, "max_epochs": str(spec.max_epochs)}
    return pa.table(columns).replace_schema_metadata(meta)


def write_record(
    rows: list[dict[str, Any]], spec: SweepSpec, *, finished: bool, started: float | None = None
) -> dict[str, Any]:
    """trials.parquet, best_config.json and bsm_result.json, each written atomically. Returns the summary."""

    ranked = rank_rows(rows, spec.mode)
    best = ranked[0] if ranked and ranked[0].get("metric") is not None else None
    write_table(trials_table(rows, ranked, spec), RunDir.at(spec.sweep_dir).trials_table)

    if best is not None:
        recipe = apply_params(spec.base, best["hyperparameters"])
        recipe["name"] = f"{spec.name}-best"
        write_bytes(dumps(recipe).encode(), RunDir.at(spec.sweep_dir).best_config)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    board = [{k: r[k] for k in LEADERBOARD_KEYS} for r in ranked[:LEADERBOARD_ROWS]]
    usable = [r for r in rows if r["metric"] is not None]
    result = SweepResult(
        name=spec.name,
        run_dir=spec.sweep_dir,
        monitor=spec.monitor,
        mode=spec.mode,
        metrics=best["metrics"] if best else {},
        best_checkpoint=best["best_checkpoint"] if best else None,
        best_trial={k: best[k] for k in ("trial_id", "metric", "best_epoch", "hyperparameters", "run_dir")}
        if best
        else None,
        best_config=RunDir.at(spec.sweep_dir).best_config if best else None,
        trials_table=RunDir.at(spec.sweep_dir).trials_table,
        tensorboard_logdir=RunDir.at(spec.sweep_dir).trials,  # one event-file directory per trial beneath
        trials={"total": len(rows), **counts},
        leaderboard=board,
        finished=finished,
        elapsed_s=round(time.time() - started, 1) if started else None,
        error=None if (usable or not finished) else f"no trial produced {spec.monitor} ({counts})",
        restarts=[],
    )
    summary = result.to_dict()
    write_bytes(dumps(summary).encode(), RunDir.at(spec.sweep_dir).result)
    return summary


def saved_trial_statuses(tune_dir: str) -> dict[str, str]:
    """Trial id -> status in Tune's newest saved experiment state (what `--resume` starts from); {} if none."""
    try:
        fs, path = filesystem(tune_dir)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        states = sorted(
            i.base_name for i in infos if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json")
        )
        if not states:
            return {}
        d = json.loads(read_bytes(join(tune_dir, states[-1])))
        return {t["trial_id"]: t["status"] for t in (json.loads(s) for s, _ in d["trial_data"])}
    except Exception:  # noqa: BLE001 - an unreadable state only loses the "interrupted" label
        log.debug("could not read Tune's experiment state in %s", tune_dir, exc_info=True)
        return {}


class Recorder(tune.Callback):
    """A Tune callback (runs in the sweep's driver) that rewrites the record as trials start and end, and releases
    what a stopped trial left behind (its placement groups, its workers' staging folders)."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.started = time.time()
        self._cache: dict[str, tuple[list, dict]] = {}
        self._ended: dict[str, float] = {}  # trial id -> when the recorder first saw it stopped
        self._released: set[str] = set()
        self._last_release = 0.0

    def _write(
        self,
        trials: list[Any],
        finished: bool = False,
        interrupted: set[str] | None = None,
        ended: Any = None,
        how: str = "ended",
    ) -> None:
        try:
            rows = trial_rows(trials, self.spec, self._cache, interrupted or set())
            write_record(rows, self.spec, finished=finished, started=self.started)
        except Exception:  # noqa: BLE001 - a failed write must not end the sweep; the next event retries
            log.exception("could not update the sweep's record in %s", self.spec.sweep_dir)
            return
        for r in rows if ended is not None else []:  # bsm's own line per trial (Tune's tables: BSM_VERBOSE=1)
            if r["trial_id"] == ended.trial_id:  # Tune marks the trial terminated only after this callback
                log.info(
                    "trial %s %s after %d epoch(s): %s %s (best epoch %s)",
                    r["trial_id"],
                    how,
                    r["iterations"],
                    self.spec.monitor,
                    r["metric"],
                    r["best_epoch"],
                )

    def _release(self, trials: list[Any], grace: float) -> None:
        now = time.monotonic()
        for t in trials:
            if t.status not in ("TERMINATED", "ERROR") or t.trial_id in self._released:
                continue
            ended = self._ended.setdefault(t.trial_id, now)
            if now - ended < grace:
                continue
            self._released.add(t.trial_id)
            # its workers' staging folders, on this machine (a trial ASHA stopped never removes its own)
            remove_staged_checkpoints(t.trial_id)
            try:
                n = release_placement_groups(RunDir.at(self.spec.sweep_dir).trial(t.trial_id).path)
            except Exception:  # noqa: BLE001
                log.debug("could not release trial %s's placement groups", t.trial_id, exc_info=True)
                continue
            if n:
                log.info("released %d placement group(s) left by stopped trial %s", n, t.trial_id)

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if time.monotonic() - self._last_release > 2.0:
            self._last_release = time.monotonic()
            self._release(trials, RELEASE_AFTER_S)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trials, ended=trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trials, ended=trial, how="failed")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        # Tune saved its state just before this; trials it still had running there were stopped by an
        # interruption (SIGINT / `bsm stop`), not by the scheduler, and `--resume` continues them.
        saved = saved_trial_statuses(RunDir.at(self.spec.sweep_dir).tune)
        interrupted = {tid for tid, st in saved.items() if st not in ("TERMINATED", "ERROR")}
        finished = not interrupted and all(t.status in ("TERMINATED", "ERROR") for t in trials)
        self._write(trials, finished=finished, interrupted=interrupted)
        # Every trial actor is gone by now; give their controllers a moment to follow.
        pending = [t for t in trials if t.status in ("TERMINATED", "ERROR") and t.trial_id not in self._released]
        if pending:
            wait = max(0.0, 3.0 - (time.monotonic() - max(self._ended.get(t.trial_id, 0.0) for t in pending)))
            time.sleep(min(wait, 3.0))
            self._release(trials, 0.0)

    def __getstate__(self) -> dict[str, Any]:  # pickled into Tune's experiment state: settings only
        return {"spec": self.spec, "started": self.started}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"])
        self.started = state["started"]
