"""The page at `/` of a served model: paste a dialogue, see its class and probabilities. Plain HTML and a little
JavaScript, no external assets; it calls `predict` next to itself (the application's route prefix), with the
bearer token typed into it when the server wants one."""

from __future__ import annotations

import html
import json

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bsm: __TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
textarea { width: 100%; height: 12rem; font: inherit; }
table { border-collapse: collapse; margin-top: 1rem; } td, th { padding: .2rem .8rem; text-align: left; }
.bar { background: #4a7fd4; height: .8rem; } #error { color: #b00020; } small { color: #666; }
</style></head><body>
<h1>__TITLE__</h1>
<p><small>Export __RUN__ &middot; __GRAPH__ (__PRECISION__)</small></p>
<label for="dialogue">Dialogue (one message per line)</label>
<textarea id="dialogue" placeholder="Buyer: my parcel never arrived.&#10;Seller: tracking says delivered."></textarea>
<p __TOKEN_HIDDEN__><label>Token <input id="token" type="password" autocomplete="off"></label></p>
<button id="score">Score</button>
<p id="error" role="alert"></p>
<p id="result"></p>
<table id="probs"></table>
<script>
const FIELD = __FIELD__;
const base = location.pathname.replace(/\\/+$/, "");
document.getElementById("score").addEventListener("click", async () => {
  const err = document.getElementById("error"), res = document.getElementById("result");
  const table = document.getElementById("probs");
  err.textContent = ""; res.textContent = "scoring..."; table.replaceChildren();
  const headers = {"Content-Type": "application/json"};
  const token = document.getElementById("token").value.trim();
  if (token) headers["Authorization"] = "Bearer " + token;
  const body = JSON.stringify({records: [{id: "page", [FIELD]: document.getElementById("dialogue").value}]});
  try {
    const r = await fetch(base + "/predict", {method: "POST", headers, body});
    const doc = await r.json();
    if (!r.ok) { res.textContent = ""; err.textContent = doc.error || ("HTTP " + r.status); return; }
    const p = doc.predictions[0];
    res.textContent = "class: " + p["class"];
    for (const [name, prob] of Object.entries(p.probabilities)) {
      const row = table.insertRow(), bar = document.createElement("div");
      row.insertCell().textContent = name;
      row.insertCell().textContent = prob.toFixed(4);
      bar.className = "bar"; bar.style.width = (prob * 12).toFixed(2) + "rem";
      row.insertCell().appendChild(bar);
    }
  } catch (e) { res.textContent = ""; err.textContent = "no answer from the server: " + e; }
});
</script></body></html>
"""


def page(title: str, run: str, graph: str, precision: str, text_field: str, token: bool) -> str:
    """The page for one served export; `token`: show the token field."""
    values = {
        "__TITLE__": html.escape(title),
        "__RUN__": html.escape(run),
        "__GRAPH__": html.escape(graph),
        "__PRECISION__": html.escape(precision),
        "__FIELD__": json.dumps(text_field).replace("</", "<\\/"),  # a JS string literal
        "__TOKEN_HIDDEN__": "" if token else "hidden",
    }
    out = PAGE
    for key, value in values.items():
        out = out.replace(key, value)
    return out
