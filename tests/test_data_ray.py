"""A split through Ray Data on a real local Ray cluster: read from a directory of several files (local and on the
local S3 server), checked by distributed aggregation, tokenized once in an actor pool."""

from __future__ import annotations

import collections

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_data_sources import ALL_IDS, FILES, PER_FILE, part, write_parts

from raytune_bsm.config import DataConfig
from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
from raytune_bsm.data.ray_data import prepare_split
from raytune_bsm.data.splits import load_split
from raytune_bsm.errors import DataError

pytestmark = pytest.mark.slow
CFG = DataConfig(label_field="label")
PROC = dict(max_chunks=4, max_tokens=16)


@pytest.fixture(scope="module")
def ray_cluster(s3_server):
    """A local Ray cluster of 2 CPUs whose workers reach the local S3 server (the AWS_* variables travel in the
    runtime environment, as they would on a real cluster's nodes)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env={"env_vars": dict(s3_server.env)},
    )
    try:
        yield
    finally:
        ray.shutdown()


def expected_tokens() -> dict[int, list[int]]:
    texts = [t for k in range(FILES) for t in part(k)["dialogue"]]
    out = ChunkProcessor(ProcessorConfig(**PROC))(texts)
    return {i: ids.tolist() for i, ids in zip(ALL_IDS, out.ids)}


def check_every_row_tokenized_once(split) -> None:
    rows = split.dataset.take_all()
    assert split.rows == len(rows) == FILES * PER_FILE
    counts = collections.Counter(r["id"] for r in rows)
    assert sorted(counts) == sorted(ALL_IDS) and set(counts.values()) == {1}  # every row, once
    want = expected_tokens()
    for r in rows:
        assert list(r["input_ids"]) == want[r["id"]]  # the same tokens as the local processor's
        assert r["label"] == r["id"] % 2
        assert sum(r["chunk_lens"]) == len(r["input_ids"]) and r["cost"] == len(r["chunk_lens"]) * max(r["chunk_lens"])


def test_a_local_directory_is_read_checked_and_tokenized_once(ray_cluster, tmp_path):
    d = write_parts(tmp_path / "train")
    split = prepare_split(str(d), CFG, PROC)
    assert split.labels.names == ["0", "1"] and split.skipped_empty == 0 and len(split.files) == FILES
    check_every_row_tokenized_once(split)


def test_an_s3_directory_of_csv_files_is_tokenized_once(ray_cluster, s3, tmp_path):
    uri = s3.upload(write_parts(tmp_path / "train", "csv"), "train")
    check_every_row_tokenized_once(prepare_split(uri, CFG, PROC))


@pytest.mark.parametrize("problem", ["null label", "unknown label"])
def test_errors_are_the_local_paths_own_naming_the_file_and_row(ray_cluster, tmp_path, problem):
    d = write_parts(tmp_path / "train", bad_row_in=4 if problem == "null label" else None, bad_row=5)
    labels = None
    if problem == "unknown label":
        labels = load_split(str(d), CFG, None)[1]
        pq.write_table(pa.table({**part(4), "label": [0, 1, 0, 7, 1, 0, 1]}), d / "part-4.parquet")
    with pytest.raises(DataError) as local:
        load_split(str(d), CFG, labels)
    with pytest.raises(DataError) as remote:
        prepare_split(str(d), CFG, PROC, labels)
    assert str(remote.value) == str(local.value)
    assert str(remote.value).startswith(f"{d / 'part-4.parquet'}: column 'label'")


def test_a_csv_row_that_breaks_past_the_schema_check_is_one_line_naming_file_and_row(ray_cluster, tmp_path):
    """The client's schema check reads a CSV file's first block only; a broken row further on is found by the read
    task on the cluster, and the user gets the local reader's own line, not a remote traceback."""
    d = write_parts(tmp_path / "train", "csv")
    n = 40_000  # about 2 MB: well past the first block that the schema check reads
    lines = ["order_id,dialogue,label"] + [f"{i},buyer: where is order {i}?,{i % 2}" for i in range(n)]
    lines[30_001] = "30000,buyer: a, b and c,1"  # row 30000: an unquoted comma, one field too many
    (d / "part-3.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as local:
        load_split(str(d), CFG, None)
    with pytest.raises(DataError) as remote:
        prepare_split(str(d), CFG, PROC)
    assert type(remote.value) is DataError and str(remote.value) == str(local.value)
    assert str(remote.value) == (
        f"{d / 'part-3.csv'}: row 30000 (line 30002) has 4 fields, the header has 3; quote values that hold a ','"
    )


def test_a_big_parquet_file_is_read_by_several_tasks_each_row_once(ray_cluster, tmp_path, monkeypatch):
    """A Parquet file past UNIT_BYTES is cut into runs of its row groups, one read task each (here the limit is
    lowered so a small file of 4 row groups is 'big'): every row still comes out exactly once."""
    from raytune_bsm.data import ray_data
    from raytune_bsm.data.readers import list_files

    d = write_parts(tmp_path / "train")
    pq.write_table(pa.table(part(2)), d / "part-2.parquet", row_group_size=2)  # 7 rows: groups of 2, 2, 2, 1
    files = list_files(str(d))
    monkeypatch.setattr(ray_data, "UNIT_BYTES", 500)  # each row group is about 380 bytes compressed; files 3.4 kB
    assert files[2].size > 500 and all(f.size > 500 for f in files)
    units = ray_data.read_units(files)  # every other file is one row group: a big file that cannot be cut
    assert units == [(0, [0]), (1, [0]), (2, [0, 1]), (2, [2, 3]), (3, [0]), (4, [0])]
    check_every_row_tokenized_once(prepare_split(str(d), CFG, PROC))
