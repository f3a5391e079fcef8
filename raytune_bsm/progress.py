"""Progress for long commands (predict, fetch, demo-data, export, `--follow`), on stderr.

On a terminal a real bar (rich) redraws in place; anywhere else (CI, job logs, a pipe) plain lines come at a
modest rate: every 10% or every 10 s, whichever comes first, and one at the end; never a carriage return.

    with progress(total, "scoring", unit="records") as bar:
        bar.advance(len(batch))              # or bar.update(done, total), e.g. as predict's callback

`follow_progress()` is a text stream for `bsm logs --follow` / `submit --follow`: the job's log text goes in,
the runner's epoch progress lines (their format: logline.py) become bar updates on a terminal, and
every other line passes through unchanged.
"""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator, TextIO

from raytune_bsm.logline import EpochStep, parse_epoch
from raytune_bsm.text import safe

PLAIN_STEPS = 10  # plain mode: a line each time another tenth is done ...
PLAIN_EVERY_S = 10.0  # ... or this long after the last line


def safe_text(text: str) -> str:
    """Text from outside (a path, a run name, a log line) made safe for a bar (text.safe): escape sequences
    dropped, other control characters (ESC, CR, BS) shown as '?' so a bar keeps its width."""
    return safe(text, multiline=True, placeholder="?")


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real file
        return False


class PlainBar:
    """Progress as plain lines: `scoring: 300/1000 records (30%), 95.2 records/s, eta 7s`."""

    def __init__(
        self, total: int | None, description: str, unit: str, stream: TextIO, every_s: float = PLAIN_EVERY_S
    ) -> None:
        self.total, self.description, self.unit, self.stream = total, safe_text(description), unit, stream
        self.every_s = every_s
        self.completed = 0
        self.t0 = self.last_t = time.monotonic()
        self.last_step = 0  # the tenth last printed
        self.lines = 0

    def advance(self, n: int = 1) -> None:
        self.update(self.completed + n)

    def update(self, completed: int, total: int | None = None, info: str = "") -> None:
        if total:
            self.total = total
        self.completed = completed
        now = time.monotonic()
        step = completed * PLAIN_STEPS // self.total if self.total else 0
        if step > self.last_step or now - self.last_t >= self.every_s:
            if not (self.total and completed >= self.total):  # the end is printed once, by close()
                self._line(now, info)
                self.last_step = step

    def close(self, failed: bool = False) -> None:
        if not failed:  # a failure has its own line (the error); no "done" line before it
            self._line(time.monotonic(), "done")

    def _line(self, now: float, info: str = "") -> None:
        self.last_t = now
        dt = max(now - self.t0, 1e-9)
        rate = self.completed / dt
        if self.total:
            text = f"{self.description}: {self.completed}/{self.total} {self.unit} ({100 * self.completed / self.total:.0f}%)"
            if info != "done" and rate > 0:
                text += f", {rate:.1f} {self.unit}/s, eta {(self.total - self.completed) / rate:.0f}s"
        else:
            text = f"{self.description}: {self.completed} {self.unit}, {rate:.1f} {self.unit}/s"
        if info == "done":
            text += f" in {dt:.1f}s"
        elif info:
            text += f"  {safe_text(info)}"
        self.stream.write(text + "\n")
        self.stream.flush()
        self.lines += 1


class RichBar:
    """A rich progress bar redrawn in place on a terminal."""

    def __init__(self, total: int | None, description: str, unit: str, stream: TextIO) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.unit, self._escape = unit, escape
        self.description = escape(safe_text(description))
        self.console = Console(file=stream, force_terminal=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=total or None, info="")
        self.completed = 0

    def advance(self, n: int = 1) -> None:
        self.update(self.completed + n)

    def update(self, completed: int, total: int | None = None, info: str = "", task: Any = None) -> None:
        if task is None:
            task, self.completed = self.task, completed
        kw: dict[str, Any] = {"completed": completed, "info": self._escape(safe_text(info))}
        if total:
            kw["total"] = total
        self.progress.update(task, **kw)

    def add_task(self, description: str, total: int | None) -> Any:
        """Another bar in the same display (rich allows one live display at a time)."""
        return self.progress.add_task(self._escape(safe_text(description)), total=total or None, info="")

    def print(self, line: str) -> None:
        """A line above the bar (the bar stays at the bottom)."""
        self.progress.console.print(self._escape(line), highlight=False, soft_wrap=True)

    def close(self, failed: bool = False) -> None:
        self.progress.stop()


@contextmanager
def progress(
    total: int | None,
    description: str,
    *,
    unit: str = "items",
    stream: TextIO | None = None,
    every_s: float = PLAIN_EVERY_S,
) -> Iterator[PlainBar | RichBar]:
    """A progress bar on `stream` (stderr by default): rich on a terminal, plain lines otherwise.
    `total` may be None (unknown yet) and set later with `bar.update(done, total)`."""
    stream = stream if stream is not None else sys.stderr
    bar: PlainBar | RichBar = (
        RichBar(total, description, unit, stream)
        if is_terminal(stream)
        else PlainBar(total, description, unit, stream, every_s)
    )
    try:
        yield bar
    except BaseException:
        bar.close(failed=True)
        raise
    bar.close()


@contextmanager
def bar_callback(
    description: str, *, unit: str = "items", scale: float = 1.0, stream: TextIO | None = None
) -> Iterator[Callable[..., None]]:
    """`update(done, total)` for an API function's `progress=` parameter: the bar appears at the first call (so
    checks that fail before the work starts print no bar) and closes with the block. `scale` divides both
    figures (bytes shown as MB: scale=1e6, unit="MB")."""
    with ExitStack() as stack:
        bars: list[PlainBar | RichBar] = []

        def update(done: float, total: float | None = None, info: str = "") -> None:
            if not bars:
                bars.append(stack.enter_context(progress(None, description, unit=unit, stream=stream)))
            bars[0].update(
                round(done / scale, 1) if scale != 1 else done,
                (round(total / scale, 1) or None) if total and scale != 1 else total,
                info,
            )

        yield update


class FollowProgress(io.TextIOBase):
    """A text stream for a job's logs. On a terminal: epoch progress lines drive one bar per source (the text
    before "epoch", e.g. a worker's Ray prefix), validation and other lines print above it. Elsewhere: every line
    passes through as written (the runner already writes them at ~10% of an epoch)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.tty = is_terminal(self.stream)
        self._buf = ""
        self._bar: RichBar | None = None
        self._tasks: dict[str, Any] = {}  # source -> the bar's task

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        n = len(text)
        if not self.tty:  # a log file: keep the lines, never a carriage return
            text, self._buf = self._buf + text, ""
            if text.endswith("\r"):  # it may be half of a "\r\n"
                text, self._buf = text[:-1], "\r"
            self.stream.write(text.replace("\r\n", "\n").replace("\r", "\n"))
            return n
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self.feed(line)
        return n

    def feed(self, line: str) -> None:
        """One complete log line (terminal mode)."""
        line = safe_text(line.rstrip("\r"))
        event = parse_epoch(line)
        if not isinstance(event, EpochStep):
            if self._bar is not None:
                self._bar.print(line)
            else:
                self.stream.write(line + "\n")
            return
        source = line[: line.find("epoch ")].strip()
        source = re.sub(r"\S+ bsm INFO$", "", source).strip()  # our own timestamp prefix says nothing
        info = f"epoch {event.epoch}/{event.epochs} loss {event.loss:.4f}"
        if self._bar is None:
            self._bar = RichBar(event.total, f"{source} training".strip(), "steps", self.stream)
            self._tasks[source] = self._bar.task
        elif source not in self._tasks:
            self._tasks[source] = self._bar.add_task(f"{source} training".strip(), event.total)
        self._bar.update(event.done, event.total, info=info, task=self._tasks[source])

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        if self._buf and self.tty:
            self.feed(self._buf)
        elif self._buf:
            self.stream.write("\n")
        self._buf = ""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        super().close()


@contextmanager
def follow_progress(stream: TextIO | None = None) -> Iterator[FollowProgress]:
    """`with follow_progress() as out: jobs.logs(job_id, follow=True, out=out)`."""
    f = FollowProgress(stream)
    try:
        yield f
    finally:
        f.close()
