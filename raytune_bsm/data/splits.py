"""Splits: the data files of one split -> checked texts, class indices and ids.

Each file is checked on its own, so an error names the file and the row within it (row 0 is a file's first
record), also when the split is a directory or a glob of many files: missing columns, no rows, null labels,
labels of another type than the other files', text that is not text, ids whose type changes between files.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from raytune_bsm.config import DataConfig
from raytune_bsm.data import features as side
from raytune_bsm.data.columns import is_text, is_text_list, plain, shown, shown_all
from raytune_bsm.data.labels import Labels, label_kind, rows_text
from raytune_bsm.data.readers import ID_CANDIDATES, DataFile, list_files, read_file, read_schema
from raytune_bsm.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One split, checked: texts, label indices and ids, in file order."""

    path: str
    texts: list[Any]
    labels: np.ndarray  # int64 class indices
    ids: list[Any]
    skipped_empty: int = 0
    features: np.ndarray | None = None  # raw float32 [n, F] side features (data/features.py), NaN where missing
    feature_names: list[str] | None = None


def select_columns(table: pa.Table, f: DataFile, columns: dict[str, str]) -> pa.Table:
    """`columns` ({column: the flag that names it}) of one file, checked to be there, with at least one row."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(
            f"{f.name}: missing column {shown(missing[0])} (columns are {shown_all(table.column_names)}); "
            f"name the right one with {columns[missing[0]]}"
        )
    if table.num_rows == 0:
        raise DataError(f"{f.name}: the file has no rows")
    return table.select(list(columns))


def read_table(path: str, columns: dict[str, str], format: str | None = None) -> pa.Table:
    """Every file of `path` -> one table of `columns` ({column: the flag that names it})."""
    files = list_files(path, format)
    tables = [select_columns(read_file(f, columns=list(columns)), f, columns) for f in files]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as e:
        raise DataError(f"{path}: files disagree on column types: {e}") from None


def check_text_type(t: pa.DataType, path: str, text_field: str) -> None:
    """A dialogue is text or a list of texts (any string type, dictionaries too; a null column: every dialogue is
    missing, i.e. empty)."""
    if not (is_text(t) or is_text_list(t) or pa.types.is_null(t)):
        raise DataError(
            f"{path}: column {shown(text_field)} has type {t}; a dialogue must be a string or a list of strings"
        )


def check_schema(
    path: str, cfg: DataConfig, format: str | None = None, files: list[DataFile] | None = None
) -> list[DataFile]:
    """List a split's files (unless `files` is its listing already) and check each one's columns and their types
    from its schema alone (a Parquet footer, the first block of a CSV/JSONL file), reading no file whole: the check
    a client can afford before submitting, also for a remote directory of many files. Returns the files."""
    files = files if files is not None else list_files(path, format or getattr(cfg, "format", None))
    first: tuple[DataFile, str] | None = None
    for f in files:
        schema = read_schema(f)
        columns = {cfg.text_field: "--text-field", cfg.label_field: "--label-field"}
        if cfg.id_field:
            columns[cfg.id_field] = "--id-field"
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise DataError(
                f"{f.name}: missing column {shown(missing[0])} (columns are {shown_all(schema.names)}); "
                f"name the right one with {columns[missing[0]]}"
            )
        check_text_type(schema.field(cfg.text_field).type, f.name, cfg.text_field)
        if isinstance(cfg.feature_fields, list):
            side.check_present(schema, cfg.feature_fields, f.name)
        kind = label_kind(schema.field(cfg.label_field).type, f.name, cfg.label_field)
        if first and kind != first[1]:
            raise DataError(
                f"{f.name}: column {shown(cfg.label_field)} holds {kind} labels but {first[0].name} holds {first[1]}"
            )
        first = first or (f, kind)
    return files


def load_split(
    path: str, cfg: DataConfig, labels: Labels | None, num_classes: int | None = None, *, format: str | None = None
) -> tuple[Split, Labels]:
    """Read and check one split. `labels=None` infers the classes from this split (the training split).
    `format` (or the config's `format`, if it has one) overrides the files' suffixes."""
    return load_files(list_files(path, format or getattr(cfg, "format", None)), path, cfg, labels, num_classes)


def load_files(
    files: list[DataFile], path: str, cfg: DataConfig, labels: Labels | None, num_classes: int | None = None
) -> tuple[Split, Labels]:
    """`load_split` of listed files (`path` names them all in messages about the whole split)."""
    first = read_file(files[0])
    id_field = cfg.id_field
    if id_field is None:
        id_field = next((c for c in ID_CANDIDATES if c in first.column_names), None)
    columns = {cfg.text_field: "--text-field", cfg.label_field: "--label-field"}
    if id_field:
        columns[id_field] = "--id-field"
    names = feature_names(cfg, first.schema, files[0].name, id_field, train=labels is None)
    columns.update({n: "--features" for n in names})

    parts: list[tuple[DataFile, pa.Table]] = []
    for f in files:
        if names:
            side.check_present(first.schema if not parts else read_schema(f), names, f.name)
        t = select_columns(first if not parts else read_file(f, columns=list(columns)), f, columns)
        _check_part(f, t, cfg, id_field, parts[0] if parts else None)
        parts.append((f, t))

    if labels is None:
        label_cols = [c for _, t in parts for c in t.column(cfg.label_field).chunks]
        where = path if len(parts) > 1 else parts[0][0].name
        labels = Labels.infer(_chunked(label_cols), where, cfg.label_field, num_classes)
    y = np.concatenate([labels.encode(t.column(cfg.label_field), f.name, cfg.label_field) for f, t in parts])

    texts: list[Any] = []
    empty: list[int] = []
    for f, t in parts:
        part_texts = t.column(cfg.text_field).to_pylist()
        part_empty = [i for i, d in enumerate(part_texts) if is_empty(d)]
        if part_empty and cfg.empty_dialogues == "error":
            raise DataError(
                f"{f.name}: column {shown(cfg.text_field)} has {len(part_empty)} empty dialogue(s), {rows_text(part_empty)}"
            )
        empty += [len(texts) + i for i in part_empty]
        texts += part_texts
    ids = [v for _, t in parts for v in t.column(id_field).to_pylist()] if id_field else list(range(len(texts)))
    x = np.concatenate([side.to_matrix(t, names) for _, t in parts]) if names else None
    if empty:
        keep = np.setdiff1d(np.arange(len(texts)), empty)
        texts = [texts[i] for i in keep]
        ids = [ids[i] for i in keep]
        y = y[keep]
        x = x[keep] if x is not None else None
        log.warning("%s: skipped %d row(s) with an empty dialogue", path, len(empty))
    if not texts:
        raise DataError(f"{path}: every dialogue in column {shown(cfg.text_field)} is empty")
    split = Split(path=path, texts=texts, labels=y, ids=ids, skipped_empty=len(empty), features=x, feature_names=names)
    return split, labels


def feature_names(cfg: DataConfig, schema: pa.Schema, where: str, id_field: str | None, *, train: bool) -> list[str]:
    """The split's side-feature columns: resolved on a training file (`auto`, unknown names, types), else the
    training split's (resolved) list, which every val/test file must have."""
    if train or not isinstance(cfg.feature_fields, list):
        return side.resolve(cfg.feature_fields, schema, where, (cfg.text_field, cfg.label_field, id_field))
    return list(cfg.feature_fields)


def _chunked(chunks: list[pa.Array]) -> pa.ChunkedArray:
    """Label chunks of several files as one column; integer widths (int32 here, int64 there) unified."""
    types = {c.type for c in chunks}
    if len(types) > 1:
        chunks = [
            c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) and not is_text(c.type) else c for c in chunks
        ]
        target = pa.int64() if all(pa.types.is_integer(c.type) for c in chunks) else pa.string()
        chunks = [plain(c).cast(target) for c in chunks]
    return pa.chunked_array(chunks)


def _check_part(
    f: DataFile, t: pa.Table, cfg: DataConfig, id_field: str | None, first: tuple[DataFile, pa.Table] | None
) -> None:
    """One file's columns: no null labels, one label kind for all files, text that is text, steady id types."""
    label_col = t.column(cfg.label_field)
    if label_col.null_count:
        rows = np.flatnonzero(label_col.is_null().to_numpy(zero_copy_only=False))
        raise DataError(
            f"{f.name}: column {shown(cfg.label_field)} has {label_col.null_count} null label(s), {rows_text(rows)}"
        )
    kind = label_kind(label_col.type, f.name, cfg.label_field)
    if kind == "str" and f.format in ("csv", "tsv"):
        _check_csv_labels(f, label_col, cfg.label_field)
    check_text_type(t.column(cfg.text_field).type, f.name, cfg.text_field)
    if first is None:
        return
    f0, t0 = first
    kind0 = label_kind(t0.column(cfg.label_field).type, f0.name, cfg.label_field)
    if kind != kind0:
        raise DataError(f"{f.name}: column {shown(cfg.label_field)} holds {kind} labels but {f0.name} holds {kind0}")
    if id_field and _id_kind(t.column(id_field).type) != _id_kind(t0.column(id_field).type):
        raise DataError(
            f"{f.name}: column {shown(id_field)} holds {t.column(id_field).type} ids but {f0.name} holds "
            f"{t0.column(id_field).type}; give every file the same id type"
        )


def _id_kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "integer"
    if is_text(t):
        return "string"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def _check_csv_labels(f: DataFile, column: pa.ChunkedArray, label_field: str) -> None:
    """A CSV label column that mixes integers and words ("0", "1", "yes") is a typo, not three classes."""
    distinct = column.unique().to_pylist()
    numeric = {v for v in distinct if v.strip().lstrip("+-").isdigit()}
    if not numeric or len(numeric) == len(distinct):
        return
    values = column.to_pylist()
    words = [i for i, v in enumerate(values) if v not in numeric]
    ints = [i for i, v in enumerate(values) if v in numeric]
    odd, kind = (words, "text") if len(words) <= len(ints) else (ints, "integer")
    raise DataError(
        f"{f.name}: column {shown(label_field)} mixes integer and text labels; {len(odd)} {kind} label(s): "
        f"{rows_text(odd, values)}"
    )


def is_empty(text: Any) -> bool:
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

    def pick(idx: np.ndarray, tag: str) -> Split:
        return Split(
            path=f"{split.path} ({tag})",
            texts=[split.texts[i] for i in idx],
            labels=split.labels[idx],
            ids=[split.ids[i] for i in idx],
            features=split.features[idx] if split.features is not None else None,
            feature_names=split.feature_names,
        )

    return pick(tr, "train"), pick(va, "val")
