"""The cluster side of `bsm submit`: run the training loop under Ray Train (Train V2 API) on every worker.

`fit(run)` builds a `TorchTrainer` over `train.train_loop`: N workers (one GPU each with --num-gpus, NCCL;
CPU workers with gloo otherwise), checkpoints kept by Ray in `<storage>/<name>/` (the best k by the validation
metric, plus the latest), and `FailureConfig` retries that resume from the latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from raytune_bsm.config import RunConfig, dumps
from raytune_bsm.storage import join, write_bytes

log = logging.getLogger("raytune_bsm")


def trainer_for(run: RunConfig, monitor: str, *, storage: str, callbacks: list[Any] | None = None) -> Any:
    """The TorchTrainer for one run (also the trainer each Tune trial starts)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from raytune_bsm.runner.worker import train_loop

    loop_config = run.to_dict()
    loop_config["train"]["runtime"] = "ray"
    loop_config["storage"] = storage
    return TorchTrainer(
        train_loop_per_worker=train_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if run.scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=run.scaling.num_workers,
            use_gpu=run.scaling.use_gpu,
            resources_per_worker=run.scaling.resources_per_worker(),
            placement_strategy=run.scaling.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=run.train.save_top_k,  # Ray V2 keeps the latest checkpoint on top of these
                checkpoint_score_attribute=monitor,
                checkpoint_score_order=run.train.mode,
            ),
            failure_config=ray.train.FailureConfig(max_failures=run.train.max_failures),
            callbacks=callbacks,  # a Tune trial passes TuneReportCallback here
        ),
    )


def fit(run: RunConfig, *, storage: str) -> dict[str, Any]:
    """Train `run` on the connected Ray cluster; return and store a summary (metrics, checkpoints, failures)."""
    from raytune_bsm.logs import setup_logging
    from raytune_bsm.runner.worker import prepare

    setup_logging()
    # Check the data on the driver first: a bad file fails here in seconds, not on every worker.
    prep = prepare(run)
    monitor = run.monitor(len(prep.labels.names))
    run_dir = join(storage, run.name)
    write_bytes(dumps({**run.to_dict(), "storage": storage, "model": prep.model_config}).encode(), join(run_dir, "bsm_config.json"))

    result = trainer_for(run, monitor, storage=storage).fit()
    best = result.get_best_checkpoint(metric=monitor, mode=run.train.mode) if result.best_checkpoints else None
    export = None
    if best is not None and run.train.export:
        export = export_best(best, run_dir, prep, metrics={k: v for k, v in best_metrics(result, best).items()})
    summary = {
        "name": run.name,
        "run_dir": run_dir,
        "monitor": monitor,
        "metrics": {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))},
        "best_checkpoint": best.path if best else None,
        "checkpoints": [{"path": c.path, **{k: m.get(k) for k in (monitor, "epoch")}} for c, m in result.best_checkpoints],
        "latest_checkpoint": result.checkpoint.path if result.checkpoint else None,
        "error": repr(result.error) if result.error else None,
        "restarts": _restarts(run_dir),
        "export": export,
    }
    write_bytes(dumps(summary).encode(), join(run_dir, "bsm_result.json"))
    log.info("validation metrics: %s", json.dumps({k: round(v, 4) for k, v in summary["metrics"].items() if k.startswith("val")}))
    log.info("checkpoints: %s (best: %s)", run_dir, summary["best_checkpoint"])
    return summary


def best_metrics(result: Any, best: Any) -> dict[str, float]:
    for checkpoint, metrics in result.best_checkpoints:
        if checkpoint.path == best.path:
            return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return {}


def validation_batches(prep: Any) -> list[dict[str, Any]]:
    """Real validation batches of three shapes for the export's parity check: the longest record alone, four
    middling records, and sixteen records spread over every length (short ones padded with empty chunks)."""
    import numpy as np

    from raytune_bsm.data.dataset import Collate

    cfg = prep.model_config
    collate = Collate(prep.val, cfg["text_name"], cfg["label_name"], cfg["id_name"], prep.processor.pad_id)
    order = np.argsort(prep.val.padded_cost(), kind="stable")
    n = len(order)
    picks = [order[-1:], order[n // 2 : n // 2 + 4], order[:: max(1, n // 16)][:16]]
    return [collate([int(i) for i in p]) for p in picks if len(p)]


def export_best(best: Any, run_dir: str, prep: Any, metrics: dict[str, float]) -> str:
    """Export the best checkpoint to `<run dir>/export` (ONNX + TorchScript, parity-checked, manifest last)."""
    from raytune_bsm.model.export import export_checkpoint

    dest = join(run_dir, "export")
    log.info("exporting the best checkpoint %s to %s", best.path, dest)
    manifest = export_checkpoint(
        best.to_directory(), dest, val_batches=validation_batches(prep), metrics=metrics,
        hyperparameters=prep.model_config,
    )  # fmt: skip
    log.info("export parity: %s", json.dumps(manifest.get("parity"), default=str))
    return dest


def _restarts(run_dir: str) -> list[dict[str, Any]]:
    """The failures this run survived: one record per resume from a checkpoint (written by the workers)."""
    import pyarrow.fs as pafs

    from raytune_bsm.storage import filesystem, read_bytes

    fs, path = filesystem(join(run_dir, "bsm_restarts"))
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return [json.loads(read_bytes(join(run_dir, "bsm_restarts", i.base_name))) for i in sorted(infos, key=lambda i: i.base_name)]


def main(config_file: str) -> int:
    """`python -m raytune_bsm.runner.train bsm_job.json`: train the resolved config the job carries; exit non-zero if the run failed."""
    d = json.loads(open(config_file).read())
    storage = d.pop("storage")
    summary = fit(RunConfig.from_dict(d), storage=storage)
    return 1 if summary["error"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
