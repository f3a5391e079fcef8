"""Side features on a simulated two-node cluster (`ray.cluster_utils.Cluster`): a run through Ray Data (statistics
from the checking pass, the same as the driver path's), its export scored on the cluster, and a sweep over
`fusion`. One cluster and one trained run for the module: these are the suite's slowest side-feature tests."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TINY_ENCODER, two_node_cluster

from raytune_bsm.config import RunConfig
from raytune_bsm.demo.side import SIDE_SCHEMA

pytestmark = pytest.mark.slow
FEATURES = [f.name for f in SIDE_SCHEMA]


@pytest.fixture(scope="module")
def two_nodes():
    with two_node_cluster(cpus_per_node=2) as cluster:
        yield cluster


def _parts(root: Path, table, files: int) -> Path:
    root.mkdir(parents=True)
    step = table.num_rows // files
    for k in range(files):
        pq.write_table(table.slice(k * step, step if k < files - 1 else None), root / f"part-{k}.parquet")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    from raytune_bsm.demo.generator import make_dialogues

    root = tmp_path_factory.mktemp("features-cluster")
    table = make_dialogues(240, seed=4)
    return SimpleNamespace(
        root=root,
        train=str(_parts(root / "train", table.slice(0, 160), 3)),
        val=str(_parts(root / "val", table.slice(160, 40), 2)),
        test=str(_parts(root / "test", table.slice(200), 2)),
    )


def _run(data, name: str, **model) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": name,
            "model": {"encoder_config": TINY_ENCODER, "lr": 1e-3, "max_tokens": 64, "max_chunks": 2, **model},
            "data": {
                "train": data.train,
                "val": data.val,
                "batch_size": 16,
                "feature_fields": ",".join(FEATURES),
                "driver_prepare_mib": 0,  # through Ray Data, however small the files
            },
            "train": {"max_epochs": 1, "save_top_k": 1, "max_failures": 0},
            "scaling": {"num_workers": 2, "cpus_per_worker": 1, "placement_strategy": "STRICT_SPREAD"},
        }
    )


@pytest.fixture(scope="module")
def trained(two_nodes, data, tmp_path_factory) -> SimpleNamespace:
    from raytune_bsm.runner.train import fit

    storage = tmp_path_factory.mktemp("features-runs")
    run = _run(data, "fused")
    summary = fit(run, storage=str(storage))
    return SimpleNamespace(run=run, summary=summary, export=Path(storage) / "fused" / "export")


def test_a_two_node_ray_data_run_trains_and_exports_with_side_features(trained):
    """One worker per node, the splits read and tokenized by Ray Data with the feature columns riding along; the
    statistics from the checking pass over the training files equal the driver path's (prepare), and the export
    carries them."""
    from raytune_bsm.runner.prepare import prepare

    assert trained.summary["error"] is None, trained.summary["error"]
    info = json.loads((trained.export / "bsm_model.json").read_text())
    assert info["features"]["names"] == FEATURES and info["features"]["fusion"] == "concat"
    driver = prepare(trained.run).model_config["feature_stats"]
    for k, name in enumerate(FEATURES):
        got = info["features"]["statistics"][name]
        for key in ("mean", "std", "min", "max", "missing"):
            assert got[key] == pytest.approx(driver[key][k], rel=1e-6, abs=1e-9), (name, key)
    manifest = json.loads((trained.export / "manifest.json").read_text())
    assert manifest["parity"]["with_missing_side_features"]
    assert manifest["parity"]["onnxruntime"]["max_abs_diff"] <= 1e-4


def test_predict_on_the_cluster_reads_the_feature_columns_and_matches_local_predict(trained, data, tmp_path):
    from raytune_bsm.errors import DataError
    from raytune_bsm.runner.batch_predict import PredictJob
    from raytune_bsm.runner.batch_predict import run as run_job
    from raytune_bsm.scoring.predict import predict_file

    export = str(trained.export)
    # fp32 on both sides: the int8 graphs quantize activations per call, so their probabilities move slightly with
    # the records that share a call, and the two paths group records differently.
    job = PredictJob(
        export=export, data=data.test, out=str(tmp_path / "out"), num_actors=2, rows_per_batch=8, precision="fp32"
    )
    run_job(job)
    remote = pq.read_table(tmp_path / "out").sort_by("id")
    local = pq.read_table(predict_file(export, data.test, str(tmp_path / "local.parquet"), precision="fp32")).sort_by(
        "id"
    )
    assert remote.column("id").equals(local.column("id")) and remote.num_rows == 40
    for name in local.column_names[2:]:
        assert np.abs(np.asarray(remote.column(name)) - np.asarray(local.column(name))).max() <= 1e-6

    first = pq.read_table(Path(data.test) / "part-0.parquet").drop_columns(["ttm_conc_count"])
    (tmp_path / "bad").mkdir()
    pq.write_table(first, tmp_path / "bad" / "part.parquet")
    with pytest.raises(DataError, match=r"part.parquet: missing feature column 'ttm_conc_count'"):
        run_job(PredictJob(export=export, data=str(tmp_path / "bad"), out=str(tmp_path / "out2")))
    assert not (tmp_path / "out2").exists()


def test_a_sweep_searches_fusion_and_the_side_mlp_width(two_nodes, data, tmp_path):
    """`fusion` and `side_hidden` in the search space: the data prepared once for both trials (neither writes
    the features into the text), each trial's model built with its own fusion and width."""
    from raytune_bsm import sweep as sw
    from raytune_bsm.model.checkpoint import safe_load
    from raytune_bsm.runner import tune as sr

    run = RunConfig.from_dict({**_run(data, "fusion-sweep").to_dict(), "scaling": {"num_workers": 1}})
    space = {"model.fusion": {"grid": ["concat", "gated"]}, "model.side_hidden": {"choice": [16]}}
    summary = sr.run_sweep(
        run,
        sw.SweepConfig(num_samples=1, scheduler="fifo", metric="val_loss", mode="min", search_space=space),
        storage=str(tmp_path),
    )
    rows = pq.read_table(tmp_path / "fusion-sweep" / "trials.parquet").to_pylist()
    assert sorted(r["model.fusion"] for r in rows) == ["concat", "gated"]
    assert all(r["status"] == "completed" for r in rows)
    ckpt = safe_load(Path(summary["best_checkpoint"], "checkpoint.ckpt"), "cpu")
    config = ckpt["hyper_parameters"]["config"]
    assert config["feature_fields"] == FEATURES and config["side_hidden"] == 16
    assert {k.split(".")[1] for k in ckpt["state_dict"] if k.startswith("side.")} >= {"mean", "std", "mlp"}
