"""Data: files -> checked columns -> processed records -> padded batches.

Files are read with pyarrow: Parquet (a file, a directory or a glob), CSV and JSON Lines. Every check runs
before anything is trained or written; a failure is a `DataError` naming the file, the column and the first
offending rows.
"""

from __future__ import annotations

import glob as globlib
import logging
import math
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import pyarrow as pa

from raytune_bsm.config import DataConfig  # noqa: F401  (defined with the other configs; imported from here too)
from raytune_bsm.errors import DataError

log = logging.getLogger(__name__)

PARQUET = (".parquet", ".pq", ".parq")
CSV = (".csv", ".tsv")
JSONL = (".jsonl", ".ndjson", ".json")
ID_CANDIDATES = ("order_id", "id", "record_id")
MAX_SHOWN = 5  # offending rows named in an error


# ----------------------------------------------------------------------------------------------- reading files


def expand_path(path: str) -> list[str]:
    """A file, a directory (every data file under it) or a glob -> sorted file list. Remote URIs pass through."""
    if "://" in path:
        return [path]
    p = Path(path).expanduser()
    if p.is_dir():
        files = _data_files(p)
        if not files:
            raise DataError(f"{path}: directory has no .parquet, .csv or .jsonl files")
        return files
    if any(ch in path for ch in "*?["):
        files: set[str] = set()
        for match in globlib.glob(os.path.expanduser(path), recursive=True):
            if os.path.isdir(match):  # a matched directory is a dataset directory: its data files
                files.update(_data_files(Path(match)))
            else:
                files.add(match)
        if not files:
            raise DataError(f"{path}: no file matches this pattern")
        return sorted(files)
    if not p.exists():
        raise DataError(f"{path}: no such file")
    return [str(p)]


def _data_files(directory: Path) -> list[str]:
    return sorted(str(f) for f in directory.rglob("*") if f.is_file() and f.suffix.lower() in PARQUET + CSV + JSONL)


def read_file(path: str) -> pa.Table:
    """One file -> a table, by its extension. Unreadable or corrupt files are a DataError naming the file."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    suffix = Path(path).suffix.lower()
    if "://" not in path and os.path.isfile(path) and os.path.getsize(path) == 0:
        raise DataError(f"{path}: the file is empty (0 bytes, no rows)")
    try:
        if suffix in PARQUET:
            return pq.read_table(path)
        if suffix in CSV:
            opts = pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True)
            # An empty CSV field is a missing value, also in a string column: an empty label is a null label,
            # not a class named "".
            conv = pcsv.ConvertOptions(strings_can_be_null=True)
            return pcsv.read_csv(path, parse_options=opts, convert_options=conv)
        if suffix in JSONL:
            return pjson.read_json(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read this file as {suffix[1:]}: {str(e).splitlines()[0]}") from None
    raise DataError(f"{path}: unknown file type {suffix!r}; use .parquet, .csv or .jsonl")


def read_table(path: str, columns: dict[str, str]) -> pa.Table:
    """Every file of `path` -> one table of `columns` ({column: the flag that names it}).

    Checks that each file has the columns and is not empty."""
    parts = [_read_part(f, columns) for f in expand_path(path)]
    return _concat([t for _, t in parts], path)


def _read_part(f: str, columns: dict[str, str], table: pa.Table | None = None) -> tuple[str, pa.Table]:
    """One file -> (file, its `columns`), checked for the columns and at least one row."""
    t = read_file(f) if table is None else table
    missing = [c for c in columns if c not in t.column_names]
    if missing:
        raise DataError(
            f"{f}: missing column {missing[0]!r} (columns are {', '.join(t.column_names) or 'none'}); "
            f"name the right one with {columns[missing[0]]}"
        )
    if t.num_rows == 0:
        raise DataError(f"{f}: the file has no rows")
    return f, t.select(list(columns))


def _concat(tables: list[pa.Table], path: str) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as e:
        raise DataError(f"{path}: files disagree on column types: {e}") from None


def _rows(rows: Sequence[int], values: Sequence[Any] | None = None) -> str:
    """The first offending rows: "rows 1, 3" or "row 1 ('x'), row 3 ('y')"."""
    rows = [int(i) for i in rows[:MAX_SHOWN]]
    if values is None:
        return ("row " if len(rows) == 1 else "rows ") + ", ".join(str(i) for i in rows)
    return ", ".join(f"row {i} ({values[i]!r})" for i in rows)


# ------------------------------------------------------------------------------------------------ checking


@dataclass
class Split:
    """One split, checked: texts, label indices and ids, in file order."""

    path: str
    texts: list[Any]
    labels: np.ndarray  # int64 class indices
    ids: list[Any]
    skipped_empty: int = 0


@dataclass
class Labels:
    """Class names in index order. Integer and boolean labels keep their value as the index when they can."""

    names: list[str]
    kind: Literal["int", "bool", "str"]
    index: dict[Any, int] = field(default_factory=dict)

    @classmethod
    def infer(cls, column: pa.ChunkedArray, path: str, label_field: str, num_classes: int | None) -> "Labels":
        kind = _label_kind(column.type, path, label_field)
        values = column.to_pylist()
        distinct = sorted(set(values))
        if kind == "bool":
            return cls(names=["False", "True"], kind=kind, index={False: 0, True: 1})
        if kind == "int":
            lo, hi = distinct[0], distinct[-1]
            n = num_classes if num_classes is not None else max(hi + 1, 2)
            if lo < 0 or hi >= n:
                bad = [i for i, v in enumerate(values) if not 0 <= v < n]
                raise DataError(
                    f"{path}: column {label_field!r} has {len(bad)} label(s) outside 0..{n - 1}"
                    + (" (num_classes)" if num_classes is not None else "")
                    + f": {_rows(bad, values)}"
                )
            return cls(names=[str(i) for i in range(n)], kind=kind, index={i: i for i in range(n)})
        names = [str(v) for v in distinct]
        if num_classes is not None and num_classes != len(names):
            raise DataError(f"{path}: column {label_field!r} has {len(names)} classes but num_classes={num_classes}")
        if len(names) < 2:
            raise DataError(f"{path}: column {label_field!r} has a single class {names[0]!r}; need at least two")
        return cls(names=names, kind=kind, index={v: i for i, v in enumerate(distinct)})

    def encode(self, column: pa.ChunkedArray, path: str, label_field: str) -> np.ndarray:
        kind = _label_kind(column.type, path, label_field)
        if kind != self.kind:
            raise DataError(f"{path}: column {label_field!r} holds {kind} labels but training labels are {self.kind}")
        values = column.to_pylist()
        bad = [i for i, v in enumerate(values) if v not in self.index]
        if bad:
            raise DataError(
                f"{path}: column {label_field!r} has {len(bad)} label(s) not among the classes {self.names}: "
                f"{_rows(bad, values)}"
            )
        return np.fromiter((self.index[v] for v in values), np.int64, len(values))


def _label_kind(t: pa.DataType, path: str, label_field: str) -> Literal["int", "bool", "str"]:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "str"
    raise DataError(f"{path}: column {label_field!r} has type {t}; labels must be integers, booleans or strings")


def _check_text_type(t: pa.DataType, path: str, text_field: str) -> None:
    is_str = pa.types.is_string(t) or pa.types.is_large_string(t)
    is_list = (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)
    )
    if not (is_str or is_list or pa.types.is_null(t)):  # null: every dialogue is missing, reported as empty
        raise DataError(
            f"{path}: column {text_field!r} has type {t}; a dialogue must be a string or a list of strings"
        )


def _check_text(column: pa.ChunkedArray, path: str, text_field: str) -> list[Any]:
    _check_text_type(column.type, path, text_field)
    return column.to_pylist()


def load_split(
    path: str, cfg: DataConfig, labels: Labels | None, num_classes: int | None = None
) -> tuple[Split, Labels]:
    """Read and check one split. `labels=None` infers the classes from this split (the training split).

    Each file is checked on its own, so an error names the file and the rows within it, also when `path` is a
    directory or a glob of many files."""
    files = expand_path(path)
    first = read_file(files[0])
    id_field = cfg.id_field
    if id_field is None:
        id_field = next((c for c in ID_CANDIDATES if c in first.column_names), None)
    columns = {cfg.text_field: "--text-field", cfg.label_field: "--label-field"}
    if id_field:
        columns[id_field] = "--id-field"

    parts: list[tuple[str, pa.Table]] = []
    kinds: list[str] = []
    for f in files:
        f, t = _read_part(f, columns, first if not parts else None)
        label_col = t.column(cfg.label_field)
        if label_col.null_count:
            rows = np.flatnonzero(label_col.is_null().to_numpy(zero_copy_only=False))
            raise DataError(
                f"{f}: column {cfg.label_field!r} has {label_col.null_count} null label(s), {_rows(rows)}"
            )
        kind = _label_kind(label_col.type, f, cfg.label_field)
        if kinds and kind != kinds[0]:
            raise DataError(f"{f}: column {cfg.label_field!r} holds {kind} labels but {parts[0][0]} holds {kinds[0]}")
        _check_text_type(t.column(cfg.text_field).type, f, cfg.text_field)
        parts.append((f, t))
        kinds.append(kind)

    if labels is None:
        all_labels = _concat([t.select([cfg.label_field]) for _, t in parts], path).column(cfg.label_field)
        labels = Labels.infer(all_labels, path if len(parts) > 1 else parts[0][0], cfg.label_field, num_classes)
    y = np.concatenate([labels.encode(t.column(cfg.label_field), f, cfg.label_field) for f, t in parts])

    texts: list[Any] = []
    empty: list[int] = []
    for f, t in parts:
        part_texts = t.column(cfg.text_field).to_pylist()
        part_empty = [i for i, d in enumerate(part_texts) if _is_empty(d)]
        if part_empty and cfg.empty_dialogues == "error":
            raise DataError(
                f"{f}: column {cfg.text_field!r} has {len(part_empty)} empty dialogue(s), {_rows(part_empty)}"
            )
        empty += [len(texts) + i for i in part_empty]
        texts += part_texts
    ids = [v for _, t in parts for v in t.column(id_field).to_pylist()] if id_field else list(range(len(texts)))
    if empty:
        keep = np.setdiff1d(np.arange(len(texts)), empty)
        texts = [texts[i] for i in keep]
        ids = [ids[i] for i in keep]
        y = y[keep]
        log.warning("%s: skipped %d row(s) with an empty dialogue", path, len(empty))
    if not texts:
        raise DataError(f"{path}: every dialogue in column {cfg.text_field!r} is empty")
    return Split(path=path, texts=texts, labels=y, ids=ids, skipped_empty=len(empty)), labels


def _is_empty(text: Any) -> bool:
    """No message with any visible character. Whitespace and invisible characters (Unicode category C*:
    control, format such as zero-width spaces and BOMs) count as empty: BERT tokenizers drop them, so such a
    dialogue gives no tokens at all, and a batch of only such records has nothing to encode."""
    if text is None:
        return True
    if isinstance(text, str):
        return _is_blank(text)
    return all(s is None or _is_blank(str(s)) for s in text)


def _is_blank(s: str) -> bool:
    s = s.strip()
    if not s or unicodedata.category(s[0])[0] != "C":  # the common case decides on the first character
        return not s
    return all(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in s)


def split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Seeded split of one Split into (train, validation)."""
    n = len(split.texts)
    n_val = max(1, int(round(n * fraction)))
    if n - n_val < 1:
        raise DataError(f"{split.path}: {n} row(s) are too few to split off a validation set")
    perm = np.random.default_rng(seed).permutation(n)
    va, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    pick = lambda idx, tag: Split(  # noqa: E731
        path=f"{split.path} ({tag})",
        texts=[split.texts[i] for i in idx],
        labels=split.labels[idx],
        ids=[split.ids[i] for i in idx],
    )
    return pick(tr, "train"), pick(va, "val")


# ------------------------------------------------------------------------------------------- batches


class EncodedDataset:
    """Processed records of one split; indexable, so it works as a torch map-style dataset."""

    def __init__(self, ids: list[np.ndarray], lens: list[np.ndarray], labels: np.ndarray, record_ids: list[Any]):
        self.ids, self.lens, self.labels, self.record_ids = ids, lens, labels, record_ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> int:
        return i  # the collate function reads the arrays directly: no per-item tensor churn

    def padded_cost(self) -> np.ndarray:
        """Per record: chunks x longest chunk, the [C, T] area it occupies in a padded batch."""
        return np.fromiter((len(l) * (l.max() if len(l) else 0) for l in self.lens), np.int64, len(self.lens))


class Collate:
    """Indices -> a batch dict padded to the batch's own largest chunk count and chunk length."""

    def __init__(self, dataset: EncodedDataset, text_name: str, label_name: str, id_name: str | None, pad_id: int):
        self.ds, self.pad_id = dataset, pad_id
        self.ids_key = f"{text_name}_processed_input_ids"
        self.mask_key = f"{text_name}_processed_attention_mask"
        self.label_name, self.id_name = label_name, id_name or "id"

    def __call__(self, indices: Sequence[int]) -> dict[str, Any]:
        import torch

        lens = [self.ds.lens[i] for i in indices]
        C = max(1, max(len(l) for l in lens))
        T = max(1, max((int(l.max()) for l in lens if len(l)), default=1))
        ids = np.full((len(indices), C, T), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(indices), C, T), dtype=np.int64)
        for b, i in enumerate(indices):
            start = 0
            for c, n in enumerate(self.ds.lens[i]):
                ids[b, c, :n] = self.ds.ids[i][start : start + n]
                mask[b, c, :n] = 1
                start += n
        return {
            self.ids_key: torch.from_numpy(ids),  # [B, C, T]
            self.mask_key: torch.from_numpy(mask),  # [B, C, T]
            self.label_name: torch.from_numpy(self.ds.labels[list(indices)]),  # [B]
            self.id_name: [self.ds.record_ids[i] for i in indices],
        }


class LengthGroupedBatchSampler:
    """Batches of records of similar padded size, in random order; sharded across DDP ranks.

    Shuffle, cut into pools of `pool` batches, sort each pool by padded cost, cut into batches, shuffle the
    batches. Every rank gets the same number of batches (padded by repeating records) so DDP never waits on a
    rank that ran out. With `shuffle=False` (evaluation) it only sorts, and ranks get disjoint shards.
    """

    def __init__(
        self,
        cost: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = True,
        group_by_length: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pool: int = 64,
    ) -> None:
        self.cost, self.batch_size, self.shuffle, self.group = cost, batch_size, shuffle, group_by_length
        self.seed, self.num_replicas, self.rank, self.pool, self.epoch = seed, num_replicas, rank, pool, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        n = len(self.cost)
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.group:
            span = self.batch_size * self.pool if self.shuffle else n
            order = np.concatenate(
                [
                    chunk[np.argsort(-self.cost[chunk], kind="stable")]
                    for chunk in np.array_split(order, max(1, math.ceil(n / span)))
                ]
            )
        return order

    def _batches(self) -> list[list[int]]:
        order = self._order()
        if not self.shuffle and self.num_replicas > 1:
            # Evaluation: every rank gets a disjoint, length-sorted shard of records (never an empty one:
            # a rank with no records would stall DDP, so it re-scores record 0, which only happens when
            # there are fewer records than ranks).
            order = order[self.rank :: self.num_replicas]
            if len(order) == 0:
                order = np.array([0])
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            rng = np.random.default_rng(self.seed + self.epoch + 1)
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        if self.num_replicas == 1 or not self.shuffle:
            return iter(batches)
        # Training: equal batch counts per rank (the last ones repeat records) so DDP never waits on a rank.
        per_rank = math.ceil(len(batches) / self.num_replicas)
        batches = (batches * self.num_replicas)[: per_rank * self.num_replicas]
        return iter(batches[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        n = len(self.cost)
        if self.num_replicas == 1:
            return math.ceil(n / self.batch_size)
        if self.shuffle:
            return math.ceil(math.ceil(n / self.batch_size) / self.num_replicas)
        shard = max(1, len(range(self.rank, n, self.num_replicas)))
        return math.ceil(shard / self.batch_size)
