"""The data a run trains on, read, checked and processed before any model exists, and the model config that
follows from it (`model_config_for`): in this process (`prepare`, a local run) or once for every Train worker,
into Ray's object store (`prepare_ray`). Runs in the job driver (the checks) and in a local run's process. The
loaders that batch the result for one worker are data/loaders.py's."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from raytune_bsm.config import RunConfig
from raytune_bsm.data import features as side
from raytune_bsm.data.batching import ID, PAD, EncodedDataset
from raytune_bsm.data.labels import Labels
from raytune_bsm.data.loaders import Shards, loaders
from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
from raytune_bsm.data.readers import list_files
from raytune_bsm.data.splits import load_split, split_off
from raytune_bsm.demo import generator as demo
from raytune_bsm.demo import phrases as demo_phrases
from raytune_bsm.errors import ConfigError, DataError, raised_in_ray
from raytune_bsm.layout import bsm_home
from raytune_bsm.logs import quiet_libraries

log = logging.getLogger("raytune_bsm")

DATA_KEY = "_bsm_data"  # in a Train worker's loop config: its `Shards` (model config, rows), as a dict


def model_config_for(
    run: RunConfig,
    class_names: list[str] | None,
    feature_fields: list[str] | None = None,
    feature_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model config of `run` trained on data with these classes (None: not known here; a sweep's export reads
    them from the checkpoint) and side features (their names and the training split's statistics)."""
    n = None if class_names is None else len(class_names)
    return run.model_config(
        is_binary=None if n is None else n == 2,
        num_classes=n,
        class_names=class_names,
        id_name=run.data.id_field or ID,
        **side.model_keys(feature_fields, feature_stats),
    )


@dataclass
class Prepared:
    """Everything the model and the loaders need, built from the files before the model exists."""

    model_config: dict[str, Any]
    labels: Labels
    processor: ChunkProcessor
    train: EncodedDataset
    val: EncodedDataset
    test: EncodedDataset | None
    skipped_empty: dict[str, int] = field(default_factory=dict)  # per split: empty dialogues skipped

    def loaders(self, run: RunConfig, rank: int = 0, world: int = 1) -> tuple[Any, Any, Any]:
        """(train, val, test or None) loaders over these splits, for rank `rank` of `world`."""
        return loaders(run, self.model_config, self.processor.pad_id, (self.train, self.val, self.test), rank, world)


def demo_data_dir(rows: int = 1000, seed: int = 0) -> Path:
    """The demo data, generated once per machine (atomically, so concurrent workers are safe)."""
    # A new generator or new phrases: new data.
    source = b"".join(Path(m.__file__).read_bytes() for m in (demo, demo_phrases))
    version = hashlib.sha256(source).hexdigest()[:8]
    out = bsm_home() / "demo-data" / f"rows{rows}-seed{seed}-{version}"
    if not all((out / f"{s}.parquet").exists() for s in ("train", "val", "test")):
        out.mkdir(parents=True, exist_ok=True)
        demo.write_demo_data(out, rows=rows, seed=seed)
    return out


def data_paths(run: RunConfig) -> dict[str, str | None]:
    """The run's data files; the demo data when none are given."""
    d = run.data
    if d.train is None:
        if d.val is not None or d.test is not None:
            raise ConfigError("--val/--test given without --train; give --train too")
        demo_dir = demo_data_dir(d.demo_rows)
        log.info("no --train given: using the demo data in %s", demo_dir)
        return {s: str(demo_dir / f"{s}.parquet") for s in ("train", "val", "test")}
    return {"train": d.train, "val": d.val, "test": d.test}


def prepare(run: RunConfig, paths: dict[str, str | None] | None = None) -> Prepared:
    """Read, check and process every split (`paths`: the run's `data_paths`, when the caller has them). Any bad
    input raises here, before a model or file exists."""
    paths = paths or data_paths(run)
    run = replace(run, data=side.resolve_data(run.data, paths["train"]))  # --features auto -> the columns
    num_classes = run.model.get("num_classes")  # None: inferred from the training labels
    train_split, labels = load_split(paths["train"], run.data, None, num_classes)
    if paths["val"]:
        val_split, _ = load_split(paths["val"], run.data, labels)
    else:
        train_split, val_split = split_off(train_split, run.data.val_fraction, run.data.split_seed)
    test_split = load_split(paths["test"], run.data, labels)[0] if paths["test"] else None

    names = run.data.feature_fields
    stats = side.fit(train_split.features, names) if names else None  # the training split's rows only
    model_config = model_config_for(run, labels.names, names, stats)
    processor = ChunkProcessor(ProcessorConfig.of_model(model_config))
    as_text = bool(names) and model_config["fusion"] == "text"

    def encode(split: Any, tag: str) -> EncodedDataset:
        t = time.perf_counter()
        p = processor(side.as_text(split.texts, split.features, names) if as_text else split.texts)
        log.info(
            "%s: %d records, %d tokens in %.1fs; %d record(s) longer than %d chunks kept their %s %d",
            tag,
            len(split.texts),
            p.tokens,
            time.perf_counter() - t,
            p.truncated,
            processor.config.max_chunks,
            processor.config.keep_chunks,
            processor.config.max_chunks,
        )
        keep = [i for i, lens in enumerate(p.lens) if len(lens)]
        if len(keep) < len(p.lens):  # text that tokenizes to nothing (e.g. only stripped accents)
            log.warning("%s: skipped %d record(s) whose dialogue has no tokens", tag, len(p.lens) - len(keep))
            if not keep:
                raise DataError(f"{split.path}: no dialogue in column {run.data.text_field!r} has any tokens")
        return EncodedDataset(
            [p.ids[i] for i in keep],
            [p.lens[i] for i in keep],
            split.labels[keep],
            [split.ids[i] for i in keep],
            truncated=[p.cut[i] for i in keep],
            features=split.features[keep] if names and not as_text else None,
            feature_names=names if not as_text else None,
        )

    return Prepared(
        model_config=model_config,
        labels=labels,
        processor=processor,
        train=encode(train_split, "train"),
        val=encode(val_split, "val"),
        test=encode(test_split, "test") if test_split is not None else None,
        skipped_empty={
            name: sp.skipped_empty
            for name, sp in (("train", train_split), ("val", val_split), ("test", test_split))
            if sp is not None
        },
    )


@dataclass
class RayPrepared:
    """The splits of a run on Ray: checked, tokenized once and materialized in the object store (the driver holds
    references and row counts, never the records), ready for `TorchTrainer(datasets=...)`."""

    model_config: dict[str, Any]
    labels: Labels
    datasets: dict[str, Any]  # "train", "val" and maybe "test" -> a materialized ray.data.Dataset
    rows: dict[str, int]
    pad_id: int
    sources: dict[str, dict[str, int]]  # per split: {"skipped_empty": k, "files": m}, for bsm_result.json
    pads: dict[str, int]  # per evaluated split: padding copies appended to make equal shares (`pad_to_multiple`)
    shares: dict[str, list[Any]]  # per split: its equal shares for run.scaling.num_workers ranks (runner/shards.py)

    def shards(self) -> Shards:
        """What each Train worker needs to batch its shares (sent in its loop config)."""
        return Shards(self.model_config, self.rows, self.pad_id, self.pads)


def prepare_ray(run: RunConfig) -> RayPrepared:
    """Read, check and tokenize every split once, for `TorchTrainer(datasets=...)`: on the cluster (Ray Data, tasks
    over its CPUs), or, for inputs of at most `data.driver_prepare_mib` MiB in all, in this driver (`prepare`),
    handed to Ray as blocks. Any bad input raises here, before a Train worker starts, with the same lines both ways."""
    import ray.data

    quiet_libraries()  # importing ray.data set its loggers to INFO
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the same split-off every time
    paths = data_paths(run)
    t = time.perf_counter()
    uris = {name: uri for name, uri in paths.items() if uri}
    listed = (
        {name: list_files(uri, getattr(run.data, "format", None)) for name, uri in uris.items()}
        if run.data.driver_prepare_mib > 0
        else {}
    )
    run = replace(run, data=side.resolve_data(run.data, paths["train"], listed.get("train")))
    sizes = [f.size for files in listed.values() for f in files]
    if listed and None not in sizes and sum(sizes) <= run.data.driver_prepare_mib * 2**20:  # type: ignore[operator]
        log.info(
            "%.1f MiB of input (at most data.driver_prepare_mib=%g): read and tokenized by this driver",
            sum(sizes) / 2**20,
            run.data.driver_prepare_mib,
        )  # type: ignore[arg-type]
        prep = prepare(run, paths)
        parts = {"train": prep.train, "val": prep.val, "test": prep.test}
        datasets = {name: _blocks(ds) for name, ds in parts.items() if ds is not None}
        sources = {
            name: {"skipped_empty": prep.skipped_empty.get(name, 0), "files": len(listed.get(name, []))}
            for name in datasets
        }
        stats = prep.model_config.get("feature_stats")
        return _finish(run, paths, datasets, sources, prep.labels, prep.processor.pad_id, t, stats)
    from raytune_bsm.data.ray_data import prepare_splits

    splits = prepare_splits(
        uris,
        run.data,
        ProcessorConfig.of_model(run.model_config()).to_dict(),
        None,
        run.model.get("num_classes"),
        listed=listed,
        as_text=run.model_config()["fusion"] == "text",
    )
    # One split after another: each pass has the cluster's CPUs to itself (passes run at once would each see
    # the others' tasks holding every CPU, and Ray Data warns that it may hang)
    with raised_in_ray():  # a file that fails to parse midway is a DataError raised in a read task
        datasets = {name: ds.materialize() for name, ds in splits.datasets.items()}
    sources = {
        name: {"skipped_empty": splits.skipped_empty[name], "files": len(splits.files[name])} for name in datasets
    }
    if "val" not in datasets:
        n = datasets["train"].count()
        n_val = max(1, int(round(n * run.data.val_fraction)))
        if n - n_val < 1:
            raise DataError(f"{paths['train']}: {n} row(s) are too few to split off a validation set")
        datasets["train"], datasets["val"] = datasets["train"].train_test_split(
            n_val, shuffle=True, seed=run.data.split_seed
        )
        sources["val"] = {"skipped_empty": 0, "files": 0}  # split off the training files (counted there)
        if splits.feature_stats is not None:  # the checking pass saw the split-off rows too: train's alone
            splits.feature_stats = _train_stats(datasets["train"], run.data.feature_fields)
    return _finish(run, paths, datasets, sources, splits.labels, splits.pad_id, t, splits.feature_stats)


def _train_stats(ds: Any, names: list[str]) -> dict[str, Any]:
    """`feature_stats` of a materialized split (a pass over its feature columns in the object store, no file
    read): where the validation rows were split off the training files after the checking pass."""
    import numpy as np

    columns = [side.PREFIX + n for n in names]
    rows = ds.select_columns(columns).map_batches(
        lambda b: {"m": [side.Moments.of(np.stack([b[c] for c in columns], 1).astype(np.float32)).to_row()]},
        batch_format="numpy",
    )
    parts = [side.Moments.from_row(r["m"]) for r in rows.take_all()]
    return sum(parts[1:], parts[0]).stats(names)


def _finish(
    run: RunConfig,
    paths: dict[str, str | None],
    datasets: dict[str, Any],
    sources: dict[str, dict[str, int]],
    labels: Labels,
    pad_id: int,
    started: float,
    stats: dict[str, Any] | None = None,
) -> RayPrepared:
    """Row counts, evaluated splits padded to equal shares, the model config: the end of either way."""
    from raytune_bsm.runner.shards import shares  # ray.train: imported where Ray runs

    rows = {name: ds.count() for name, ds in datasets.items()}
    for name, n in rows.items():
        if n == 0:
            raise DataError(
                f"{paths.get(name) or paths['train']}: no dialogue in column {run.data.text_field!r} has any tokens"
            )
    pads = {}
    for name in ("val", "test"):  # evaluated in full: padded to equal shares rather than cut to them
        if name in datasets:
            datasets[name], pads[name] = pad_to_multiple(datasets[name], rows[name], run.scaling.num_workers)
    log.info(
        "tokenized once in %.1fs: %s records",
        time.perf_counter() - started,
        ", ".join(f"{k} {v}" for k, v in rows.items()),
    )
    model_config = model_config_for(run, labels.names, run.data.feature_fields, stats)
    return RayPrepared(
        model_config, labels, datasets, rows, pad_id, sources, pads, shares(datasets, run.scaling.num_workers)
    )


BLOCK_ROWS = 4096  # records per block of a split prepared by the driver


def _blocks(ds: EncodedDataset) -> Any:
    """A split the driver prepared -> a materialized Ray Dataset of the records `data.ray_data.tokenize` gives."""
    import pyarrow as pa
    import ray.data

    from raytune_bsm.data.ray_data import records_table

    ids = pa.array(ds.record_ids) if any(i is not None for i in ds.record_ids) else pa.nulls(len(ds))
    cut = ds.truncated if ds.truncated is not None else [False] * len(ds)
    table = records_table(ds.ids, ds.lens, cut, ds.labels, ids, ds.features, ds.feature_names)
    return ray.data.from_arrow(
        [table.slice(i, BLOCK_ROWS) for i in range(0, max(1, table.num_rows), BLOCK_ROWS)]
    ).materialize()


def pad_to_multiple(ds: Any, rows: int, world: int) -> tuple[Any, int]:
    """(`ds` with copies of its first record marked `pad` appended up to a multiple of `world` rows, how many).
    Ray Train cuts every split into equal shares (the same batch count on every rank, or DDP hangs), dropping
    up to world-1 rows; a validation or test split must lose none, so it gets copies the model counts nowhere."""
    import pyarrow as pa
    import ray.data

    k = -rows % max(1, world)
    if k == 0:
        return ds, 0
    first = pa.Table.from_pylist(ds.take(1))
    copies = first.take(pa.array([0] * k)).set_column(first.schema.get_field_index(PAD), PAD, pa.array([True] * k))
    return ds.union(ray.data.from_arrow(copies.cast(ds.schema().base_schema))).materialize(), k
