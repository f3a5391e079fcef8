"""Progress on stderr: a real bar on a terminal (a pseudo-terminal here), plain bounded lines anywhere else, and
the runner's epoch lines turned into bar updates for `--follow`."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import textwrap

import pytest

from raytune_bsm.logline import EpochStep, EpochValidation, parse_epoch
from raytune_bsm.progress import follow_progress, progress, safe_text

SCORE = textwrap.dedent(
    """
    import sys, time
    from raytune_bsm.progress import progress
    with progress(None, "scoring", unit="records") as bar:
        for i in range(50):
            bar.update((i + 1) * 20, 1000)
            time.sleep(0.01)
    """
)

# What runner/worker.py ProgressLog writes, as it reaches `bsm logs --follow` through Ray's job logs.
FOLLOW = textwrap.dedent(
    """
    import sys, time
    from raytune_bsm.progress import follow_progress
    lines = ["starting the job\\n"]
    for e in (1, 2):
        for s in range(10, 101, 10):
            lines.append(f"\\x1b[36m(RayTrainWorker pid=42)\\x1b[0m 10:00:0{e} bsm INFO epoch {e}/2  step {s}/100  "
                         f"loss 0.{s:02d}  90.5 records/s/worker  eta {100 - s}s\\n")
        lines.append(f'(RayTrainWorker pid=42) 10:00:0{e} bsm INFO epoch {e} validation: {{"val_auroc": 0.9}}\\n')
    lines.append("job done\\n")
    with follow_progress() as out:
        for line in lines:
            out.write(line[:7]); out.write(line[7:])  # logs arrive in arbitrary pieces
            time.sleep(0.01)
    """
)


def _run_on_pty(code: str) -> bytes:
    """Run `code` with stderr on a pseudo-terminal; return everything written to it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
    )
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, out.decode(errors="replace")
    return out


def _run_piped(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return done.stderr


def test_a_terminal_gets_a_redrawn_rich_bar():
    out = _run_on_pty(SCORE)
    assert b"\x1b[" in out  # rich draws with escape sequences ...
    assert b"\r" in out or b"\x1b[2K" in out  # ... and redraws the bar in place
    text = out.decode(errors="replace")
    assert "scoring" in text and "1000/1000" in text


def test_no_terminal_gets_a_few_plain_lines_and_no_carriage_return():
    err = _run_piped(SCORE)
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert 2 <= len(lines) <= 11, lines  # at most one per tenth, and the last
    assert lines[-1].startswith("scoring: 1000/1000 records (100%) in ")
    assert "scoring: 100/1000 records (10%)" in lines[0]


def test_plain_lines_come_every_interval_without_a_total():
    buf = io.StringIO()
    with progress(None, "fetching", unit="files", stream=buf, every_s=0.0) as bar:
        bar.advance(3)
        bar.advance(2)
    assert buf.getvalue().splitlines()[0].startswith("fetching: 3 files")
    assert buf.getvalue().splitlines()[-1].startswith("fetching: 5 files")


def test_outside_text_cannot_drive_the_terminal():
    assert safe_text("run\x1b[2J\rname\x07") == "run?name?"
    buf = io.StringIO()
    with progress(2, "export \x1b]0;pwned\x07 \r", stream=buf) as bar:
        bar.advance(2)
    assert "\x1b" not in buf.getvalue() and "\r" not in buf.getvalue()


def test_runner_progress_lines_parse():
    step = parse_epoch(
        "(RayTrainWorker pid=9) 10:00:00 bsm INFO epoch 2/3  step 40/100  loss 0.4321  95.1 records/s/worker  eta 12s"
    )
    assert step == EpochStep(2, 3, 40, 100, 0.4321, 95.1, 12)
    assert (step.done, step.total) == (140, 300)
    val = parse_epoch('10:00:00 bsm INFO epoch 2 validation: {"val_auroc": 0.91, "val_loss": 0.3}')
    assert val == EpochValidation(2, {"val_auroc": 0.91, "val_loss": 0.3})
    assert parse_epoch("10:00:00 bsm INFO epoch 2 validation: {not json}") is None
    assert parse_epoch("Loading the model for epoch 3") is None


def test_follow_on_a_terminal_turns_epoch_lines_into_a_bar():
    text = _run_on_pty(FOLLOW).decode(errors="replace")
    assert "200/200" in text  # two epochs of 100 steps, as one bar
    assert "epoch 2/2 loss 1.0000" in text or "epoch 2/2" in text
    assert "starting the job" in text and "job done" in text and '"val_auroc": 0.9' in text
    assert "epoch 1/2  step 10/100" not in text  # the raw step lines became the bar


def test_follow_without_a_terminal_passes_lines_through_unchanged():
    err = _run_piped(FOLLOW)
    assert "\r" not in err
    assert err.count("step ") == 20 and "starting the job" in err and "job done" in err


@pytest.mark.parametrize("piece", [1, 5, 1000])
def test_follow_strips_carriage_returns_from_a_log(piece):
    buf = io.StringIO()
    log = "downloading 10%\rdownloading 100%\r\nready\n"
    with follow_progress(buf) as out:
        for i in range(0, len(log), piece):
            out.write(log[i : i + piece])
    assert buf.getvalue() == "downloading 10%\ndownloading 100%\nready\n"


# ------------------------------------------------------------------ the commands themselves

DEMO = "import sys; from raytune_bsm.cli import main; sys.argv = ['bsm', 'demo-data', '--out', {out!r}, '--rows', '2000']; main()"


def test_demo_data_draws_a_bar_on_a_terminal(tmp_path):
    text = _run_on_pty(DEMO.format(out=str(tmp_path / "d"))).decode(errors="replace")
    assert "\x1b[" in text and "generating" in text and "2000/2000" in text


def test_demo_data_without_a_terminal_writes_a_few_plain_lines(tmp_path):
    lines = _run_piped(DEMO.format(out=str(tmp_path / "d"))).splitlines()
    assert "\r" not in "".join(lines) and "\x1b" not in "".join(lines)
    assert 2 <= len(lines) <= 11, lines
    assert lines[0].startswith("generating: 500/2000 dialogues (25%)")
    assert lines[-1].startswith("generating: 2000/2000 dialogues (100%) in ")


EXPORT = "import sys; from raytune_bsm.cli import main; sys.argv = ['bsm', 'export', {ckpt!r}, '--to', {to!r}]; main()"


def test_export_shows_its_steps(tmp_path, tiny_encoder):
    import torch

    from raytune_bsm.model.text_bert import TextBertClassifier

    torch.manual_seed(0)
    model = TextBertClassifier(
        {
            "text_name": "dialogue",
            "label_name": "reversal_flag",
            "encoder_config": tiny_encoder,
            "tokenizer": "all-MiniLM-L6-v2",
            "class_names": ["0", "1"],
            "max_tokens": 64,
            "max_chunks": 4,
        }
    )
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    text = _run_on_pty(EXPORT.format(ckpt=str(ckpt), to=str(tmp_path / "a"))).decode(errors="replace")
    assert "\x1b[" in text and "exporting" in text and "parity" in text
    lines = _run_piped(EXPORT.format(ckpt=str(ckpt), to=str(tmp_path / "b"))).splitlines()
    steps = [line for line in lines if line.startswith("exporting: ")]
    assert "\r" not in "".join(lines) and steps, lines
    assert steps[-1].startswith("exporting: ") and "(100%) in " in steps[-1], steps
    assert (tmp_path / "b" / "manifest.json").is_file()
