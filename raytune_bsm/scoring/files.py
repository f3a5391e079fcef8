"""Streamed files for `bsm predict`: inputs (listed by data/readers.py) read a block at a time, the output written a block at a time to a
temporary name and renamed (or, on s3:// gs:// hdfs://, uploaded) only once it is whole.

Inputs: a Parquet/CSV/JSONL file, a directory of them or a glob; local or on any pyarrow filesystem. The output
never replaces its input, never lands inside an input directory, and replaces an existing file only when asked.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from raytune_bsm import storage
from raytune_bsm.data.columns import shown, shown_all
from raytune_bsm.data.readers import ID_CANDIDATES, DataFile, check_utf8, not_utf8
from raytune_bsm.errors import ConfigError, DataError

OUT_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".parq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
BLOCK_BYTES = 1 << 22  # CSV and JSON Lines are read 4 MiB of text at a time
_BAD_UTF8 = re.compile(r"In CSV column #(\d+): CSV conversion error to string: invalid UTF8")


def read_batches(f: DataFile, columns: list[str], rows: int) -> Iterator[pa.RecordBatch]:
    """One file's `columns`, `rows` rows at a time (CSV and JSON Lines: a block of text at a time)."""
    import pyarrow.parquet as pq

    if f.size == 0:
        raise DataError(f"{f.name}: the file is empty (0 bytes, no rows)")
    try:
        if f.format == "parquet":
            with f.fs.open_input_file(f.path) as src:
                pf = pq.ParquetFile(src)
                _check_columns(f, pf.schema_arrow.names, columns)
                yield from pf.iter_batches(batch_size=rows, columns=columns)
            return
        with f.fs.open_input_stream(f.path) as src:  # compression detected from the suffix
            reader = _text_reader(f, src)
            _check_columns(f, reader.schema.names, columns)
            yield from _utf8_batches(f, reader, columns)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{f.name}: cannot read this file as {f.format}: {str(e).splitlines()[0]}") from None


def _utf8_batches(f: DataFile, reader: Any, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """A CSV/JSON Lines reader's batches of `columns`, their text checked to be UTF-8 as training checks it
    (`readers.check_utf8`: the same message, rows counted from the file's start) and given as strings."""
    names, row = reader.schema.names, 0
    while True:
        try:
            batch = reader.read_next_batch().select(columns)
        except StopIteration:
            return
        except pa.ArrowInvalid as e:  # a block after the first, typed string by the first, has invalid bytes
            bad = _BAD_UTF8.match(str(e))
            if bad is None:
                raise
            raise not_utf8(f, names[int(bad[1])]) from None
        for name, col in zip(columns, batch.columns):
            check_utf8(col, f, name, row)
        row += batch.num_rows
        yield pa.RecordBatch.from_arrays(
            [c.cast(pa.string()) if pa.types.is_binary(c.type) else c for c in batch.columns], names=columns
        )


def column_names(f: DataFile) -> list[str]:
    """A file's column names: its schema (Parquet) or its first block's."""
    import pyarrow.parquet as pq

    try:
        if f.format == "parquet":
            with f.fs.open_input_file(f.path) as src:
                return list(pq.ParquetFile(src).schema_arrow.names)
        with f.fs.open_input_stream(f.path) as src:
            return list(_text_reader(f, src).schema.names)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{f.name}: cannot read this file as {f.format}: {str(e).splitlines()[0]}") from None


def _text_reader(f: DataFile, src: Any) -> Any:
    """A streaming reader of a CSV/TSV or JSON Lines stream (the training readers' parse options)."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson

    if f.format == "jsonl":
        return pjson.open_json(src, read_options=pjson.ReadOptions(block_size=BLOCK_BYTES))
    parse = pcsv.ParseOptions(delimiter="\t" if f.format == "tsv" else ",", newlines_in_values=True)
    convert = pcsv.ConvertOptions(strings_can_be_null=True)  # an empty field is a missing value
    return pcsv.open_csv(
        src, read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES), parse_options=parse, convert_options=convert
    )


def _check_columns(f: DataFile, names: list[str], columns: list[str]) -> None:
    for col, flag in zip(columns, ("--text-field", "--id-field")):
        if col not in names:
            raise DataError(
                f"{f.name}: missing column {shown(col)} (columns are {shown_all(names)}); "
                f"name the right one with {flag}"
            )


# ------------------------------------------------------------------------------------------------ the output


def output_format(out: str) -> str:
    fmt = OUT_FORMATS.get(Path(out.split("?")[0]).suffix.lower())
    if fmt is None:
        raise ConfigError(f"--out {out!r}: unknown output type; use .parquet, .csv or .jsonl")
    return fmt


def check_output(out: str, data: str, inputs: list[DataFile], overwrite: bool) -> None:
    """Refuse an output that is an input, lies inside an input directory, is a directory, or exists (unless
    `overwrite`)."""
    import pyarrow.fs as pafs

    if storage.is_uri(out):
        fs, path = storage.filesystem(out)
        same = lambda i: i.fs.type_name == fs.type_name and i.path == path  # noqa: E731
        inside = storage.is_uri(data) and path.startswith(storage.filesystem(data)[1].rstrip("/") + "/")
    else:
        fs, path = pafs.LocalFileSystem(), str(Path(out.removeprefix("file://")).expanduser().resolve())
        same = lambda i: i.fs.type_name == "local" and os.path.realpath(i.path) == os.path.realpath(path)  # noqa: E731
        local = Path(data.removeprefix("file://")).expanduser()
        inside = not storage.is_uri(data) and local.is_dir() and Path(path).is_relative_to(local.resolve())
    if any(same(i) for i in inputs):
        raise ConfigError(
            f"--out {out}: that is the input file; predictions never replace their input, choose another --out"
        )
    if inside:
        raise ConfigError(
            f"--out {out}: inside the input directory {data}, where it would be read as input; choose a path outside it"
        )
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        raise ConfigError(f"--out {out}: is a directory; name the output file (.parquet, .csv or .jsonl)")
    if kind != pafs.FileType.NotFound and not overwrite:
        raise ConfigError(f"--out {out}: the file exists; pass --overwrite to replace it, or choose another --out")


ROWS_PER_WRITE = 8192  # predictions written at a time: a Parquet row group (scoring goes in smaller pieces)


class OutputFile:
    """Write blocks of predictions; the file appears at `out` only when `commit()` runs, never half-written.

    Local: a temporary name beside `out`, renamed. A URI: a local temporary file, uploaded under a temporary
    name and moved. On any error (or without commit) every temporary file is removed."""

    def __init__(self, out: str, fmt: str) -> None:
        self.out, self.fmt = out, fmt
        if storage.is_uri(out):
            self.final = None
            fd, tmp = tempfile.mkstemp(prefix="bsm-predict-", suffix=Path(out).suffix)
            os.close(fd)
            self.tmp = Path(tmp)
        else:
            self.final = Path(out.removeprefix("file://")).expanduser()
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self.final.with_name(f".{self.final.name}.tmp-{uuid.uuid4().hex[:8]}")
        self._writer: Any = None
        self._fh: Any = None
        self.schema: pa.Schema | None = None
        self.rows = 0
        self._pending: list[pa.Table] = []  # rows written at the next flush
        self._pending_rows = 0

    def write(self, table: pa.Table) -> None:
        """Add rows; they are written in runs of at least ROWS_PER_WRITE (a Parquet row group each)."""
        if self.schema is None:
            self.schema = table.schema
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROWS_PER_WRITE:
            self._flush()

    def _flush(self) -> None:
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        if self._writer is None and self._fh is None:
            if self.fmt == "parquet":
                self._writer = pq.ParquetWriter(str(self.tmp), table.schema)
            elif self.fmt in ("csv", "tsv"):
                opts = pcsv.WriteOptions(delimiter="\t" if self.fmt == "tsv" else ",")
                self._writer = pcsv.CSVWriter(str(self.tmp), table.schema, write_options=opts)
            else:
                self._fh = open(self.tmp, "w", encoding="utf-8")
        if self._fh is not None:
            self._fh.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in table.to_pylist())
        else:
            self._writer.write_table(table)

    def _close(self) -> None:
        for h in (self._writer, self._fh):
            if h is not None:
                h.close()
        self._writer = self._fh = None

    def commit(self, empty_schema: pa.Schema) -> None:
        if self.schema is None:  # no rows at all: a file with the columns and no rows
            self.write(empty_schema.empty_table())
        self._flush()
        self._close()
        if self.final is not None:
            os.replace(self.tmp, self.final)
            return
        fs, path = storage.filesystem(self.out)
        try:
            if fs.type_name in ("s3", "gcs"):
                # An object appears only when its upload completes, so upload in place (a temporary key and a
                # move would leave a directory marker object behind on S3).
                self._upload(fs, path)
            else:
                fs.create_dir(posixpath.dirname(path), recursive=True)
                tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
                try:
                    self._upload(fs, tmp)
                    fs.move(tmp, path)
                except BaseException:
                    _delete_quietly(fs, tmp)
                    raise
        finally:
            self.tmp.unlink(missing_ok=True)

    def _upload(self, fs: Any, path: str) -> None:
        try:
            with open(self.tmp, "rb") as src, fs.open_output_stream(path) as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
        except BaseException:
            _delete_quietly(fs, path)  # closing the stream on an error completes a partial object: remove it
            raise

    def abort(self) -> None:
        self._close()
        self.tmp.unlink(missing_ok=True)


def _delete_quietly(fs: Any, path: str) -> None:
    try:
        fs.delete_file(path)
    except (OSError, FileNotFoundError):
        pass


# ----------------------------------------------------------------------------------------------- predictions


def id_column(given: str | None, export_id: str | None, names: list[str]) -> tuple[str | None, str, str]:
    """(the input's id column or None for row numbers, its name in the output, what the log says about it).
    `--id-field` first; else the export's id field (training's `--id-field`), under its own name, when the data
    has it; else the first of ID_CANDIDATES the data has."""
    if given:
        return given, "id", f"ids from column {shown(given)} (--id-field)"
    if export_id and export_id in names:
        clash = export_id == "predicted" or export_id.startswith("prob_")  # the output's other columns
        return export_id, "id" if clash else export_id, f"ids from column {shown(export_id)} (the export's id field)"
    found = next((c for c in ID_CANDIDATES if c in names), None)
    if found:
        return found, "id", f"ids from column {shown(found)}"
    return None, "id", f"ids are row numbers (no id column: {', '.join(shown(c) for c in id_candidates(export_id))})"


def id_candidates(export_id: str | None) -> list[str]:
    """The columns `id_column` looks for without --id-field, in its order."""
    return list(dict.fromkeys(c for c in (export_id, *ID_CANDIDATES) if c))


def no_id_error(data: str, export_id: str | None) -> DataError:
    """Scoring on the cluster with no id column: rows come back in any order, so row numbers cannot stand in."""
    return DataError(
        f"{data}: no id column ({', '.join(shown(c) for c in id_candidates(export_id))}); on the cluster rows are "
        "scored in parallel and written in any order, so each prediction needs an id: name one with --id-field"
    )


def default_output(data: str) -> str:
    """`<stem>.predictions.parquet`: next to a single local data file, else in the current directory."""
    if "://" not in data and Path(data).expanduser().is_file():
        p = Path(data).expanduser()
        if os.access(p.parent, os.W_OK):
            return str(p.with_name(f"{p.stem}.predictions.parquet"))
        return str(Path.cwd() / f"{p.stem}.predictions.parquet")
    name = posixpath.basename(data.rstrip("/"))
    stem = Path(name).stem if name and not any(ch in name for ch in "*?[") else ""
    return str(Path.cwd() / (f"{stem}.predictions.parquet" if stem else "predictions.parquet"))


def predictions_table(
    ids: Any,
    probs: np.ndarray,
    names: list[str],
    schema: pa.Schema | None,
    where: str,
    id_col: str | None,
    id_name: str = "id",
) -> pa.Table:
    """A block of predictions; its id type must match the blocks written before (ints widen, nulls adopt)."""
    ids = pa.array(ids) if not isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids
    if schema is not None and ids.type != schema.field(id_name).type:
        first = schema.field(id_name).type
        if pa.types.is_null(ids.type) or (pa.types.is_integer(ids.type) and pa.types.is_integer(first)):
            ids = ids.cast(first)
        else:
            raise DataError(
                f"{where}: column {shown(id_col)} holds {ids.type} values, but the rows before hold {first} "
                "values; give every input file one id type (or name another column with --id-field)"
            )
    pred = probs.argmax(axis=1)
    return pa.table(
        {
            id_name: ids,
            "predicted": pa.array([names[i] for i in pred], pa.string()),
            **{f"prob_{c}": pa.array(probs[:, k], pa.float64()) for k, c in enumerate(names)},
        }
    )


def total_rows(inputs: list[DataFile]) -> int | None:
    """The rows of every input, when their metadata says it (Parquet), else None."""
    import pyarrow.parquet as pq

    if not all(i.format == "parquet" for i in inputs):
        return None
    try:
        total = 0
        for i in inputs:
            with i.fs.open_input_file(i.path) as f:
                total += pq.ParquetFile(f).metadata.num_rows
        return total
    except (pa.ArrowException, OSError):
        return None  # read_batches names the bad file
