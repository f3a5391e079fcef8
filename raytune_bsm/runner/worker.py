"""The training loop for one worker, written once.

`train_loop(config)` runs in-process for a local run (`runtime: local`) and, unchanged, on every Ray Train
worker (`runtime: ray`, set by runner/train.py): there the Lightning trainer gets Ray's DDP strategy, cluster
environment and report callback, and resumes from the checkpoint Ray hands back after a worker failure.
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
from typing import Any

from raytune_bsm.config import RunConfig, check_monitor_computed, dumps
from raytune_bsm.layout import RunDir
from raytune_bsm.logs import quiet_libraries, setup_logging
from raytune_bsm.runner.callbacks import remove_staged_checkpoints
from raytune_bsm.runner.prepare import DATA_KEY, Prepared, data_paths, demo_data_dir, loaders, prepare, shard_loaders  # noqa: F401 (re-exported)
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

    # torchmetrics already syncs its state across ranks in compute(); Lightning's advice does not apply.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # frozen layers, on purpose
    warnings.filterwarnings(
        "ignore", message=".*isinstance\\(treespec, LeafSpec\\).*"
    )  # inside Lightning, for torch 2.13
    config = dict(config)
    tracking = config.pop(TRACKING_KEY, None)
    data = config.pop(DATA_KEY, None)  # on Ray: the prepared datasets' metadata (the records come as shards)
    run = RunConfig.from_dict(config)
    on_ray = run.train.runtime == "ray"
    rank, world = 0, 1
    if on_ray:
        import ray.train

        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
    pl.seed_everything(run.train.seed, workers=True, verbose=False)
    torch.set_num_threads(max(1, run.scaling.cpus_per_worker))

    if data is not None:  # tokenized once by the driver; this rank streams its equal share
        model_config = data["model_config"]
        train_dl, val_dl, test_dl = shard_loaders(run, model_config, data["rows"], data["pad_id"], world, data["pads"])
    else:  # in-process (runtime: local): the splits in memory
        prep = prepare(run)
        model_config = prep.model_config
        train_dl, val_dl, test_dl = loaders(run, prep, rank, world)
    class_names = model_config["class_names"]
    monitor = run.monitor(len(class_names))
    check_monitor_computed(monitor, model_config["metric_choices"])
    model = TextBertClassifier(model_config)
    quiet_libraries()  # transformers is imported by now: its own switch

    out_dir = None if on_ray else Path(run.train.output_dir or Path("runs") / run.name)
    track = Tracking(run, join(run.storage or ".", run.name) if on_ray else str(out_dir), rank, tracking)
    callbacks: list[Any] = track.callbacks()
    common = dict(
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
    with ExitStack() as stack:
        ckpt_path = None
        report = None
        if on_ray:
            from ray.train.lightning import (
                RayDDPStrategy,
                RayLightningEnvironment,
                RayTrainReportCallback,
                prepare_trainer,
            )

            remove_staged_checkpoints(run.name, rank)  # a killed worker's copy (its job driver killed, `bsm stop`)
            report = RayTrainReportCallback()
            callbacks.append(report)
            trainer = pl.Trainer(
                accelerator="gpu" if run.scaling.use_gpu else "cpu",
                devices="auto",
                strategy=RayDDPStrategy(),
                plugins=[RayLightningEnvironment()],
                callbacks=callbacks,
                enable_checkpointing=False,  # Ray keeps the checkpoints (best k + latest) in run storage
                default_root_dir=os.getcwd(),
                **common,
            )
            trainer = prepare_trainer(trainer)
            checkpoint = ray.train.get_checkpoint()
            if checkpoint:  # a restart (worker failure, or the run resumed): continue after the last report
                # In place for local storage; a temporary copy, removed when the stack closes, for remote storage.
                ckpt_path = os.path.join(
                    stack.enter_context(checkpoint.as_directory()), RayTrainReportCallback.CHECKPOINT_NAME
                )
                log.warning("resuming from checkpoint %s", checkpoint.path)
                if rank == 0:  # a record the run's summary counts
                    note = {"resumed_from": checkpoint.path, "time": time.time()}
                    write_bytes(
                        dumps(note).encode(),
                        join(RunDir(run.storage or ".", run.name).restarts, f"{time.time_ns()}.json"),
                    )
            # where it ran, and how its data came: its shard of the datasets prepared once, or read by itself
            _worker_record(run, rank, {"pid": os.getpid(), "node_id": _node_id(), "data": "shard" if data else "own"})
        else:
            from lightning.pytorch.callbacks import ModelCheckpoint

            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.json").write_text(dumps({**run.to_dict(), "model": model_config}))
            best = ModelCheckpoint(
                dirpath=out_dir / "checkpoints",
                filename="epoch{epoch}-" + monitor + "{" + monitor + ":.4f}",
                auto_insert_metric_name=False,
                monitor=monitor,
                mode=run.train.mode,
                save_top_k=run.train.save_top_k,
                save_last=True,
            )
            callbacks.append(best)
            trainer = pl.Trainer(
                accelerator="cpu" if not run.scaling.use_gpu else "gpu",
                devices=1,
                callbacks=callbacks,
                default_root_dir=str(out_dir),
                **common,
            )
        try:
            trainer.fit(model, train_dl, val_dl, ckpt_path=ckpt_path)
        finally:
            if report is not None:  # Ray's callback removes each epoch's copy but leaves their (empty) parent
                shutil.rmtree(report.tmpdir_prefix, ignore_errors=True)
    if on_ray:  # DDP keeps replicas identical; this record lets anyone check it
        _worker_record(
            run,
            rank,
            {
                "pid": os.getpid(),
                "node_id": _node_id(),
                "data": "shard" if data else "own",
                "weights_sha256": weights_digest(model),
            },
        )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if test_dl is not None:
        trainer.test(model, test_dl, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test")})
        write_predictions(model, class_names, run, out_dir, rank)
    track.finish()
    if out_dir is not None:
        metrics["best_checkpoint"] = best.best_model_path  # type: ignore[assignment]
        (out_dir / "metrics.json").write_text(dumps(metrics))
    return metrics


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


def _worker_record(run: RunConfig, rank: int, record: dict[str, Any]) -> None:
    """`<run dir>/bsm_workers/rank-N.json`: where each worker ran (pid, node) and, at the end, its weights."""
    write_bytes(dumps(record).encode(), join(run.storage or ".", run.name, "bsm_workers", f"rank-{rank}.json"))


def write_predictions(model: Any, class_names: list[str], run: RunConfig, out_dir: Path | None, rank: int) -> str:
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
    if out_dir is not None:
        dest = str(out_dir / "test_predictions.parquet")
    else:  # Ray: one part per worker in the run's storage; the directory reads as one Parquet dataset
        dest = join(run.storage or ".", run.name, "test_predictions", f"part-{rank}.parquet")
    write_table(table, dest)
    log.info("wrote %d test predictions to %s", table.num_rows, dest)
    return dest
