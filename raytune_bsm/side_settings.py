"""The side features' settings and their checks (data.feature_fields, model.fusion, model.side_hidden): light, so
config.py checks them where they enter. What reads, fits and applies them lives in data/features.py."""

from __future__ import annotations

from typing import Any

from raytune_bsm.errors import ConfigError

AUTO = "auto"
FUSIONS = ("concat", "gated", "text")  # model.fusion: MLP then concatenate | numbers gate the text | into the text


def wanted(feature_fields: Any) -> list[str] | str | None:
    """data.feature_fields as given: None (text only), "auto", or a list of names (`a,b,c` split on commas)."""
    if feature_fields is None or feature_fields == [] or feature_fields == "":
        return None
    if isinstance(feature_fields, str):
        if feature_fields.strip() == AUTO:
            return AUTO
        feature_fields = feature_fields.split(",")
    names = [str(n).strip() for n in feature_fields]
    if not all(names) or len(set(names)) != len(names):
        raise ConfigError(f"--features must be distinct column names separated by commas, got {feature_fields!r}")
    return names


def check_model(model: dict[str, Any]) -> None:
    """The model config's feature keys (ModelConfig calls this)."""
    if model.get("fusion") not in FUSIONS:
        raise ConfigError(f"--set fusion must be one of {', '.join(FUSIONS)}, got {model.get('fusion')!r}")
    if model.get("side_hidden", 1) < 1:
        raise ConfigError(f"--set side_hidden must be at least 1, got {model.get('side_hidden')}")
    names, stats = model.get("feature_fields"), model.get("feature_stats")
    if names and stats is not None and list(stats.get("names", [])) != list(names):
        raise ConfigError(f"feature_stats are for {stats.get('names')}, not for feature_fields {names}")
    busy = {model.get("text_name"), model.get("label_name"), model.get("id_name")} & set(names or [])
    if busy:
        raise ConfigError(f"--features: {sorted(busy)[0]!r} is the text, label or id column, not a feature")
