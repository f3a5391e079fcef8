"""The BERT-family encoder inside the classifier: pretrained weights from a name or directory (see
`raytune_bsm.pretrained`, the torch-free part), or a random one from a config (tiny models in tests)."""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, BertConfig, BertModel, PreTrainedModel

from raytune_bsm.errors import ConfigError
from raytune_bsm.pretrained import DEFAULT_MODEL, resolve_model


def load_encoder(name: str, encoder_config: dict | None = None, pooler: bool = True) -> PreTrainedModel:
    """A BERT-family encoder (with its pooler unless `pooler=False`): pretrained from `name`, or randomly
    initialised from `encoder_config`."""
    if encoder_config is not None:  # tiny models in tests, or training from scratch
        return BertModel(BertConfig(**encoder_config), add_pooling_layer=pooler)
    path = resolve_model(name)
    try:
        config = AutoConfig.from_pretrained(path)
        return AutoModel.from_pretrained(path, config=config, add_pooling_layer=pooler)
    except OSError as e:
        raise ConfigError(
            f"cannot load model {name!r} ({e.__class__.__name__}); with no network give a local model "
            f"directory or the offline default {DEFAULT_MODEL!r}"
        ) from None
