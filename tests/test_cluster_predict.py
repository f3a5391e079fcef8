"""`bsm predict --on-cluster`: a batch-scoring job on a real local Ray cluster, through the Jobs API, reading and
writing s3:// on the local S3 server, matches local `bsm predict` row for row; its plan and its refusals."""

from __future__ import annotations

import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_parquet
from test_predict import exported  # noqa: F401  (fixture: a tiny 3-class export, built once per session)

from raytune_bsm.client import jobs
from raytune_bsm.client.cluster_predict import ENTRYPOINT, predict_on_cluster
from raytune_bsm.errors import ClusterError, ConfigError, DataError, ExportError
from raytune_bsm.scoring.predict import predict_file

FILES = 3  # the 45 demo rows, 15 per file


@pytest.fixture(scope="module")
def parts(exported, tmp_path_factory):  # noqa: F811
    """The export's demo rows (empty dialogues included) as a local directory of several Parquet files."""
    table = pq.read_table(exported.data)
    root = tmp_path_factory.mktemp("cluster-predict") / "in"
    root.mkdir()
    step = table.num_rows // FILES
    for k in range(FILES):
        pq.write_table(table.slice(k * step, step if k < FILES - 1 else None), root / f"part-{k}.parquet")
    return root


@pytest.fixture(scope="module")
def ray_dashboard(s3_server):
    """A local Ray cluster with its dashboard (the Jobs API); its nodes hold the S3 server's AWS_* variables,
    as a real cluster's nodes hold their storage credentials. Stopped at the end of the module."""
    import ray

    with s3_server.environment():
        ctx = ray.init(
            address="local", num_cpus=3, include_dashboard=True, dashboard_host="127.0.0.1", logging_level="ERROR"
        )
    try:
        yield f"http://{ctx.dashboard_url}"
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_on_cluster_predictions_on_s3_match_local_predict_row_for_row(exported, parts, s3, ray_dashboard, tmp_path):  # noqa: F811
    export = s3.upload(exported.dest, "export")
    data = s3.upload(parts, "in")
    out = s3.uri("predictions")
    job_id = predict_on_cluster(
        export, data, out, address=ray_dashboard, num_actors=2, batch_size=8, rows_per_batch=8
    )  # 6 blocks over 2 actors
    state = jobs.wait(job_id, address=ray_dashboard, timeout=900)
    log = io.StringIO()
    jobs.logs(job_id, address=ray_dashboard, out=log)
    assert state == "SUCCEEDED", log.getvalue()[-4000:]
    assert "wrote 45 predictions in" in log.getvalue()

    local = pq.read_table(predict_file(str(exported.dest), str(parts), str(tmp_path / "local.parquet"), batch_size=8))
    keys = s3.keys("predictions")
    assert "predictions/_bsm_predict.json" in keys and not [k for k in s3.keys() if ".tmp-" in k], s3.keys()
    files = [k for k in keys if k.endswith(".parquet")]
    assert len(files) >= 1
    fs = s3.filesystem()
    remote = pa.concat_tables(pq.read_table(f"{s3.bucket}/{s3.prefix}/{k}", filesystem=fs) for k in files)
    assert [(f.name, f.type) for f in remote.schema] == [(f.name, f.type) for f in local.schema]
    remote = remote.sort_by("id")
    local = local.sort_by("id")
    assert remote.column("id").to_pylist() == local.column("id").to_pylist() == sorted(exported.ids)
    assert remote.column("predicted").to_pylist() == local.column("predicted").to_pylist()
    for name in local.column_names[2:]:
        a, b = remote.column(name).to_numpy(), local.column(name).to_numpy()
        assert abs(a - b).max() < 1e-5, name
    summary = json.loads(
        s3.client().get_object(Bucket=s3.bucket, Key=f"{s3.prefix}/predictions/_bsm_predict.json")["Body"].read()
    )
    assert (summary["rows"], summary["inputs"], summary["files"]) == (45, FILES, len(files))

    # The same output again is refused by the client before anything is submitted; so are GPUs it lacks.
    with pytest.raises(ConfigError, match="exists and is not empty"):
        predict_on_cluster(export, data, out, address=ray_dashboard)
    with pytest.raises(ClusterError, match="needs 1 GPUs"):
        predict_on_cluster(export, data, s3.uri("gpu"), address=ray_dashboard, provider="CUDAExecutionProvider")


@pytest.mark.slow
def test_bad_input_on_storage_fails_the_job_with_one_line_and_writes_nothing(exported, s3, ray_dashboard):  # noqa: F811
    s3.put("bad/part-0.parquet", parquet_bytes(pq.read_table(exported.data).slice(0, 5)))
    s3.put("bad/part-1.parquet", parquet_bytes(pa.table({"order_id": ["b1"], "dialogue": [7]})))
    job_id = predict_on_cluster(s3.upload(exported.dest, "export"), s3.uri("bad"), s3.uri("out"), address=ray_dashboard)
    assert jobs.wait(job_id, address=ray_dashboard, timeout=600) == "FAILED"
    error = jobs.status(job_id, address=ray_dashboard).error
    assert "bsm: error: s3://" in error and "part-1.parquet: column 'dialogue' has type int64" in error, error
    assert s3.keys("out") == [] and not [k for k in s3.keys() if ".tmp-" in k]


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_dry_run_plan_with_cuda_asks_one_gpu_per_actor_and_contacts_nothing(exported, parts, tmp_path):  # noqa: F811
    plan = predict_on_cluster(
        str(exported.dest),
        str(parts),
        str(tmp_path / "preds"),
        address="http://127.0.0.1:9",
        provider="CUDAExecutionProvider",
        num_actors=4,
        dry_run=True,
        name="nightly",
    )
    assert plan["kind"] == "predict" and plan["submission_id"] == "bsm-nightly"
    assert plan["entrypoint"] == ENTRYPOINT == "python -m raytune_bsm.runner.batch_predict bsm_job.json"
    assert plan["scaling"]["actors"] == 4
    assert plan["scaling"]["num_gpus_per_actor"] == 1
    assert plan["scaling"]["resources_per_actor"] == {"CPU": 1, "GPU": 1}
    assert plan["scaling"]["driver_cpus"] == 0
    cfg = plan["config"]
    assert cfg["provider"] == "CUDAExecutionProvider" and cfg["export"] == str(exported.dest)
    assert cfg["out"] == str(tmp_path / "preds") and os.path.isabs(cfg["data"])
    assert plan["runtime_env"]["working_dir"] == "<staged: bsm_job.json>"
    assert plan["metadata"]["bsm_kind"] == "predict"
    cpu = predict_on_cluster(str(exported.dest), str(parts), str(tmp_path / "preds"), dry_run=True)
    assert cpu["scaling"]["num_gpus_per_actor"] == 0 and cpu["scaling"]["resources_per_actor"] == {"CPU": 1}
    assert not (tmp_path / "preds").exists()


def test_bad_requests_are_refused_before_any_cluster_is_contacted(exported, parts, tmp_path):  # noqa: F811
    def plan(export=str(exported.dest), data=str(parts), out=str(tmp_path / "o"), **kw):
        return predict_on_cluster(export, data, out, address="http://127.0.0.1:9", dry_run=True, **kw)

    with pytest.raises(ConfigError, match="overlaps the input"):
        plan(out=str(parts))
    with pytest.raises(ConfigError, match="overlaps the input"):
        plan(out=str(parts / "preds"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.parquet").write_bytes(b"x")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        plan(out=str(tmp_path / "full"))
    with pytest.raises(ConfigError, match="directory of Parquet files"):
        plan(out=str(tmp_path / "p.csv"))
    with pytest.raises(ConfigError, match="--provider"):
        plan(provider="TensorrtExecutionProvider")
    with pytest.raises(ConfigError, match="--num-actors"):
        plan(num_actors=0)
    with pytest.raises(ConfigError, match="--precision"):
        plan(precision="fp16")
    with pytest.raises(ExportError, match="manifest.json"):
        plan(export=str(parts))
    no_ids = write_parquet(tmp_path / "noid" / "a.parquet", dialogue=["Buyer: hi"])
    with pytest.raises(DataError, match="no id column"):
        plan(data=str(no_ids.parent))
