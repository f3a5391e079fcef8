"""Reading: a URI -> the data files it names -> one pyarrow table per file.

A split is named by a URI: a file, a directory (its data files, recursively) or a glob; a local or NFS path, or
s3:// gs:// hdfs:// (anything pyarrow.fs reaches). Files are listed and opened through pyarrow's filesystems, never
by treating a URI as one local file. The format comes from each file's suffix (`.parquet`, `.csv`, `.tsv`,
`.jsonl`, optionally compressed: `.csv.gz`) or from an explicit `format`. Hidden files (`.x`, `_SUCCESS`) are
skipped in directories, as Spark and pyarrow.dataset do. Directories are walked by `listing.walk`: each file
once, by its real path, whatever links lead to it, and a bounded number of them.

Every error is a `DataError` that names the file, and the row where there is one: an empty file, a CSV row with
too many fields, a JSON line whose type changes, text that is not UTF-8, a column that appears twice.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterator

import pyarrow as pa

from raytune_bsm import storage
from raytune_bsm.data import listing
from raytune_bsm.data.columns import shown
from raytune_bsm.errors import DataError

PARQUET = (".parquet", ".pq", ".parq")
CSV = (".csv", ".tsv")
JSONL = (".jsonl", ".ndjson", ".json")
COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
FORMATS = ("parquet", "csv", "tsv", "jsonl")
ID_CANDIDATES = ("order_id", "id", "record_id")
_GLOB = re.compile(r"[*?\[]")
_JSON_ROW = re.compile(r"^(.*?)\s*in row (\d+)$")
_MAX_BLOCK = 2**31 - 1  # pyarrow's JSON reader takes an int32 block size


@dataclass(frozen=True)
class DataFile:
    """One data file: `name` as shown to the user (a local path or a URI), `path` inside the filesystem `fs`."""

    name: str
    fs: Any  # pyarrow.fs.FileSystem
    path: str
    format: str  # one of FORMATS
    size: int | None = None


def file_format(name: str, given: str | None = None) -> str | None:
    """The format of a file: `given` (checked), else by suffix (`.csv.gz` is csv); None when unknown."""
    if given is not None:
        fmt = "jsonl" if given == "json" else given
        if fmt not in FORMATS:
            raise DataError(f"unknown data format {given!r}; use one of {', '.join(FORMATS)}")
        return fmt
    stem, suffix = posixpath.splitext(posixpath.basename(name).lower())
    if suffix in COMPRESSED:
        suffix = posixpath.splitext(stem)[1]
    if suffix in PARQUET:
        return "parquet"
    if suffix in CSV:
        return suffix[1:]
    if suffix in JSONL:
        return "jsonl"
    return None


def list_files(uri: str, format: str | None = None) -> list[DataFile]:
    """A file, a directory or a glob (local or a URI) -> its data files, sorted by name."""
    # A URI's query holds filesystem options (s3://b/k?endpoint_override=...), not a glob's "?".
    where, query = uri.split("?", 1) if storage.is_uri(uri) and "?" in uri else (uri, "")
    base, pattern = _split_glob(where)
    fs, root = _filesystem(f"{base}?{query}" if query else base, uri)
    shown = base if storage.is_uri(base) else base.removeprefix("file://")
    info = _info(fs, root, uri)
    if pattern is None and info.type == _file_type().File:
        fmt = file_format(where, format)
        if fmt is None:
            suffix = posixpath.splitext(root)[1]
            raise DataError(f"{uri}: unknown file type {suffix!r}; use .parquet, .csv or .jsonl (or set the format)")
        return [DataFile(shown, fs, root, fmt, info.size)]
    if info.type != _file_type().Directory:
        if pattern is not None:
            raise DataError(f"{uri}: no file matches this pattern")
        raise DataError(f"{uri}: no such file or directory")

    found: list[DataFile] = []
    for item in listing.walk(fs, root, uri, _descend(pattern)):
        rel = item.rel
        parts = rel.split("/")
        if pattern is not None:
            # a file the pattern names, or a data file inside a directory it names
            depth = next((k for k in range(1, len(parts) + 1) if _match(parts[:k], pattern)), None)
            if depth is None or any(p[:1] in "._" for p in parts[depth:]):
                continue
        elif any(p[:1] in "._" for p in parts):
            continue
        fmt = file_format(item.path, format)
        if fmt is not None:
            found.append(DataFile(_join(shown, rel), fs, item.path, fmt, item.size))
    if not found:
        if pattern is not None:
            raise DataError(f"{uri}: no file matches this pattern")
        raise DataError(f"{uri}: directory has no .parquet, .csv or .jsonl files")
    return sorted(found, key=lambda f: f.name)


def expand_path(path: str, format: str | None = None) -> list[str]:
    """A file, a directory or a glob -> the sorted names (local paths or URIs) of its data files."""
    return [f.name for f in list_files(path, format)]


def read_file(file: DataFile | str, format: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """One data file -> a table. Unreadable, empty or malformed files are a DataError naming the file (and row).
    `columns`: read only these from a Parquet file when it has them all (the others are never loaded)."""
    f = file if isinstance(file, DataFile) else _one_file(file, format)
    if f.size == 0:
        raise DataError(f"{f.name}: the file is empty (0 bytes, no rows)")
    try:
        table = _read(f, columns)
    except DataError:
        raise
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{f.name}: cannot read this file as {f.format}: {_first_line(e)}") from None
    check_columns(table, f)
    return table


def iter_file(f: DataFile, columns: list[str], rows: int, row_groups: list[int] | None = None) -> Iterator[pa.Table]:
    """One data file as tables of at most `rows` rows of `columns`, in file order, with the errors of `read_file`.
    A Parquet file streams a batch at a time (its footer first, then the column chunks of a batch's row groups;
    only `row_groups` if given); a CSV or JSONL file is read whole (its parse errors count rows from the file's
    start) and handed out in slices."""
    import pyarrow.parquet as pq

    if f.format != "parquet":
        table = read_file(f, columns=columns).select(columns)
        yield from (table.slice(k, rows) for k in range(0, table.num_rows, rows))
        return
    if f.size == 0:
        raise DataError(f"{f.name}: the file is empty (0 bytes, no rows)")
    try:
        with f.fs.open_input_file(f.path) as src:
            for batch in pq.ParquetFile(src).iter_batches(batch_size=rows, row_groups=row_groups, columns=columns):
                yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{f.name}: cannot read this file as parquet: {_first_line(e)}") from None


def row_group_bytes(f: DataFile) -> list[int]:
    """A Parquet file's row groups, as their compressed sizes in bytes, from its footer alone."""
    import pyarrow.parquet as pq

    try:
        with f.fs.open_input_file(f.path) as src:
            meta = pq.read_metadata(src)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{f.name}: cannot read this file as parquet: {_first_line(e)}") from None
    return [
        sum(meta.row_group(g).column(c).total_compressed_size for c in range(meta.num_columns))
        for g in range(meta.num_row_groups)
    ]


def read_schema(file: DataFile) -> pa.Schema:
    """A file's columns and types without reading it whole: a Parquet footer, the first block of a CSV or JSONL."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    if file.size == 0:
        raise DataError(f"{file.name}: the file is empty (0 bytes, no rows)")
    try:
        if file.format == "parquet":
            with file.fs.open_input_file(file.path) as src:
                return pq.read_schema(src)
        with file.fs.open_input_stream(file.path) as src:
            if file.format == "jsonl":
                return pjson.open_json(src).schema
            parse = pcsv.ParseOptions(delimiter="\t" if file.format == "tsv" else ",", newlines_in_values=True)
            return pcsv.open_csv(src, parse_options=parse).schema
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{file.name}: cannot read this file as {file.format}: {_first_line(e)}") from None


def check_columns(table: pa.Table, f: DataFile) -> None:
    """No column twice; text that is valid UTF-8 (CSV and JSON readers let invalid bytes through)."""
    names = table.column_names
    dup = next((c for c in names if names.count(c) > 1), None)
    if dup is not None:
        where = [i + 1 for i, c in enumerate(names) if c == dup]
        raise DataError(
            f"{f.name}: column {shown(dup)} appears {len(where)} times (columns {', '.join(map(str, where))}); "
            "give every column its own name"
        )
    if f.format == "parquet":
        return
    for name, col in zip(names, table.columns):
        check_utf8(col, f, name)


def check_utf8(column: pa.Array | pa.ChunkedArray, f: DataFile, name: str, first_row: int = 0) -> None:
    """A string (or, from CSV, binary) column of valid UTF-8; else the error naming its first bad row, counted
    from the file's start (`first_row`: the file's row of the column's first value). Training and predict say
    the same words."""
    row = _invalid_utf8_row(column)
    if row is not None:
        raise not_utf8(f, name, first_row + row)


def not_utf8(f: DataFile, name: str, row: int | None = None) -> DataError:
    where = f", row {row} has invalid bytes" if row is not None else ""
    return DataError(f"{f.name}: column {shown(name)} is not UTF-8 text{where}; save the file as UTF-8")


# ----------------------------------------------------------------------------------------------- internals


def _file_type() -> Any:
    import pyarrow.fs as pafs

    return pafs.FileType


def _split_glob(uri: str) -> tuple[str, list[str] | None]:
    """ "s3://b/data/*/part-*.parquet" -> ("s3://b/data", ["*", "part-*.parquet"]); no glob -> (uri, None)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    parts = rest.split("/")
    first = next((i for i, p in enumerate(parts) if _GLOB.search(p)), None)
    if first is None:
        return uri, None
    base = "/".join(parts[:first]) or ("/" if rest.startswith("/") else ".")
    return (f"{scheme}://{base}" if sep else base), parts[first:]


def _match(parts: list[str], pattern: list[str]) -> bool:
    """Path components against glob components; `**` matches any number of components."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[k:], pattern[1:]) for k in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


def _filesystem(base: str, uri: str) -> tuple[Any, str]:
    try:
        return storage.filesystem(base)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"{uri}: cannot open this location: {_first_line(e)}") from None


def _info(fs: Any, path: str, uri: str) -> Any:
    try:
        return fs.get_file_info(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{uri}: cannot read this location: {_first_line(e)}") from None


def _descend(pattern: list[str] | None) -> Callable[[list[str]], bool]:
    """Which directories a listing enters: not hidden ones (`.x`, `_temporary`); under a glob, those that can
    hold a match (a directory the glob names holds every data file below it)."""

    def may_hold(parts: list[str], pattern: list[str]) -> bool:
        if not pattern or not parts or pattern[0] == "**":
            return True
        return fnmatchcase(parts[0], pattern[0]) and may_hold(parts[1:], pattern[1:])

    if pattern is None:
        return lambda parts: parts[-1][:1] not in "._"
    return lambda parts: may_hold(parts, pattern)


def _join(shown: str, rel: str) -> str:
    if storage.is_uri(shown):
        return posixpath.join(shown, rel)
    return rel if shown == "." else posixpath.join(shown, rel)


def _one_file(name: str, format: str | None) -> DataFile:
    files = list_files(name, format)
    if len(files) != 1:
        raise DataError(f"{name}: names {len(files)} files, expected one")
    return files[0]


def _read(f: DataFile, columns: list[str] | None) -> pa.Table:
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    if f.format == "parquet":
        with f.fs.open_input_file(f.path) as src:
            pf = pq.ParquetFile(src)
            names = pf.schema_arrow.names
            wanted = columns if columns and all(c in names for c in columns) else None
            return pf.read(columns=wanted)
    with f.fs.open_input_stream(f.path) as src:  # compression detected from the suffix
        data = src.read()
    if not data:
        raise DataError(f"{f.name}: the file is empty (0 bytes, no rows)")
    if f.format == "jsonl":
        # One block for the whole file, so a parse error's row counts from the file's start, not a block's.
        opts = pjson.ReadOptions(block_size=max(1 << 20, min(len(data) + 1, _MAX_BLOCK)))
        try:
            return pjson.read_json(pa.BufferReader(data), read_options=opts)
        except pa.ArrowInvalid as e:
            raise _json_error(f, e) from None
    parse = pcsv.ParseOptions(delimiter="\t" if f.format == "tsv" else ",", newlines_in_values=True)
    # An empty CSV field is a missing value, also in a string column: an empty label is a null label, not "".
    convert = pcsv.ConvertOptions(strings_can_be_null=True)
    try:
        return pcsv.read_csv(pa.BufferReader(data), parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as e:
        raise _csv_error(f, data, parse.delimiter, e) from None


def _json_error(f: DataFile, e: Exception) -> DataError:
    msg = _first_line(e).removeprefix("JSON parse error: ")
    if msg == "Empty JSON file":
        return DataError(f"{f.name}: the file is empty (no rows)")
    m = _JSON_ROW.match(msg)
    if not m:
        return DataError(f"{f.name}: cannot read this file as jsonl: {msg}")
    what = re.sub(r"Column\(/?([^)]*)\)", lambda c: f"column {shown(c.group(1))}" if c.group(1) else "the line", m[1])
    row = int(m[2])
    return DataError(f"{f.name}: row {row} (line {row + 1}): {what}")


def _csv_error(f: DataFile, data: bytes, delimiter: str, e: Exception) -> DataError:
    msg = _first_line(e)
    if msg == "Empty CSV file":
        return DataError(f"{f.name}: the file is empty (no header, no rows)")
    # pyarrow does not say which row broke the parse; find it with the standard CSV reader.
    text = io.StringIO(data.decode("utf-8", errors="replace"), newline="")
    reader = csv.reader(text, delimiter=delimiter)
    header = next(reader, [])
    for row, fields in enumerate(reader):
        if fields and len(fields) != len(header):
            return DataError(
                f"{f.name}: row {row} (line {reader.line_num}) has {len(fields)} fields, the header has "
                f"{len(header)}; quote values that hold a '{delimiter}'"
            )
    return DataError(f"{f.name}: cannot read this file as {f.format}: {msg}")


def _invalid_utf8_row(col: pa.Array | pa.ChunkedArray) -> int | None:
    """The first row of a string (or, from CSV, binary) column whose bytes are not UTF-8; None if all are."""
    if not (pa.types.is_string(col.type) or pa.types.is_binary(col.type)):
        return None
    offset = 0
    for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
        as_str = chunk.view(pa.string()) if pa.types.is_binary(chunk.type) else chunk
        try:
            as_str.validate(full=True)
        except pa.ArrowInvalid:
            for i, v in enumerate(chunk.view(pa.binary()).to_pylist()):
                if v is not None:
                    try:
                        v.decode("utf-8")
                    except UnicodeDecodeError:
                        return offset + i
        offset += len(chunk)
    return None


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
