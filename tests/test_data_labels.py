"""Labels are bounded inputs (issue 8.6): classes come from the values present (or num_classes), never from a
label's magnitude; absurd class counts and single classes are clear errors for every label type."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytune_bsm.config import DataConfig
from raytune_bsm.data.labels import MAX_CLASSES, Labels
from raytune_bsm.data.splits import load_split
from raytune_bsm.errors import ConfigError, DataError

CFG = DataConfig(label_field="label")


def write(path, labels, **extra):
    n = len(labels)
    cols = {"order_id": list(range(n)), "dialogue": [f"message {i}" for i in range(n)], "label": labels, **extra}
    pq.write_table(pa.table(cols), path)
    return path


def test_a_label_of_a_billion_loads_within_two_gib_of_address_space(tmp_path):
    """Classes were range(max + 1): a label of 1e9 allocated ~24 GB. Under a 2 GiB limit that is a MemoryError."""
    path = write(tmp_path / "t.parquet", [0, 1, 1_000_000_000, 1, 0, 1_000_000_000])
    code = textwrap.dedent(f"""
        import json, resource
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
        from raytune_bsm.config import DataConfig
        from raytune_bsm.data.splits import load_split
        split, labels = load_split({str(path)!r}, DataConfig(label_field="label"), None)
        print(json.dumps({{"names": labels.names, "y": split.labels.tolist()}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"names": ["0", "1", "1000000000"], "y": [0, 1, 2, 1, 0, 2]}


def test_large_integer_labels_with_few_values_are_a_few_class_problem_and_say_so(tmp_path, caplog):
    path = write(tmp_path / "t.parquet", [1_000_000, 7, 1_000_000, 7, 42])
    logging.getLogger("raytune_bsm").propagate = True  # a train_loop earlier in this process may have turned it off
    with caplog.at_level(logging.INFO, logger="raytune_bsm.data.labels"):
        split, labels = load_split(str(path), CFG, None)
    assert labels.names == ["7", "42", "1000000"] and labels.kind == "int"
    assert split.labels.tolist() == [2, 0, 2, 0, 1]
    said = [r.getMessage() for r in caplog.records if r.name == "raytune_bsm.data.labels"]
    assert said == [
        f"{path}: column 'label' holds 3 distinct integer labels (7, 42, 1000000), not 0..2: "
        "3 classes named by their values"
    ]


def test_labels_0_to_k_keep_their_value_as_the_index_without_a_note(tmp_path, caplog):
    path = write(tmp_path / "t.parquet", [2, 0, 1, 2])
    with caplog.at_level(logging.INFO, logger="raytune_bsm.data.labels"):
        split, labels = load_split(str(path), CFG, None)
    assert labels.names == ["0", "1", "2"] and split.labels.tolist() == [2, 0, 1, 2]
    assert not [r for r in caplog.records if r.name == "raytune_bsm.data.labels"]


def test_num_classes_names_every_class_also_those_absent(tmp_path):
    split, labels = load_split(str(write(tmp_path / "t.parquet", [0, 3, 0, 3])), CFG, None, num_classes=5)
    assert labels.names == ["0", "1", "2", "3", "4"] and split.labels.tolist() == [0, 3, 0, 3]
    val = write(tmp_path / "v.parquet", [4, 1])  # a class absent from training is still a class
    assert load_split(str(val), CFG, labels)[0].labels.tolist() == [4, 1]


def test_an_integer_label_unseen_in_training_is_named_with_its_row(tmp_path):
    labels = load_split(str(write(tmp_path / "t.parquet", [0, 2, 0, 2])), CFG, None)[1]
    with pytest.raises(DataError) as e:
        load_split(str(write(tmp_path / "v.parquet", [0, 1, 2, 5])), CFG, labels)
    assert "2 label(s) not among the classes ['0', '2']: row 1 (1), row 3 (5)" in str(e.value)


@pytest.mark.parametrize("kind", ["int", "str"])
def test_more_than_max_classes_is_a_clear_error_naming_the_column_and_count(tmp_path, kind):
    n = MAX_CLASSES + 1
    labels = list(range(n)) if kind == "int" else [f"c{i}" for i in range(n)]
    path = write(tmp_path / "t.parquet", labels)
    with pytest.raises(DataError) as e:
        load_split(str(path), CFG, None)
    assert str(e.value).startswith(f"{path}: column 'label' has 10,001 distinct labels, more than the 10,000 classes")


@pytest.mark.parametrize(
    "values, num_classes, shown",
    [([3, 3, 3], None, "'3'"), ([0, 0], 2, "'0'"), ([True, True], None, "'True'"), (["yes"] * 3, None, "'yes'")],
)
def test_a_single_class_is_refused_for_every_label_type(tmp_path, values, num_classes, shown):
    path = write(tmp_path / "t.parquet", values)
    with pytest.raises(DataError) as e:
        load_split(str(path), CFG, None, num_classes=num_classes)
    assert str(e.value) == (
        f"{path}: column 'label' has a single class {shown} in every row; need at least two classes"
    )


def test_booleans_are_two_classes_and_num_classes_must_agree(tmp_path):
    path = write(tmp_path / "t.parquet", [True, False, True])
    assert load_split(str(path), CFG, None, num_classes=2)[1].names == ["False", "True"]
    with pytest.raises(DataError, match="holds booleans \\(2 classes\\) but num_classes=3"):
        load_split(str(path), CFG, None, num_classes=3)
    with pytest.raises(ConfigError, match="num_classes must be between 2 and 10000, got 20000"):
        load_split(str(path), CFG, None, num_classes=20_000)


def test_integer_widths_differ_between_files_and_categoricals_are_strings(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    pq.write_table(pa.table({"dialogue": ["a", "b"], "label": pa.array([0, 5], pa.int32())}), d / "a.parquet")
    pq.write_table(pa.table({"dialogue": ["c", "d"], "label": pa.array([5, 9], pa.uint8())}), d / "b.parquet")
    split, labels = load_split(str(d), CFG, None)
    assert labels.names == ["0", "5", "9"] and split.labels.tolist() == [0, 1, 1, 2]

    cats = pa.array(["no", "yes", "no"]).dictionary_encode()  # a pandas categorical, as Parquet stores it
    pq.write_table(pa.table({"dialogue": ["a", "b", "c"], "label": cats}), tmp_path / "c.parquet")
    split, labels = load_split(str(tmp_path / "c.parquet"), CFG, None)
    assert labels.names == ["no", "yes"] and labels.kind == "str" and split.labels.tolist() == [0, 1, 0]


def test_labels_encode_a_million_rows_without_python_loops_over_values():
    column = pa.chunked_array([pa.array([10**12, 3] * 500_000)])
    labels = Labels.infer(column, "mem", "label", None)
    y = labels.encode(column, "mem", "label")
    assert labels.names == ["3", "1000000000000"] and y.shape == (1_000_000,) and y[:4].tolist() == [1, 0, 1, 0]
