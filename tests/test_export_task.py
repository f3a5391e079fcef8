"""The export task's parity rows: real validation texts with their real class indices (the int8 metric in the
manifest is measured on them)."""

from __future__ import annotations

import pyarrow.parquet as pq
from conftest import write_parquet

from raytune_bsm.config import RunConfig
from raytune_bsm.runner.export_task import parity_batches, parity_rows


def test_parity_rows_are_the_first_validation_rows_with_their_own_labels(tmp_path):
    val = write_parquet(
        tmp_path / "val.parquet",
        dialogue=[f"buyer: item {i} never arrived" for i in range(6)] + [None],
        reversal_flag=["yes", "no", "no", None, "yes", "maybe", "no"],
    )
    run = RunConfig.from_dict({"name": "x", "data": {"train": str(val), "val": str(val)}})
    texts, labels = parity_rows(run, ["no", "yes"], limit=6)
    table = pq.read_table(val).slice(0, 6).to_pylist()
    expected = [
        (r["dialogue"], ["no", "yes"].index(r["reversal_flag"])) for r in table if r["reversal_flag"] in ("no", "yes")
    ]
    assert list(zip(texts, labels)) == expected  # a null or unknown label is left out, never guessed
    config = run.model_config(class_names=["no", "yes"], num_classes=2, is_binary=True)
    batches = parity_batches(config, texts, labels)
    for b in batches:  # each record of each batch keeps its own label (the batch's ids index the rows)
        assert b["reversal_flag"].tolist() == [labels[i] for i in b["id"]]
    assert {y for b in batches for y in b["reversal_flag"].tolist()} == {0, 1}
