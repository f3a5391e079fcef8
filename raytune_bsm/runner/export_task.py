"""The export at a run's end (ONNX + TorchScript, parity-checked, manifest last) as a Ray task of its own.

The job driver reserves no CPU and sits on the head node, so it only schedules: `export_best` asks Ray for a
task with `EXPORT_CPUS` CPUs and `EXPORT_MEMORY` bytes (capped by the largest node), which runs wherever those
are free. The task reads the checkpoint in place (`Checkpoint.as_directory`: no copy for local storage, a
temporary one removed afterwards for remote storage) and builds its parity batches from at most `PARITY_ROWS`
validation records, read with only their text column: nobody holds the validation split for the export.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from raytune_bsm.config import RunConfig
from raytune_bsm.data.batching import Collate, EncodedDataset
from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
from raytune_bsm.data.splits import read_table
from raytune_bsm.errors import ExportError, raised_in_ray
from raytune_bsm.layout import CHECKPOINT_NAME, RunDir
from raytune_bsm.logs import quiet_libraries, setup_logging
from raytune_bsm.runner.prepare import data_paths

log = logging.getLogger("raytune_bsm")

PARITY_ROWS = 64
EXPORT_CPUS = 2
EXPORT_MEMORY = 2 * 2**30


def parity_rows(run: RunConfig, class_names: list[str], limit: int = PARITY_ROWS) -> tuple[list[Any], list[int]]:
    """At most `limit` labelled dialogues for the export's checks (texts, class indices): the first rows of --val,
    or, without one, a seeded draw from --train (the in-memory path's split-off; a Ray run's validation rows may
    differ: any real, labelled rows serve). The int8 metric in the manifest is measured on these labels."""
    import numpy as np

    paths = data_paths(run)
    columns = {run.data.text_field: "--text-field", run.data.label_field: "--label-field"}
    if paths["val"]:
        table = read_table(paths["val"], columns)
        rows = np.arange(min(limit, table.num_rows))
    else:
        table = read_table(paths["train"], columns)
        n = table.num_rows
        n_val = max(1, int(round(n * run.data.val_fraction)))
        rows = np.sort(np.random.default_rng(run.data.split_seed).permutation(n)[:n_val])[:limit]
    index = {name: i for i, name in enumerate(class_names)}  # class names are the labels' own text
    picked = table.take(rows)
    pairs = [
        (t, index[str(y)])
        for t, y in zip(picked.column(0).to_pylist(), picked.column(1).to_pylist())
        if t is not None and y is not None and str(y) in index
    ]
    return [t for t, _ in pairs], [y for _, y in pairs]


def parity_batches(model_config: dict[str, Any], texts: list[Any], labels: list[int]) -> list[dict[str, Any]]:
    """Real labelled batches of three shapes: the longest record alone, four middling records, and sixteen records
    spread over every length (short ones padded with empty chunks)."""
    import numpy as np

    processor = ChunkProcessor(ProcessorConfig.of_model(model_config))
    p = processor(texts)
    keep = [i for i, lens in enumerate(p.lens) if len(lens)]
    if not keep:
        raise ExportError("no validation record has any tokens: nothing to check the export's parity on")
    y = np.asarray([labels[i] for i in keep], np.int64)
    ds = EncodedDataset([p.ids[i] for i in keep], [p.lens[i] for i in keep], y, keep)
    cfg = model_config
    collate = Collate(ds, cfg["text_name"], cfg["label_name"], cfg["id_name"], processor.pad_id)
    order = np.argsort(ds.padded_cost(), kind="stable")
    n = len(order)
    picks = [order[-1:], order[n // 2 : n // 2 + 4], order[:: max(1, n // 16)][:16]]
    return [collate([int(i) for i in pick]) for pick in picks if len(pick)]


def _export(
    checkpoint_path: str,
    dest: str,
    run_dict: dict[str, Any],
    model_config: dict[str, Any],
    metrics: dict[str, Any],
    hyperparameters: dict[str, Any] | None,
    threads: int,
) -> dict[str, Any]:
    """The task's body: parity batches from a few validation rows, then export the checkpoint where it lies."""
    import torch
    from ray.train import Checkpoint

    from raytune_bsm.model.export import export_checkpoint

    setup_logging()
    quiet_libraries()
    torch.set_num_threads(max(1, threads))
    with Checkpoint(checkpoint_path).as_directory() as local:
        names = model_config.get("class_names") or _class_names(local)  # a sweep's export: the checkpoint knows
        batches = parity_batches(model_config, *parity_rows(RunConfig.from_dict(run_dict), names))
        return export_checkpoint(local, dest, val_batches=batches, metrics=metrics, hyperparameters=hyperparameters)


def _class_names(checkpoint_dir: str) -> list[str]:
    """The class names a checkpoint was trained with (its config travels inside it; read without running code)."""
    from raytune_bsm.model.checkpoint import safe_load

    ckpt = safe_load(os.path.join(checkpoint_dir, CHECKPOINT_NAME), "cpu")
    try:
        return list(ckpt["hyper_parameters"]["config"]["class_names"])
    except (KeyError, TypeError):
        raise ExportError(
            f"{checkpoint_dir}: the checkpoint does not say its class names; it was not written by bsm"
        ) from None


def export_resources() -> tuple[int, int]:
    """(CPUs, bytes of memory) for the export task: EXPORT_CPUS and EXPORT_MEMORY, capped by the largest node."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus = min(EXPORT_CPUS, int(max((r.get("CPU", 0) for r in nodes), default=0)))
    memory = min(EXPORT_MEMORY, int(max((r.get("memory", 0) for r in nodes), default=0) * 0.5))
    return max(cpus, 0), max(memory, 0)


def export_best(
    checkpoint_path: str,
    run_dir: str,
    run: RunConfig,
    model_config: dict[str, Any],
    metrics: dict[str, Any],
    hyperparameters: dict[str, Any] | None = None,
) -> str:
    """Export `checkpoint_path` (one Ray kept) to `<run dir>/export` in a Ray task; returns the export's path.
    `model_config` gives the processor and column names of the parity batches; the manifest records
    `hyperparameters`, by default the checkpoint's own model config."""
    import ray

    dest = RunDir.at(run_dir).export
    cpus, memory = export_resources()
    log.info(
        "exporting the best checkpoint %s to %s (a task with %d CPU(s), %.1f GiB)",
        checkpoint_path,
        dest,
        cpus,
        memory / 2**30,
    )
    task = ray.remote(num_cpus=cpus, memory=memory or None, max_retries=0)(_export)
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    with raised_in_ray():
        manifest = ray.get(
            task.remote(checkpoint_path, dest, run.to_dict(), model_config, numbers, hyperparameters, cpus)
        )
    log.info("export parity: %s", json.dumps(manifest.get("parity"), default=str))
    return dest
