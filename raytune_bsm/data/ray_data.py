"""A run's splits through Ray Data: read on the cluster, checked by distributed aggregation, tokenized once.

    files of every split (listed on the driver: metadata only)
      -> one Ray task per file, reading it with the local path's readers on the files' pyarrow filesystem
      -> per-batch summaries (rows, null labels, empty dialogues, the distinct labels) of every split in one
         pass, reduced on the driver: the class set from the training split, then every split checked
      -> map_batches(tokenize) as plain tasks over the cluster's CPUs: a worker process builds its ChunkProcessor
         once, from the tokenizer's JSON (no transformers, no torch in a data task), and keeps it
      -> per split a ray.data.Dataset of processed records, and its row count (for the learning-rate schedule)

The driver never holds the data: it reads the files' schemas (`check_schema`) and the summaries, one small row
per batch. When a summary shows a problem in a file, the driver checks that one file with the same code as the
local path (`splits.load_files`), so the error is the same line, naming the file and the row.

The runner (`runner/prepare.prepare_ray`) materializes the tokenized splits once per run or sweep and hands them
to `TorchTrainer(datasets=...)`; each worker streams its shard through `data/streaming.ShardBatches`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from raytune_bsm.config import DataConfig
from raytune_bsm.data import features as side
from raytune_bsm.data.batching import CHUNK_LENS, COST, ID, INPUT_IDS, LABEL, PAD, TRUNCATED
from raytune_bsm.data.columns import is_text, plain, shown
from raytune_bsm.data.labels import MAX_CLASSES, Labels
from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
from raytune_bsm.data.readers import ID_CANDIDATES, DataFile, iter_file, read_schema, row_group_bytes
from raytune_bsm.data.splits import check_schema, is_empty, load_files
from raytune_bsm.errors import DataError, raised_in_ray

PATH = "path"  # the column read_files adds with include_paths=True: the file's path in its filesystem


@dataclass
class RaySplit:
    """A checked, tokenized split on the cluster: records with `input_ids` and `chunk_lens` (int32 lists, as the
    processor gives them), `truncated` (more than max_chunks chunks), `label` (class index), `id`, and `cost`
    (chunks x longest chunk, for length grouping)."""

    dataset: Any  # ray.data.Dataset
    rows: int  # records in `dataset` (empty dialogues skipped)
    labels: Labels
    skipped_empty: int
    files: list[DataFile]


def read_split(
    uri: str, cfg: DataConfig, format: str | None = None, files: list[DataFile] | None = None
) -> tuple[Any, list[DataFile], str | None]:
    """(a Ray Dataset of the split's text, label and id columns plus `path`, its files, the id column); `files`:
    the split's listing, when the caller has it already."""
    files = check_schema(uri, cfg, format or getattr(cfg, "format", None), files)
    names = read_schema(files[0]).names
    id_field = cfg.id_field or next((c for c in ID_CANDIDATES if c in names), None)
    columns = [cfg.text_field, cfg.label_field] + ([id_field] if id_field else []) + list(cfg.feature_fields or [])
    return read_files(files, columns, include_paths=True), files, id_field


def read_files(files: list[DataFile], columns: list[str], *, include_paths: bool = False) -> Any:
    """The listed files as one Ray Dataset of `columns` (plus `path` with include_paths): a Ray task per file (per
    run of row groups of a big Parquet file, see `read_units`), reading it with the local path's readers
    (`readers.iter_file`) in blocks of BLOCK_ROWS rows. A stage after this one (tokenizing, checking, scoring)
    fuses into the same task, so a file is read and processed where it lands, and a split of n files keeps
    min(n, the cluster's CPUs) tasks busy on every node. (Ray Data's own readers pack small files together: eight
    1 MB Parquet files made one read task, so a second node never got any work.)"""
    import ray.data

    units = read_units(files)
    items = ray.data.from_items([{"unit": k} for k in range(len(units))], override_num_blocks=len(units))
    return items.map_batches(
        read_unit,
        fn_kwargs=dict(files=files, units=units, columns=columns, include_paths=include_paths),
        batch_size=1,
        batch_format="pyarrow",
    )


BLOCK_ROWS = 4096  # rows a read task hands on at a time: a batch of the tokenizing stage
UNIT_BYTES = 128 << 20  # a Parquet file bigger than this is read by several tasks, a run of its row groups each


def read_units(files: list[DataFile]) -> list[tuple[int, list[int] | None]]:
    """What one read task reads: (a file's index, None for all of it, or a run of its row groups). A Parquet file
    of more than UNIT_BYTES is cut into runs of row groups of about UNIT_BYTES (its footer is read here, on the
    driver: one small read per big file), so a single big file still spreads over the cluster."""
    units: list[tuple[int, list[int] | None]] = []
    for k, f in enumerate(files):
        if f.format != "parquet" or f.size is None or f.size <= UNIT_BYTES:
            units.append((k, None))
            continue
        runs: list[list[int]] = [[]]
        size = 0
        for g, nbytes in enumerate(row_group_bytes(f)):
            if size >= UNIT_BYTES:
                runs.append([])
                size = 0
            runs[-1].append(g)
            size += nbytes
        units += [(k, run) for run in runs if run] or [(k, None)]
    return units


def read_unit(
    item: pa.Table,
    *,
    files: list[DataFile],
    units: list[tuple[int, list[int] | None]],
    columns: list[str],
    include_paths: bool,
) -> Iterator[pa.Table]:
    """The map_batches stage of `read_files`: a one-row table naming a unit -> the blocks of that file (part)."""
    k, row_groups = units[item.column("unit")[0].as_py()]
    f = files[k]
    for block in iter_file(f, columns, BLOCK_ROWS, row_groups):
        # text of any string type as `string` (a view cannot be filtered or taken; dictionaries differ per block)
        block = pa.table([plain(c) for c in block.columns], names=block.column_names)
        yield block.append_column(PATH, pa.array([f.path] * block.num_rows, pa.string())) if include_paths else block


@dataclass
class RaySplits:
    """Every split of a run, checked together and tokenized: what `prepare_splits` returns."""

    datasets: dict[str, Any]  # split name -> its tokenized ray.data.Dataset (lazy: the caller materializes)
    rows: dict[str, int]  # records per split (empty dialogues skipped)
    labels: Labels
    skipped_empty: dict[str, int]
    files: dict[str, list[DataFile]]
    pad_id: int  # the tokenizer's padding id (batches are padded with it)
    feature_stats: dict[str, Any] | None = None  # of the training files' side features, from the checking pass


def prepare_split(
    uri: str,
    cfg: DataConfig,
    processor: dict[str, Any],
    labels: Labels | None = None,
    num_classes: int | None = None,
    *,
    format: str | None = None,
) -> RaySplit:
    """One split through `prepare_splits`: read, checked and tokenized on the cluster."""
    out = prepare_splits({"train": uri}, cfg, processor, labels, num_classes, format=format)
    return RaySplit(
        dataset=out.datasets["train"],
        rows=out.rows["train"],
        labels=out.labels,
        skipped_empty=out.skipped_empty["train"],
        files=out.files["train"],
    )


def prepare_splits(
    uris: dict[str, str],
    cfg: DataConfig,
    processor: dict[str, Any],
    labels: Labels | None = None,
    num_classes: int | None = None,
    *,
    format: str | None = None,
    listed: dict[str, list[DataFile]] | None = None,
    as_text: bool = False,
) -> RaySplits:
    """Read, check and tokenize a run's splits on the cluster. `uris`: split name -> file, directory or glob, the
    training split first (with `labels=None` its labels give the class set); `processor`: a ProcessorConfig's
    fields; `listed`: splits' file listings the caller has already (not listed again). Every split is checked in one distributed pass, which finishes before anything is tokenized; then
    each split is tokenized by plain Ray tasks over the cluster's CPUs (no actor to start: a worker process
    builds its tokenizer once, from JSON the driver sends, without transformers or torch). Side features
    (`cfg.feature_fields`, resolved) ride along as columns; their statistics come from the checking pass over the
    training files; `as_text` writes them into the dialogue instead (data/features.py)."""
    reads = {name: read_split(uri, cfg, format, (listed or {}).get(name)) for name, uri in uris.items()}
    summaries = _summaries([f for _, files, _ in reads.values() for f in files], cfg)
    rows, skipped = {}, {}
    for name, (_, files, _) in reads.items():
        labels, rows[name], skipped[name] = judge(summaries, files, uris[name], cfg, labels, num_classes)
    assert labels is not None
    names = list(cfg.feature_fields or [])
    train_paths = {f.path for f in reads["train"][1]} if "train" in reads else set()
    moments = [side.Moments.from_row(s["moments"]) for s in summaries if s[PATH] in train_paths and names]
    stats = sum(moments[1:], moments[0]).stats(names) if moments else None
    chunker = ChunkProcessor(ProcessorConfig(**processor))
    stage = dict(
        processor=processor,
        tokenizer_json=chunker.tokenizer_json(),
        pad_id=chunker.pad_id,
        labels=labels,
        text_field=cfg.text_field,
        label_field=cfg.label_field,
        feature_names=names,
        as_text=as_text,
    )
    datasets = {
        # batch_size=None: a block at a time (the processor batches inside), so Ray Data fuses the read and the
        # tokenizing into one task per block, and no raw text crosses between processes
        name: ds.map_batches(
            tokenize, fn_kwargs={**stage, "id_field": id_field}, batch_size=None, batch_format="pyarrow"
        )
        for name, (ds, _, id_field) in reads.items()
    }
    return RaySplits(
        datasets, rows, labels, skipped, {name: files for name, (_, files, _) in reads.items()}, chunker.pad_id, stats
    )


def _summaries(files: list[DataFile], cfg: DataConfig) -> list[dict[str, Any]]:
    """Per-batch summaries of every listed file (each read once, even where two splits name it), one Ray Data
    pass over all of them: one read of many files starts its tasks together, where a pass per split (or a
    union of reads) pays Ray Data's start-up once per split."""
    unique = list({f.path: f for f in files}.values())
    names = list(cfg.feature_fields or [])
    ds = read_files(unique, [cfg.text_field, cfg.label_field, *names], include_paths=True)
    with raised_in_ray():  # a file that fails to parse midway: the reader's own error, naming the file and row
        rows = ds.map_batches(
            file_summary,
            fn_kwargs=dict(text_field=cfg.text_field, label_field=cfg.label_field, feature_names=names),
            batch_format="pyarrow",
        ).take_all()
    return [{**r, "moments": json.loads(r["moments"])} for r in rows]


def judge(
    summaries: list[dict[str, Any]],
    files: list[DataFile],
    uri: str,
    cfg: DataConfig,
    labels: Labels | None,
    num_classes: int | None,
) -> tuple[Labels, int, int]:
    """The checks of `load_split` for one split, from the batch summaries of its `files` (summaries of other
    files are passed over): (labels, records kept, empty dialogues skipped). A file the summaries show a problem
    in is read alone by the local path's code, for its own error."""
    by_path = {f.path: f for f in files}
    per_file: dict[str, dict[str, Any]] = {f.path: {"rows": 0, "nulls": 0, "empty": 0, "labels": set()} for f in files}
    for s in summaries:
        f = by_path.get(s[PATH])
        if f is None:  # another split's file
            continue
        acc = per_file[f.path]
        acc["rows"] += s["rows"]
        acc["nulls"] += s["nulls"]
        acc["empty"] += s["empty"]
        acc["labels"].update(s["labels"])

    def explain(f: DataFile, with_labels: Labels | None) -> DataError:
        """The local path's own error for this file (same words, its row numbers)."""
        try:
            load_files([f], f.name, cfg, with_labels, num_classes)
        except DataError as e:
            return e
        return DataError(f"{f.name}: failed the check on the cluster but not when read alone; is it being rewritten?")

    for f in files:
        acc = per_file[f.path]
        if acc["rows"] == 0 or acc["nulls"] or (acc["empty"] and cfg.empty_dialogues == "error"):
            raise explain(f, labels)
        if len(acc["labels"]) > MAX_CLASSES:
            raise explain(f, None)
    if labels is None:
        union = set().union(*(acc["labels"] for acc in per_file.values()))
        if num_classes is not None and all(isinstance(v, int) and not isinstance(v, bool) for v in union):
            bad = next((f for f in files if any(not 0 <= v < num_classes for v in per_file[f.path]["labels"])), None)
            if bad is not None:
                raise explain(bad, None)
        column = pa.chunked_array([pa.array(sorted(union))])
        labels = Labels.infer(column, uri if len(files) > 1 else files[0].name, cfg.label_field, num_classes)
    for f in files:
        if per_file[f.path]["labels"] - set(labels.index):
            raise explain(f, labels)
    total = sum(acc["rows"] for acc in per_file.values())
    empty = sum(acc["empty"] for acc in per_file.values())
    if total == empty:
        raise DataError(f"{uri}: every dialogue in column {shown(cfg.text_field)} is empty")
    return labels, total - empty, empty


def file_summary(batch: pa.Table, text_field: str, label_field: str, feature_names: list[str]) -> pa.Table:
    """One row per file in the batch: its rows, null labels, empty dialogues, distinct labels (capped) and the
    side features' partial moments (JSON; the training split's statistics are their sum)."""
    import pyarrow.compute as pc

    out: dict[str, list[Any]] = {PATH: [], "rows": [], "nulls": [], "empty": [], "labels": [], "moments": []}
    for path in pc.unique(batch.column(PATH)).to_pylist():
        part = batch.filter(pc.equal(batch.column(PATH), path))
        label = part.column(label_field)
        if is_text(label.type):
            label = plain(label)
        elif pa.types.is_dictionary(label.type):
            label = label.cast(label.type.value_type)
        out[PATH].append(path)
        out["rows"].append(part.num_rows)
        out["nulls"].append(label.null_count)
        out["empty"].append(sum(is_empty(t) for t in part.column(text_field).to_pylist()))
        out["labels"].append(pc.unique(label.drop_null()).to_pylist()[: MAX_CLASSES + 1])
        texts = part.column(text_field).to_pylist()  # moments of the rows training keeps (a dialogue)
        kept = part.take(pa.array([i for i, t in enumerate(texts) if not is_empty(t)], pa.int64()))
        x = side.to_matrix(kept, feature_names) if feature_names else None
        out["moments"].append(json.dumps(side.Moments.of(x).to_row()) if x is not None else "null")
    return pa.table(out)


_PROCESSORS: dict[tuple[str, int], ChunkProcessor] = {}  # per worker process: built once, reused by every task


def tokenize(
    batch: pa.Table,
    *,
    processor: dict[str, Any],
    tokenizer_json: str,
    pad_id: int,
    labels: Labels,
    text_field: str,
    label_field: str,
    id_field: str | None,
    feature_names: list[str] | None = None,
    as_text: bool = False,
) -> pa.Table:
    """The map_batches stage: raw records -> processed records (empty dialogues, and text that tokenizes to
    nothing, skipped). A Ray worker process builds its processor on its first batch and keeps it."""
    key = (repr(sorted(processor.items())), hash(tokenizer_json))
    if key not in _PROCESSORS:
        _PROCESSORS.clear()  # one run's processor at a time
        _PROCESSORS[key] = ChunkProcessor.from_tokenizer_json(ProcessorConfig(**processor), tokenizer_json, pad_id)
    chunker = _PROCESSORS[key]
    texts = batch.column(text_field).to_pylist()
    keep = [i for i, t in enumerate(texts) if not is_empty(t)]
    if len(keep) < len(texts):
        batch = batch.take(pa.array(keep, pa.int64()))
        texts = [texts[i] for i in keep]
    x = side.to_matrix(batch, feature_names) if feature_names else None
    out = chunker(side.as_text(texts, x, feature_names) if as_text and x is not None else texts)
    tokened = [i for i, lens in enumerate(out.lens) if len(lens)]  # text that tokenizes to nothing is skipped
    if len(tokened) < len(out.lens):
        batch = batch.take(pa.array(tokened, pa.int64()))
        out.ids, out.lens = [out.ids[i] for i in tokened], [out.lens[i] for i in tokened]
        out.cut = [out.cut[i] for i in tokened]
    y = labels.encode(batch.column(label_field), "a batch", label_field)
    ids = plain(batch.column(id_field)) if id_field else pa.nulls(batch.num_rows)  # text ids as string
    x = x[tokened] if x is not None and not as_text else None
    return records_table(out.ids, out.lens, out.cut, y, ids, x, feature_names)


def records_table(
    ids: list[np.ndarray],
    lens: list[np.ndarray],
    truncated: list[bool],
    labels: Any,
    record_ids: Any,
    features: np.ndarray | None = None,
    feature_names: list[str] | None = None,
) -> pa.Table:
    """Processed records as the table a prepared split holds (the tokenizing tasks' output, and what the driver
    hands to Ray for a small input): one row per record."""
    cost = np.fromiter((len(l) * (int(l.max()) if len(l) else 0) for l in lens), np.int64, len(lens))
    return pa.table(
        {
            INPUT_IDS: pa.array(ids, pa.list_(pa.int32())),  # per record: every kept chunk, back to back
            CHUNK_LENS: pa.array(lens, pa.list_(pa.int32())),  # per record: [n_chunks]
            TRUNCATED: pa.array(truncated, pa.bool_()),  # per record: it had more than max_chunks chunks
            LABEL: pa.array(np.asarray(labels, np.int64)),  # class index
            ID: record_ids,
            COST: pa.array(cost, pa.int64()),  # chunks x longest chunk: the [C, T] area it pads to (length grouping)
            PAD: pa.array(np.zeros(len(lens), np.bool_)),  # a real record (runner/prepare.py adds padding copies)
            # side features: raw float32 per feature, null where missing (data/features.py)
            **{
                side.PREFIX + n: pa.array(features[:, k], pa.float32(), from_pandas=True)
                for k, n in enumerate(feature_names or [])
                if features is not None
            },
        }
    )
