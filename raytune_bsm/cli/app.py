"""`bsm`: the Typer app, its error handling and its output. Commands live in cli/jobs.py, cli/cluster.py and
cli/artifacts.py; options shared between commands are declared once in cli/options.py.

stdout carries what a script wants (a job id, a path, JSON); progress and logs go to stderr. Every mistake, a
bad flag value included, is one line `bsm: error: ...` on stderr and exit code 1; no traceback. Text from
outside (job messages, paths, errors) is escaped before it reaches the terminal. Heavy libraries are imported
inside the API functions, so `bsm --help` is instant.
"""

import json
import os
import signal
import sys
from functools import wraps
from typing import Any, Callable

import typer
from typer.core import TyperGroup

try:  # typer >= 0.25 carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors  # type: ignore[no-redef]

from raytune_bsm.errors import BsmError
from raytune_bsm.logs import VERBOSE_ENV, quiet_libraries, setup_logging
from raytune_bsm.text import safe


class BsmGroup(TyperGroup):
    """Click's usage errors (a bad flag value, a missing argument) as one line and exit code 1, like bsm's own."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
            code = rv if isinstance(rv, int) else 0
        except click_errors.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help())
            code = 0
        except click_errors.UsageError as e:
            where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            err(f"bsm: error: {safe(e.format_message())}{where}")
            code = 1
        except click_errors.ClickException as e:
            err(f"bsm: error: {safe(e.format_message())}")
            code = e.exit_code
        except typer.Abort as e:
            if isinstance(e.__cause__, Terminated):
                err(f"bsm: terminated ({signal.Signals(e.__cause__.signum).name})")
                code = 128 + e.__cause__.signum
            else:
                err("bsm: interrupted")
                code = 1
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=BsmGroup,
    help="Train, sweep and export a chunked-BERT classifier for buyer-seller dialogues on Ray.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,  # tokens live in local variables: never print them
)


@app.callback()
def _global(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Keep every library's log lines (here and in jobs)."),
) -> None:
    """Train, sweep and export a chunked-BERT classifier for buyer-seller dialogues on Ray."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # read by setup_logging, and carried to jobs by the submission


def out(obj: Any) -> None:
    """A result on stdout: text as it is (already escaped by the caller), anything else as JSON."""
    typer.echo(obj if isinstance(obj, str) else json.dumps(obj, indent=2, default=str))


def err(msg: str) -> None:
    typer.echo(msg, err=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, as Ctrl-C is: every cleanup that runs on Ctrl-C runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def handle_signals() -> None:
    """SIGTERM and SIGHUP become `Terminated` (a KeyboardInterrupt) in the main thread: a command that writes
    removes its partial output as on Ctrl-C, and bsm exits 128 + the signal's number (143, 129), as the default
    action would."""
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _terminated)


def _os_error(e: OSError) -> str:
    """An OSError that no check caught (a disk that filled, a file made read-only meanwhile) as one line."""
    what = e.strerror or (str(e).splitlines() or [type(e).__name__])[0]
    where = f"{e.filename}: " if e.filename is not None else ""
    return f"{where}{what} ({type(e).__name__})"


def command(name: str, group: typer.Typer | None = None) -> Callable:
    """Register a command (on `group`, a sub-app, or the main app) whose BsmErrors become one line on stderr and
    exit code 1."""

    def deco(fn: Callable) -> Callable:
        @wraps(fn)
        def run(*a: Any, **k: Any) -> Any:
            setup_logging()
            quiet_libraries()  # the Jobs SDK's upload chatter; --verbose keeps it
            try:
                return fn(*a, **k)
            except BsmError as e:
                err(f"bsm: error: {safe(e)}")
                raise typer.Exit(1) from None
            except KeyboardInterrupt as e:
                if isinstance(e, Terminated):
                    err(f"bsm: terminated ({signal.Signals(e.signum).name})")
                    raise typer.Exit(128 + e.signum) from None
                err("bsm: interrupted")
                raise typer.Exit(130) from None
            except OSError as e:  # never a traceback for a file or socket that failed after the checks
                err(f"bsm: error: {safe(_os_error(e))}")
                raise typer.Exit(1) from None

        return (group or app).command(name)(run)

    return deco
