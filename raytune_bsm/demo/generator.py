"""Synthetic buyer–seller dialogues for demos, tests and CPU benchmarks.

Every record is generated from a small *latent story*:

* ``problem``  – what the buyer complains about (not received, late, damaged, wrong item,
  missing parts, not as described);
* ``response`` – what the seller does about it (proves delivery / proves the item was right,
  offers "proof" that proves nothing, issues a full refund or replacement, offers a partial
  refund, ignores the buyer, refuses, blames the carrier);
* ``final``    – how the buyer ends the conversation (confirms the package/item is fine after
  all, withdraws the claim, acknowledges, goes silent, disputes generically, disputes with
  specific counter-evidence).

The label ``reversal_flag`` (1 = the buyer's claim is reversed in the seller's favour) is a
function of the *combination* (see :func:`story_label`), and then ~4% of labels are flipped at
random (so even a perfect reader averages about 96% accuracy and 0.92 AUROC). The same vocabulary
("tracking", "delivered", "refund", "photo", ...) shows up in both classes, so a classifier has to
read the exchange rather than spot a keyword.

As in real threads, the decisive part is at the end: the seller's substantive response usually
closes with a plain statement of where the seller stands (sure of its evidence, hedging, refunding,
refusing, pointing at the carrier), and the buyer's last message usually says where the buyer
stands (it's all fine, disputing with evidence, or just insisting). No single phrase decides the
label: "everything checks out" can still lose to a buyer's evidence, and an angry buyer still loses
to valid proof. The length of most records is a few short messages, well inside a couple of
128-token chunks, with a tail of records far longer than 8 x 128 tokens.

The story is drawn in `story.py`, the record's facts in `facts.py`, the text in `render.py` from the
templates in `phrases.py`, the eleven side features (the reference design's numeric fields: risk scores,
concession amounts and counts, flags) in `side.py` from a random stream of their own; this module assembles the
table and writes the files. Only the standard library and
pyarrow are imported at module level.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from raytune_bsm.demo.facts import new_context, ri
from raytune_bsm.demo.render import story_messages
from raytune_bsm.demo.side import SIDE_SCHEMA, side_features
from raytune_bsm.demo.story import (
    FINAL_CDF,
    FINALS,
    LABEL_NOISE,
    LONG_FRACTION,
    LONG_MIN_WORDS,
    MEDIUM_FRACTION,
    PROBLEM_CDF,
    PROBLEMS,
    RESPONSE_CDF,
    RESPONSES,
    pick,
    story_label,
)
from raytune_bsm.errors import ConfigError

PROGRESS_EVERY = 500  # records between progress calls

__all__ = [
    "COLUMNS",
    "FINALS",
    "LABEL_NOISE",
    "LONG_FRACTION",
    "LONG_MIN_WORDS",
    "MEDIUM_FRACTION",
    "PROBLEMS",
    "RESPONSES",
    "SCHEMA",
    "STORY_SCHEMA",
    "make_dialogues",
    "source_digest",
    "story_label",
    "write_demo_data",
]

#: Output columns, in order.
SCHEMA: pa.Schema = pa.schema(
    [
        ("order_id", pa.string()),
        ("dialogue", pa.string()),
        ("reversal_flag", pa.int64()),
        ("order_amount", pa.float64()),
        ("num_messages", pa.int64()),
        ("buyer_account_age_days", pa.int64()),
        ("seller_rating", pa.float64()),
        ("days_since_order", pa.int64()),
        *SIDE_SCHEMA,  # side features (demo/side.py): `bsm submit --features auto` reads them
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)

#: Extra columns added by ``make_dialogues(..., with_story=True)``.
STORY_SCHEMA: pa.Schema = pa.schema(
    [
        ("story_problem", pa.string()),
        ("story_response", pa.string()),
        ("story_final", pa.string()),
        ("story_label", pa.int64()),
        ("label_noise", pa.bool_()),
        ("is_long", pa.bool_()),
    ]
)


def make_dialogues(
    rows: int, seed: int = 0, *, with_story: bool = False, progress: Callable[[int, int], None] | None = None
) -> pa.Table:
    """Generate ``rows`` synthetic buyer–seller claim dialogues.

    Args:
        rows: number of records (>= 0).
        seed: RNG seed; the same seed always yields the same table.
        with_story: also return the latent story columns (``story_problem``, ``story_response``,
            ``story_final``, ``story_label`` = noise-free label, ``label_noise``, ``is_long``).
            The first eight columns are identical with or without this flag.
        progress: called as ``progress(done, rows)`` every ``PROGRESS_EVERY`` records and at the end.

    Returns:
        A ``pyarrow.Table`` with columns :data:`COLUMNS` (schema :data:`SCHEMA`), plus the story
        columns if requested.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ConfigError(f"--rows must be a non-negative integer, got {rows!r}")
    rng = random.Random(seed)
    ids = rng.sample(range(1, 10_000_000), rows)

    order_id: list[str] = []
    dialogue: list[str] = []
    label: list[int] = []
    amount: list[float] = []
    n_msgs: list[int] = []
    age: list[int] = []
    rating: list[float] = []
    since: list[int] = []
    s_problem: list[str] = []
    s_response: list[str] = []
    s_final: list[str] = []
    s_label: list[int] = []
    s_noise: list[bool] = []
    s_long: list[bool] = []
    stories: list[dict] = []  # what the side features are drawn from, afterwards, with their own random stream

    for i in range(rows):
        oid = f"ORD-{ids[i]:07d}"
        problem = pick(rng, PROBLEMS, PROBLEM_CDF)
        response = pick(rng, RESPONSES, RESPONSE_CDF)
        final = pick(rng, FINALS, FINAL_CDF)
        is_long = rng.random() < LONG_FRACTION
        if is_long:
            long_words = ri(rng, LONG_MIN_WORDS, 3600)
        elif rng.random() < MEDIUM_FRACTION:
            long_words = ri(rng, 200, 700)
        else:
            long_words = 0
        ctx = new_context(rng, oid)
        msgs = story_messages(rng, ctx, problem, response, final, long_words)
        clean = story_label(problem, response, final)
        noisy = rng.random() < LABEL_NOISE
        y = 1 - clean if noisy else clean

        good_seller = response in ("proof_valid", "remedy_full", "remedy_partial")
        r = rng.gauss(4.35 if good_seller else 4.0, 0.55)
        r = min(5.0, max(1.0, r))
        order_id.append(oid)
        dialogue.append("\n".join(msgs))
        label.append(y)
        amount.append(ctx["amount_value"])
        n_msgs.append(len(msgs))
        age.append(int(min(6000, rng.expovariate(1 / 650.0))))
        rating.append(round(r, 1))
        since.append(ctx["days_value"] + ri(rng, 0, 10) + (long_words // 400))
        stories.append(
            {"clean": clean, "label": y, "problem": problem, "response": response, "amount": ctx["amount_value"]}
        )
        if with_story:
            s_problem.append(problem)
            s_response.append(response)
            s_final.append(final)
            s_label.append(clean)
            s_noise.append(noisy)
            s_long.append(is_long)
        if progress and ((i + 1) % PROGRESS_EVERY == 0 or i + 1 == rows):
            progress(i + 1, rows)

    arrays = [
        pa.array(order_id, pa.string()),
        pa.array(dialogue, pa.string()),
        pa.array(label, pa.int64()),
        pa.array(amount, pa.float64()),
        pa.array(n_msgs, pa.int64()),
        pa.array(age, pa.int64()),
        pa.array(rating, pa.float64()),
        pa.array(since, pa.int64()),
        *side_features(seed, stories),
    ]
    schema = SCHEMA
    if with_story:
        arrays += [
            pa.array(s_problem, pa.string()),
            pa.array(s_response, pa.string()),
            pa.array(s_final, pa.string()),
            pa.array(s_label, pa.int64()),
            pa.array(s_noise, pa.bool_()),
            pa.array(s_long, pa.bool_()),
        ]
        schema = pa.schema(list(SCHEMA) + list(STORY_SCHEMA))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_demo_data(
    out_dir: str | Path, rows: int = 2000, seed: int = 0, progress: Callable[[int, int], None] | None = None
) -> dict[str, Path]:
    """Write ``train.parquet``, ``val.parquet`` and ``test.parquet`` (80/10/10) into ``out_dir``.

    Each file is written under a temporary name inside ``out_dir`` and then ``os.replace``-d into
    place, so a reader never sees a half-written file. Existing files are overwritten.

    Args:
        out_dir: destination directory (created if missing).
        rows: total number of records; must be at least 10.
        seed: RNG seed passed to :func:`make_dialogues`.
        progress: ``progress(done, rows)`` as records are generated.

    Returns:
        ``{"train": Path, "val": Path, "test": Path}``.

    Raises:
        ConfigError: ``rows`` is less than 10 (the message names ``--rows``).
    """
    if isinstance(rows, bool) or not isinstance(rows, int):
        raise ConfigError(f"--rows must be an integer, got {rows!r}")
    if rows < 10:
        raise ConfigError(f"--rows must be at least 10, got {rows}")
    import pyarrow.parquet as pq

    table = make_dialogues(rows, seed, progress=progress)
    n_train = int(rows * 0.8)
    n_val = int(rows * 0.1)
    splits = {
        "train": table.slice(0, n_train),
        "val": table.slice(n_train, n_val),
        "test": table.slice(n_train + n_val),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, part in splits.items():
        final_path = out / f"{name}.parquet"
        tmp = out / f".{name}.parquet.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            pq.write_table(part, tmp)
            os.replace(tmp, final_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        paths[name] = final_path
    return paths


def source_digest(package_dir: Path | None = None) -> str:
    """A short digest of the generator's code and phrases (every module of this package, or of `package_dir`):
    a cache of demo data keyed by it is regenerated whenever any of them changes."""
    h = hashlib.sha256()
    for f in sorted((package_dir or Path(__file__).parent).glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:8]
