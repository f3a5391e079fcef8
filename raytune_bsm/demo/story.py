"""The latent story behind a demo record: what went wrong, what the seller did, how the buyer ended it, and the
label that combination earns (see `story_label`)."""

from __future__ import annotations

import random
from typing import Sequence

PROBLEMS: tuple[str, ...] = (
    "not_received",
    "late",
    "damaged",
    "wrong_item",
    "missing_parts",
    "not_as_described",
)
_PROBLEM_W = (0.30, 0.14, 0.18, 0.13, 0.12, 0.13)

RESPONSES: tuple[str, ...] = (
    "proof_valid",
    "proof_invalid",
    "remedy_full",
    "remedy_partial",
    "ignore",
    "refuse",
    "blame_carrier",
)
_RESPONSE_W = (0.27, 0.14, 0.11, 0.08, 0.14, 0.13, 0.13)

FINALS: tuple[str, ...] = (
    "confirms",
    "withdraws",
    "acknowledges",
    "silent",
    "disputes_generic",
    "disputes_specific",
)
_FINAL_W = (0.13, 0.06, 0.20, 0.20, 0.20, 0.21)

#: Probability that a record's label is flipped at random.
LABEL_NOISE: float = 0.04
#: Fraction of records padded to more than 1,500 words.
LONG_FRACTION: float = 0.05
#: Fraction of records padded to a medium length (roughly 200-1,000 words).
MEDIUM_FRACTION: float = 0.06
#: Minimum number of words in a "long" record.
LONG_MIN_WORDS: int = 1550


def story_label(problem: str, response: str, final: str) -> int:
    """Return the noise-free ``reversal_flag`` for a latent story.

    * The buyer confirms the package/item turned out fine, or withdraws the claim -> 1.
    * The buyer disputes with specific counter-evidence -> 0.
    * The buyer disputes generically ("I want my money back") -> 1 only if the seller had
      valid proof or had already issued a full refund/replacement; otherwise 0.
    * The buyer acknowledges -> 1 if the seller proved their case or a refund (full or partial)
      was issued/agreed; 0 if the buyer is merely resigned to waiting/chasing the carrier.
    * The buyer goes silent -> 1 if the seller's valid proof or full refund stands unchallenged;
      0 otherwise (an unaccepted partial offer, useless tracking, no answer, a refusal).

    ``problem`` does not change the rule, only the wording.
    """
    if problem not in PROBLEMS or response not in RESPONSES or final not in FINALS:
        raise ValueError(f"unknown story ({problem!r}, {response!r}, {final!r})")
    if final in ("confirms", "withdraws"):
        return 1
    if final == "disputes_specific":
        return 0
    if final == "disputes_generic":
        return int(response in ("proof_valid", "remedy_full"))
    if final == "acknowledges":
        return int(response in ("proof_valid", "remedy_full", "remedy_partial"))
    # silent
    return int(response in ("proof_valid", "remedy_full"))


def _choices_cdf(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    acc, out = 0.0, []
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


PROBLEM_CDF = _choices_cdf(_PROBLEM_W)
RESPONSE_CDF = _choices_cdf(_RESPONSE_W)
FINAL_CDF = _choices_cdf(_FINAL_W)


def pick(rng: random.Random, values: Sequence[str], cdf: Sequence[float]) -> str:
    return rng.choices(values, cum_weights=cdf, k=1)[0]
