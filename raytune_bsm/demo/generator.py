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

Only the standard library and pyarrow are imported at module level.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import random
import uuid
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa

from raytune_bsm.errors import ConfigError

from raytune_bsm.demo.phrases import (  # noqa: F401  (vocabulary and templates)
    _BRANDS,
    _BUYER_CHASE,
    _BUYER_CLARIFY,
    _BUYER_INFO,
    _CARRIERS,
    _CITIES,
    _DAMAGE,
    _DELIVERY,
    _DOORS,
    _FINAL,
    _FINAL_TAG,
    _FIRST,
    _FOUND,
    _HOUSING,
    _LAST,
    _MONTHS,
    _NAD,
    _OCCASIONS,
    _OPEN,
    _OPEN_DETAIL,
    _PARTS,
    _PLATFORMS,
    _PLATFORMS2,
    _POLICY,
    _PRODUCTS,
    _RAMBLE,
    _RAMBLE_KIND,
    _RELATIVES,
    _RESPONSE,
    _SELLER_ASK,
    _SELLER_CLOSE,
    _SELLER_FOLLOWUP,
    _SELLER_HOLD,
    _SHOPS,
    _SHORT_OPEN,
    _SOLO,
    _SPOTS,
    _STANCE,
    _STREETS,
    _SYN,
    _VARIANTS,
    _WEEKDAYS,
)

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


# Capitalised words that stay capitalised after a "Hi, " style greeting.
_KEEP_CAPS = frozenset(
    {"I", "I'm", "I've", "I'll", "I'd"}
    | {w.split(" ")[0] for ws in _BRANDS.values() for w in ws}
    | {c.split(" ")[0] for c in _CARRIERS}
    | {c.split(" ")[0] for c in _SHOPS}
    | set(_MONTHS) | set(_FIRST)
)


class _Ctx(dict):
    """Per-record template context.

    Record facts (product, carrier, dates, ...) are drawn lazily on first use and then fixed for
    the record (see ``_LAZY``); synonym slots (``_SYN``) are re-drawn at every use.
    """

    __slots__ = ("rng",)

    def __missing__(self, key: str) -> str:
        syn = _SYN.get(key)
        if syn is not None:
            return syn[int(self.rng.random() * len(syn))]
        value = _LAZY[key](self, self.rng)
        self[key] = value
        return value


def _ch(rng: random.Random, seq: Sequence):  # type: ignore[type-arg]
    """Fast ``rng.choice`` (uses one ``random()`` call)."""
    return seq[int(rng.random() * len(seq))]


def _ri(rng: random.Random, a: int, b: int) -> int:
    """Fast ``_ri(rng, a, b)``."""
    return a + int(rng.random() * (b - a + 1))


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _choices_cdf(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    acc, out = 0.0, []
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


_PROBLEM_CDF = _choices_cdf(_PROBLEM_W)
_RESPONSE_CDF = _choices_cdf(_RESPONSE_W)
_FINAL_CDF = _choices_cdf(_FINAL_W)


def _pick(rng: random.Random, values: Sequence[str], cdf: Sequence[float]) -> str:
    return rng.choices(values, cum_weights=cdf, k=1)[0]


def _fmt_date(d: _dt.date, style: int) -> str:
    if style == 0:
        return f"{_MONTHS[d.month - 1]} {d.day}"
    if style == 1:
        return f"{_MONTHS[d.month - 1][:3]} {d.day}"
    if style == 2:
        return f"{d.month}/{d.day}"
    return f"{d.day} {_MONTHS[d.month - 1]}"


def _tracking(rng: random.Random, carrier: str) -> str:
    digits = "0123456789"
    alnum = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    if carrier == "UPS":
        return "1Z" + "".join(rng.choices(alnum, k=6)) + "".join(rng.choices(digits, k=10))
    if carrier == "USPS":
        raw = "9400" + "".join(rng.choices(digits, k=18))
        return " ".join(raw[i:i + 4] for i in range(0, 22, 4))
    if carrier == "FedEx":
        return "".join(rng.choices(digits, k=12))
    if carrier == "DHL":
        return "".join(rng.choices(digits, k=10))
    if carrier in ("Royal Mail", "Canada Post"):
        cc = "GB" if carrier == "Royal Mail" else "CA"
        return "".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXYZ", k=2)) + "".join(rng.choices(digits, k=9)) + cc
    if carrier == "Evri":
        return "H" + "".join(rng.choices(alnum, k=15))
    if carrier == "Amazon Logistics":
        return "TBA" + "".join(rng.choices(digits, k=12))
    return "".join(rng.choices("CD", k=1)) + "".join(rng.choices(digits, k=14))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _product(c: _Ctx, rng: random.Random) -> tuple[str, str, str, str, str]:
    noun, kind, cat = _ch(rng, _PRODUCTS)
    brand = _ch(rng, _BRANDS[cat])
    variants = _VARIANTS[kind]
    i = int(rng.random() * len(variants))
    j = (i + 1 + int(rng.random() * (len(variants) - 1))) % len(variants)
    item = f"{brand} {noun}" if rng.random() < 0.6 else noun
    return item, variants[i], variants[j], noun, cat


def _dates(c: _Ctx, rng: random.Random) -> tuple[str, str, str, str]:
    order = _dt.date(2024, 1, 1) + _dt.timedelta(days=int(rng.random() * 420))
    ship = order + _dt.timedelta(days=_ri(rng, 0, 3))
    eta = ship + _dt.timedelta(days=_ri(rng, 2, 7))
    deliv = ship + _dt.timedelta(days=_ri(rng, 1, 9))
    style = int(rng.random() * 4)
    return tuple(_fmt_date(d, style) for d in (order, ship, eta, deliv))  # type: ignore[return-value]


def _part_forms(c: _Ctx, rng: random.Random) -> tuple[str, ...]:
    part = _ch(rng, _PARTS[c["category"]])
    if part.endswith("s") and not part.endswith("ss"):
        return part, "are", "were", "them", "they", "They"
    return part, "is", "was", "it", "it", "It"


def _serial(rng: random.Random) -> str:
    return "SN" + "".join(rng.choices("0123456789ABCDEF", k=8))


def _city_pair(c: _Ctx, rng: random.Random) -> tuple[str, str, str]:
    city, state = _ch(rng, _CITIES)
    other = _ch(rng, _CITIES)[0]
    return city, state, ("Springfield" if other == city else other)


def _doors(c: _Ctx, rng: random.Random) -> tuple[str, str]:
    i = int(rng.random() * len(_DOORS))
    j = (i + 1 + int(rng.random() * (len(_DOORS) - 1))) % len(_DOORS)
    return _DOORS[i], _DOORS[j]


def _group(maker: Callable[[_Ctx, random.Random], tuple], keys: Sequence[str]) -> dict:  # type: ignore[type-arg]
    """Lazy getters for several keys drawn together by one ``maker`` call."""

    def getter(index: int) -> Callable[[_Ctx, random.Random], str]:
        def get(c: _Ctx, rng: random.Random) -> str:
            values = maker(c, rng)
            for k, v in zip(keys, values):
                c[k] = v
            return values[index]

        return get

    return {k: getter(i) for i, k in enumerate(keys)}


_LAZY: dict[str, Callable[[_Ctx, random.Random], str]] = {
    **_group(_product, ("item", "var_a", "var_b", "noun", "category")),
    **_group(_dates, ("order_date", "ship_date", "eta_date", "deliv_date")),
    **_group(_part_forms, ("part", "is_are", "was_were", "it_them", "it_they", "it_they_cap")),
    **_group(_city_pair, ("city", "state", "other_city")),
    **_group(_doors, ("door", "door2")),
    **_group(lambda c, rng: _ch(rng, _NAD), ("nad_issue", "nad_disclosure")),
    "nad_issue_cap": lambda c, rng: _cap(c["nad_issue"]),
    "order_ref": lambda c, rng: (
        c["order_id"] if rng.random() < 0.5
        else f"#{_ri(rng, 100, 999)}-{_ri(rng, 1000000, 9999999)}-{_ri(rng, 1000000, 9999999)}"
    ),
    "partial": lambda c, rng: f"${c['partial_value']:,.2f}",
    "pct": lambda c, rng: str(int(round(100 * c["partial_value"] / c["amount_value"]))),
    "carrier": lambda c, rng: _ch(rng, _CARRIERS),
    "tracking": lambda c, rng: _tracking(rng, c["carrier"]),
    "tracking2": lambda c, rng: _tracking(rng, c["carrier"]),
    "deliv_time": lambda c, rng: f"{_ri(rng, 1, 12)}:{_ri(rng, 0, 59):02d} {'AM' if rng.random() < 0.4 else 'PM'}",
    "late_days": lambda c, rng: str(_ri(rng, 2, 14)),
    "other_zip": lambda c, rng: str(_ri(rng, 10000, 99999)),
    "house_no": lambda c, rng: str(_ri(rng, 2, 9800)),
    "street": lambda c, rng: _ch(rng, _STREETS),
    "signer": lambda c, rng: f"{_ch(rng, _FIRST)[0]}. {_ch(rng, _LAST).upper()}",
    "blocks": lambda c, rng: str(_ri(rng, 2, 12)),
    "shop": lambda c, rng: _ch(rng, _SHOPS),
    "platform": lambda c, rng: _ch(rng, _PLATFORMS),
    "platform2": lambda c, rng: _ch(rng, _PLATFORMS2),
    "damage": lambda c, rng: _ch(rng, _DAMAGE),
    "photo_n": lambda c, rng: str(_ri(rng, 2, 7)),
    "found": lambda c, rng: _ch(rng, _FOUND),
    "found_cap": lambda c, rng: _cap(c["found"]),
    "relative": lambda c, rng: _ch(rng, _RELATIVES),
    "occasion": lambda c, rng: _ch(rng, _OCCASIONS),
    "hub": lambda c, rng: _ch(rng, _CITIES)[0],
    "serial": lambda c, rng: _serial(rng),
    "serial2": lambda c, rng: _serial(rng),
    "sku": lambda c, rng: f"{_ch(rng, 'ABCDEFGHKMNPRSTXZ')}{_ch(rng, 'ABCDEFGHKMNPRSTXZ')}-{_ri(rng, 1000, 99999)}",
    "page": lambda c, rng: str(_ri(rng, 2, 14)),
    "weight": lambda c, rng: f"{rng.uniform(0.3, 12.0):.1f}",
    "refund_ref": lambda c, rng: f"RF{_ri(rng, 10000000, 99999999)}",
    "weekday": lambda c, rng: _ch(rng, _WEEKDAYS),
    "housing": lambda c, rng: _ch(rng, _HOUSING),
    "spot": lambda c, rng: _ch(rng, _SPOTS),
}


def _context(rng: random.Random, order_id: str) -> _Ctx:
    """Eagerly draw the facts needed for the numeric columns; everything else is lazy."""
    amount = round(min(2500.0, max(3.0, math.exp(rng.gauss(3.8, 0.9)))), 2)
    days = _ri(rng, 5, 45)
    c = _Ctx(
        order_id=order_id,
        amount=f"${amount:,.2f}",
        amount_value=amount,
        partial_value=round(amount * _ch(rng, (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)), 2),
        days=str(days),
        days_value=days,
    )
    c.rng = rng
    return c


def _say(rng: random.Random, ctx: _Ctx, templates: Sequence[str], role: str) -> str:
    """Fill a random template and render it as one ``"Buyer: ..."``/``"Seller: ..."`` line."""
    tpl = _ch(rng, templates)
    greet = ""
    if tpl.startswith("{hi}") or tpl.startswith("{shi}"):
        key, _, tpl = tpl[1:].partition("}")
        greet = _ch(rng, _SYN[key])
    text = tpl.format_map(ctx)
    if greet.endswith(", "):
        first = text.split(" ", 1)[0]
        if first[:1].isupper() and first[1:2].islower() and first not in _KEEP_CAPS:
            text = text[:1].lower() + text[1:]
    else:
        text = _cap(text)
    text = greet + text
    if role == "Buyer":
        r = rng.random()
        if r < 0.08:
            text = text.lower()
        elif r < 0.12:
            text = text.rstrip(".") + "!!"
        elif r < 0.16:
            text = text + " " + _ch(rng, ("Thanks.", "Thx", "Regards, " + _ch(rng, _FIRST), "- " + _ch(rng, _FIRST)))
    elif rng.random() < 0.15:
        text = text + " " + _ch(rng, ("Best regards, " + ctx["shop"], "Kind regards, " + _ch(rng, _FIRST),
                                        "- " + ctx["shop"] + " support", "Thanks, " + _ch(rng, _FIRST)))
    return f"{role}: {text}"


def _order_paste(rng: random.Random, ctx: _Ctx) -> str:
    lines = [f"Here are my full order details so you have everything: Order {ctx['order_ref']} | placed {ctx['order_date']} | ship to {ctx['house_no']} {ctx['street']}, {ctx['city']}, {ctx['state']}"]
    for i in range(_ri(rng, 6, 14)):
        noun, kind, cat = _ch(rng, _PRODUCTS)
        brand = _ch(rng, _BRANDS[cat])
        var = _ch(rng, _VARIANTS[kind])
        price = math.exp(rng.gauss(3.0, 0.8))
        lines.append(f"item {i + 1}: {brand} {noun} ({var}) qty {_ri(rng, 1, 3)} at ${price:,.2f}, SKU {_ri(rng, 100000, 999999)}, status shipped")
    lines.append(f"shipping {ctx['carrier']} standard, tracking {ctx['tracking']}, payment card ending {_ri(rng, 1000, 9999)}, total {ctx['amount']}")
    return "Buyer: " + " | ".join(lines)


def _ramble(rng: random.Random, ctx: _Ctx, n: int) -> str:
    pool = _RAMBLE + _RAMBLE_KIND[ctx["kind"]]
    sents = [s.format_map(ctx) for s in rng.sample(pool, min(n, len(pool)))]
    return "Buyer: " + " ".join(sents)


def _long_filler(rng: random.Random, ctx: _Ctx, need_words: int) -> list[str]:
    """Neutral messages (rambles, pastes, chasers, holding replies) totalling >= need_words words."""
    out: list[str] = []
    got = 0
    while got < need_words:
        r = rng.random()
        if r < 0.40:
            msg = _ramble(rng, ctx, _ri(rng, 8, 22))
        elif r < 0.55:
            msg = _order_paste(rng, ctx)
        elif r < 0.65:
            msg = "Seller: " + _POLICY
        elif r < 0.85:
            msg = _say(rng, ctx, _BUYER_CHASE, "Buyer") + " " + _ramble(rng, ctx, _ri(rng, 2, 6))[7:]
        else:
            msg = _say(rng, ctx, _SELLER_HOLD, "Seller")
        out.append(msg)
        got += msg.count(" ") + 1
    return out


def _story_messages(rng: random.Random, ctx: _Ctx, problem: str, response: str, final: str,
                    long_words: int) -> list[str]:
    kind = "delivery" if problem in _DELIVERY else "item"
    ctx["kind"] = kind
    b: Callable[[Sequence[str]], str] = lambda ts: _say(rng, ctx, ts, "Buyer")  # noqa: E731
    s: Callable[[Sequence[str]], str] = lambda ts: _say(rng, ctx, ts, "Seller")  # noqa: E731

    # Single-message records.
    if not long_words:
        if final in ("confirms", "withdraws") and rng.random() < 0.08:
            tpl = _SOLO[final if final == "withdraws" else "confirms_" + kind]
            return [_say(rng, ctx, tpl, "Buyer")]
        if response == "ignore" and final == "silent" and rng.random() < 0.5:
            return [b(_SHORT_OPEN[problem] if rng.random() < 0.6 else _OPEN[problem])]

    msgs: list[str] = [b(_SHORT_OPEN[problem] if rng.random() < 0.12 else _OPEN[problem])]
    if rng.random() < 0.4:
        extra = rng.sample(_OPEN_DETAIL, _ch(rng, (1, 1, 2)))
        msgs[0] += " " + " ".join(_cap(x.format_map(ctx)) for x in extra)
    if rng.random() < 0.15:
        msgs.append(b(_BUYER_CHASE))

    if response != "ignore" and rng.random() < 0.4:
        msgs.append(s(_SELLER_ASK))
        msgs.append(_order_paste(rng, ctx) if rng.random() < 0.04 else b(_BUYER_INFO))

    filler_at_end = False
    if long_words:
        words = sum(m.count(" ") + 1 for m in msgs)
        filler = _long_filler(rng, ctx, max(0, long_words - words - 60))
        if rng.random() < 0.75:
            msgs.extend(filler)
        else:
            filler_at_end = True

    # Seller's substantive response.
    if response == "ignore":
        if rng.random() < 0.5:
            msgs.append(s(_RESPONSE["ignore"]["any"]))
        for _ in range(_ch(rng, (0, 1, 1, 2))):
            msgs.append(b(_BUYER_CHASE))
    else:
        table = _RESPONSE[response]
        if response == "proof_valid":
            tpl = table["delivery"] if kind == "delivery" else table[problem]
        elif "any" in table:
            tpl = table["any"]
        else:
            tpl = table[kind]
        stance = _STANCE[response]
        stance_tpl = stance.get(kind, stance.get("any"))

        def say() -> str:  # the response, usually closed by the seller's bottom line (before any sign-off)
            t = _ch(rng, tpl)
            if rng.random() < 0.75:
                t += " " + _ch(rng, stance_tpl)
            return s((t,))

        msgs.append(say())
        if rng.random() < 0.25:
            msgs.append(b(_BUYER_CLARIFY))
            msgs.append(say())

    if filler_at_end:
        msgs.extend(filler)

    # Buyer's final move.
    if final == "silent":
        if response != "ignore" and rng.random() < 0.3:
            msgs.append(s(_SELLER_FOLLOWUP))
        return msgs
    fin = _FINAL[final]
    if final == "confirms":
        tpl = fin["delivery"] if kind == "delivery" else fin[problem]
    elif final == "withdraws":
        tpl = fin["any"]
    elif final == "acknowledges":
        tpl = fin.get(response, fin["other"])
    elif final == "disputes_generic":
        tpl = fin["proof_valid"] + fin["any"] if response == "proof_valid" else fin["any"]
    else:  # disputes_specific
        if response == "proof_valid":
            tpl = fin["proof_valid_delivery"] if kind == "delivery" else fin[problem]
        elif response in ("remedy_full", "remedy_partial"):
            tpl = fin[response]
        elif response == "proof_invalid":
            tpl = fin["proof_invalid_" + kind]
        else:
            tpl = fin["other_" + kind]
    last = _ch(rng, tpl)
    if final in _FINAL_TAG and rng.random() < 0.7:  # the buyer's bottom line, before any sign-off
        last += " " + _ch(rng, _FINAL_TAG[final])
    msgs.append(b((last,)))
    if final in ("confirms", "withdraws") and response != "ignore" and rng.random() < 0.4:
        msgs.append(s(_SELLER_CLOSE))
    elif final.startswith("disputes") and response != "ignore" and rng.random() < 0.25:
        msgs.append(s(_SELLER_HOLD))
    return msgs


def make_dialogues(rows: int, seed: int = 0, *, with_story: bool = False) -> pa.Table:
    """Generate ``rows`` synthetic buyer–seller claim dialogues.

    Args:
        rows: number of records (>= 0).
        seed: RNG seed; the same seed always yields the same table.
        with_story: also return the latent story columns (``story_problem``, ``story_response``,
            ``story_final``, ``story_label`` = noise-free label, ``label_noise``, ``is_long``).
            The first eight columns are identical with or without this flag.

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

    for i in range(rows):
        oid = f"ORD-{ids[i]:07d}"
        problem = _pick(rng, PROBLEMS, _PROBLEM_CDF)
        response = _pick(rng, RESPONSES, _RESPONSE_CDF)
        final = _pick(rng, FINALS, _FINAL_CDF)
        is_long = rng.random() < LONG_FRACTION
        if is_long:
            long_words = _ri(rng, LONG_MIN_WORDS, 3600)
        elif rng.random() < MEDIUM_FRACTION:
            long_words = _ri(rng, 200, 700)
        else:
            long_words = 0
        ctx = _context(rng, oid)
        msgs = _story_messages(rng, ctx, problem, response, final, long_words)
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
        since.append(ctx["days_value"] + _ri(rng, 0, 10) + (long_words // 400))
        if with_story:
            s_problem.append(problem)
            s_response.append(response)
            s_final.append(final)
            s_label.append(clean)
            s_noise.append(noisy)
            s_long.append(is_long)

    arrays = [
        pa.array(order_id, pa.string()),
        pa.array(dialogue, pa.string()),
        pa.array(label, pa.int64()),
        pa.array(amount, pa.float64()),
        pa.array(n_msgs, pa.int64()),
        pa.array(age, pa.int64()),
        pa.array(rating, pa.float64()),
        pa.array(since, pa.int64()),
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


def write_demo_data(out_dir: str | Path, rows: int = 2000, seed: int = 0) -> dict[str, Path]:
    """Write ``train.parquet``, ``val.parquet`` and ``test.parquet`` (80/10/10) into ``out_dir``.

    Each file is written under a temporary name inside ``out_dir`` and then ``os.replace``-d into
    place, so a reader never sees a half-written file. Existing files are overwritten.

    Args:
        out_dir: destination directory (created if missing).
        rows: total number of records; must be at least 10.
        seed: RNG seed passed to :func:`make_dialogues`.

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

    table = make_dialogues(rows, seed)
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
