"""What a run records while it trains: progress lines for the job log, TensorBoard event files in its run
storage, and (optional) an MLflow run.

- TensorBoard: rank 0 writes `<run dir>/tensorboard/` (every metric the model logs: train/val loss, the val
  metrics, plus the learning rate, the epoch's mean training loss and records/s). A run on remote storage
  writes a local copy and uploads it when the worker's training ends. `tensorboard --logdir <run dir>/tensorboard`.
- MLflow (`pip install raytune-bsm[mlflow]`): with `train.mlflow_uri` or `MLFLOW_TRACKING_URI` set, the job
  driver opens one MLflow run (params: the resolved config), rank 0 logs every epoch's metrics into it, and the
  driver adds the export directory as artifacts. mlflow is imported only then.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

from raytune_bsm.config import RunConfig
from raytune_bsm.errors import ConfigError
from raytune_bsm.layout import RunDir
from raytune_bsm.logline import format_step, format_validation
from raytune_bsm.storage import filesystem, is_uri, write_bytes

log = logging.getLogger("raytune_bsm")

TRACKING_KEY = "bsm_tracking"  # in the Train loop's config: {"mlflow_uri", "mlflow_run_id"}


def mlflow_uri(run: RunConfig) -> str | None:
    """`train.mlflow_uri` (when the config has it) or `MLFLOW_TRACKING_URI`; None: no MLflow."""
    return run.train.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "an MLflow tracking URI is set (train.mlflow_uri or MLFLOW_TRACKING_URI) but mlflow is "
            "not installed on the cluster; pip install 'raytune-bsm[mlflow]'"
        ) from None
    return mlflow


def start_mlflow(run: RunConfig, params: dict[str, Any]) -> dict[str, Any]:
    """Open the run's MLflow run in the driver (params logged); returns the tracking info for the workers, {} without MLflow."""
    uri = mlflow_uri(run)
    if not uri:
        return {}
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bsm")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("bsm")
    mlrun = client.create_run(experiment_id, run_name=run.name, tags={"bsm.run": run.name})
    flat = _flatten(params)
    for start in range(0, len(flat), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(
            mlrun.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in list(flat.items())[start : start + 100]]
        )
    log.info("MLflow run %s at %s", mlrun.info.run_id, uri)
    return {"mlflow_uri": uri, "mlflow_run_id": mlrun.info.run_id}


def end_mlflow(tracking: dict[str, Any], export_dir: str | None, failed: bool) -> None:
    """Add the export directory as artifacts (when local) and close the MLflow run."""
    if not tracking.get("mlflow_run_id"):
        return
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=tracking["mlflow_uri"])
    if export_dir and not is_uri(export_dir):
        client.log_artifacts(tracking["mlflow_run_id"], export_dir, artifact_path="export")
    client.set_terminated(tracking["mlflow_run_id"], status="FAILED" if failed else "FINISHED")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, default=str)[:500] if not isinstance(v, str) else v[:500]
    return out


class Tracking:
    """The Lightning loggers and callbacks of one worker: all of them on rank 0, none elsewhere."""

    def __init__(self, run: RunConfig, run_dir: str, rank: int, tracking: dict[str, Any] | None = None) -> None:
        self.run_dir, self.rank, self.tracking = run_dir, rank, tracking or {}
        self.remote = is_uri(run_dir)
        # A remote run storage gets a local copy uploaded at the end (event files are appended as they go).
        self.local_dir = tempfile.mkdtemp(prefix="bsm-tb-") if self.remote else RunDir.at(run_dir).tensorboard
        self.run = run

    def loggers(self) -> list[Any]:
        if self.rank != 0:
            return []
        from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger

        out: list[Any] = [TensorBoardLogger(save_dir=self.local_dir, name="", version="", default_hp_metric=False)]
        if self.tracking.get("mlflow_run_id"):
            _mlflow()
            out.append(MLFlowLogger(tracking_uri=self.tracking["mlflow_uri"], run_id=self.tracking["mlflow_run_id"]))
        return out

    def callbacks(self) -> list[Any]:
        from lightning.pytorch.callbacks import LearningRateMonitor

        if self.rank != 0:
            return [progress_log()]
        return [progress_log(RunDir.at(self.run_dir).first_step), LearningRateMonitor(logging_interval="epoch")]

    def finish(self) -> None:
        """Upload the local copy of the event files (remote run storage) and remove it."""
        if not (self.remote and self.rank == 0):
            return
        import pyarrow.fs as pafs

        try:
            fs, path = filesystem(RunDir.at(self.run_dir).tensorboard)
            pafs.copy_files(self.local_dir, path, destination_filesystem=fs)
        finally:
            shutil.rmtree(self.local_dir, ignore_errors=True)


def progress_log(first_step: str | None = None) -> Any:
    """A Lightning callback: a progress line on stderr every ~10% of an epoch (readable in job logs), and at each
    epoch's end the mean training loss and records/s into the loggers. With `first_step` (a path or URI), the
    wall-clock time of the first training step is written there (the run's start-up figure)."""
    import lightning.pytorch as pl

    class ProgressLog(pl.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, i: int) -> None:
            nonlocal first_step
            if first_step is not None:
                write_bytes(json.dumps({"time": time.time()}).encode(), first_step)
                first_step = None

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.t0, self.seen, self.loss_sum, self.steps = time.perf_counter(), 0, 0.0, 0
            self.every = max(1, int(trainer.num_training_batches) // 10)

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, i: int) -> None:
            self.seen += len(batch[module.config["label_name"]])
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            self.loss_sum, self.steps = self.loss_sum + loss, self.steps + 1
            total = int(trainer.num_training_batches)
            if trainer.global_rank == 0 and ((i + 1) % self.every == 0 or i + 1 == total):
                dt = time.perf_counter() - self.t0
                eta = dt / (i + 1) * (total - i - 1)
                epoch, epochs = trainer.current_epoch + 1, trainer.max_epochs
                log.info("%s", format_step(epoch, epochs, i + 1, total, loss, self.seen / dt, eta))

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            if trainer.global_rank != 0 or not self.steps:
                return
            dt = max(time.perf_counter() - self.t0, 1e-9)
            scalars = {
                "train_loss_epoch_mean": self.loss_sum / self.steps,
                "records_per_s": self.seen * trainer.world_size / dt,
            }
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.current_epoch)

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            if trainer.global_rank == 0 and not trainer.sanity_checking:
                shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")}
                log.info("%s", format_validation(trainer.current_epoch + 1, shown))

    return ProgressLog()
