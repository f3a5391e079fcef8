"""Data that looked fine and was read wrong (issue 18, cases 2, 12, 13, 20, 26), each through what a user runs:
the training split's reader (`bsm submit`'s local check and the job's local path), the driver's listing for the
Ray Data path, and `bsm predict` with a real tiny export (built once, by test_predict's fixture).

- a directory with symbolic-link loops: every file read once, the listing bounded (also on S3, moto's server);
- text as a dictionary (pandas `category`), `large_string` or `string_view`: accepted for text, labels, ids;
- the export's id field: predict uses it when the data has it, under its own name, and says so;
- a latin-1 CSV: the same "not UTF-8 text, row N" line from submit and from predict;
- a column name holding an escape sequence: shown with the escape visible, never as the clean name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_predict import exported  # noqa: F401 - the fixture: a real tiny 3-class export, built once
from typer.testing import CliRunner

from raytune_bsm import layout
from raytune_bsm.cli import app
from raytune_bsm.config import DataConfig
from raytune_bsm.data import listing
from raytune_bsm.data.ray_data import file_summary, read_unit, tokenize
from raytune_bsm.data.readers import list_files
from raytune_bsm.data.splits import check_schema, load_split
from raytune_bsm.demo.generator import make_dialogues
from raytune_bsm.errors import DataError
from raytune_bsm.scoring.predict import predict_file

CFG = DataConfig(text_field="dialogue", label_field="label")
ROWS = 80  # rows per file


def _part(k: int, n: int = ROWS) -> pa.Table:
    d = make_dialogues(n, seed=k)
    return pa.table(
        {
            "order_id": [f"o{k}-{i}" for i in range(n)],
            "dialogue": d.column("dialogue"),
            "label": pa.array([i % 2 for i in range(n)], pa.int64()),
        }
    )


def _looped(root: Path, loops: int) -> Path:
    """d/a.parquet and d/sub/b.parquet (160 rows), with `sub/loop -> ..` and `self -> self` (one loop), or
    `self -> .` and `sub/loop -> ..` (two loops: pyarrow's walk of it is exponential)."""
    d = root / "d"
    (d / "sub").mkdir(parents=True)
    pq.write_table(_part(0), d / "a.parquet")
    pq.write_table(_part(1), d / "sub" / "b.parquet")
    os.symlink("..", d / "sub" / "loop")
    os.symlink("self" if loops == 1 else ".", d / "self")
    return d


def _cli(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`bsm ARGS` in-process, with a BSM_HOME, HOME and TMPDIR of its own and no cluster address."""
    for name in ("home", "user", "tmp"):
        (tmp_path / name).mkdir(exist_ok=True)
    monkeypatch.setenv("BSM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path / "user")
    monkeypatch.setattr(logging.getLogger("raytune_bsm"), "handlers", [])  # a handler on this run's stderr
    return CliRunner().invoke(app, args, prog_name="bsm")


def _one_error_line(r) -> str:
    assert r.exit_code == 1 and r.stdout == "", (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsm: error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# ------------------------------------------------------------------------------------- case 2: symlink loops


@pytest.mark.parametrize("loops", [1, 2])
def test_a_directory_with_link_loops_is_read_once_file_by_file(tmp_path, loops):
    d = _looped(tmp_path, loops)
    t0 = time.monotonic()
    files = list_files(str(d))
    assert [f.name for f in files] == [f"{d}/a.parquet", f"{d}/sub/b.parquet"]
    assert [f.path for f in files] == [str(d / "a.parquet"), str(d / "sub" / "b.parquet")]  # real paths
    for glob in (f"{d}/**/*.parquet", f"{d}/*"):
        assert sorted(f.path for f in list_files(glob)) == [f.path for f in files], glob
    split, _ = load_split(str(d), CFG, None)  # what `bsm submit` checks and the job's local path reads
    assert len(split.texts) == 2 * ROWS and len(set(split.ids)) == 2 * ROWS  # 160 rows, not 6,560
    assert [f.path for f in check_schema(str(d), CFG)] == [f.path for f in files]  # the Ray Data path's listing
    assert time.monotonic() - t0 < 10


def test_a_link_out_of_the_tree_is_followed_once_and_a_link_into_it_adds_nothing(tmp_path):
    d = _looped(tmp_path, 2)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    pq.write_table(_part(2), outside / "c.parquet")
    os.symlink(outside, d / "ext1")
    os.symlink(outside, d / "sub" / "ext2")  # the same directory by a second link
    os.symlink(d / "a.parquet", d / "sub" / "again.parquet")  # a file by a link
    os.symlink("missing.parquet", d / "dangling.parquet")  # a link to nothing is no file
    names = [f.name for f in list_files(str(d))]
    assert names == [f"{d}/a.parquet", f"{d}/ext1/c.parquet", f"{d}/sub/b.parquet"]


def test_a_listing_past_the_limit_is_one_clear_error(tmp_path, monkeypatch):
    d = _looped(tmp_path, 1)
    monkeypatch.setattr(listing, "MAX_FILES", 1)
    with pytest.raises(DataError) as e:
        list_files(str(d))
    assert str(e.value) == (
        f"{d}: more than 1 files to list; name a smaller directory or a narrower glob "
        "(a link to a big directory counts too)"
    )
    assert len(list_files(f"{d}/a.parquet")) == 1  # a single file is no listing


def test_s3_listing_is_deduplicated_and_bounded(tmp_path, s3, monkeypatch):
    local = tmp_path / "parts"
    for k in range(3):
        (local / f"p{k}").mkdir(parents=True)
        pq.write_table(_part(k, 5), local / f"p{k}" / "x.parquet")
    uri = s3.upload(local, "loops")
    assert [f.name for f in list_files(uri)] == [f"{uri}/p{k}/x.parquet" for k in range(3)]
    monkeypatch.setattr(listing, "MAX_FILES", 2)
    with pytest.raises(DataError, match="more than 2 files to list"):
        list_files(uri)


def test_predict_of_a_looped_directory_scores_each_row_once(exported, tmp_path):  # noqa: F811
    d = _looped(tmp_path, 2)
    t = pq.read_table(predict_file(str(exported.dest), str(d), str(tmp_path / "out.parquet")))
    assert t.num_rows == 2 * ROWS
    assert sorted(t.column("id").to_pylist()) == sorted(f"o{k}-{i}" for k in (0, 1) for i in range(ROWS))


def test_submit_dry_run_of_a_looped_directory_passes_with_its_real_rows(tmp_path, monkeypatch):
    d = _looped(tmp_path, 2)
    r = _cli(["submit", "--train", str(d), "--label-field", "label", "--dry-run"], tmp_path, monkeypatch)
    assert r.exit_code == 0, r.stderr
    assert "6,560" not in r.stderr and "6560" not in r.stderr


# ------------------------------------------------------------------------- case 12: every kind of Arrow text


def _typed(kind: str) -> pa.Table:
    """A training file whose text, label and id columns are all of one text type."""
    t = _part(3, 30)
    labels = pa.array(["yes" if i % 3 else "no" for i in range(30)])
    cols = {"order_id": t.column("order_id").combine_chunks(), "dialogue": t.column("dialogue").combine_chunks()}
    cols["label"] = labels
    if kind == "category":  # as pandas writes a `category` column: a Parquet dictionary
        df = pa.table(cols).to_pandas()
        for c in cols:
            df[c] = df[c].astype("category")
        return pa.Table.from_pandas(df, preserve_index=False)
    target = {"large_string": pa.large_string(), "string_view": pa.string_view()}[kind]
    return pa.table({c: v.cast(target) for c, v in cols.items()})


@pytest.mark.parametrize("kind", ["category", "large_string", "string_view"])
def test_dictionary_large_and_view_text_is_text_everywhere(exported, tmp_path, monkeypatch, kind):  # noqa: F811
    table = _typed(kind)
    path = tmp_path / "typed.parquet"
    pq.write_table(table, path)
    read = pq.read_schema(path)
    assert all(str(read.field(c).type).startswith("dictionary" if kind == "category" else kind) for c in read.names)

    check_schema(str(path), CFG)
    split, labels = load_split(str(path), CFG, None)
    assert labels.names == ["no", "yes"] and len(split.texts) == 30
    assert split.ids[:2] == ["o3-0", "o3-1"] and isinstance(split.texts[0], str)

    # the Ray Data path's stages (as plain functions: no cluster), on the block its read stage hands over
    unit = pa.table({"unit": [0]})
    columns = ["dialogue", "label", "order_id"]
    (block,) = read_unit(unit, files=list_files(str(path)), units=[(0, None)], columns=columns, include_paths=True)
    summary = file_summary(block, "dialogue", "label", []).to_pylist()[0]
    assert summary["rows"] == 30 and sorted(summary["labels"]) == ["no", "yes"]
    processor = {"tokenizer": "all-MiniLM-L6-v2", "max_chunks": 2, "max_tokens": 24}
    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig

    chunker = ChunkProcessor(ProcessorConfig(**processor))
    records = tokenize(
        block,
        processor=processor,
        tokenizer_json=chunker.tokenizer_json(),
        pad_id=chunker.pad_id,
        labels=labels,
        text_field="dialogue",
        label_field="label",
        id_field="order_id",
    )
    assert records.num_rows == 30 and records.column("id").type == pa.string()
    assert records.column("label").to_pylist() == list(split.labels)

    out = predict_file(str(exported.dest), str(path), str(tmp_path / "p.parquet"))
    t = pq.read_table(out)
    assert t.num_rows == 30 and t.schema.field("id").type == pa.string()
    assert t.column("id").to_pylist() == table.column("order_id").cast(pa.string()).to_pylist()

    r = _cli(["submit", "--train", str(path), "--label-field", "label", "--dry-run"], tmp_path, monkeypatch)
    assert r.exit_code == 0, r.stderr


# ----------------------------------------------------------------------------------- case 13: the id field


@pytest.fixture
def article_export(exported, tmp_path) -> Path:  # noqa: F811
    """test_predict's export as trained with `--id-field article_id` (bsm_model.json says so), re-manifested."""
    dest = tmp_path / "export"
    shutil.copytree(exported.dest, dest)
    info = json.loads((dest / layout.MODEL_JSON).read_text())
    (dest / layout.MODEL_JSON).write_text(json.dumps({**info, "id_field": "article_id"}))
    manifest = json.loads((dest / layout.MANIFEST).read_text())
    del manifest["files"]
    layout.write_manifest(dest, manifest)
    return dest


def test_predict_uses_the_exports_id_field_under_its_own_name_and_says_so(article_export, tmp_path, caplog):
    texts = make_dialogues(12, seed=5).column("dialogue").to_pylist()
    data = tmp_path / "in.parquet"
    pq.write_table(pa.table({"dialogue": texts, "article_id": [f"A{i}" for i in range(12)]}), data)
    with caplog.at_level(logging.INFO, logger="raytune_bsm"):
        t = pq.read_table(predict_file(str(article_export), str(data), str(tmp_path / "p.parquet")))
    assert t.column_names[:2] == ["article_id", "predicted"]
    assert t.column("article_id").to_pylist() == [f"A{i}" for i in range(12)]  # not row numbers 0..11
    said = [r.getMessage() for r in caplog.records if "ids from column" in r.getMessage()]
    assert len(said) == 1 and "ids from column 'article_id' (the export's id field)" in said[0]

    pq.write_table(pa.table({"dialogue": texts, "article_id": list(range(12)), "other": list("abcdefghijkl")}), data)
    t = pq.read_table(predict_file(str(article_export), str(data), str(tmp_path / "q.parquet"), id_field="other"))
    assert t.column("id").to_pylist() == list("abcdefghijkl")  # an explicit --id-field wins, as before

    pq.write_table(pa.table({"dialogue": texts, "order_id": list(range(100, 112))}), data)
    t = pq.read_table(predict_file(str(article_export), str(data), str(tmp_path / "r.parquet")))
    assert t.column("id").to_pylist() == list(range(100, 112))  # no article_id: the usual id columns


def test_predict_on_cluster_chooses_the_id_as_local_predict_does(article_export, tmp_path):
    """--on-cluster: the client's check and the job's check pick the export's id field too, and the job's scoring
    stage (a real ONNX Runtime session, as on an actor) writes it under its own name, as local predict does. On the
    cluster an id must exist (rows come back in any order): none of them is refused naming the export's first."""
    from dataclasses import asdict

    from raytune_bsm.api import predict_on_cluster
    from raytune_bsm.runner.batch_predict import PredictJob, Score, check_inputs

    texts = make_dialogues(6, seed=5).column("dialogue").to_pylist()
    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(pa.table({"dialogue": texts, "article_id": [f"A{i}" for i in range(6)]}), data / "a.parquet")

    def plan():
        return predict_on_cluster(str(article_export), str(data), str(tmp_path / "out"), dry_run=True)

    assert plan()["config"]["id_field"] is None  # no --id-field: the job chooses, the same way
    files = list_files(str(data))
    id_col, id_name, id_type = check_inputs(files, "dialogue", None, "article_id", str(data))
    assert (id_col, id_name, id_type) == ("article_id", "article_id", pa.string())
    job = PredictJob(export=str(article_export), data=str(data), out=str(tmp_path / "out"))
    info = json.loads((article_export / layout.MODEL_JSON).read_text())
    score = Score(asdict(job), "dialogue", id_col, id_name, id_type, [str(c) for c in info["class_names"]])
    scored = score(pq.read_table(data / "a.parquet"))
    local = pq.read_table(predict_file(str(article_export), str(data), str(tmp_path / "local.parquet")))
    assert scored.column_names == local.column_names and scored.column_names[:2] == ["article_id", "predicted"]
    assert scored.column("article_id").to_pylist() == [f"A{i}" for i in range(6)]

    pq.write_table(pa.table({"dialogue": texts, "note": ["x"] * 6}), data / "a.parquet")
    with pytest.raises(DataError, match=r"no id column \('article_id', 'order_id', 'id', 'record_id'\)"):
        plan()


# ------------------------------------------------------------------- case 20: a latin-1 CSV, one message


def test_latin1_csv_gets_the_same_line_from_submit_and_predict(exported, tmp_path, monkeypatch):  # noqa: F811
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        "order_id,dialogue,label\n1,hello,0\n2,ok then,1\n3,caf\xe9 cr\xe8me,0\n4,bye,1\n".encode("latin-1")
    )
    expected = f"{path}: column 'dialogue' is not UTF-8 text, row 2 has invalid bytes; save the file as UTF-8"
    submit = _one_error_line(
        _cli(["submit", "--train", str(path), "--label-field", "label", "--dry-run"], tmp_path, monkeypatch)
    )
    predict = _one_error_line(
        _cli(["predict", str(exported.dest), str(path), "--out", "p.parquet"], tmp_path, monkeypatch)
    )
    assert submit == f"bsm: error: --train: {expected}"
    assert predict == f"bsm: error: {expected}"
    assert not (tmp_path / "user" / "p.parquet").exists()


def test_latin1_past_the_first_block_of_a_big_csv_is_the_same_message_in_predict(exported, tmp_path):  # noqa: F811
    import raytune_bsm.scoring.files as files

    path = tmp_path / "late.csv"
    rows = "".join(f"{i},hello number {i}\n" for i in range(3000))
    path.write_bytes(("order_id,dialogue\n" + rows + "3000,caf\xe9\n").encode("latin-1"))
    old = files.BLOCK_BYTES
    files.BLOCK_BYTES = 1 << 14  # the first block types the column as string; a later one holds the bad bytes
    try:
        with pytest.raises(DataError) as e:
            predict_file(str(exported.dest), str(path), str(tmp_path / "p.parquet"))
    finally:
        files.BLOCK_BYTES = old
    assert str(e.value) == f"{path}: column 'dialogue' is not UTF-8 text; save the file as UTF-8"


# --------------------------------------------------------------- case 26: an escape sequence in a column name


def test_a_column_name_with_an_escape_sequence_is_shown_escaped(exported, tmp_path, monkeypatch):  # noqa: F811
    path = tmp_path / "esc.parquet"
    pq.write_table(pa.table({"dia\x1b[31mlogue": ["hi", "yo"], "label": [0, 1]}), path)
    shown = "'dia\\x1b[31mlogue'"  # as the user must see it: the escape visible, not a red 'logue'
    submit = _one_error_line(
        _cli(["submit", "--train", str(path), "--label-field", "label", "--dry-run"], tmp_path, monkeypatch)
    )
    assert f"missing column 'dialogue' (columns are {shown}, 'label')" in submit, submit
    predict = _one_error_line(
        _cli(["predict", str(exported.dest), str(path), "--out", "p.parquet"], tmp_path, monkeypatch)
    )
    assert f"missing column 'dialogue' (columns are {shown}, 'label')" in predict, predict
    assert "\x1b" not in submit + predict

    with pytest.raises(DataError) as e:  # a column named as the text field: its own name in the message
        load_split(str(path), DataConfig(text_field="dia\x1b[31mlogue", label_field="nope"), None)
    assert f"(columns are {shown}, 'label')" in str(e.value)
    csv = tmp_path / "esc.csv"
    csv.write_bytes(b"order_id,dia\x1b[31mlogue\n1,caf\xe9\n")
    with pytest.raises(DataError) as e:
        load_split(str(csv), DataConfig(text_field="dia\x1b[31mlogue", label_field="order_id"), None)
    assert f"column {shown} is not UTF-8 text, row 0" in str(e.value)


def test_predict_refuses_an_id_field_that_is_the_exports_text_field(exported, tmp_path, monkeypatch):  # noqa: F811
    """Issue 18.14 for predict with one flag: --id-field names the column the export reads as text."""
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"order_id": ["a", "b"], "dialogue": ["hi there", "ok"]}), path)
    line = _one_error_line(
        _cli(
            ["predict", str(exported.dest), str(path), "--id-field", "dialogue", "--out", "p.parquet"],
            tmp_path,
            monkeypatch,
        )
    )
    assert line == (
        "bsm: error: --id-field 'dialogue' is also the --text-field: a column can play one role (text, label, id, feature); "
        "give another column"
    )
    assert not (tmp_path / "user" / "p.parquet").exists()
