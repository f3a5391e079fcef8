"""The training loop of one worker, written once, and the two places it runs.

`train_loop(config)` reads the run, gets its loaders and its Lightning trainer from where it runs, trains, tests
and returns the final metrics. Where it runs is one of two `Place`s, each a trainer builder and what that place
keeps:

- `LocalPlace` (`runtime: local`): this process. Lightning's own checkpoints (best k + last) and the run's
  config.json, metrics.json and test predictions in its output directory (`train.output_dir`, else runs/NAME).
- `RayPlace` (`runtime: ray`, set by runner/train.py): every Ray Train worker. Ray's DDP strategy, cluster
  environment and report callback (Ray keeps the checkpoints in run storage), resuming from the checkpoint Ray
  hands back after a worker failure; `bsm_workers/rank-N.json` says where each worker ran and, at the end, the
  digest of its weights (DDP keeps replicas identical; the record lets anyone check it).

The data comes either way as this rank's share: of the splits the job's driver prepared once (`Shards`, in the
loop config), or, without them, of the splits this worker reads and tokenizes itself (`prepare`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

from raytune_bsm.config import RunConfig, check_monitor_computed, dumps
from raytune_bsm.data.loaders import Shards, shard_loaders
from raytune_bsm.layout import RunDir
from raytune_bsm.logs import quiet_libraries, setup_logging
from raytune_bsm.runner.callbacks import remove_staged_checkpoints
from raytune_bsm.runner.prepare import DATA_KEY, prepare
from raytune_bsm.runner.tracking import TRACKING_KEY, Tracking
from raytune_bsm.storage import join, write_bytes, write_table

log = logging.getLogger("raytune_bsm")


def precision_for(run: RunConfig) -> str:
    import torch

    if run.train.precision != "auto":
        return run.train.precision
    if run.scaling.use_gpu and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def train_loop(config: dict[str, Any]) -> dict[str, float]:
    """Train (and test, if a test split exists) one model; return the final metrics. Runs on every worker."""
    setup_logging()
    quiet_libraries()  # before the imports: Lightning's torchmetrics imports matplotlib, which logs as it loads
    import lightning.pytorch as pl
    import torch

    from raytune_bsm.model.text_bert import TextBertClassifier

    _ignore_known_warnings()
    config = dict(config)
    tracking = config.pop(TRACKING_KEY, None)
    shards = config.pop(DATA_KEY, None)  # on Ray: the prepared datasets' `Shards` (the records come as shards)
    run = RunConfig.from_dict(config)
    place: Place = RayPlace(run, shared_data=shards is not None) if run.train.runtime == "ray" else LocalPlace(run)
    pl.seed_everything(run.train.seed, workers=True, verbose=False)
    torch.set_num_threads(max(1, run.scaling.cpus_per_worker))

    if shards is not None:  # tokenized once by the driver; this rank streams its equal share
        shards = Shards.from_dict(shards)
        model_config = shards.model_config
        train_dl, val_dl, test_dl = shard_loaders(run, shards, place.world)
    else:  # read and tokenized here: this rank's share of the splits in memory
        prep = prepare(run)
        model_config = prep.model_config
        train_dl, val_dl, test_dl = prep.loaders(run, place.rank, place.world)
    class_names = model_config["class_names"]
    monitor = run.monitor(len(class_names))
    check_monitor_computed(monitor, model_config["metric_choices"])
    model = TextBertClassifier(model_config)
    quiet_libraries()  # transformers is imported by now: its own switch

    track = Tracking(run, place.run_dir.path, place.rank, tracking)
    with ExitStack() as stack:  # what the trainer's fit needs open (a remote checkpoint's local copy)
        trainer, ckpt_path = place.trainer(trainer_args(run, track), track.callbacks(), monitor, model_config, stack)
        trainer.fit(model, train_dl, val_dl, ckpt_path=ckpt_path)
    place.trained(model)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if test_dl is not None:
        trainer.test(model, test_dl, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test")})
        write_predictions(model, class_names, place.predictions_path)
    track.finish()
    return place.finish(metrics)


def _ignore_known_warnings() -> None:
    # torchmetrics already syncs its state across ranks in compute(); Lightning's advice does not apply.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # frozen layers, on purpose
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")  # Lightning, torch 2.13


def trainer_args(run: RunConfig, track: Tracking) -> dict[str, Any]:
    """The Lightning Trainer's arguments that do not depend on where it runs."""
    return dict(
        max_epochs=run.train.max_epochs,
        precision=precision_for(run),
        gradient_clip_val=run.train.gradient_clip_val,
        accumulate_grad_batches=run.train.accumulate_grad_batches,
        limit_train_batches=run.train.limit_train_batches,
        limit_val_batches=run.train.limit_val_batches,
        log_every_n_steps=run.train.log_every_n_steps,
        enable_progress_bar=False,  # ProgressLog writes lines that read well in job logs
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our batch sampler shards by rank itself
        logger=track.loggers() or False,  # rank 0: TensorBoard (+ MLflow); other ranks log nothing
        deterministic=False,
    )


class Place(Protocol):
    """Where `train_loop` runs: its rank, the run directory, the trainer it builds and what it keeps."""

    rank: int
    world: int
    run_dir: RunDir
    predictions_path: str  # where the test step's rows go

    def trainer(
        self, args: dict[str, Any], callbacks: list[Any], monitor: str, model_config: dict[str, Any], stack: ExitStack
    ) -> tuple[Any, str | None]:
        """(the Lightning trainer, the checkpoint `fit` continues from or None)."""
        ...

    def trained(self, model: Any) -> None:
        """After fit: a record of the trained weights, where the place keeps one."""
        ...

    def finish(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The metrics `train_loop` returns, after whatever this place writes at the end."""
        ...


class LocalPlace:
    """In this process (`runtime: local`): one device, Lightning's checkpoints in the run's output directory."""

    rank, world = 0, 1

    def __init__(self, run: RunConfig) -> None:
        self.run = run
        self.out_dir = Path(run.train.output_dir or Path("runs") / run.name)
        self.run_dir = RunDir.at(str(self.out_dir))
        self.predictions_path = self.run_dir.local_predictions
        self.best: Any = None

    def trainer(
        self, args: dict[str, Any], callbacks: list[Any], monitor: str, model_config: dict[str, Any], stack: ExitStack
    ) -> tuple[Any, str | None]:
        import lightning.pytorch as pl
        from lightning.pytorch.callbacks import ModelCheckpoint

        run = self.run
        self.out_dir.mkdir(parents=True, exist_ok=True)
        Path(self.run_dir.local_config).write_text(dumps({**run.to_dict(), "model": model_config}))
        self.best = ModelCheckpoint(
            dirpath=self.run_dir.local_checkpoints,
            filename="epoch{epoch}-" + monitor + "{" + monitor + ":.4f}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode=run.train.mode,
            save_top_k=run.train.save_top_k,
            save_last=True,
        )
        trainer = pl.Trainer(
            accelerator="gpu" if run.scaling.use_gpu else "cpu",
            devices=1,
            callbacks=[*callbacks, self.best],
            default_root_dir=str(self.out_dir),
            **args,
        )
        return trainer, None

    def trained(self, model: Any) -> None:
        pass

    def finish(self, metrics: dict[str, Any]) -> dict[str, Any]:
        metrics["best_checkpoint"] = self.best.best_model_path
        Path(self.run_dir.local_metrics).write_text(dumps(metrics))
        return metrics


class RayPlace:
    """On a Ray Train worker (`runtime: ray`): DDP over the worker group; Ray keeps the checkpoints."""

    def __init__(self, run: RunConfig, shared_data: bool) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.run, self.rank, self.world = run, ctx.get_world_rank(), ctx.get_world_size()
        self.run_dir = RunDir(run.storage or ".", run.name)
        self.predictions_path = self.run_dir.predictions_part(self.rank)  # one part per worker
        self.where = {"pid": os.getpid(), "node_id": _node_id(), "data": "shard" if shared_data else "own"}

    def trainer(
        self, args: dict[str, Any], callbacks: list[Any], monitor: str, model_config: dict[str, Any], stack: ExitStack
    ) -> tuple[Any, str | None]:
        import lightning.pytorch as pl
        import ray.train
        from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback, prepare_trainer

        run = self.run
        remove_staged_checkpoints(run.name, self.rank)  # a killed worker's copy (its job driver killed, `bsm stop`)
        report = RayTrainReportCallback()
        # Ray's callback removes each epoch's copy but leaves their (empty) parent
        stack.callback(shutil.rmtree, report.tmpdir_prefix, ignore_errors=True)
        trainer = pl.Trainer(
            accelerator="gpu" if run.scaling.use_gpu else "cpu",
            devices="auto",
            strategy=RayDDPStrategy(),
            plugins=[RayLightningEnvironment()],
            callbacks=[*callbacks, report],
            enable_checkpointing=False,  # Ray keeps the checkpoints (best k + latest) in run storage
            default_root_dir=os.getcwd(),
            **args,
        )
        trainer = prepare_trainer(trainer)
        ckpt_path = None
        checkpoint = ray.train.get_checkpoint()
        if checkpoint:  # a restart (worker failure, or the run resumed): continue after the last report
            # In place for local storage; a temporary copy, removed when the stack closes, for remote storage.
            local = stack.enter_context(checkpoint.as_directory())
            ckpt_path = os.path.join(local, RayTrainReportCallback.CHECKPOINT_NAME)
            log.warning("resuming from checkpoint %s", checkpoint.path)
            if self.rank == 0:  # a record the run's summary counts
                note = {"resumed_from": checkpoint.path, "time": time.time()}
                write_bytes(dumps(note).encode(), join(self.run_dir.restarts, f"{time.time_ns()}.json"))
        self._record()  # where it ran, and how its data came: its shard of the datasets prepared once, or its own
        return trainer, ckpt_path

    def trained(self, model: Any) -> None:
        self._record(weights_sha256=weights_digest(model))

    def finish(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return metrics

    def _record(self, **extra: Any) -> None:
        write_bytes(dumps({**self.where, **extra}).encode(), self.run_dir.worker(self.rank))


def weights_digest(model: Any) -> str:
    """sha256 over every parameter and buffer, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def write_predictions(model: Any, class_names: list[str], dest: str) -> None:
    """The test step's rows -> Parquet: id, label, predicted label, one probability column per class, and the
    chunks kept and whether the dialogue was truncated (bsm report's accuracy by length)."""
    import pyarrow as pa

    rows = model.test_rows
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "label": [class_names[r["label"]] for r in rows],
            "predicted": [class_names[r["pred"]] for r in rows],
            **{f"prob_{c}": [r["probs"][i] for r in rows] for i, c in enumerate(class_names)},
            "num_chunks": pa.array([r["num_chunks"] for r in rows], pa.int32()),  # chunks the model read
            "truncated": pa.array([r["truncated"] for r in rows], pa.bool_()),  # it had more than max_chunks
        }
    )
    write_table(table, dest)
    log.info("wrote %d test predictions to %s", table.num_rows, dest)
