"""int8 graphs: ONNX Runtime's dynamic quantization of the chunk graph; the packed and [B, C, T] int8 graphs are
the quantized chunk graph with the (fp32, tiny) head and the prefix put around it (`onnx_graphs.compose`).

Weights become int8 with one scale per output channel (per-channel halves the logits' error against per-tensor on
MiniLM at the same speed); activations are quantized on the fly, per call. The MatMul/Gemm (and embedding Gather)
of the eager-attention trace are quantized as they are: ONNX Runtime's session-level fusions then fuse the rest. Fusing first with
`onnxruntime.transformers.optimizer` (Attention -> QAttention, SkipLayerNorm, BiasGelu) measured 1.1-1.2x slower
on this graph (bench/, 8-32 chunks of 48-128 tokens) and cost 2.4 s of export (six copies of the model for its
shape inference), so it is not done.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx

from raytune_bsm.model.onnx_graphs import quiet

OP_TYPES = ("MatMul", "Gemm", "Gather")  # Gather: the embedding tables in int8 (a 59 MB graph becomes 23 MB)
PER_CHANNEL = True


def quantize_chunks(src: Path, dst: Path) -> dict[str, Any]:
    """Write the int8 chunk graph of `src`; returns how it was made (for the manifest)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs "consider pre-processing" on the root logger
    try:
        with quiet():
            _quantize(src, dst)
    finally:
        root.setLevel(level)
    return {"method": "onnxruntime.quantization dynamic (IntegerOps)", "weight_type": "int8", "activations": "uint8",
            "per_channel": PER_CHANNEL, "op_types": list(OP_TYPES), "from": src.name}  # fmt: skip


def _quantize(src: Path, dst: Path) -> None:
    """quantize_dynamic without its shape-inference pass (a copy of the whole model through onnx's shape inference,
    0.3 s for MiniLM): the graph is marked as inferred and float is the default type of an untyped tensor."""
    options = {"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT}
    try:
        from onnxruntime.quantization import QuantizationMode, QuantType
        from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
        from onnxruntime.quantization.quant_utils import add_infer_metadata
    except ImportError:  # the internal API moved: the public entry point, shape inference included
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(src, dst, op_types_to_quantize=list(OP_TYPES), per_channel=PER_CHANNEL,
                         weight_type=QuantType.QInt8, extra_options=options)  # fmt: skip
        return
    model = onnx.load(str(src))
    add_infer_metadata(model)
    q = ONNXQuantizer(model, PER_CHANNEL, False, QuantizationMode.IntegerOps, False, QuantType.QInt8,
                      QuantType.QUInt8, None, [], [], list(OP_TYPES), options)  # fmt: skip
    q.quantize_model()
    onnx.save(q.model.model, str(dst))
