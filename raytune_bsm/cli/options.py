"""Every option shared between commands, declared once as an `Annotated` alias.

`bsm submit` and `bsm tune` take the same run options (RUN_OPTIONS, one per SubmitOptions field): `@run_options`
adds all of them to a command and hands them to it as one `opts: SubmitOptions`, so the two cannot drift.
"""

import inspect
from dataclasses import fields
from functools import wraps
from typing import Annotated, Any, Callable, List, Optional

import typer

from raytune_bsm.client.options import SubmitOptions


def _run_option(name: str) -> Any:
    """The Typer option of SubmitOptions' field `name`, from its one declaration (client/submit.run_option)."""
    f = _FIELDS[name]
    tp = {"int": int, "float": float, "str": str, "bool": bool, "list": List[str]}[_TYPES[name]]
    if tp is not bool:
        tp = Optional[tp]
    return Annotated[tp, typer.Option(f.metadata["flag"], help=f.metadata["help"])]


_FIELDS = {f.name: f for f in fields(SubmitOptions)}
_TYPES = {name: str(f.type).split("[")[0].split(" ")[0] for name, f in _FIELDS.items()}  # "int | None" -> "int"

# The run options, in SubmitOptions' field order: (type, default). One declaration for submit and tune.
RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    name: (_run_option(name), False if _TYPES[name] == "bool" else None) for name in _FIELDS
}

# Shared with other commands (predict, fetch, report, up, ...): the same declarations.
Address = RUN_OPTIONS["address"][0]
NumGpus = RUN_OPTIONS["num_gpus"][0]
BatchSize = RUN_OPTIONS["batch_size"][0]
AllowInsecure = RUN_OPTIONS["allow_insecure"][0]
TextField = RUN_OPTIONS["text_field"][0]
IdField = RUN_OPTIONS["id_field"][0]
Features = RUN_OPTIONS["features"][0]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Follow = Annotated[bool, typer.Option("--follow", "-f", help="Stream the logs; exit with the job's result.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan as JSON; contact no cluster, submit nothing.")]
JobId = Annotated[str, typer.Argument(help="A job id (`bsm list` shows them).")]


def run_options(fn: Callable) -> Callable:
    """Give `fn` every run option; it receives them as `opts: SubmitOptions` (its other parameters follow)."""
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(fn, eval_str=True).parameters.values()
        if p.name != "opts"
    ]
    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=tp)
        for name, (tp, default) in RUN_OPTIONS.items()
    ] + own

    @wraps(fn)
    def wrapper(**kw: Any) -> Any:
        values = {name: kw.pop(name) for name in RUN_OPTIONS}
        values["sets"] = list(values["sets"] or [])
        return fn(opts=SubmitOptions(**values), **kw)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer reads the signature above, not fn's
    return wrapper
