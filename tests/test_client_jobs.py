"""Job control helpers that need no cluster: following logs across dropped connections, why a job failed.

A dropped websocket cannot be produced on demand with a real cluster, so `follow_logs` is driven by a fake
job client here (named so); the real `tail_job_logs` path runs in tests/test_submit_jobs.py.
"""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest

from raytune_bsm.client import jobs
from raytune_bsm.errors import ClusterError


class FlakyJobClient:
    """Like JobSubmissionClient: each tail connection replays the log from the start; some drop midway."""

    def __init__(self, sessions: list[tuple[list[str], bool]], states: list[str]) -> None:
        self.sessions = sessions  # per connection: (chunks it yields, whether it then drops)
        self.states = states  # what get_job_info says after each connection ends
        self.connections = 0

    async def tail_job_logs(self, job_id: str) -> Any:
        chunks, drops = self.sessions[min(self.connections, len(self.sessions) - 1)]
        self.connections += 1
        for c in chunks:
            yield c
        if drops:
            raise RuntimeError("WebSocket connection closed unexpectedly with close code 1006")

    def get_job_info(self, job_id: str) -> Any:
        return SimpleNamespace(status=self.states[min(self.connections, len(self.states)) - 1])


def test_follow_reconnects_and_prints_each_line_once_fake_client() -> None:
    log = ["epoch 1\n", "epoch 2\n", "epoch 3\n", "\x1b[31mdone\x1b[0m\n"]
    client = FlakyJobClient(
        sessions=[(log[:2], True), (log[:3], False), (log, False)],  # drop; stream ends early; the end
        states=["RUNNING", "RUNNING", "SUCCEEDED"],
    )
    out = io.StringIO()
    assert jobs.follow_logs(client, "bsm-x", out, poll=0.01) == "SUCCEEDED"
    assert out.getvalue() == "epoch 1\nepoch 2\nepoch 3\ndone\n"  # once each, escapes removed
    assert client.connections == 3


def test_follow_gives_up_after_retries_fake_client() -> None:
    client = FlakyJobClient(sessions=[([], True)], states=["RUNNING"])
    with pytest.raises(ClusterError, match="lost the connection .*bsm logs --follow"):
        jobs.follow_logs(client, "bsm-x", io.StringIO(), poll=0.01, retries=3)
    assert client.connections == 4


def test_failure_reason_names_message_exit_code_and_last_error_line() -> None:
    logs = (
        "INFO worker.py: starting\n"
        "Traceback (most recent call last):\n"
        '  File "train.py", line 3, in <module>\n'
        "ModuleNotFoundError: No module named 'pyarrow'\x1b[0m\n"
        "INFO done\n"
    )
    info = SimpleNamespace(
        message="Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n"
        + logs,
        driver_exit_code=1,
    )
    reason = jobs.failure_reason(info, logs)
    assert reason == (
        "Job entrypoint command failed with exit code 1; driver exit code 1; "
        "ModuleNotFoundError: No module named 'pyarrow'"
    )
    assert jobs.last_error_line("x\nbsm: error: --train data.csv: no such file\nbye\n") == (
        "bsm: error: --train data.csv: no such file"
    )
    assert jobs.failure_reason(SimpleNamespace(message=None, driver_exit_code=None), "ok\n") == (
        "no reason given by Ray; see `bsm logs`"
    )
