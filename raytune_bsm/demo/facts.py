"""The facts of one demo record (product, carrier, dates, amounts, ...): drawn lazily the first time a template
uses them, then fixed for the record; synonym slots are re-drawn at every use."""

from __future__ import annotations

import datetime as _dt
import math
import random
from typing import Callable, Sequence

from raytune_bsm.demo.phrases import (
    BRANDS,
    CARRIERS,
    CITIES,
    DAMAGE,
    DOORS,
    FIRST,
    FOUND,
    HOUSING,
    LAST,
    MONTHS,
    NAD,
    OCCASIONS,
    PARTS,
    PLATFORMS,
    PLATFORMS2,
    PRODUCTS,
    RELATIVES,
    SHOPS,
    SPOTS,
    STREETS,
    SYN,
    VARIANTS,
    WEEKDAYS,
)


class Context(dict):
    """Per-record template context.

    Record facts (product, carrier, dates, ...) are drawn lazily on first use and then fixed for
    the record (see ``_LAZY``); synonym slots (``SYN``) are re-drawn at every use.
    """

    __slots__ = ("rng",)

    def __missing__(self, key: str) -> str:
        syn = SYN.get(key)
        if syn is not None:
            return syn[int(self.rng.random() * len(syn))]
        value = _LAZY[key](self, self.rng)
        self[key] = value
        return value


def ch(rng: random.Random, seq: Sequence):  # type: ignore[type-arg]
    """Fast ``rng.choice`` (uses one ``random()`` call)."""
    return seq[int(rng.random() * len(seq))]


def ri(rng: random.Random, a: int, b: int) -> int:
    """Fast ``ri(rng, a, b)``."""
    return a + int(rng.random() * (b - a + 1))


def _fmt_date(d: _dt.date, style: int) -> str:
    if style == 0:
        return f"{MONTHS[d.month - 1]} {d.day}"
    if style == 1:
        return f"{MONTHS[d.month - 1][:3]} {d.day}"
    if style == 2:
        return f"{d.month}/{d.day}"
    return f"{d.day} {MONTHS[d.month - 1]}"


def _tracking(rng: random.Random, carrier: str) -> str:
    digits = "0123456789"
    alnum = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    if carrier == "UPS":
        return "1Z" + "".join(rng.choices(alnum, k=6)) + "".join(rng.choices(digits, k=10))
    if carrier == "USPS":
        raw = "9400" + "".join(rng.choices(digits, k=18))
        return " ".join(raw[i : i + 4] for i in range(0, 22, 4))
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


def cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _product(c: Context, rng: random.Random) -> tuple[str, str, str, str, str]:
    noun, kind, cat = ch(rng, PRODUCTS)
    brand = ch(rng, BRANDS[cat])
    variants = VARIANTS[kind]
    i = int(rng.random() * len(variants))
    j = (i + 1 + int(rng.random() * (len(variants) - 1))) % len(variants)
    item = f"{brand} {noun}" if rng.random() < 0.6 else noun
    return item, variants[i], variants[j], noun, cat


def _dates(c: Context, rng: random.Random) -> tuple[str, str, str, str]:
    order = _dt.date(2024, 1, 1) + _dt.timedelta(days=int(rng.random() * 420))
    ship = order + _dt.timedelta(days=ri(rng, 0, 3))
    eta = ship + _dt.timedelta(days=ri(rng, 2, 7))
    deliv = ship + _dt.timedelta(days=ri(rng, 1, 9))
    style = int(rng.random() * 4)
    return tuple(_fmt_date(d, style) for d in (order, ship, eta, deliv))  # type: ignore[return-value]


def _part_forms(c: Context, rng: random.Random) -> tuple[str, ...]:
    part = ch(rng, PARTS[c["category"]])
    if part.endswith("s") and not part.endswith("ss"):
        return part, "are", "were", "them", "they", "They"
    return part, "is", "was", "it", "it", "It"


def _serial(rng: random.Random) -> str:
    return "SN" + "".join(rng.choices("0123456789ABCDEF", k=8))


def _city_pair(c: Context, rng: random.Random) -> tuple[str, str, str]:
    city, state = ch(rng, CITIES)
    other = ch(rng, CITIES)[0]
    return city, state, ("Springfield" if other == city else other)


def _doors(c: Context, rng: random.Random) -> tuple[str, str]:
    i = int(rng.random() * len(DOORS))
    j = (i + 1 + int(rng.random() * (len(DOORS) - 1))) % len(DOORS)
    return DOORS[i], DOORS[j]


def _group(maker: Callable[[Context, random.Random], tuple], keys: Sequence[str]) -> dict:  # type: ignore[type-arg]
    """Lazy getters for several keys drawn together by one ``maker`` call."""

    def getter(index: int) -> Callable[[Context, random.Random], str]:
        def get(c: Context, rng: random.Random) -> str:
            values = maker(c, rng)
            for k, v in zip(keys, values):
                c[k] = v
            return values[index]

        return get

    return {k: getter(i) for i, k in enumerate(keys)}


_LAZY: dict[str, Callable[[Context, random.Random], str]] = {
    **_group(_product, ("item", "var_a", "var_b", "noun", "category")),
    **_group(_dates, ("order_date", "ship_date", "eta_date", "deliv_date")),
    **_group(_part_forms, ("part", "is_are", "was_were", "it_them", "it_they", "it_they_cap")),
    **_group(_city_pair, ("city", "state", "other_city")),
    **_group(_doors, ("door", "door2")),
    **_group(lambda c, rng: ch(rng, NAD), ("nad_issue", "nad_disclosure")),
    "nad_issue_cap": lambda c, rng: cap(c["nad_issue"]),
    "order_ref": lambda c, rng: (
        c["order_id"]
        if rng.random() < 0.5
        else f"#{ri(rng, 100, 999)}-{ri(rng, 1000000, 9999999)}-{ri(rng, 1000000, 9999999)}"
    ),
    "partial": lambda c, rng: f"${c['partial_value']:,.2f}",
    "pct": lambda c, rng: str(int(round(100 * c["partial_value"] / c["amount_value"]))),
    "carrier": lambda c, rng: ch(rng, CARRIERS),
    "tracking": lambda c, rng: _tracking(rng, c["carrier"]),
    "tracking2": lambda c, rng: _tracking(rng, c["carrier"]),
    "deliv_time": lambda c, rng: f"{ri(rng, 1, 12)}:{ri(rng, 0, 59):02d} {'AM' if rng.random() < 0.4 else 'PM'}",
    "late_days": lambda c, rng: str(ri(rng, 2, 14)),
    "other_zip": lambda c, rng: str(ri(rng, 10000, 99999)),
    "house_no": lambda c, rng: str(ri(rng, 2, 9800)),
    "street": lambda c, rng: ch(rng, STREETS),
    "signer": lambda c, rng: f"{ch(rng, FIRST)[0]}. {ch(rng, LAST).upper()}",
    "blocks": lambda c, rng: str(ri(rng, 2, 12)),
    "shop": lambda c, rng: ch(rng, SHOPS),
    "platform": lambda c, rng: ch(rng, PLATFORMS),
    "platform2": lambda c, rng: ch(rng, PLATFORMS2),
    "damage": lambda c, rng: ch(rng, DAMAGE),
    "photo_n": lambda c, rng: str(ri(rng, 2, 7)),
    "found": lambda c, rng: ch(rng, FOUND),
    "found_cap": lambda c, rng: cap(c["found"]),
    "relative": lambda c, rng: ch(rng, RELATIVES),
    "occasion": lambda c, rng: ch(rng, OCCASIONS),
    "hub": lambda c, rng: ch(rng, CITIES)[0],
    "serial": lambda c, rng: _serial(rng),
    "serial2": lambda c, rng: _serial(rng),
    "sku": lambda c, rng: f"{ch(rng, 'ABCDEFGHKMNPRSTXZ')}{ch(rng, 'ABCDEFGHKMNPRSTXZ')}-{ri(rng, 1000, 99999)}",
    "page": lambda c, rng: str(ri(rng, 2, 14)),
    "weight": lambda c, rng: f"{rng.uniform(0.3, 12.0):.1f}",
    "refund_ref": lambda c, rng: f"RF{ri(rng, 10000000, 99999999)}",
    "weekday": lambda c, rng: ch(rng, WEEKDAYS),
    "housing": lambda c, rng: ch(rng, HOUSING),
    "spot": lambda c, rng: ch(rng, SPOTS),
}


def new_context(rng: random.Random, order_id: str) -> Context:
    """Eagerly draw the facts needed for the numeric columns; everything else is lazy."""
    amount = round(min(2500.0, max(3.0, math.exp(rng.gauss(3.8, 0.9)))), 2)
    days = ri(rng, 5, 45)
    c = Context(
        order_id=order_id,
        amount=f"${amount:,.2f}",
        amount_value=amount,
        partial_value=round(amount * ch(rng, (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)), 2),
        days=str(days),
        days_value=days,
    )
    c.rng = rng
    return c
