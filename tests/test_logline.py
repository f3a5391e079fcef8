"""The training log lines' protocol (raytune_bsm/logline.py): what the runner writes, the client reads back."""

from __future__ import annotations

import math

import pytest

from raytune_bsm.client.jobs import latest_metrics
from raytune_bsm.logline import EpochStep, EpochValidation, format_epoch, format_step, format_validation, parse_epoch


def test_a_step_line_reads_back_behind_any_log_prefix():
    line = format_step(2, 3, 40, 100, 0.43214, 95.14, 12.9)
    assert line == "epoch 2/3  step 40/100  loss 0.4321  95.1 records/s/worker  eta 12s"
    prefixed = f"(RayTrainWorker pid=123) 10:00:00 bsm INFO {line}"
    assert parse_epoch(prefixed) == EpochStep(2, 3, 40, 100, 0.4321, 95.1, 12)
    assert parse_epoch(prefixed).done == 140 and parse_epoch(prefixed).total == 300


def test_a_nan_loss_reads_back_as_nan():
    event = parse_epoch(format_step(1, 1, 5, 10, float("nan"), 3.0, 1))
    assert isinstance(event, EpochStep) and math.isnan(event.loss) and event.step == 5


@pytest.mark.parametrize(
    "metrics",
    [
        {"val_auroc": 0.91234567, "val_loss": 0.3},
        {"val_auroc": None, "val_loss": 0.25},
        {"val_loss": float("nan"), "val_f1": 1},
        {},
    ],
)
def test_a_validation_line_round_trips_with_none_and_nan_metrics(metrics):
    line = format_validation(4, metrics)
    event = parse_epoch(f"10:00:00 bsm INFO {line}")
    assert isinstance(event, EpochValidation) and event.epoch == 4
    assert set(event.metrics) == set(metrics)
    for k, v in metrics.items():
        got = event.metrics[k]
        if v is None:
            assert got is None
        elif math.isnan(v):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(v, abs=5e-5)
    assert format_epoch(event) == line  # the record writes the same line again
    assert latest_metrics(f"noise\n{line}\nmore noise\n") == event.metrics  # what `bsm status` shows


def test_other_lines_are_not_progress():
    assert parse_epoch("Loading the model for epoch 3") is None
    assert parse_epoch("epoch 2 validation: {not json}") is None
    assert latest_metrics("epoch 2 validation: {not json}\n") is None
