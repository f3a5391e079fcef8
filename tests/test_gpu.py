"""GPU paths: bf16 mixed precision, one GPU per worker, NCCL. Real-GPU tests skip on CPU machines; the plan is
tested everywhere, and the precision choice with CUDA mocked (named so)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_ENCODER

from raytune_bsm.config import RunConfig

needs_gpus = lambda n: pytest.mark.skipif(  # noqa: E731
    not torch.cuda.is_available() or torch.cuda.device_count() < n, reason=f"needs {n} CUDA GPU(s)"
)


def _run(name: str, workers: int, tmp_path) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": name,
            "model": {
                "encoder_config": TINY_ENCODER,
                "lr": 1e-3,
                "max_tokens": 64,
                "max_chunks": 4,
                "freeze_layers": 0,
            },
            "data": {"demo_rows": 200, "batch_size": 16},
            "train": {"max_epochs": 1, "output_dir": str(tmp_path / name)},
            "scaling": {"num_workers": workers, "use_gpu": True, "cpus_per_worker": 1},
        }
    )


def test_precision_auto_is_bf16_on_bf16_gpus_and_fp16_on_older_ones_mocked_cuda(monkeypatch):
    from raytune_bsm.runner.worker import precision_for

    run = _run("p", 1, __import__("pathlib").Path("/tmp"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision_for(run) == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision_for(run) == "16-mixed"
    cpu = RunConfig.from_dict({"scaling": {"use_gpu": False}})
    assert precision_for(cpu) == "32-true"


@pytest.mark.gpu
@needs_gpus(1)
def test_one_epoch_on_one_gpu_in_bf16(tmp_path):
    from raytune_bsm.runner.worker import train_loop

    metrics = train_loop(_run("gpu1", 1, tmp_path).to_dict())
    assert 0.0 <= metrics["val_auroc"] <= 1.0
    config = json.loads((tmp_path / "gpu1" / "config.json").read_text())
    assert config["scaling"]["use_gpu"] is True


@pytest.mark.gpu
@needs_gpus(2)
def test_two_gpu_workers_train_with_nccl_and_stay_in_sync(tmp_path):
    import ray

    from raytune_bsm.runner.train import fit

    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False)
    try:
        summary = fit(_run("gpu2", 2, tmp_path), storage=str(tmp_path))
    finally:
        ray.shutdown()
    assert summary["error"] is None
    workers = [json.loads(p.read_text()) for p in sorted((tmp_path / "gpu2" / "bsm_workers").glob("rank-*.json"))]
    assert len(workers) == 2 and workers[0]["weights_sha256"] == workers[1]["weights_sha256"]
