"""The training loop for one worker, written once.

`train_loop(config)` runs in-process for a local run (`runtime: local`) and, unchanged, on every Ray Train
worker (`runtime: ray`, set by the launcher): there the Lightning trainer gets Ray's DDP strategy, cluster
environment and report callback, and resumes from the checkpoint Ray hands back after a worker failure.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytune_bsm.logs import setup_logging  # noqa: F401  (the job entrypoints' logging)
from raytune_bsm.config import RunConfig, check_monitor_computed, dumps
from raytune_bsm.data.dataset import Collate, EncodedDataset, LengthGroupedBatchSampler, Labels, load_split, split_off
from raytune_bsm.errors import ConfigError, DataError
from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig

log = logging.getLogger("raytune_bsm")


@dataclass
class Prepared:
    """Everything the model and the loaders need, built from the files before the model exists."""

    model_config: dict[str, Any]
    labels: Labels
    processor: ChunkProcessor
    train: EncodedDataset
    val: EncodedDataset
    test: EncodedDataset | None


def demo_data_dir(rows: int = 1000, seed: int = 0) -> Path:
    """The demo data, generated once per machine (atomically, so concurrent workers are safe)."""
    from raytune_bsm.layout import bsm_home
    from raytune_bsm.demo.generator import write_demo_data

    import hashlib

    from raytune_bsm.demo import generator as demo

    from raytune_bsm.demo import phrases as demo_phrases

    # A new generator or new phrases: new data.
    source = b"".join(Path(m.__file__).read_bytes() for m in (demo, demo_phrases))
    version = hashlib.sha256(source).hexdigest()[:8]
    out = bsm_home() / "demo-data" / f"rows{rows}-seed{seed}-{version}"
    if not all((out / f"{s}.parquet").exists() for s in ("train", "val", "test")):
        out.mkdir(parents=True, exist_ok=True)
        write_demo_data(out, rows=rows, seed=seed)
    return out


def data_paths(run: RunConfig) -> dict[str, str | None]:
    """The run's data files; the demo data when none are given."""
    d = run.data
    if d.train is None:
        if d.val is not None or d.test is not None:
            raise ConfigError("--val/--test given without --train; give --train too")
        demo = demo_data_dir(d.demo_rows)
        log.info("no --train given: using the demo data in %s", demo)
        return {s: str(demo / f"{s}.parquet") for s in ("train", "val", "test")}
    return {"train": d.train, "val": d.val, "test": d.test}


def prepare(run: RunConfig) -> Prepared:
    """Read, check and process every split. Any bad input raises here, before a model or file exists."""
    paths = data_paths(run)
    num_classes = run.model.get("num_classes")  # None: inferred from the training labels
    train_split, labels = load_split(paths["train"], run.data, None, num_classes)
    if paths["val"]:
        val_split, _ = load_split(paths["val"], run.data, labels)
    else:
        train_split, val_split = split_off(train_split, run.data.val_fraction, run.data.split_seed)
    test_split = load_split(paths["test"], run.data, labels)[0] if paths["test"] else None

    n = len(labels.names)
    model_config = run.model_config(
        is_binary=n == 2, num_classes=n, class_names=labels.names, id_name=run.data.id_field or "id"
    )
    processor = ChunkProcessor(ProcessorConfig.of_model(model_config))

    def encode(split: Any, tag: str) -> EncodedDataset:
        t = time.perf_counter()
        p = processor(split.texts)
        log.info(
            "%s: %d records, %d tokens in %.1fs; %d record(s) longer than %d chunks kept their %s %d",
            tag, len(split.texts), p.tokens, time.perf_counter() - t, p.truncated,
            processor.config.max_chunks, processor.config.keep_chunks, processor.config.max_chunks,
        )  # fmt: skip
        keep = [i for i, lens in enumerate(p.lens) if len(lens)]
        if len(keep) < len(p.lens):  # text that tokenizes to nothing (e.g. only stripped accents)
            log.warning("%s: skipped %d record(s) whose dialogue has no tokens", tag, len(p.lens) - len(keep))
            if not keep:
                raise DataError(f"{split.path}: no dialogue in column {run.data.text_field!r} has any tokens")
        return EncodedDataset(
            [p.ids[i] for i in keep], [p.lens[i] for i in keep], split.labels[keep], [split.ids[i] for i in keep]
        )

    return Prepared(
        model_config=model_config,
        labels=labels,
        processor=processor,
        train=encode(train_split, "train"),
        val=encode(val_split, "val"),
        test=encode(test_split, "test") if test_split is not None else None,
    )


def loaders(run: RunConfig, prep: Prepared, rank: int = 0, world: int = 1) -> tuple[Any, Any, Any]:
    from torch.utils.data import DataLoader

    cfg = prep.model_config

    def make(ds: EncodedDataset, train: bool) -> DataLoader:
        sampler = LengthGroupedBatchSampler(
            ds.padded_cost(),
            run.data.batch_size if train else run.data.eval_batch_size,
            shuffle=train,
            group_by_length=run.data.group_by_length or not train,  # eval: always sort, it changes nothing
            seed=run.train.seed,
            num_replicas=world,
            rank=rank,
        )
        collate = Collate(ds, cfg["text_name"], cfg["label_name"], cfg["id_name"], prep.processor.pad_id)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=run.data.num_workers)

    return make(prep.train, True), make(prep.val, False), (make(prep.test, False) if prep.test else None)


def precision_for(run: RunConfig) -> str:
    import torch

    if run.train.precision != "auto":
        return run.train.precision
    if run.scaling.use_gpu and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


class ProgressLog:
    """Lightning callback: a progress line on stderr every ~10% of an epoch, readable in job logs."""

    def __new__(cls, *a: Any, **k: Any) -> Any:  # built lazily so importing this module does not import lightning
        import lightning.pytorch as pl

        class _ProgressLog(pl.Callback):
            def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
                self.t0, self.seen = time.perf_counter(), 0
                self.every = max(1, int(trainer.num_training_batches) // 10)

            def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, i: int) -> None:
                self.seen += len(batch[module.config["label_name"]])
                total = int(trainer.num_training_batches)
                if trainer.global_rank == 0 and ((i + 1) % self.every == 0 or i + 1 == total):
                    dt = time.perf_counter() - self.t0
                    eta = dt / (i + 1) * (total - i - 1)
                    loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
                    log.info(
                        "epoch %d/%d  step %d/%d  loss %.4f  %.1f records/s/worker  eta %ds",
                        trainer.current_epoch + 1, trainer.max_epochs, i + 1, total, loss, self.seen / dt, eta,
                    )  # fmt: skip

            def on_validation_end(self, trainer: Any, module: Any) -> None:
                if trainer.global_rank == 0 and not trainer.sanity_checking:
                    shown = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val")}
                    log.info("epoch %d validation: %s", trainer.current_epoch + 1, json.dumps(shown, sort_keys=True))

        return _ProgressLog(*a, **k)


def train_loop(config: dict[str, Any]) -> dict[str, float]:
    """Train (and test, if a test split exists) one model; return the final metrics. Runs on every worker."""
    import lightning.pytorch as pl
    import torch

    from raytune_bsm.model.text_bert import TextBertClassifier

    setup_logging()
    # torchmetrics already syncs its state across ranks in compute(); Lightning's advice does not apply.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # frozen layers, on purpose
    run = RunConfig.from_dict(config)
    on_ray = run.train.runtime == "ray"
    rank, world = 0, 1
    if on_ray:
        import ray.train

        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
    pl.seed_everything(run.train.seed, workers=True)
    torch.set_num_threads(max(1, run.scaling.cpus_per_worker))

    prep = prepare(run)
    monitor = run.monitor(len(prep.labels.names))
    check_monitor_computed(monitor, prep.model_config["metric_choices"])
    train_dl, val_dl, test_dl = loaders(run, prep, rank, world)
    model = TextBertClassifier(prep.model_config)

    callbacks: list[Any] = [ProgressLog()]
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
        logger=False,
        deterministic=False,
    )
    ckpt_path = None
    if on_ray:
        from ray.train.lightning import (
            RayDDPStrategy,
            RayLightningEnvironment,
            RayTrainReportCallback,
            prepare_trainer,
        )

        callbacks.append(RayTrainReportCallback())
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
        if checkpoint:  # a restart after a worker failure: resume where the last report left off
            ckpt_dir = checkpoint.to_directory()
            ckpt_path = os.path.join(ckpt_dir, RayTrainReportCallback.CHECKPOINT_NAME)
            log.warning("resuming from checkpoint %s after a failure", checkpoint.path)
            if rank == 0:  # a record the run's summary counts
                from raytune_bsm.storage import join, write_bytes

                note = {"resumed_from": checkpoint.path, "time": time.time()}
                write_bytes(dumps(note).encode(), join(run.storage or ".", run.name, "bsm_restarts", f"{time.time_ns()}.json"))
        out_dir = None
    else:
        from lightning.pytorch.callbacks import ModelCheckpoint

        out_dir = Path(run.train.output_dir or Path("runs") / run.name)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(dumps({**run.to_dict(), "model": prep.model_config}))
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
        trainer = pl.Trainer(accelerator="cpu" if not run.scaling.use_gpu else "gpu", devices=1,
                             callbacks=callbacks, default_root_dir=str(out_dir), **common)  # fmt: skip

    if on_ray:
        _worker_record(run, rank, {"pid": os.getpid(), "node_id": _node_id()})
    trainer.fit(model, train_dl, val_dl, ckpt_path=ckpt_path)
    if on_ray:  # DDP keeps replicas identical; this record lets anyone check it
        _worker_record(run, rank, {"pid": os.getpid(), "node_id": _node_id(), "weights_sha256": weights_digest(model)})
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if test_dl is not None:
        trainer.test(model, test_dl, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test")})
        write_predictions(model, prep.labels.names, run, out_dir, rank)
    if out_dir is not None:
        metrics["best_checkpoint"] = best.best_model_path  # type: ignore[assignment]
        (out_dir / "metrics.json").write_text(dumps(metrics))
    return metrics


def weights_digest(model: Any) -> str:
    """sha256 over every parameter and buffer, in name order."""
    import hashlib

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
    from raytune_bsm.storage import join, write_bytes

    write_bytes(dumps(record).encode(), join(run.storage or ".", run.name, "bsm_workers", f"rank-{rank}.json"))


def write_predictions(model: Any, class_names: list[str], run: RunConfig, out_dir: Path | None, rank: int) -> str:
    """The test step's rows -> Parquet: id, label, predicted label and one probability column per class."""
    import pyarrow as pa

    from raytune_bsm.storage import join, write_table

    rows = model.test_rows
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "label": [class_names[r["label"]] for r in rows],
            "predicted": [class_names[r["pred"]] for r in rows],
            **{f"prob_{c}": [r["probs"][i] for r in rows] for i, c in enumerate(class_names)},
        }
    )
    if out_dir is not None:
        dest = str(out_dir / "test_predictions.parquet")
    else:  # Ray: one part per worker in the run's storage; the directory reads as one Parquet dataset
        dest = join(run.storage or ".", run.name, "test_predictions", f"part-{rank}.parquet")
    write_table(table, dest)
    log.info("wrote %d test predictions to %s", table.num_rows, dest)
    return dest
