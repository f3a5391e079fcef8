"""Rendering a story as a dialogue: templates filled from the record's facts, one "Buyer: ..." / "Seller: ..."
line per message, with the padding (rambles, order pastes, chasers) that makes the long records long."""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

from raytune_bsm.demo.facts import Context, cap, ch, ri
from raytune_bsm.demo.phrases import (
    BRANDS,
    BUYER_CHASE,
    BUYER_CLARIFY,
    BUYER_INFO,
    CARRIERS,
    DELIVERY,
    FINAL,
    FINAL_TAG,
    FIRST,
    MONTHS,
    OPEN,
    OPEN_DETAIL,
    POLICY,
    PRODUCTS,
    RAMBLE,
    RAMBLE_KIND,
    RESPONSE,
    SELLER_ASK,
    SELLER_CLOSE,
    SELLER_FOLLOWUP,
    SELLER_HOLD,
    SHOPS,
    SHORT_OPEN,
    SOLO,
    STANCE,
    SYN,
    VARIANTS,
)

_KEEP_CAPS = frozenset(
    {"I", "I'm", "I've", "I'll", "I'd"}
    | {w.split(" ")[0] for ws in BRANDS.values() for w in ws}
    | {c.split(" ")[0] for c in CARRIERS}
    | {c.split(" ")[0] for c in SHOPS}
    | set(MONTHS)
    | set(FIRST)
)


def _say(rng: random.Random, ctx: Context, templates: Sequence[str], role: str) -> str:
    """Fill a random template and render it as one ``"Buyer: ..."``/``"Seller: ..."`` line."""
    tpl = ch(rng, templates)
    greet = ""
    if tpl.startswith("{hi}") or tpl.startswith("{shi}"):
        key, _, tpl = tpl[1:].partition("}")
        greet = ch(rng, SYN[key])
    text = tpl.format_map(ctx)
    if greet.endswith(", "):
        first = text.split(" ", 1)[0]
        if first[:1].isupper() and first[1:2].islower() and first not in _KEEP_CAPS:
            text = text[:1].lower() + text[1:]
    else:
        text = cap(text)
    text = greet + text
    if role == "Buyer":
        r = rng.random()
        if r < 0.08:
            text = text.lower()
        elif r < 0.12:
            text = text.rstrip(".") + "!!"
        elif r < 0.16:
            text = text + " " + ch(rng, ("Thanks.", "Thx", "Regards, " + ch(rng, FIRST), "- " + ch(rng, FIRST)))
    elif rng.random() < 0.15:
        text = (
            text
            + " "
            + ch(
                rng,
                (
                    "Best regards, " + ctx["shop"],
                    "Kind regards, " + ch(rng, FIRST),
                    "- " + ctx["shop"] + " support",
                    "Thanks, " + ch(rng, FIRST),
                ),
            )
        )
    return f"{role}: {text}"


def _order_paste(rng: random.Random, ctx: Context) -> str:
    lines = [
        f"Here are my full order details so you have everything: Order {ctx['order_ref']} | placed {ctx['order_date']} | ship to {ctx['house_no']} {ctx['street']}, {ctx['city']}, {ctx['state']}"
    ]
    for i in range(ri(rng, 6, 14)):
        noun, kind, cat = ch(rng, PRODUCTS)
        brand = ch(rng, BRANDS[cat])
        var = ch(rng, VARIANTS[kind])
        price = math.exp(rng.gauss(3.0, 0.8))
        lines.append(
            f"item {i + 1}: {brand} {noun} ({var}) qty {ri(rng, 1, 3)} at ${price:,.2f}, SKU {ri(rng, 100000, 999999)}, status shipped"
        )
    lines.append(
        f"shipping {ctx['carrier']} standard, tracking {ctx['tracking']}, payment card ending {ri(rng, 1000, 9999)}, total {ctx['amount']}"
    )
    return "Buyer: " + " | ".join(lines)


def _ramble(rng: random.Random, ctx: Context, n: int) -> str:
    pool = RAMBLE + RAMBLE_KIND[ctx["kind"]]
    sents = [s.format_map(ctx) for s in rng.sample(pool, min(n, len(pool)))]
    return "Buyer: " + " ".join(sents)


def _long_filler(rng: random.Random, ctx: Context, need_words: int) -> list[str]:
    """Neutral messages (rambles, pastes, chasers, holding replies) totalling >= need_words words."""
    out: list[str] = []
    got = 0
    while got < need_words:
        r = rng.random()
        if r < 0.40:
            msg = _ramble(rng, ctx, ri(rng, 8, 22))
        elif r < 0.55:
            msg = _order_paste(rng, ctx)
        elif r < 0.65:
            msg = "Seller: " + POLICY
        elif r < 0.85:
            msg = _say(rng, ctx, BUYER_CHASE, "Buyer") + " " + _ramble(rng, ctx, ri(rng, 2, 6))[7:]
        else:
            msg = _say(rng, ctx, SELLER_HOLD, "Seller")
        out.append(msg)
        got += msg.count(" ") + 1
    return out


def story_messages(
    rng: random.Random, ctx: Context, problem: str, response: str, final: str, long_words: int
) -> list[str]:
    kind = "delivery" if problem in DELIVERY else "item"
    ctx["kind"] = kind
    b: Callable[[Sequence[str]], str] = lambda ts: _say(rng, ctx, ts, "Buyer")  # noqa: E731
    s: Callable[[Sequence[str]], str] = lambda ts: _say(rng, ctx, ts, "Seller")  # noqa: E731

    # Single-message records.
    if not long_words:
        if final in ("confirms", "withdraws") and rng.random() < 0.08:
            tpl = SOLO[final if final == "withdraws" else "confirms_" + kind]
            return [_say(rng, ctx, tpl, "Buyer")]
        if response == "ignore" and final == "silent" and rng.random() < 0.5:
            return [b(SHORT_OPEN[problem] if rng.random() < 0.6 else OPEN[problem])]

    msgs: list[str] = [b(SHORT_OPEN[problem] if rng.random() < 0.12 else OPEN[problem])]
    if rng.random() < 0.4:
        extra = rng.sample(OPEN_DETAIL, ch(rng, (1, 1, 2)))
        msgs[0] += " " + " ".join(cap(x.format_map(ctx)) for x in extra)
    if rng.random() < 0.15:
        msgs.append(b(BUYER_CHASE))

    if response != "ignore" and rng.random() < 0.4:
        msgs.append(s(SELLER_ASK))
        msgs.append(_order_paste(rng, ctx) if rng.random() < 0.04 else b(BUYER_INFO))

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
            msgs.append(s(RESPONSE["ignore"]["any"]))
        for _ in range(ch(rng, (0, 1, 1, 2))):
            msgs.append(b(BUYER_CHASE))
    else:
        table = RESPONSE[response]
        if response == "proof_valid":
            tpl = table["delivery"] if kind == "delivery" else table[problem]
        elif "any" in table:
            tpl = table["any"]
        else:
            tpl = table[kind]
        stance = STANCE[response]
        stance_tpl = stance.get(kind, stance.get("any"))

        def say() -> str:  # the response, usually closed by the seller's bottom line (before any sign-off)
            t = ch(rng, tpl)
            if rng.random() < 0.75:
                t += " " + ch(rng, stance_tpl)
            return s((t,))

        msgs.append(say())
        if rng.random() < 0.25:
            msgs.append(b(BUYER_CLARIFY))
            msgs.append(say())

    if filler_at_end:
        msgs.extend(filler)

    # Buyer's final move.
    if final == "silent":
        if response != "ignore" and rng.random() < 0.3:
            msgs.append(s(SELLER_FOLLOWUP))
        return msgs
    fin = FINAL[final]
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
    last = ch(rng, tpl)
    if final in FINAL_TAG and rng.random() < 0.7:  # the buyer's bottom line, before any sign-off
        last += " " + ch(rng, FINAL_TAG[final])
    msgs.append(b((last,)))
    if final in ("confirms", "withdraws") and response != "ignore" and rng.random() < 0.4:
        msgs.append(s(SELLER_CLOSE))
    elif final.startswith("disputes") and response != "ignore" and rng.random() < 0.25:
        msgs.append(s(SELLER_HOLD))
    return msgs
