"""The `bsm` command line: a thin Typer app over `raytune_bsm.api`, one module per command group."""

# Each module registers its commands on `app`, in the order `bsm --help` lists them.
from raytune_bsm.cli import jobs  # noqa: F401  isort: skip
from raytune_bsm.cli import cluster  # noqa: F401  isort: skip
from raytune_bsm.cli import artifacts  # noqa: F401  isort: skip
from raytune_bsm.cli import serve  # noqa: F401  isort: skip
from raytune_bsm.cli.app import app, handle_signals

__all__ = ["app", "main"]


def main() -> None:
    handle_signals()  # SIGTERM and SIGHUP clean up as Ctrl-C does
    app()
