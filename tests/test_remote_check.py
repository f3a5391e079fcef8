"""Remote splits are listed and schema-checked before submission (issue 8.6), on a real S3 API on 127.0.0.1."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytune_bsm.client.options import SubmitOptions
from raytune_bsm.client.submit import plan
from raytune_bsm.errors import DataError


def _parts(tmp_path, columns: dict) -> str:
    d = tmp_path / "train"
    d.mkdir()
    for i in range(3):
        pq.write_table(pa.table(columns), d / f"part-{i}.parquet")
    return str(d)


def test_an_s3_directory_missing_the_label_column_is_refused_before_submission(s3, tmp_path):
    uri = s3.upload(_parts(tmp_path, {"text": ["a", "b"], "outcome": [0, 1]}), "claims/train")
    with pytest.raises(DataError, match=r"--train: .*part-0\.parquet: missing column 'label'"):
        plan(SubmitOptions(train=uri, text_field="text", label_field="label", storage=str(tmp_path / "runs")))


def test_a_good_s3_directory_passes_the_check_and_is_planned(s3, tmp_path):
    uri = s3.upload(_parts(tmp_path, {"text": ["a", "b"], "label": [0, 1]}), "claims/train")
    sub = plan(SubmitOptions(train=uri, text_field="text", label_field="label", storage=str(tmp_path / "runs")))
    assert sub.config["data"]["train"] == uri
