"""The training progress lines of a job's log: written by the runner (runner/tracking.py), read back by the
client (progress bars in progress.py, the latest metrics in `bsm status`). The one owner of their format.

After the log prefix (and Ray's "(RayTrainWorker pid=..)" prefix), a line is one of:
    epoch 2/3  step 40/100  loss 0.4321  95.1 records/s/worker  eta 12s
    epoch 2 validation: {"val_auroc": 0.91, "val_loss": 0.3}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_STEP = re.compile(
    r"epoch (?P<epoch>\d+)/(?P<epochs>\d+)\s+step (?P<step>\d+)/(?P<steps>\d+)\s+loss (?P<loss>[-+\w.]+)"
    r"(?:\s+(?P<rate>[\d.]+) records/s(?:/worker)?)?(?:\s+eta (?P<eta>\d+)s)?"
)
_VALIDATION = re.compile(r"epoch (?P<epoch>\d+) validation: (?P<metrics>\{.*\})\s*$")


@dataclass
class EpochStep:
    """One progress line of a training epoch."""

    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based, within the epoch
    steps: int
    loss: float
    records_per_s: float | None = None  # per worker
    eta_s: int | None = None  # to the epoch's end

    @property
    def done(self) -> int:
        """Steps done over the whole run (epochs before this one count as complete)."""
        return (self.epoch - 1) * self.steps + self.step

    @property
    def total(self) -> int:
        return self.epochs * self.steps


@dataclass
class EpochValidation:
    epoch: int  # 1-based
    metrics: dict[str, float | None] = field(default_factory=dict)


def format_step(epoch: int, epochs: int, step: int, steps: int, loss: float, records_per_s: float, eta_s: float) -> str:
    """A step's progress line (`eta_s` shown in whole seconds, truncated)."""
    return (
        f"epoch {epoch}/{epochs}  step {step}/{steps}  loss {loss:.4f}  "
        f"{records_per_s:.1f} records/s/worker  eta {int(eta_s)}s"
    )


def format_validation(epoch: int, metrics: dict[str, float | None]) -> str:
    """An epoch's validation line: the metrics as JSON, keys sorted, each rounded to 4 places (None: null)."""
    shown = {k: None if v is None else round(float(v), 4) for k, v in metrics.items()}
    return f"epoch {epoch} validation: {json.dumps(shown, sort_keys=True)}"


def format_epoch(event: EpochStep | EpochValidation) -> str:
    """Either line, from its record: what `parse_epoch` reads back."""
    if isinstance(event, EpochValidation):
        return format_validation(event.epoch, event.metrics)
    return format_step(
        event.epoch, event.epochs, event.step, event.steps, event.loss, event.records_per_s or 0.0, event.eta_s or 0
    )


def parse_epoch(line: str) -> EpochStep | EpochValidation | None:
    """A log line -> its figures, wherever the progress text starts in it; None for any other line. Validation
    metrics keep their numbers and nulls (NaN comes back as NaN); other values are dropped."""
    m = _STEP.search(line)
    if m:
        try:
            loss = float(m["loss"])
        except ValueError:
            loss = float("nan")
        return EpochStep(
            int(m["epoch"]),
            int(m["epochs"]),
            int(m["step"]),
            int(m["steps"]),
            loss,
            float(m["rate"]) if m["rate"] else None,
            int(m["eta"]) if m["eta"] else None,
        )
    m = _VALIDATION.search(line)
    if m:
        try:
            metrics = json.loads(m["metrics"])
        except ValueError:
            return None
        if isinstance(metrics, dict):
            return EpochValidation(
                int(m["epoch"]), {str(k): v for k, v in metrics.items() if v is None or isinstance(v, (int, float))}
            )
    return None
