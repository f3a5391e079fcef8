"""Data: real Parquet / CSV / JSON Lines files -> checked splits -> padded batches. No mocks."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_ENCODER, write_parquet

from raytune_bsm.config import DataConfig, RunConfig
from raytune_bsm.data.batching import Collate, EncodedDataset, LengthGroupedBatchSampler
from raytune_bsm.data.splits import load_split, split_off
from raytune_bsm.errors import DataError
from raytune_bsm.runner.prepare import prepare
from raytune_bsm.runner.worker import train_loop

CFG = DataConfig(label_field="label")


def records(n: int, start: int = 0, labels: list | None = None) -> dict[str, list]:
    """n dialogues (messages separated by newlines), order ids start.., labels alternating 0/1 unless given."""
    ids = list(range(start, start + n))
    return {
        "order_id": ids,
        "dialogue": [f"buyer: where is order {i}?\nseller: shipped on day {i % 7}" + " ok" * (i % 5) for i in ids],
        "label": labels if labels is not None else [i % 2 for i in ids],
    }


def write_csv(path: Path, cols: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(cols)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        w.writerows(zip(*(cols[c] for c in names)))
    return path


def write_jsonl(path: Path, cols: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(cols)
    with path.open("w") as f:
        for row in zip(*(cols[c] for c in names)):
            f.write(json.dumps(dict(zip(names, row))) + "\n")
    return path


# ----------------------------------------------------------------------------------------------- formats


def test_parquet_file_directory_glob_csv_and_jsonl_read_the_same_records(tmp_path):
    data = records(30)
    single = write_parquet(tmp_path / "one" / "train.parquet", **data)
    parts = tmp_path / "parts"
    for k, (a, b) in enumerate([(0, 12), (12, 25), (25, 30)]):
        write_parquet(parts / f"part-{k}.parquet", **{c: v[a:b] for c, v in data.items()})
    (parts / "_SUCCESS").write_text("")  # a non-data file in a dataset directory is ignored
    csv_file = write_csv(tmp_path / "train.csv", data)
    jsonl_file = write_jsonl(tmp_path / "train.jsonl", data)

    sources = {
        "parquet": str(single),
        "directory": str(parts),
        "glob": str(parts / "part-*.parquet"),
        "csv": str(csv_file),
        "jsonl": str(jsonl_file),
    }
    got = {name: load_split(src, CFG, None)[0] for name, src in sources.items()}
    for name, split in got.items():
        assert split.texts == data["dialogue"], name
        assert split.ids == data["order_id"], name  # the id column is found by name (order_id)
        assert split.labels.dtype == np.int64
        assert split.labels.tolist() == data["label"], name
        assert split.skipped_empty == 0
    assert "\n" in got["csv"].texts[0]  # newlines inside quoted CSV values survive


def test_jsonl_list_dialogues_process_like_newline_strings(tmp_path):
    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig

    data = records(6)
    as_lists = {**data, "dialogue": [d.split("\n") for d in data["dialogue"]]}
    a = load_split(str(write_parquet(tmp_path / "s.parquet", **data)), CFG, None)[0]
    b = load_split(str(write_jsonl(tmp_path / "l.jsonl", as_lists)), CFG, None)[0]
    assert isinstance(b.texts[0], list) and len(b.texts[0]) == 2
    proc = ChunkProcessor(ProcessorConfig(max_chunks=4, max_tokens=16))
    pa_, pb = proc(a.texts), proc(b.texts)
    assert [x.tolist() for x in pa_.ids] == [x.tolist() for x in pb.ids]
    assert sum(len(x) for x in pa_.ids) > 6 * 10


# ----------------------------------------------------------------------------------------------- splits


def run_config(tmp_path: Path, model: dict | None = None, **data: object) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": "t",
            "model": {"encoder_config": TINY_ENCODER, "max_chunks": 4, "max_tokens": 32, **(model or {})},
            "data": {"label_field": "label", **data},
            "train": {"output_dir": str(tmp_path / "out")},
            "scaling": {"cpus_per_worker": torch.get_num_threads()},  # train_loop sets torch's thread count
        }
    )


def test_train_val_test_from_separate_paths(tmp_path):
    tr = write_parquet(tmp_path / "train.parquet", **records(40))
    va = write_parquet(tmp_path / "val.parquet", **records(7, start=100))
    te = write_csv(tmp_path / "test.csv", records(9, start=200))
    prep = prepare(run_config(tmp_path, train=str(tr), val=str(va), test=str(te)))
    assert (len(prep.train), len(prep.val), len(prep.test)) == (40, 7, 9)
    assert prep.train.record_ids == list(range(40))
    assert prep.val.record_ids == list(range(100, 107))
    assert prep.test.record_ids == list(range(200, 209))
    assert prep.test.labels.tolist() == [i % 2 for i in range(200, 209)]
    assert prep.model_config["num_classes"] == 2 and prep.model_config["class_names"] == ["0", "1"]
    assert max(int(l.max()) for l in prep.train.lens) <= 32 and max(len(l) for l in prep.train.lens) <= 4


def test_val_split_off_train_by_seeded_fraction(tmp_path):
    split, _ = load_split(str(write_parquet(tmp_path / "train.parquet", **records(50))), CFG, None)
    tr, va = split_off(split, 0.2, seed=3)
    tr2, va2 = split_off(split, 0.2, seed=3)
    tr3, va3 = split_off(split, 0.2, seed=4)
    assert (len(tr.ids), len(va.ids)) == (40, 10)
    assert not set(tr.ids) & set(va.ids)
    assert sorted(tr.ids + va.ids) == list(range(50))
    assert (tr.ids, va.ids) == (tr2.ids, va2.ids)  # same seed, same split
    assert va3.ids != va.ids and len(va3.ids) == 10  # another seed, another split
    for s in (tr, va):  # texts and labels travel with their ids
        assert s.labels.tolist() == [i % 2 for i in s.ids]
        assert s.texts == [split.texts[i] for i in s.ids]
    assert split_off(split, 0.001, seed=0)[1].ids.__len__() == 1  # at least one validation record

    # Through prepare: no --val, so 10% of the 50 records become the validation set.
    prep = prepare(run_config(tmp_path, train=str(tmp_path / "train.parquet"), val_fraction=0.1, split_seed=3))
    assert (len(prep.train), len(prep.val), prep.test) == (45, 5, None)
    assert not set(prep.train.record_ids) & set(prep.val.record_ids)


# ----------------------------------------------------------------------------------------------- labels


def test_integer_boolean_and_string_labels(tmp_path):
    n = 8
    int_file = write_parquet(tmp_path / "i.parquet", **records(n, labels=[0, 2, 1, 2, 0, 1, 2, 0]))
    ints = load_split(str(int_file), CFG, None)
    assert ints[1].names == ["0", "1", "2"] and ints[1].kind == "int"
    assert ints[0].labels.tolist() == [0, 2, 1, 2, 0, 1, 2, 0]

    bools = load_split(str(write_parquet(tmp_path / "b.parquet", **records(n, labels=[True, False] * 4))), CFG, None)
    assert bools[1].names == ["False", "True"] and bools[1].kind == "bool"
    assert bools[0].labels.tolist() == [1, 0] * 4

    words = ["refund", "no_refund", "partial", "refund", "no_refund", "refund", "partial", "refund"]
    strs = load_split(str(write_parquet(tmp_path / "s.parquet", **records(n, labels=words))), CFG, None)
    assert strs[1].names == ["no_refund", "partial", "refund"] and strs[1].kind == "str"  # sorted
    assert strs[0].labels.tolist() == [2, 0, 1, 2, 0, 2, 1, 2]

    csv_bools = load_split(str(write_csv(tmp_path / "b.csv", records(n, labels=["true", "false"] * 4))), CFG, None)
    assert csv_bools[1].kind == "bool" and csv_bools[0].labels.tolist() == [1, 0] * 4


@pytest.mark.filterwarnings("ignore:No positive samples")  # one tiny validation batch
def test_multiclass_string_labels_infer_num_classes_and_are_saved(tmp_path, restore_logging):
    words = ["refund", "no_refund", "partial"] * 4
    tr = write_parquet(tmp_path / "train.parquet", **records(12, labels=words))
    va = write_jsonl(tmp_path / "val.jsonl", records(3, start=50, labels=["partial", "refund", "partial"]))
    run = run_config(tmp_path, train=str(tr), val=str(va), batch_size=4)
    prep = prepare(run)
    cfg = prep.model_config
    assert (cfg["num_classes"], cfg["is_binary"]) == (3, False)
    assert cfg["class_names"] == ["no_refund", "partial", "refund"]
    assert prep.val.labels.tolist() == [1, 2, 1]
    assert prep.train.labels.tolist()[:3] == [2, 0, 1]

    # A real (tiny, one-step) local run saves the class names with the model's config.
    config = run.to_dict()
    config["train"].update(limit_train_batches=1, limit_val_batches=1)
    metrics = train_loop(config)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["model"]
    assert saved["class_names"] == ["no_refund", "partial", "refund"] and saved["num_classes"] == 3
    assert "val_f1_score" in metrics and Path(metrics["best_checkpoint"]).exists()


def test_label_unseen_in_train_is_an_error_naming_file_column_and_rows(tmp_path):
    tr = write_parquet(tmp_path / "train.parquet", **records(10, labels=["yes", "no"] * 5))
    va_labels = ["yes", "maybe", "no", "no", "unsure", "yes"]
    va = write_parquet(tmp_path / "val.parquet", **records(6, labels=va_labels))
    labels = load_split(str(tr), CFG, None)[1]
    with pytest.raises(DataError) as e:
        load_split(str(va), CFG, labels)
    msg = str(e.value)
    assert msg.startswith(f"{va}: column 'label' has 2 label(s) not among the classes ['no', 'yes']")
    assert "row 1 ('maybe'), row 4 ('unsure')" in msg


def test_config_label_field_default_and_flag(tmp_path):
    path = write_parquet(tmp_path / "x.parquet", **records(4))
    with pytest.raises(DataError) as e:
        load_split(str(path), DataConfig(), None)  # the default label column is reversal_flag
    assert str(e.value).startswith(f"{path}: missing column 'reversal_flag'")
    assert "--label-field" in str(e.value) and "'order_id', 'dialogue', 'label'" in str(e.value)


# ----------------------------------------------------------------------------------------------- bad input


def garbage(path: Path) -> Path:
    path.write_bytes(b"PAR1 this is not a parquet file \x00\x01\x02" * 20)
    return path


def bad_inputs(tmp: Path) -> dict[str, tuple[dict, list[str]]]:
    """name -> (data config for train_loop, substrings the error message must hold)."""
    good = str(write_parquet(tmp / "good.parquet", **records(10)))
    no_label = {k: v for k, v in records(4).items() if k != "label"}
    no_text = {k: v for k, v in records(4).items() if k != "dialogue"}
    r = records(6)
    cases: dict[str, tuple[dict, list[str]]] = {}

    def case(name, path, must, **extra):
        cases[name] = ({"train": str(path), **extra}, [str(path), *must])  # a file written after it is named

    case("missing label column", write_parquet(tmp / "a.parquet", **no_label), ["'label'", "--label-field"])
    case("missing text column", write_parquet(tmp / "b.parquet", **no_text), ["'dialogue'", "--text-field"])
    case(
        "missing id column",
        write_parquet(tmp / "b2.parquet", **records(4)),
        ["'ticket'", "--id-field"],
        id_field="ticket",
    )
    case("float labels", write_parquet(tmp / "c.parquet", **{**r, "label": [0.0, 1.0] * 3}), ["'label'", "double"])
    case("int text", write_parquet(tmp / "d.parquet", **{**r, "dialogue": list(range(6))}), ["'dialogue'", "int64"])
    case(
        "null labels",
        write_parquet(tmp / "e.parquet", **{**r, "label": [0, None, 1, None, 0, 1]}),
        ["'label'", "2 null label(s), rows 1, 3"],
    )
    csv_nulls = {**r, "label": ["a", "", "b", "a", "", "b"]}  # an empty CSV field is a null, not a class ""
    case("null labels in csv", write_csv(tmp / "e.csv", csv_nulls), ["'label'", "2 null label(s), rows 1, 4"])
    case(
        "int label outside num_classes",
        write_parquet(tmp / "n.parquet", **{**r, "label": [0, 1, -1, 0, 3, 0]}),
        ["'label'", "2 label(s) outside 0..1 (num_classes)", "row 2 (-1), row 4 (3)"],
        model={"num_classes": 2},
    )
    case(
        "single int class",
        write_parquet(tmp / "s1.parquet", **{**r, "label": [7] * 6}),
        ["'label'", "single class '7'"],
    )
    case(
        "single bool class",
        write_parquet(tmp / "s2.parquet", **{**r, "label": [True] * 6}),
        ["'label'", "single class 'True'"],
    )
    case(
        "too many int classes",
        write_parquet(tmp / "many.parquet", **records(10_050, labels=list(range(10_050)))),
        ["'label'", "10,050 distinct labels", "more than the 10,000 classes", "--label-field"],
    )
    case("duplicated csv column", tmp / "dup.csv", ["column 'label' appears 2 times (columns 3, 4)"])
    (tmp / "dup.csv").write_text("order_id,dialogue,label,label\n1,hi,0,1\n2,yo,1,0\n")
    (tmp / "latin1.csv").write_bytes("order_id,dialogue,label\n1,hi,0\n2,caf\u00e9 cr\u00e8me,1\n".encode("latin-1"))
    case("non-utf8 csv", tmp / "latin1.csv", ["column 'dialogue' is not UTF-8 text, row 1"])
    (tmp / "ragged.csv").write_text("order_id,dialogue,label\n1,hi,0\n2,yo,1\n3,a, b,1\n")
    case("csv row with an extra field", tmp / "ragged.csv", ["row 2 (line 4) has 4 fields, the header has 3"])
    (tmp / "empty.csv").write_bytes(b"")
    case("empty csv file", tmp / "empty.csv", ["the file is empty"])
    case(
        "csv mixing integer and text labels",
        write_csv(tmp / "mixed.csv", {**r, "label": [0, 1, "yes", 0, 1, 1]}),
        ["'label'", "mixes integer and text labels", "row 2 ('yes')"],
    )
    (tmp / "mixed.jsonl").write_text('{"dialogue": "hi", "label": 0}\n{"dialogue": "yo", "label": "one"}\n')
    case("jsonl mixing integer and text labels", tmp / "mixed.jsonl", ["row 1 (line 2)", "column 'label'"])
    (tmp / "ids").mkdir()
    write_parquet(tmp / "ids" / "a.parquet", **records(3))
    write_parquet(tmp / "ids" / "b.parquet", **{**records(3), "order_id": ["x", "y", "z"]})
    case("id types differ between files", tmp / "ids", [str(tmp / "ids" / "b.parquet"), "'order_id'", "string ids"])
    case("single class", write_parquet(tmp / "s.parquet", **{**r, "label": ["x"] * 6}), ["'label'", "single class"])
    cases["unknown label in val"] = (
        {"train": good, "val": str(write_parquet(tmp / "f.parquet", **{**r, "label": [0, 1, 5, 0, 1, 7]}))},
        [str(tmp / "f.parquet"), "'label'", "row 2 (5), row 5 (7)"],
    )
    cases["string labels in test, int in train"] = (
        {"train": good, "test": str(write_parquet(tmp / "g.parquet", **{**r, "label": ["0", "1"] * 3}))},
        [str(tmp / "g.parquet"), "'label'", "holds str labels but training labels are int"],
    )
    empty_table = pa.table({c: pa.array([], type=pa.array(v).type) for c, v in r.items()})
    pq.write_table(empty_table, tmp / "h.parquet")
    case("parquet with 0 rows", tmp / "h.parquet", ["no rows"])
    case("csv with only a header", write_csv(tmp / "h.csv", {c: [] for c in r}), ["no rows"])
    (tmp / "h.jsonl").write_text("")
    case("empty jsonl file", tmp / "h.jsonl", ["empty", "no rows"])
    case("corrupt parquet", garbage(tmp / "x.parquet"), ["cannot read this file as parquet"])
    case("no file matches the glob", tmp / "nothing-*.parquet", ["no file matches"])
    case("nonexistent path", tmp / "missing.parquet", ["no such file"])
    empties = {**r, "dialogue": ["hi", "", "there", None, " \n ", "ok"]}
    case(
        "empty dialogues with empty_dialogues=error",
        write_parquet(tmp / "j.parquet", **empties),
        ["'dialogue'", "3 empty dialogue(s), rows 1, 3, 4"],
        empty_dialogues="error",
    )
    case(
        "every dialogue empty",
        write_parquet(tmp / "k.parquet", **{**r, "dialogue": [""] * 6}),
        ["'dialogue'", "every dialogue"],
    )
    # A directory: the error names the part file and the row within it, not the directory and a global row.
    d = tmp / "dir"
    write_parquet(d / "part-0.parquet", **records(5))
    write_parquet(d / "part-1.parquet", **{**records(5), "label": [0, 1, None, 0, 1]})
    cases["null label in the second file of a directory"] = (
        {"train": str(d)},
        [str(d / "part-1.parquet"), "'label'", "1 null label(s), row 2"],
    )
    g = tmp / "glob"
    write_parquet(g / "part-0.parquet", **records(5))
    garbage(g / "part-1.parquet")
    cases["corrupt file among a glob"] = ({"train": str(g / "*.parquet")}, [str(g / "part-1.parquet"), "cannot read"])
    return cases


BAD = [
    "missing label column",
    "missing text column",
    "missing id column",
    "float labels",
    "int text",
    "null labels",
    "null labels in csv",
    "int label outside num_classes",
    "single class",
    "single int class",
    "single bool class",
    "too many int classes",
    "duplicated csv column",
    "non-utf8 csv",
    "csv row with an extra field",
    "empty csv file",
    "csv mixing integer and text labels",
    "jsonl mixing integer and text labels",
    "id types differ between files",
    "unknown label in val",
    "string labels in test, int in train",
    "parquet with 0 rows",
    "csv with only a header",
    "empty jsonl file",
    "corrupt parquet",
    "no file matches the glob",
    "nonexistent path",
    "empty dialogues with empty_dialogues=error",
    "every dialogue empty",
    "null label in the second file of a directory",
    "corrupt file among a glob",
]


@pytest.fixture
def restore_logging():
    """train_loop installs a handler on the package logger and stops propagation; undo it for other tests."""
    logger = logging.getLogger("raytune_bsm")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def test_bad_input_cases_are_all_listed(tmp_path):
    assert sorted(bad_inputs(tmp_path)) == sorted(BAD)


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_a_data_error_and_nothing_is_written(tmp_path, name, restore_logging):
    data, must = bad_inputs(tmp_path / "data")[name]
    out = tmp_path / "out"
    config = run_config(tmp_path, **data).to_dict()
    with pytest.raises(DataError) as e:
        train_loop(config)
    msg = str(e.value)
    for part in must:
        assert part in msg, f"{part!r} not in {msg!r}"
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing else written next to it either


# ----------------------------------------------------------------------------------------------- empty dialogues


def test_empty_dialogues_are_skipped_with_a_count_logged(tmp_path, caplog, restore_logging):
    r = records(8)
    r["dialogue"][1] = ""
    r["dialogue"][4] = None
    r["dialogue"][6] = " \n\t\n "
    r["dialogue"][7] = "\u200b\n\ufeff"  # only invisible characters: the tokenizer gives no tokens either
    path = write_parquet(tmp_path / "train.parquet", **r)
    logger = logging.getLogger("raytune_bsm")
    logger.propagate = True  # train_loop, if it ran earlier in this process, turned propagation off
    with caplog.at_level(logging.WARNING, logger="raytune_bsm.data.splits"):
        split, _ = load_split(str(path), CFG, None)
    assert split.skipped_empty == 4
    assert split.ids == [0, 2, 3, 5]
    assert split.labels.tolist() == [0, 0, 1, 1]
    assert split.texts == [r["dialogue"][i] for i in (0, 2, 3, 5)]
    skipped = [rec.getMessage() for rec in caplog.records if "empty dialogue" in rec.getMessage()]
    assert skipped == [f"{path}: skipped 4 row(s) with an empty dialogue"]

    with pytest.raises(DataError) as e:
        load_split(str(path), DataConfig(label_field="label", empty_dialogues="error"), None)
    assert str(e.value) == f"{path}: column 'dialogue' has 4 empty dialogue(s), rows 1, 4, 6, 7"


def test_list_dialogues_with_only_blank_messages_are_empty(tmp_path):
    r = records(4)
    r["dialogue"] = [["hi", "there"], [], ["", " ", None], ["ok"]]
    split, _ = load_split(str(write_jsonl(tmp_path / "l.jsonl", r)), CFG, None)
    assert split.ids == [0, 3] and split.skipped_empty == 2


# ----------------------------------------------------------------------------------------------- collate


def encoded(lens: list[list[int]], pad_id: int = 0) -> EncodedDataset:
    """Records whose token k of chunk c is 1000*(record+1) + 100*c + k: every value is unique and non-zero."""
    ids = [
        np.concatenate([np.arange(n) + 1000 * (r + 1) + 100 * c for c, n in enumerate(ls)]).astype(np.int32)
        if ls
        else np.zeros(0, np.int32)
        for r, ls in enumerate(lens)
    ]
    labels = np.arange(len(lens), dtype=np.int64) % 2
    return EncodedDataset(ids, [np.asarray(l, np.int32) for l in lens], labels, [f"r{i}" for i in range(len(lens))])


def test_collate_pads_each_batch_to_its_own_size(tmp_path):
    lens = [[5, 3], [7], [2, 2, 2, 4], [6, 6, 6, 6, 6, 6, 6, 6], [1]]
    ds = encoded(lens)
    collate = Collate(ds, "dialogue", "label", "order_id", pad_id=0)

    b = collate([0, 1, 4])
    ids, mask = b["dialogue_processed_input_ids"], b["dialogue_processed_attention_mask"]
    assert set(b) == {"dialogue_processed_input_ids", "dialogue_processed_attention_mask", "label", "order_id"}
    assert ids.dtype == torch.int64 and mask.dtype == torch.int64 and b["label"].dtype == torch.int64
    assert tuple(ids.shape) == tuple(mask.shape) == (3, 2, 7)  # max chunks 2, longest chunk 7; not C=8 or T
    assert b["label"].tolist() == [0, 1, 0] and b["order_id"] == ["r0", "r1", "r4"]

    b2 = collate([2, 3])
    assert tuple(b2["dialogue_processed_input_ids"].shape) == (2, 8, 6)

    for batch, idx in ((b, [0, 1, 4]), (b2, [2, 3])):
        ids, mask = batch["dialogue_processed_input_ids"], batch["dialogue_processed_attention_mask"]
        for row, r in enumerate(idx):
            expected_mask = torch.zeros(ids.shape[1:], dtype=torch.int64)
            start = 0
            for c, n in enumerate(lens[r]):
                expected_mask[c, :n] = 1
                assert ids[row, c, :n].tolist() == ds.ids[r][start : start + n].tolist()
                start += n
            assert torch.equal(mask[row], expected_mask)  # 1 exactly on real tokens
        assert int(mask.sum()) == sum(sum(lens[r]) for r in idx)
        assert bool((ids[mask == 0] == 0).all()) and bool((ids[mask == 1] >= 1000).all())


def test_collate_uses_the_pad_id_and_the_default_id_name():
    ds = encoded([[3], [1, 2]])
    b = Collate(ds, "text", "y", None, pad_id=7)([0, 1])
    ids, mask = b["text_processed_input_ids"], b["text_processed_attention_mask"]
    assert tuple(ids.shape) == (2, 2, 3)
    assert ids[0, 1].tolist() == [7, 7, 7] and ids[1, 0].tolist() == [2000, 7, 7]
    assert mask[1].tolist() == [[1, 0, 0], [1, 1, 0]]
    assert b["id"] == ["r0", "r1"] and b["y"].tolist() == [0, 1]


def test_collate_with_real_processed_records(tmp_path):
    tr = write_parquet(tmp_path / "train.parquet", **records(24))
    prep = prepare(run_config(tmp_path, train=str(tr), val_fraction=0.25))
    collate = Collate(prep.train, "dialogue", "label", "order_id", prep.processor.pad_id)
    b = collate(list(range(len(prep.train))))
    ids, mask = b["dialogue_processed_input_ids"], b["dialogue_processed_attention_mask"]
    longest = max(int(l.max()) for l in prep.train.lens)
    assert tuple(ids.shape) == (18, max(len(l) for l in prep.train.lens), longest)
    assert ids.shape[1] < 4 and longest < 32  # short dialogues: padded to their own length, not to max_tokens
    assert int(mask.sum()) == sum(int(l.sum()) for l in prep.train.lens)
    assert bool((ids[:, 0, 0] == 101).all())  # every record's first chunk starts with [CLS]


# ----------------------------------------------------------------------------------------------- sampler


def spread(batches: list[list[int]], cost: np.ndarray) -> float:
    return float(np.mean([cost[b].max() - cost[b].min() for b in batches]))


def test_sampler_covers_every_index_once_and_groups_by_length():
    rng = np.random.default_rng(0)
    cost = rng.lognormal(mean=5, sigma=1, size=1003).astype(np.int64) + 1
    s = LengthGroupedBatchSampler(cost, 16, shuffle=True, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 63
    assert sorted(i for b in batches for i in b) == list(range(1003))
    assert sorted(map(len, batches)) == [11] + [16] * 62

    plain = list(LengthGroupedBatchSampler(cost, 16, shuffle=True, group_by_length=False, seed=1))
    assert sorted(i for b in plain for i in b) == list(range(1003))
    grouped, random = spread(batches, cost), spread(plain, cost)
    assert grouped < 0.15 * random, (grouped, random)
    # Grouping must not mean "sorted": the batch order is shuffled.
    firsts = [cost[b].max() for b in batches]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)


def test_sampler_epochs_give_different_orders():
    cost = np.arange(200) % 37 + 1
    s = LengthGroupedBatchSampler(cost, 8, shuffle=True, seed=0)
    e0 = list(s)
    assert list(s) == e0  # the same epoch again: the same order
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0
    assert sorted(i for b in e1 for i in b) == list(range(200))
    assert sorted(map(sorted, e0)) != sorted(map(sorted, e1))  # not only the batch order: their members too
    s.set_epoch(0)
    assert list(s) == e0


@pytest.mark.parametrize("n, batch", [(100, 8), (33, 8), (7, 4)])
def test_sampler_training_shards_have_equal_batch_counts(n, batch):
    cost = np.random.default_rng(n).integers(1, 500, size=n)
    ranks = [LengthGroupedBatchSampler(cost, batch, shuffle=True, seed=5, num_replicas=2, rank=r) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(2)
    got = [list(s) for s in ranks]
    n_batches = -(-n // batch)
    assert len(got[0]) == len(got[1]) == len(ranks[0]) == len(ranks[1]) == -(-n_batches // 2)
    seen = [i for g in got for b in g for i in b]
    assert set(seen) == set(range(n))  # everything is trained on (a few records repeat to even out the ranks)
    assert len(seen) - n < 2 * batch


@pytest.mark.parametrize("n, batch", [(101, 8), (16, 8), (9, 4)])
def test_sampler_evaluation_shards_are_disjoint_and_cover_everything(n, batch):
    cost = np.random.default_rng(n).integers(1, 500, size=n)
    ranks = [LengthGroupedBatchSampler(cost, batch, shuffle=False, num_replicas=2, rank=r) for r in (0, 1)]
    got = [[i for b in s for i in b] for s in ranks]
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == list(range(n))
    assert abs(len(got[0]) - len(got[1])) <= 1  # balanced shards
    assert [len(list(s)) for s in ranks] == [len(s) for s in ranks] == [-(-len(g) // batch) for g in got]
    assert all(len(b) <= batch for s in ranks for b in s)
    for g in got:  # evaluation batches are sorted by cost, within each rank's shard
        assert np.all(np.diff(cost[g]) <= 0)
    one = list(LengthGroupedBatchSampler(cost, batch, shuffle=False))
    assert [i for b in one for i in b] == sorted(range(n), key=lambda i: -cost[i])
