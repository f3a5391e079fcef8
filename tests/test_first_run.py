"""The README's first command as a new user sees it (issue 18.27): `bsm submit --follow` on a fresh BSM_HOME,
where bsm starts its own cluster, prints only bsm's own lines on stderr, in the client and in the job's logs as
they stream (no other library's progress bar, notice or font-cache message). `--verbose` keeps those.

The run is small (a tiny BERT saved as a pretrained model directory, so its weights load through
`from_pretrained` as the default model's do; 120 demo dialogues), on a machine as fresh as this one can be made:
matplotlib's config directory is empty, so its font cache is built during the job, as on a first run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY_ENCODER

# Every line shape `bsm submit --follow` prints on stderr without --verbose.
_RAY_PREFIX = r"(?:(?:\\x1b\[\d+m)?\([\w.-]+ pid=\d+(?:, ip=[\d.]+)?\)(?:\\x1b\[0m)? )?"  # a line a Ray process wrote
BSM_LINES = {
    # bsm's log line, from the client, the job's driver, or (with Ray's prefix) a Train worker or the export task
    "log": re.compile(_RAY_PREFIX + r"\d\d:\d\d:\d\d bsm (?:DEBUG|INFO|WARNING|ERROR) \S.*"),
    # the two lines the Jobs API writes at the top of every job's log (Ray's dashboard, before the job runs)
    "job header": re.compile(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+INFO job_manager\.py:\d+ -- Runtime env is setting up\."
    ),
    "job entrypoint": re.compile(r"Running entrypoint for job bsm-[\w-]+: python -m raytune_bsm\.runner\.train \S+"),
    # the end of a followed run (cli/jobs.py)
    "end": re.compile(r"job bsm-[\w-]+: (?:SUCCEEDED|FAILED|STOPPED)"),
    "validation": re.compile(r"validation: \{.*\}"),
    "checkpoints": re.compile(r"checkpoints: \S+(?: \(best: \S+\))?"),
    "export": re.compile(r"export: \S+"),
}


# What Ray prints only on an overloaded machine (seen with a second training run beside the test on 2 cores;
# never in a first run alone): Train's controller timing out on its autoscaling request (a warning and its
# traceback, "safe to ignore this error" in its own words), and abseil's mutex tracing from Ray's core.
OVERLOAD_START = re.compile(r"\(TrainController pid=\d+\) Failed to send resource request .*CPU being overloaded.*")
OVERLOAD_END = re.compile(r"\(TrainController pid=\d+\) ray\.exceptions\.GetTimeoutError: .*")
MUTEX = re.compile(_RAY_PREFIX + r"\[mutex\.cc : \d+\] RAW: (?:Lock|Unlock) .*")


def foreign_lines(stderr: str) -> list[str]:
    """The stderr lines of no shape bsm prints (a carriage return inside a line counts as a line break), Ray's
    overload notices aside."""
    lines = stderr.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    foreign, in_notice = [], False
    for ln in lines:
        in_notice = in_notice or bool(OVERLOAD_START.fullmatch(ln))
        if in_notice:
            in_notice = not OVERLOAD_END.fullmatch(ln)
        elif ln.strip() and not MUTEX.fullmatch(ln) and not any(p.fullmatch(ln) for p in BSM_LINES.values()):
            foreign.append(ln)
    return foreign


def test_the_shapes_catch_what_a_first_run_used_to_print() -> None:
    """Lines a first run printed before issue 18.27 (copied from its log) fail; bsm's own lines pass."""
    before = (
        "20:34:18 bsm INFO no --train given: using the demo data in /h/demo-data/rows2000-seed0-4fdf5ef8\n"
        "(RayTrainWorker pid=12053) \n"
        "Loading weights:   0%|          | 0/101 [00:00<?, ?it/s]\r"
        "Loading weights: 100%|##########| 101/101 [00:00<00:00, 1953.20it/s]\n"
        "(RayTrainWorker pid=12053) Progress bars disabled. To enable, set "
        "`ray.data.DataContext.get_current().enable_progress_bars = True`.\n"
        "(RayTrainWorker pid=12053) generated new fontManager\n"
        "(RayTrainWorker pid=12053) 20:37:18 bsm INFO epoch 1/1  step 20/200  loss 0.6959  1.5 records/s/worker\n"
        "2026-12-06 20:34:10,430\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
        "job bsm-train-20261206-203349-aef3: SUCCEEDED\n"
    )
    assert foreign_lines(before) == [
        "(RayTrainWorker pid=12053) ",
        "Loading weights:   0%|          | 0/101 [00:00<?, ?it/s]",
        "Loading weights: 100%|##########| 101/101 [00:00<00:00, 1953.20it/s]",
        "(RayTrainWorker pid=12053) Progress bars disabled. To enable, set "
        "`ray.data.DataContext.get_current().enable_progress_bars = True`.",
        "(RayTrainWorker pid=12053) generated new fontManager",
    ]


# A process of a job as Ray starts it (a root handler at INFO), meeting each library line a first run printed.
CODE = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="ROOT %(message)s", stream=sys.stderr)
from raytune_bsm.logs import quiet_libraries, setup_logging
if sys.argv[1] == "after":
    import transformers  # imported before bsm quiets anything (the export task's case)
setup_logging()
quiet_libraries()
import transformers
for _ in transformers.utils.logging.tqdm(range(3), desc="Loading weights"):
    pass
import matplotlib.font_manager  # an empty MPLCONFIGDIR: the font cache is built now, as on a first run
logging.getLogger("ray.data._internal.progress").warning("Progress bars disabled. To enable, set ...")
logging.getLogger("raytune_bsm").info("BSM-LINE")
"""


@pytest.mark.parametrize("imported", ["before", "after"])
@pytest.mark.parametrize("verbose", [False, True])
def test_library_lines_of_a_first_run_are_silenced_unless_verbose(verbose: bool, imported: str, tmp_path: Path):
    drop = ("BSM_VERBOSE", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["MPLCONFIGDIR"] = str(tmp_path / "matplotlib")
    if verbose:
        env["BSM_VERBOSE"] = "1"
    done = subprocess.run([sys.executable, "-c", CODE, imported], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert text.count("BSM-LINE") == 1
    assert any((tmp_path / "matplotlib").glob("fontlist-*.json"))  # the cache was built in this process
    library = ("Loading weights", "generated new fontManager", "Progress bars disabled")
    assert [s for s in library if s in text] == (list(library) if verbose else []), text


def _tiny_pretrained(path: Path) -> Path:
    """A tiny BERT saved as a model directory (with its pooler, as the default model has), and the default
    model's tokenizer beside it: trained through `from_pretrained` exactly as the default model is."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from raytune_bsm.pretrained import DEFAULT_MODEL, resolve_model

    BertModel(BertConfig(**TINY_ENCODER)).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL)).save_pretrained(path)
    return path


def _bsm(home: Path, env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raytune_bsm.cli", *args],
        env={**env, "BSM_HOME": str(home)},
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A BSM_HOME with no cluster (bsm starts one, and `bsm down` stops it afterwards) and an environment as a
    new user's shell has it: no Ray address or token, no --verbose, an empty matplotlib config directory."""
    home = tmp_path / "bsm-home"
    drop = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "BSM_VERBOSE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["MPLCONFIGDIR"] = str(tmp_path / "matplotlib")  # no font cache yet: the job builds it, as on a first run
    try:
        yield home, env
    finally:
        down = _bsm(home, env, "down", timeout=180)
        assert down.returncode == 0, down.stderr[-2000:]


@pytest.mark.slow
def test_a_first_run_prints_only_bsms_own_lines(fresh: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    home, env = fresh
    model = _tiny_pretrained(tmp_path / "tiny-bert")
    # log_every_n_steps=1: the 3 batches of this small run would draw Lightning's warning about its logging interval
    sets = ["lr=0.001", "max_tokens=64", "max_chunks=4", "batch_size=32", "demo_rows=120", "log_every_n_steps=1"]
    args = ["submit", "--follow", "--name", "first-run", "--model", str(model), "--max-epochs", "1"]
    done = _bsm(home, env, *args, *[a for s in sets for a in ("--set", s)], timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip() == "bsm-first-run"
    lines = done.stderr.splitlines()
    print(f"{len(lines)} stderr lines:\n{done.stderr}")
    assert "job bsm-first-run: SUCCEEDED" in lines
    assert any(re.search(r"\(RayTrainWorker pid=\d+\).* bsm INFO epoch 1/1", ln) for ln in lines)  # the job streamed
    assert any(ln.startswith("export: ") for ln in lines)  # the export task ran (it loads the model again)
    assert any((tmp_path / "matplotlib").glob("fontlist-*.json")), "the job did not build matplotlib's font cache"
    assert foreign_lines(done.stderr) == []
