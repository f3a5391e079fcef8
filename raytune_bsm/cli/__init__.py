"""The `bsm` command line: a thin Typer app over `raytune_bsm.api`."""

from raytune_bsm.cli.app import app, main

__all__ = ["app", "main"]
