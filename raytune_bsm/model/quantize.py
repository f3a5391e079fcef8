"""int8 graphs: ONNX Runtime's dynamic quantization of the packed graph.

Weights become int8 with one scale per output channel (per-channel halves the logits' error against per-tensor on
MiniLM at the same speed); activations are quantized on the fly, per call. The [B, C, T] int8 model is the same
quantized graph behind the prefix (`onnx_graphs.with_bct_inputs`).

Two ways, the faster one first (measured side by side in bench/):
- `quantize_fused`: the packed graph traced with eager attention, fused by ONNX Runtime's BERT optimizer
  (Attention, SkipLayerNorm, ...) and quantized, so attention runs as int8 QAttention;
- `quantize_packed`: the dynamo-exported packed graph's MatMul/Gemm quantized as they are (the fallback where the
  fusion does not match the model).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from raytune_bsm.layout import OUTPUT_NAME
from raytune_bsm.model.onnx_graphs import OPSET, PACKED_DIMS, PackedModule, quiet, with_bct_inputs

OP_TYPES = ("MatMul", "Gemm")
PER_CHANNEL = True


def _quantize(src: Path, dst: Path, op_types: tuple[str, ...] | None) -> None:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs "consider pre-processing" on the root logger
    try:
        with quiet():
            quantize_dynamic(src, dst, op_types_to_quantize=list(op_types) if op_types else None,
                             per_channel=PER_CHANNEL, weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
    finally:
        root.setLevel(level)


def quantize_packed(packed: Path, packed_int8: Path, bct_int8: Path) -> dict[str, Any]:
    """Write the packed int8 graph and its [B, C, T] twin; returns how they were made (for the manifest)."""
    _quantize(packed, packed_int8, OP_TYPES)
    onnx.save(with_bct_inputs(onnx.load(str(packed_int8))), str(bct_int8))
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "int8", "activations": "uint8",
            "per_channel": PER_CHANNEL, "op_types": list(OP_TYPES), "from": packed.name}  # fmt: skip


def quantize_fused(model: Any, example: tuple[Any, ...], packed_int8: Path, bct_int8: Path, scratch: Path) -> dict[str, Any] | None:
    """The packed graph with ONNX Runtime's BERT fusions (Attention, EmbedLayerNormalization, SkipLayerNorm,
    BiasGelu), then quantized: its int8 Attention (QAttention) is what makes int8 pay on CPU. The fusion patterns
    match the TorchScript-based exporter's graph of eager attention, not the dynamo graph of SDPA, so this traces
    BERT a second time that way. None (and no file written) where the fusion does not match."""
    from onnxruntime.transformers import optimizer

    cfg = model.bert.config
    eager, fused = scratch / "packed.eager.onnx", scratch / "packed.fused.onnx"
    before = cfg._attn_implementation
    model.bert.set_attn_implementation("eager")
    try:
        with torch.no_grad(), quiet():
            torch.onnx.export(PackedModule(model).eval(), example, str(eager), input_names=list(PACKED_DIMS),
                              output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                              dynamic_axes={n: dict(enumerate(a)) for n, a in PACKED_DIMS.items()})  # fmt: skip
    finally:
        model.bert.set_attn_implementation(before)
    with quiet():
        opt = optimizer.optimize_model(str(eager), model_type="bert", num_heads=int(cfg.num_attention_heads),
                                       hidden_size=int(cfg.hidden_size), opt_level=0)  # fmt: skip
    fusions = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    if fusions.get("Attention", 0) < int(cfg.num_hidden_layers):
        return None
    opt.save_model_to_file(str(fused))
    _quantize(fused, packed_int8, None)
    onnx.save(with_bct_inputs(onnx.load(str(packed_int8))), str(bct_int8))
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "int8", "activations": "uint8",
            "per_channel": PER_CHANNEL, "op_types": "onnxruntime's defaults (MatMul, Attention, Gather, ...)",
            "from": "packed graph traced with eager attention (torch.onnx.export(dynamo=False)), then "
                    "onnxruntime.transformers.optimizer (model_type='bert')", "fusions": fusions}  # fmt: skip
