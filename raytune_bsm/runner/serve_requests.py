"""The served HTTP API's wire format: a request body checked into records, predictions back to JSON. Pure (no
Ray, no sessions), so every refusal is tested without a cluster.

    POST /predict  {"records": [{"id": "A-1", "dialogue": "Buyer: where is it?\\nSeller: ..."},
                                {"id": 7, "dialogue": ["Buyer: where is it?", "Seller: ..."]}]}
    200            {"predictions": [{"id": "A-1", "class": "reversed", "probabilities": {"kept": 0.1, ...},
                                     "export": {"run": ..., "graph": "model.chunks.int8.onnx", "sha256": ...},
                                     "precision": "int8"}, ...]}

A refusal is a JSON object naming the field: `{"error": "records[2].dialogue is empty", "field":
"records[2].dialogue"}` with 400 (not JSON), 413 (body or record count over the limit) or 422 (a field missing,
of the wrong type, or empty). The text of a dialogue never appears in a refusal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from raytune_bsm.serving import Limits


class Refusal(Exception):
    """A request the API refuses: HTTP `status`, a message and the field it is about."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field}


@dataclass(frozen=True)
class Record:
    id: Any  # the caller's id (a string or an integer), else the record's index in the request
    dialogue: str | list[str]


def check_size(length: int, limits: Limits) -> None:
    if length > limits.max_body_bytes:
        raise Refusal(
            413, f"the request body is {length} bytes, over the limit of {limits.max_body_bytes} bytes", "body"
        )


def parse(body: bytes, text_field: str, limits: Limits) -> list[Record]:
    """The records of a POST /predict body, or a Refusal naming the first bad field."""
    check_size(len(body), limits)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Refusal(400, f"the request body is not valid JSON ({_reason(e)})", "body") from None
    if not isinstance(doc, dict):
        raise Refusal(422, f'the request body must be a JSON object {{"records": [...]}}, got {_kind(doc)}', "body")
    if "records" not in doc:
        raise Refusal(422, 'the request body has no "records" field: send {"records": [{...}, ...]}', "records")
    records = doc["records"]
    if not isinstance(records, list):
        raise Refusal(422, f"records must be a list of objects, got {_kind(records)}", "records")
    if not records:
        raise Refusal(422, "records is empty: send at least one record", "records")
    if len(records) > limits.max_records:
        raise Refusal(
            413, f"records holds {len(records)} records, over the limit of {limits.max_records} per request", "records"
        )
    return [_record(r, i, text_field) for i, r in enumerate(records)]


def _record(rec: Any, i: int, text_field: str) -> Record:
    where = f"records[{i}]"
    if not isinstance(rec, dict):
        raise Refusal(422, f"{where} must be an object, got {_kind(rec)}", where)
    rid = rec.get("id", i)
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
        raise Refusal(422, f"{where}.id must be a string or an integer, got {_kind(rid)}", f"{where}.id")
    field = f"{where}.{text_field}"
    if text_field not in rec:
        raise Refusal(422, f"{where} has no {text_field!r} field (the dialogue to score)", field)
    text = rec[text_field]
    if isinstance(text, list):
        bad = next((k for k, m in enumerate(text) if not isinstance(m, str)), None)
        if bad is not None:
            raise Refusal(
                422, f"{field}[{bad}] must be a string (a message), got {_kind(text[bad])}", f"{field}[{bad}]"
            )
        empty = not any(m.strip() for m in text)
    elif isinstance(text, str):
        empty = not text.strip()
    else:
        raise Refusal(422, f"{field} must be a string or a list of message strings, got {_kind(text)}", field)
    if empty:
        raise Refusal(422, f"{field} is empty: a dialogue needs at least one non-blank message", field)
    return Record(rid if rid is not None else i, text)


def predictions(
    records: list[Record], probs: Any, class_names: list[str], export: dict[str, Any], precision: str
) -> dict[str, Any]:
    """The 200 answer: per record its id, class (the most probable), every class's probability, the export."""
    out = []
    for rec, p in zip(records, probs):  # p float64 [K]
        k = int(p.argmax())
        out.append(
            {
                "id": rec.id,
                "class": class_names[k],
                "probabilities": {c: float(p[j]) for j, c in enumerate(class_names)},
                "export": export,
                "precision": precision,
            }
        )
    return {"predictions": out}


def request_schema(text_field: str, limits: Limits) -> dict[str, Any]:
    """The OpenAPI schema of a POST /predict body (for the /docs page)."""
    return {
        "type": "object",
        "required": ["records"],
        "properties": {
            "records": {
                "type": "array",
                "minItems": 1,
                "maxItems": limits.max_records,
                "items": {
                    "type": "object",
                    "required": [text_field],
                    "properties": {
                        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}], "description": "echoed back"},
                        text_field: {
                            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                            "description": "the dialogue: one string, or a list of messages; not blank",
                        },
                    },
                },
            }
        },
        "example": {"records": [{"id": "A-1", text_field: "Buyer: my parcel never came.\nSeller: refunded."}]},
    }


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__
    )


def _reason(e: Exception) -> str:
    return f"line {e.lineno} column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
