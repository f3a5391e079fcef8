"""bsm's log lines: one handler on the "raytune_bsm" logger, to stderr (stdout carries results), and the
libraries' own chatter silenced at its source unless `BSM_VERBOSE=1` (what `--verbose` sets).

What a job's log showed a new user besides bsm's lines, and where each is switched off (`quiet_libraries`):
- every Lightning info line twice (its own handler, and once more through the root logger as `INFO:`):
  the `lightning.*` loggers are raised to WARNING and stop propagating;
- transformers' "LOAD REPORT ... UNEXPECTED pooler.dense.weight" table and its `loss_type=None` notice:
  `transformers.logging.set_verbosity_error()`;
- Lightning's tip advertising litmodels: an info line of `lightning.pytorch`, gone with the level above;
- Ray Train's and Ray Tune's progress tables and status lines: their loggers at WARNING (errors stay); Train's
  "Reporting training result ..." line comes from a logger Ray names by its file path (`getLogger(__file__)`);
- transformers' "Loading weights" bar (a tqdm bar: carriage returns in a log file), once per model load:
  `transformers.logging.disable_progress_bar()`, and `HF_HUB_DISABLE_PROGRESS_BARS` for a process that has not
  imported transformers yet;
- Ray Data's "Progress bars disabled. To enable, set ...", a warning about the bars bsm itself turns off
  (`RAY_DATA_DISABLE_PROGRESS_BARS`): its logger at ERROR;
- matplotlib's "generated new fontManager" and "building the font cache" (on a machine's first import, which
  torchmetrics does in every Train worker): its font manager's logger at ERROR, set before Lightning is imported.

`QUIET_ENV` holds the switches libraries read from the environment when imported; a job's driver passes them to
every task and actor of the job (runner/train.connect), so a process that imports a library before bsm's code runs
is quiet too.
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
    "matplotlib",
)
# Loggers whose warnings are about switches bsm sets itself: errors only.
NOTICES = (
    "ray.data._internal.progress",  # "Progress bars disabled. To enable, set ..." (bsm disables them)
    # its font cache, built on a machine's first import (torchmetrics imports matplotlib): "generated new
    # fontManager", and "Matplotlib is building the font cache; this may take a moment." when that takes 5 s
    "matplotlib.font_manager",
)
# Switches transformers reads when first imported: set in a process that has not imported it yet.
TRANSFORMERS_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # no LOAD REPORT tables or loss_type notices
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # no "Loading weights" bar
}
# Every library switch a job's processes get from the environment (runner/train.connect hands them to its tasks
# and actors; Ray Data sets up its loggers itself in each process).
QUIET_ENV = {
    **TRANSFORMERS_ENV,
    "RAY_DATA_LOG_LEVEL": "ERROR",  # no execution plans, "execution finished", progress tables
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",  # no tqdm bars in a log file
}


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
    for name in NOTICES:
        logging.getLogger(name).setLevel(logging.ERROR)
    for key, value in TRANSFORMERS_ENV.items():
        os.environ.setdefault(key, value)  # read when transformers is first imported in this process
    if "transformers" in sys.modules:  # imported already: its own switches
        sys.modules["transformers"].logging.set_verbosity_error()
        sys.modules["transformers"].logging.disable_progress_bar()
