"""Job control's bad inputs and messages (issue 18: 10, 15, 21, 22, 23, 24), without a cluster.

Job ids and fetch's sources are checked before anything is sent: each bad one is one `bsm: error:` line. What
needs a running job (`bsm down` while a job runs, `bsm logs --follow` of a stopped job, a real Ctrl-C, a job id
the cluster no longer knows) is in test_cluster_hygiene.py, on a real local cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raytune_bsm import api
from raytune_bsm.cli import app
from raytune_bsm.client import jobs
from raytune_bsm.client.fetch import locate_export
from raytune_bsm.client.submission import resume_id, run_of_job
from raytune_bsm.errors import ConfigError

BAD_IDS = ["nope/../bsm-base1", "bsm-base1?x=1", "bsm-base1#frag", "bsm-base1/", "../bsm-base1", "bsm base1", ""]


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch, bsm_home: Path) -> None:
    """An empty BSM_HOME and no address from the machine: nothing can reach a cluster."""
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)


def _one_error_line(args: list[str]) -> str:
    r = CliRunner().invoke(app, args, prog_name="bsm")
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsm: error: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    return lines[0]


@pytest.mark.parametrize("command", ["status", "stop", "logs"])
@pytest.mark.parametrize("job_id", BAD_IDS)
def test_a_job_id_that_is_not_one_is_refused_before_the_jobs_api(command: str, job_id: str) -> None:
    line = _one_error_line([command, job_id, "--address", "http://127.0.0.1:9"])  # nothing listens on port 9
    assert f"{job_id!r} is not a job id" in line and "`bsm list`" in line


def test_the_ids_bsm_and_ray_issue_pass_the_check() -> None:
    for job_id in ("bsm-base1", "bsm-my_run.v2", resume_id("base1"), "raysubmit_aBcD1234eFgH5678"):
        assert jobs.check_job_id(job_id) == job_id


@pytest.mark.parametrize("source", ["nope/../bsm-base1", "bsm-base1?x=1", "run#frag", "a b"])
def test_fetch_of_something_that_is_no_path_job_or_run_name_is_one_line(source: str, tmp_path: Path) -> None:
    line = _one_error_line(["fetch", source, "--to", str(tmp_path / "out")])
    assert f"{source!r} is neither an existing path nor a job id or run name" in line
    assert not (tmp_path / "out").exists()


def test_a_job_id_names_its_run() -> None:
    assert run_of_job("bsm-base1") == "base1"
    assert run_of_job(resume_id("base1")) == "base1"
    assert run_of_job("bsm-my-run-resume-x") == "my-run-resume-x"  # not a resume id: the whole rest
    assert run_of_job("raysubmit_abc") is None


def test_fetch_of_a_bsm_job_id_with_no_cluster_running_finds_the_run_in_storage(bsm_home: Path) -> None:
    export = bsm_home / "runs" / "base1" / "export"
    export.mkdir(parents=True)
    (export / "manifest.json").write_text("{}")
    assert locate_export("bsm-base1") == (str(export), "base1")
    assert locate_export(resume_id("base1")) == (str(export), "base1")
    # a run that is itself named bsm-...: its own export wins
    own = bsm_home / "runs" / "bsm-base1" / "export"
    own.mkdir(parents=True)
    (own / "manifest.json").write_text("{}")
    assert locate_export("bsm-base1") == (str(own), "bsm-base1")


# ----------------------------------------------------------------------------------------- messages


def test_a_time_budget_shorter_than_the_first_epoch_says_what_it_needs() -> None:
    from raytune_bsm.runner.tune import check_budget

    none_reported = {"best_trial": None, "trials": {"total": 4, "TERMINATED": 4}}
    with pytest.raises(ConfigError) as e:
        check_budget(none_reported, 5.0, 7.4)
    assert str(e.value) == (
        "--time-budget 5s ended the sweep after 7s, before any trial reported an epoch: the first epoch needs "
        "more than 7s; give --time-budget above 7s, e.g. --time-budget 1m"
    )
    check_budget(none_reported, None, 7.4)  # no budget: the sweep's own error says why
    check_budget({**none_reported, "best_trial": {"trial_id": "a"}}, 5.0, 7.4)  # a trial reported
    check_budget({**none_reported, "trials": {"total": 4, "ERROR": 4}}, 5.0, 7.4)  # they failed: their error
    check_budget(none_reported, 600.0, 30.0)  # ended before the budget: not the budget's doing


def test_status_of_such_a_sweep_gives_the_budget_as_the_reason() -> None:
    """What `bsm status` shows for a FAILED job: its log's last `bsm: error:` line (the runner prints it)."""
    info = type("Info", (), {"message": "Job entrypoint command failed with exit code 1", "driver_exit_code": 1})()
    log = "best: None\nbsm: error: --time-budget 5s ended the sweep after 7s, before any trial reported an epoch\n"
    reason = jobs.failure_reason(info, log)
    assert reason.endswith("bsm: error: --time-budget 5s ended the sweep after 7s, before any trial reported an epoch")


DUMP = """epoch 1 validation: {"val_auroc": 0.5}
*** SIGTERM received at time=1765051234 on cpu 0 ***
PC: @     0x7f8b2d0e4e2e  (unknown)  epoll_wait
    @     0x7f8b2d001520  (unknown)  (unknown)
    @ ... and at least 3 more frames
[2026-12-06 20:10:11,123 E 12345 12345] logging.cc:474: *** SIGTERM received at time=1765051234 on cpu 0 ***
[2026-12-06 20:10:11,123 E 12345 12345] logging.cc:474: PC: @     0x7f8b2d0e4e2e  (unknown)  epoll_wait
(RayTrainWorker pid=123) [2026-12-06 20:10:11,124 E 12345 12345] logging.cc:474:     @  0x7f8b2d001520  (unknown)
a line of the job's own with @ 0x1 inside
"""


def test_streamed_logs_lose_rays_signal_dump_whatever_the_chunks() -> None:
    want = 'epoch 1 validation: {"val_auroc": 0.5}\na line of the job\'s own with @ 0x1 inside\n'
    assert jobs.without_signal_dumps(DUMP) == want
    for size in (1, 7, 64):
        lines = jobs.LogLines()
        assert "".join(lines.feed(DUMP[i : i + size]) for i in range(0, len(DUMP), size)) + lines.flush() == want


class _StoppedJob:
    """A Jobs API client whose job was stopped: its log ends in Ray's signal dump (stands in for a cluster)."""

    def get_job_info(self, job_id: str) -> object:
        return type("Info", (), {"status": "STOPPED", "message": "Job was intentionally stopped."})()

    async def tail_job_logs(self, job_id: str):  # noqa: ANN201
        for i in range(0, len(DUMP), 50):
            yield DUMP[i : i + 50]


def test_logs_follow_of_a_stopped_job_ends_with_its_state_client_stubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "_connect", lambda *a, **k: (type("C", (), {"dashboard_url": "x"})(), _StoppedJob()))
    monkeypatch.setattr(api, "status", lambda job_id, **kw: {"job_id": job_id, "status": "STOPPED"})
    r = CliRunner().invoke(app, ["logs", "bsm-x", "--follow"], prog_name="bsm")
    assert r.exit_code == 1
    assert "SIGTERM" not in r.stderr and "PC: @" not in r.stderr
    assert r.stderr.rstrip().splitlines()[-1] == "job bsm-x: STOPPED"


@pytest.mark.parametrize(
    "args", [["submit", "--follow"], ["tune", "--follow"], ["logs", "bsm-a", "--follow"]], ids=lambda a: a[0]
)
def test_ctrl_c_while_following_says_the_job_keeps_running_interrupt_simulated(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*a: object, **k: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "submit", lambda opts, **kw: "bsm-a")
    monkeypatch.setattr(api, "tune", lambda opts, sweep, **kw: "bsm-a")
    monkeypatch.setattr(api, "wait", interrupted)
    monkeypatch.setattr(api, "logs", interrupted)
    r = CliRunner().invoke(app, [*args, "--address", "http://127.0.0.1:8265"], prog_name="bsm")
    assert r.exit_code == 130
    assert r.stderr.strip().splitlines()[-1] == (
        "bsm: interrupted; job bsm-a keeps running on the cluster: follow it with `bsm logs bsm-a --follow "
        "--address http://127.0.0.1:8265`, stop it with `bsm stop bsm-a --address http://127.0.0.1:8265`"
    )


def test_down_with_no_cluster_needs_no_force() -> None:
    r = CliRunner().invoke(app, ["down"], prog_name="bsm")
    assert r.exit_code == 0 and "no local cluster started by bsm is running" in r.stderr
    assert json.dumps(api.running_jobs()) == "[]"
