"""Every option shared between commands, declared once as an `Annotated` alias.

`bsm submit` and `bsm tune` take the same run options (RUN_OPTIONS, one per SubmitOptions field): `@run_options`
adds all of them to a command and hands them to it as one `opts: SubmitOptions`, so the two cannot drift.
"""

import inspect
from functools import wraps
from typing import Annotated, Any, Callable, List, Optional

import typer

from raytune_bsm.client.submit import SubmitOptions

Address = Annotated[
    Optional[str],
    typer.Option(
        "--address",
        help="Ray dashboard/Jobs API, e.g. http://HEAD:8265. Default: RAY_API_SERVER_ADDRESS / RAY_ADDRESS, "
        "else the cluster `bsm up` started, else one bsm starts.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Follow = Annotated[bool, typer.Option("--follow", "-f", help="Stream the logs; exit with the job's result.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan as JSON; contact no cluster, submit nothing.")]
NumGpus = Annotated[
    Optional[int], typer.Option("--num-gpus", help="N workers with one GPU each (NCCL, bf16); per trial in `bsm tune`.")
]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Records per batch.")]
JobId = Annotated[str, typer.Argument(help="A job id (`bsm list` shows them).")]
AllowInsecure = Annotated[
    bool,
    typer.Option(
        "--allow-insecure", help="Use a remote cluster without token auth, or send the token over plain http."
    ),
]
TextField = Annotated[Optional[str], typer.Option("--text-field", help="Default: dialogue (predict: the export's).")]
Features = Annotated[
    Optional[str],
    typer.Option(
        "--features",
        help="Side feature columns (numbers, booleans) read next to the text: a,b,c or auto (predict: the export's).",
    ),
]
IdField = Annotated[Optional[str], typer.Option("--id-field", help="Default: order_id / id / record_id when present.")]

# The run options, in SubmitOptions' field order: (type, default). One declaration for submit and tune.
RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "config": (
        Annotated[
            Optional[str],
            typer.Option("--config", help="YAML recipe (jobs/*.yaml in the source tree); flags override it."),
        ],
        None,
    ),
    "address": (Address, None),
    "num_gpus": (NumGpus, None),
    "num_workers": (
        Annotated[
            Optional[int], typer.Option("--num-workers", help="CPU workers (DDP over gloo); per trial in `bsm tune`.")
        ],
        None,
    ),
    "cpus_per_worker": (
        Annotated[
            Optional[int],
            typer.Option("--cpus-per-worker", help="Default: the largest node's CPUs shared among the workers."),
        ],
        None,
    ),
    "train": (
        Annotated[
            Optional[str], typer.Option("--train", help="Parquet file/dir/glob, CSV or JSONL. Default: demo data.")
        ],
        None,
    ),
    "val": (Annotated[Optional[str], typer.Option("--val", help="Default: a seeded fraction of --train.")], None),
    "test": (Annotated[Optional[str], typer.Option("--test", help="Scored once after training.")], None),
    "text_field": (TextField, None),
    "label_field": (Annotated[Optional[str], typer.Option("--label-field", help="Default: reversal_flag.")], None),
    "id_field": (IdField, None),
    "features": (Features, None),
    "model": (
        Annotated[
            Optional[str],
            typer.Option("--model", help="HF model name (org/name) or local dir. Default: all-MiniLM-L6-v2 (offline)."),
        ],
        None,
    ),
    "max_chunks": (
        Annotated[Optional[int], typer.Option("--max-chunks", help="C: chunks kept per dialogue (default 2).")],
        None,
    ),
    "max_tokens": (
        Annotated[Optional[int], typer.Option("--max-tokens", help="T: tokens per chunk (default 128).")],
        None,
    ),
    "max_epochs": (
        Annotated[
            Optional[int], typer.Option("--max-epochs", help="Default 1; per trial (ASHA's max_t) in `bsm tune`.")
        ],
        None,
    ),
    "batch_size": (BatchSize, None),
    "lr": (
        Annotated[
            Optional[float],
            typer.Option("--lr", help="AdamW peak learning rate (default 2e-4); fixed in every trial of `bsm tune`."),
        ],
        None,
    ),
    "storage": (
        Annotated[
            Optional[str],
            typer.Option("--storage", help="Run storage: path (made absolute), NFS, s3://, gs://, hdfs://."),
        ],
        None,
    ),
    "name": (Annotated[Optional[str], typer.Option("--name", help="Run name (default: <kind>-<time>-<hex>).")], None),
    "sets": (
        Annotated[
            Optional[List[str]],
            typer.Option("--set", help="Any config key: key=value or section.key=value (repeatable)."),
        ],
        None,
    ),
    "allow_insecure": (AllowInsecure, False),
    "resume": (
        Annotated[
            Optional[str],
            typer.Option(
                "--resume", help="Continue the failed, stopped or interrupted run NAME from its latest checkpoint."
            ),
        ],
        None,
    ),
}


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
