"""The report page: one self-contained HTML file (inline CSS, images as base64 data URIs, no script, nothing
fetched). Every piece of text from the run (names, config values, paths) is HTML-escaped here."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from typing import Any, Iterable

from raytune_bsm.report.plots import Figure

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1080px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; } .notes li { color: #8a5a00; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } .metrics td.num { font-weight: 600; }
.row { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; } caption { text-align: left; color: #555; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A cell's text: floats to 4 significant places, lists and dicts as compact JSON."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    if isinstance(value, float):
        return (
            "nan" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.4f}"
        )
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str, sort_keys=isinstance(value, dict))
    return str(value)


def _cell(value: Any) -> str:
    cls = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f"<td{cls}>{esc(fmt(value))}</td>"


def table(rows: list[dict[str, Any]], columns: list[str] | None = None, caption: str = "") -> str:
    if not rows:
        return ""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"lr": 1e-3}} -> {"model.lr": 1e-3}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def kv_table(d: dict[str, Any], key: str = "setting", value: str = "value") -> str:
    return table([{key: k, value: v} for k, v in flatten(d).items()], [key, value])


def metrics_table(metrics: dict[str, float], source: str) -> str:
    """The headline numbers; each value cell carries data-metric="<name>" and its full-precision value."""
    rows = "".join(
        f'<tr><th>{esc(k)}</th><td class="num" data-metric="{esc(k)}" data-value="{float(v)!r}">{esc(fmt(float(v)))}</td></tr>'
        for k, v in metrics.items()
    )
    return f'<table class="metrics"><caption>{esc(source)}</caption><tbody>{rows}</tbody></table>'


def figure(fig: Figure, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{esc(fig.file.removesuffix(".png"))}"><img src="data:image/png;base64,{data}" '
        f'width="{fig.width}" height="{fig.height}" alt="{esc(fig.title)}">'
        f"<figcaption><b>{esc(fig.title)}.</b> {esc(fig.caption)} <code>{esc(fig.file)}</code></figcaption></figure>"
    )


def section(title: str, *parts: str) -> str:
    body = "".join(p for p in parts if p)
    return f"<section><h2>{esc(title)}</h2>{body}</section>" if body else ""


def row(*parts: str) -> str:
    """Tables side by side."""
    body = "".join(p for p in parts if p)
    return f'<div class="row">{body}</div>' if body else ""


def notes(items: Iterable[str]) -> str:
    items = list(items)
    return '<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in items) + "</ul>" if items else ""


def page(title: str, meta: str, sections: list[str]) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No script, no remote anything: the page works offline, from any directory.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{esc(title)}</h1><p class="meta">{esc(meta)} &middot; generated {esc(now)} by bsm report</p>'
        + "".join(s for s in sections if s)
        + "</body></html>\n"
    )
