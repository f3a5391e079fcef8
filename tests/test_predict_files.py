"""`bsm predict` on files: streamed in blocks with the same answers as scoring everything at once, any
file/directory/glob (local or s3:// on a real S3 API on loopback), and nothing of the user's ever replaced."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from test_predict import CLASSES, exported  # noqa: F401  (the module fixture: a tiny export and demo data)

import raytune_bsm.scoring.predict as predict_mod
from raytune_bsm.errors import ConfigError, DataError
from raytune_bsm.scoring.predict import Predictor, predict_file


def _probs(t: pa.Table) -> np.ndarray:
    return np.stack([t.column(f"prob_{c}").to_numpy() for c in CLASSES], axis=1)


def test_streamed_output_is_the_unstreamed_answer_over_a_directory_of_files(exported, tmp_path, monkeypatch):  # noqa: F811
    data = tmp_path / "in"
    data.mkdir()
    texts, ids = exported.texts, exported.ids
    pq.write_table(pa.table({"order_id": ids[:20], "dialogue": texts[:20]}), data / "a.parquet", row_group_size=6)
    pcsv.write_csv(pa.table({"order_id": ids[20:], "dialogue": texts[20:]}), data / "b.csv")
    _, ref = Predictor(str(exported.dest)).predict_texts(texts)  # everything in one call: the reference

    monkeypatch.setattr(predict_mod, "BLOCK", 7)  # blocks of 7 rows: several per file, one crossing no file
    out = predict_file(str(exported.dest), str(data), str(tmp_path / "out.parquet"), batch_size=3)
    t = pq.read_table(out)
    assert t.column_names == ["id", "predicted"] + [f"prob_{c}" for c in CLASSES]
    assert t.column("id").to_pylist() == ids  # a.parquet then b.csv, each in its own order
    assert np.abs(_probs(t) - ref).max() <= 1e-5
    assert t.column("predicted").to_pylist() == [CLASSES[i] for i in ref.argmax(1)]
    glob = predict_file(str(exported.dest), str(data / "*.parquet"), str(tmp_path / "glob.csv"))
    assert pcsv.read_csv(glob).num_rows == 20


def test_out_never_replaces_the_input_nor_an_existing_file_unless_asked(exported, tmp_path):  # noqa: F811
    data = tmp_path / "d" / "claims.parquet"
    data.parent.mkdir()
    data.write_bytes(exported.data.read_bytes())
    before = data.read_bytes()
    for out, msg in [
        (str(data), "that is the input file"),
        (str(tmp_path / "d" / ".." / "d" / "claims.parquet"), "that is the input file"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            predict_file(str(exported.dest), str(data), out, overwrite=True)
    with pytest.raises(ConfigError, match="inside the input directory"):
        predict_file(str(exported.dest), str(data.parent), str(data.parent / "sub" / "p.parquet"))
    with pytest.raises(ConfigError, match="is a directory"):
        predict_file(str(exported.dest), str(data), str(tmp_path / "d.parquet"), overwrite=True) if (
            tmp_path / "d.parquet"
        ).mkdir() is None else None
    assert data.read_bytes() == before

    existing = tmp_path / "mine.csv"
    existing.write_text("precious\n")
    with pytest.raises(ConfigError, match=f"--out {existing}: the file exists; pass --overwrite"):
        predict_file(str(exported.dest), str(data), str(existing))
    assert existing.read_text() == "precious\n"
    predict_file(str(exported.dest), str(data), str(existing), overwrite=True)
    assert pcsv.read_csv(existing).num_rows == 45
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "d.parquet", "mine.csv"]  # no temporary file left


def test_a_bad_file_midway_leaves_no_output_and_no_temp_file(exported, tmp_path, monkeypatch):  # noqa: F811
    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "dialogue": exported.texts[:3]}), data / "1.parquet")
    pq.write_table(pa.table({"id": ["x", "y"], "dialogue": exported.texts[3:5]}), data / "2.parquet")
    out = tmp_path / "out" / "p.parquet"
    with pytest.raises(DataError, match=r"2.parquet: column 'id' holds string values, but the rows before hold int64"):
        predict_file(str(exported.dest), str(data), str(out))
    assert not out.exists() and os.listdir(out.parent) == []

    (data / "2.parquet").unlink()
    (data / "3.jsonl").write_text('{"id": 4, "dialogue": "Buyer: hi"}\n{"id": 5, "dialogue": 7}\n')
    with pytest.raises(DataError, match="3.jsonl"):
        predict_file(str(exported.dest), str(data), str(out))
    (data / "3.jsonl").write_text('{"id": 4, "text": "Buyer: hi"}\n')
    with pytest.raises(DataError, match="3.jsonl: missing column 'dialogue'.*--text-field"):
        predict_file(str(exported.dest), str(data), str(out))
    assert os.listdir(out.parent) == []


def test_export_data_and_output_on_s3(exported, s3, tmp_path):  # noqa: F811
    """A real S3 API on loopback (tests/s3_server.py): the export, a directory of Parquet files, the output."""
    export = s3.upload(exported.dest, "export")
    for k in range(3):
        rows = slice(k * 15, (k + 1) * 15)
        path = tmp_path / f"part-{k}.parquet"
        pq.write_table(pa.table({"order_id": exported.ids[rows], "dialogue": exported.texts[rows]}), path)
        s3.upload(path, f"claims/part-{k}.parquet")
    local = pq.read_table(predict_file(str(exported.dest), str(exported.data), str(tmp_path / "local.parquet")))

    out = predict_file(export, s3.uri("claims/"), s3.uri("preds/p.parquet"))
    assert out == s3.uri("preds/p.parquet") and s3.keys("preds/") == ["preds/p.parquet"]  # no temp, no marker
    s3.client().download_file(s3.bucket, s3._key("preds/p.parquet"), str(tmp_path / "remote.parquet"))
    remote = pq.read_table(tmp_path / "remote.parquet")
    assert remote.column("id").to_pylist() == exported.ids
    assert np.abs(_probs(remote) - _probs(local)).max() <= 1e-6
    with pytest.raises(ConfigError, match="the file exists"):
        predict_file(export, s3.uri("claims/"), s3.uri("preds/p.parquet"))
    with pytest.raises(ConfigError, match="inside the input directory"):
        predict_file(export, s3.uri("claims/"), s3.uri("claims/p.parquet"))


def test_pipelined_keeps_order_raises_the_threads_error_and_stops_when_the_consumer_does():
    import threading

    from raytune_bsm.scoring.predict import pipelined

    assert list(pipelined(range(10), lambda x: x * x)) == [x * x for x in range(10)]

    def bad(x: int) -> int:
        if x == 3:
            raise DataError("row 3 is bad")
        return x

    got = []
    with pytest.raises(DataError, match="row 3 is bad"):
        for v in pipelined(range(10), bad):
            got.append(v)
    assert got == [0, 1, 2]
    seen: list[int] = []
    gen = pipelined(range(1000), lambda x: seen.append(x) or x, depth=2)
    assert next(gen) == 0
    gen.close()  # the consumer stops: the thread stops within a few items
    assert len(seen) < 10 and not any(t.name == "bsm-tokenize" for t in threading.enumerate())
