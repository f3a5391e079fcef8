"""Reading splits by URI: local and s3:// (a real S3 API on 127.0.0.1, moto's server), a file, a directory of
several files, a glob; the format from the suffixes or given; errors that name the file and the row."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from raytune_bsm.config import DataConfig
from raytune_bsm.data.readers import list_files, read_file
from raytune_bsm.data.splits import check_schema, load_split, read_table
from raytune_bsm.errors import DataError

CFG = DataConfig(label_field="label")
FILES = 5
PER_FILE = 7


def part(k: int, n: int = PER_FILE) -> dict[str, list]:
    ids = list(range(k * 100, k * 100 + n))
    return {
        "order_id": ids,
        "dialogue": [f"buyer: order {i}?\nseller: shipped" for i in ids],
        "label": [i % 2 for i in ids],
    }


def write_parts(d: Path, fmt: str = "parquet", bad_row_in: int | None = None, bad_row: int = 3) -> Path:
    """FILES files of PER_FILE rows in `d`; with `bad_row_in`, that file's row `bad_row` has a null label."""
    d.mkdir(parents=True, exist_ok=True)
    for k in range(FILES):
        cols = part(k)
        if k == bad_row_in:
            cols["label"][bad_row] = None
        table = pa.table(cols)
        if fmt == "parquet":
            pq.write_table(table, d / f"part-{k}.parquet")
        elif fmt == "csv":
            pcsv.write_csv(table, d / f"part-{k}.csv")
        else:
            (d / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    return d


ALL_IDS = [i for k in range(FILES) for i in part(k)["order_id"]]


# ----------------------------------------------------------------------------------------------- local


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_local_directory_of_several_files_reads_every_row_in_file_order(tmp_path, fmt):
    d = write_parts(tmp_path / "train", fmt)
    (d / "_SUCCESS").write_text("")  # Spark's marker and hidden files are not data
    (d / ".part-0.crc").write_text("x")
    split, labels = load_split(str(d), CFG, None)
    assert split.ids == ALL_IDS and len(split.texts) == FILES * PER_FILE
    assert split.labels.tolist() == [i % 2 for i in ALL_IDS] and labels.names == ["0", "1"]


def test_local_bad_row_in_the_fifth_file_names_that_file_and_row(tmp_path):
    d = write_parts(tmp_path / "train", bad_row_in=4, bad_row=3)
    with pytest.raises(DataError) as e:
        load_split(str(d), CFG, None)
    assert str(e.value) == f"{d / 'part-4.parquet'}: column 'label' has 1 null label(s), row 3"


def test_nested_directories_and_globs(tmp_path):
    d = tmp_path / "data"
    for k in range(FILES):
        pq.write_table(pa.table(part(k)), (d / f"day={k}").mkdir(parents=True) or d / f"day={k}" / "p.parquet")
    assert load_split(str(d), CFG, None)[0].ids == ALL_IDS  # recursive, hive-style folders included
    assert load_split(str(d / "day=*"), CFG, None)[0].ids == ALL_IDS  # a glob naming directories
    assert load_split(str(d / "**" / "*.parquet"), CFG, None)[0].ids == ALL_IDS
    assert load_split(str(d / "day=[34]" / "*.parquet"), CFG, None)[0].ids == part(3)["order_id"] + part(4)["order_id"]
    with pytest.raises(DataError, match="no file matches this pattern"):
        load_split(str(d / "day=9*"), CFG, None)


def test_format_option_reads_files_without_a_suffix(tmp_path):
    d = tmp_path / "export"
    d.mkdir()
    for k in range(FILES):
        pq.write_table(pa.table(part(k)), d / f"part-{k:05d}")  # as some exporters name them
    with pytest.raises(DataError) as e:
        load_split(str(d / "part-00000"), CFG, None)
    assert "unknown file type ''" in str(e.value) and "set the format" in str(e.value)
    with pytest.raises(DataError, match="directory has no .parquet, .csv or .jsonl files"):
        load_split(str(d), CFG, None)
    assert load_split(str(d), CFG, None, format="parquet")[0].ids == ALL_IDS
    with pytest.raises(DataError, match="unknown data format 'xls'"):
        load_split(str(d), CFG, None, format="xls")


def test_compressed_csv_and_jsonl(tmp_path):
    data = pa.table(part(0))
    buf = pa.BufferOutputStream()
    pcsv.write_csv(data, buf)
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(buf.getvalue().to_pybytes()))
    lines = "".join(json.dumps(r) + "\n" for r in data.to_pylist()).encode()
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(lines))
    for name in ("t.csv.gz", "t.jsonl.gz"):
        assert load_split(str(tmp_path / name), CFG, None)[0].ids == part(0)["order_id"], name


def test_json_error_row_counts_from_the_start_of_a_big_file(tmp_path):
    """pyarrow reads JSON in blocks and counts rows per block; the error must name the row in the file."""
    n = 40_000  # about 2.5 MB: more than one default block
    rows = [json.dumps({"dialogue": f"hello {i} " + "x" * 40, "label": i % 2}) for i in range(n)]
    rows[n - 2] = json.dumps({"dialogue": "bad", "label": "one"})
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as e:
        read_file(str(path))
    assert str(e.value).startswith(f"{path}: row {n - 2} (line {n - 1}): column 'label'")


# ----------------------------------------------------------------------------------------------- s3


def test_pyarrow_reaches_the_local_s3_server_through_aws_endpoint_url(s3):
    s3.put("hello.txt", b"hi")
    fs, path = pafs.FileSystem.from_uri(s3.uri("hello.txt"))  # only the environment names the endpoint
    with fs.open_input_stream(path) as f:
        assert f.read() == b"hi"


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_s3_directory_of_several_files_reads_every_row(tmp_path, s3, fmt):
    uri = s3.upload(write_parts(tmp_path / "train", fmt), "claims/train")
    assert uri.startswith("s3://bsm-test/")
    files = list_files(uri)
    assert [f.name for f in files] == [f"{uri}/part-{k}.{fmt}" for k in range(FILES)]
    split, labels = load_split(uri, CFG, None)
    assert split.ids == ALL_IDS and labels.names == ["0", "1"]
    assert load_split(uri + "/", CFG, None)[0].ids == ALL_IDS  # a trailing slash: the same directory


def test_s3_bad_row_in_the_fifth_file_names_that_file_and_row(tmp_path, s3):
    uri = s3.upload(write_parts(tmp_path / "train", bad_row_in=4, bad_row=5), "claims/train")
    with pytest.raises(DataError) as e:
        load_split(uri, CFG, None)
    assert str(e.value) == f"{uri}/part-4.parquet: column 'label' has 1 null label(s), row 5"


def test_s3_glob_single_file_and_validation_labels(tmp_path, s3):
    uri = s3.upload(write_parts(tmp_path / "train"), "d")
    assert load_split(f"{uri}/part-[02].parquet", CFG, None)[0].ids == part(0)["order_id"] + part(2)["order_id"]
    train, labels = load_split(f"{uri}/part-1.parquet", CFG, None)
    assert train.ids == part(1)["order_id"]
    bad = pa.table({**part(9), "label": [0, 1, 2, 0, 1, 0, 1]})
    sink = pa.BufferOutputStream()
    pq.write_table(bad, sink)
    val = s3.put("val/v.parquet", sink.getvalue().to_pybytes())
    with pytest.raises(DataError) as e:
        load_split(s3.uri("val"), CFG, labels)
    assert str(e.value).startswith(f"{val}: column 'label' has 1 label(s) not among the classes ['0', '1']: row 2 (2)")
    table = read_table(uri, {"dialogue": "--text-field"})
    assert table.num_rows == FILES * PER_FILE and table.column_names == ["dialogue"]


def test_s3_missing_key_and_empty_object_are_clear_errors(s3):
    with pytest.raises(DataError) as e:
        load_split(s3.uri("nothing/here"), CFG, None)
    assert str(e.value) == f"{s3.uri('nothing/here')}: no such file or directory"
    empty = s3.put("empty.csv", b"")
    with pytest.raises(DataError) as e:
        load_split(empty, CFG, None)
    assert str(e.value) == f"{empty}: the file is empty (0 bytes, no rows)"


def test_s3_filesystem_can_be_built_without_the_environment(s3_server, tmp_path):
    """For code that gets the filesystem injected: the fixture's own S3FileSystem reaches the server too."""
    fs = s3_server.filesystem()
    fs.create_dir(f"{s3_server.bucket}/explicit")
    with fs.open_output_stream(f"{s3_server.bucket}/explicit/a.txt") as f:
        f.write(b"ok")
    assert fs.get_file_info(f"{s3_server.bucket}/explicit/a.txt").size == 2


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_schema_check_before_submission_reads_no_file_whole(tmp_path, s3, fmt):
    """What a client can check on a remote split before submitting: files, columns, types."""
    d = write_parts(tmp_path / "train", fmt)
    uri = s3.upload(d, "train")
    assert [f.name for f in check_schema(uri, CFG)] == [f"{uri}/part-{k}.{fmt}" for k in range(FILES)]
    renamed = pa.table({**{k: v for k, v in part(4).items() if k != "label"}, "target": part(4)["label"]})
    bad = tmp_path / "bad" / f"part-4.{fmt}"
    bad.parent.mkdir()
    if fmt == "parquet":
        pq.write_table(renamed, bad)
    elif fmt == "csv":
        pcsv.write_csv(renamed, bad)
    else:
        bad.write_text("".join(json.dumps(r) + "\n" for r in renamed.to_pylist()))
    s3.upload(bad, f"train/part-4.{fmt}")
    with pytest.raises(DataError) as e:
        check_schema(uri, CFG)
    assert str(e.value) == (
        f"{uri}/part-4.{fmt}: missing column 'label' (columns are 'order_id', 'dialogue', 'target'); "
        "name the right one with --label-field"
    )


def test_non_utf8_jsonl_and_tsv(tmp_path):
    jsonl = tmp_path / "latin1.jsonl"
    jsonl.write_bytes(b'{"dialogue": "hi", "label": 0}\n{"dialogue": "caf\xe9", "label": 1}\n')
    with pytest.raises(DataError) as e:
        load_split(str(jsonl), CFG, None)
    assert (
        str(e.value) == f"{jsonl}: column 'dialogue' is not UTF-8 text, row 1 has invalid bytes; save the file as UTF-8"
    )
    tsv = tmp_path / "t.tsv"
    tsv.write_text("order_id\tdialogue\tlabel\n1\thello, there\t0\n2\tbye\t1\n")
    split = load_split(str(tsv), CFG, None)[0]
    assert split.texts == ["hello, there", "bye"] and split.ids == [1, 2]


def test_s3_options_in_the_uri_query_are_not_a_glob(tmp_path, s3, monkeypatch):
    uri = s3.upload(write_parts(tmp_path / "train"), "train")
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the query names the endpoint now
    host = s3.endpoint_url.removeprefix("http://")
    split = load_split(f"{uri}?endpoint_override={host}&scheme=http", CFG, None)[0]
    assert split.ids == ALL_IDS
    files = list_files(f"{uri}/part-[01].parquet?endpoint_override={host}&scheme=http")
    assert [f.name for f in files] == [f"{uri}/part-0.parquet", f"{uri}/part-1.parquet"]
