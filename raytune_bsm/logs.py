"""bsm's log lines: one handler on the "raytune_bsm" logger, to stderr (stdout carries results), and the
libraries' own chatter silenced at its source unless `BSM_VERBOSE=1` (what `--verbose` sets).

What a job's log showed a new user besides bsm's lines, and where each is switched off (`quiet_libraries`):
- every Lightning info line twice (its own handler, and once more through the root logger as `INFO:`):
  the `lightning.*` loggers are raised to WARNING and stop propagating;
- transformers' "LOAD REPORT ... UNEXPECTED pooler.dense.weight" table and its `loss_type=None` notice:
  `transformers.logging.set_verbosity_error()`;
- Lightning's tip advertising litmodels: an info line of `lightning.pytorch`, gone with the level above;
- Ray Train's and Ray Tune's progress tables and status lines: their loggers at WARNING (errors stay); Train's
  "Reporting training result ..." line comes from a logger Ray names by its file path (`getLogger(__file__)`).
"""

from __future__ import annotations

import logging
import os
import sys

VERBOSE_ENV = "BSM_VERBOSE"
# Loggers whose INFO lines are the libraries' bookkeeping, not the user's run. WARNING and above stay.
CHATTY = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "ray.train",
    "ray.tune",
    "ray.data",
    "ray.air",
    "ray._private.runtime_env",
    "torch.distributed",
    "filelock",
    "urllib3",
    # the client's Jobs SDK: "Uploading package ...", "WebSocket closed for job ..." when a followed job ends
    "ray.dashboard.modules.dashboard_sdk",
    "ray.dashboard.modules.job.sdk",
)


def verbose() -> bool:
    """`BSM_VERBOSE=1` (the CLI's --verbose; carried to jobs by the submission) keeps every library's lines."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def setup_logging(level: int = logging.INFO) -> None:
    """bsm's log lines go to stderr, once."""
    root = logging.getLogger("raytune_bsm")
    if not root.handlers:
        h = _Stderr()
        h.setFormatter(logging.Formatter("%(asctime)s bsm %(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(h)
        root.setLevel(logging.DEBUG if verbose() else level)
        root.propagate = False


class _Stderr(logging.StreamHandler):
    """A handler on whatever `sys.stderr` is when a line is written (a caller that swaps stderr, such as a test
    capturing output or an embedding application, gets the lines; a stream closed since is never written to)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def quiet_libraries() -> None:
    """Silence the libraries' info chatter in this process (a job driver, a Train worker); no-op when verbose.

    Only logger levels and the libraries' own switches: warnings and errors still show."""
    if verbose():
        return
    for name in CHATTY:
        lg = logging.getLogger(name)
        lg.setLevel(logging.WARNING)
        if name.startswith(("lightning", "pytorch_lightning")):
            lg.propagate = False  # Lightning has its own handler: no second copy through the root logger
    # Ray Train V2's worker context logs every report through `logging.getLogger(__file__)`, outside "ray.train".
    for module in ("ray.train.v2._internal.execution.context",):
        if module in sys.modules:
            logging.getLogger(sys.modules[module].__file__).setLevel(logging.WARNING)
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()
    else:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
