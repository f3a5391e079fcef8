"""Tracking: a real tiny training run writes TensorBoard event files with every curve a user looks at, and
(with mlflow installed) logs params, per-epoch metrics and the export into a local MLflow file store."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import TINY_ENCODER

from raytune_bsm.config import RunConfig
from raytune_bsm.runner import tracking
from raytune_bsm.runner.tracking import TRACKING_KEY
from raytune_bsm.runner.worker import train_loop

EXPECTED_TAGS = {"train_loss", "val_loss", "val_accuracy", "val_f1_score", "train_loss_epoch_mean", "records_per_s"}


def _run(tmp_path: Path, name: str) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": name,
            "model": {"encoder_config": TINY_ENCODER, "lr": 1e-3, "max_tokens": 64, "max_chunks": 4},
            "data": {"demo_rows": 200, "batch_size": 32},
            "train": {"max_epochs": 2, "log_every_n_steps": 1, "output_dir": str(tmp_path / name), "save_top_k": 1},
        }
    )


def scalar_tags(logdir: Path) -> dict[str, list[float]]:
    """tag -> values, read from the event files with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [e.value for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_a_run_writes_tensorboard_curves(tmp_path):
    run = _run(tmp_path, "tb")
    train_loop(run.to_dict())
    logdir = tmp_path / "tb" / "tensorboard"
    assert list(logdir.glob("events.out.tfevents.*")), list(logdir.iterdir())
    tags = scalar_tags(logdir)
    assert EXPECTED_TAGS <= set(tags), sorted(tags)
    assert any(t.startswith("lr-") for t in tags), sorted(tags)  # LearningRateMonitor
    assert len(tags["val_loss"]) == 2 and len(tags["records_per_s"]) == 2 and min(tags["records_per_s"]) > 0


@pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed (pip install 'raytune-bsm[mlflow]')"
)
def test_mlflow_file_store_gets_params_metrics_and_the_export(tmp_path, monkeypatch):
    import mlflow

    uri = (tmp_path / "mlruns").as_uri()  # a local file:// store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    run = _run(tmp_path, "mlf")
    info = tracking.start_mlflow(run, run.to_dict())
    assert info["mlflow_uri"] == uri and info["mlflow_run_id"]
    train_loop({**run.to_dict(), TRACKING_KEY: info})
    export = tmp_path / "fake-export"  # stands for an export directory: only its files matter here
    export.mkdir()
    (export / "manifest.json").write_text("{}")
    tracking.end_mlflow(info, str(export), failed=False)

    client = mlflow.MlflowClient(tracking_uri=uri)
    got = client.get_run(info["mlflow_run_id"])
    assert got.info.status == "FINISHED"
    assert got.data.params["model.lr"] == "0.001" and got.data.params["train.max_epochs"] == "2"
    assert len(client.get_metric_history(info["mlflow_run_id"], "val_loss")) == 2
    assert "val_accuracy" in got.data.metrics
    assert [a.path for a in client.list_artifacts(info["mlflow_run_id"], "export")] == ["export/manifest.json"]


def test_mlflow_uri_is_a_run_key_that_reaches_the_job(tmp_path):
    """The README's `--set mlflow_uri=URI` is a real key: it is in the job's resolved config and the job uses it."""
    from raytune_bsm import api

    uri = (tmp_path / "mlruns").as_uri()
    sub = api.submit(api.SubmitOptions(name="tracked", sets=[f"mlflow_uri={uri}"]), dry_run=True)
    assert sub.config["train"]["mlflow_uri"] == uri
    assert tracking.mlflow_uri(RunConfig.from_dict(sub.config)) == uri
