"""int8 graphs: ONNX Runtime's dynamic quantization of the chunk graph; the packed and [B, C, T] int8 graphs are
the quantized chunk graph with the (fp32, tiny) head and the prefix put around it (`onnx_graphs.compose`).

Weights become int8 with one scale per output channel (per-channel halves the logits' error against per-tensor on
MiniLM at the same speed); activations are quantized on the fly, per call. The MatMul/Gemm (and embedding Gather)
of the eager-attention trace are quantized as they are: ONNX Runtime's session-level fusions then fuse the rest.

One change after quantizing: the additive attention mask fills a masked key with MASK_FILL (-60) instead of
float32's lowest value. Softmax's exp of a score 87 or more below the row's maximum takes a slow underflow path in
MLAS (a [8, 12, 128, 128] Softmax with a fifth of its keys masked: 2.3 ms against 0.5 ms), so the few padded keys
of a call cost half the Softmax time; exp(-60) next to the unmasked keys is 0 in float32, and the features came out
bit-identical on 159 long-text chunks. Scoring sessions also run without ORT's SkipLayerNorm fusion
(scoring.sessions.CPU_DISABLED_FUSIONS). Issue 10 measurements, MiniLM, long texts (4 x 128 tokens) in calls of
8 x 128, the variants side by side in one process on 1 thread (2 shared cores are too noisy to rank 5% steps):

    profile of the int8 chunk graph (2 threads): int8 GEMMs 36%, SkipLayerNormalization 14%, Softmax 11%,
    Gelu 7%, Add 7%, Transpose 6%, fp32 attention MatMuls 10%; AMX-INT8 is used (838 GMAC/s on one core)
    no SkipLayerNorm fusion                              1.15x   (its CPU kernel: a scalar loop, 5x Add + LayerNorm)
    mask fill -60 (on top)                               1.08x   (-30: the same)
    bench_scoring --long 400 on 2 threads: 3.33x TorchScript (bench/RESULTS.md before: 3.03x on 60 records);
    runs on the 2 shared cores vary by 10-20%, labels as before
    tried, slower: transformers optimizer -> MultiHeadAttention (separate quantized Q/K/V MatMuls) 0.91x, with
    its raw-mask format 0.92x, with mask_filter_value -30 still slower; fused Attention (fp32 QKV) 0.62x;
    FastGelu 0.94x; BiasGelu split from the MatMul 0.83x; attention MatMuls quantized too (MatMulConstBOnly
    off) 0.90x; calls of 2048/4096 token slots 0.85x, 512 and 768 within noise; allow_spinning off 0.73x
    (2 threads); the optimizer itself costs 1-4 s of export
    accuracy, 400 long texts: int8 labels agree with fp32 on 94% (-1.5 point); the error is the activations'
    per-tensor range: a few outlier channels (28 against a median channel max of 1.7 after LayerNorm, 24 against
    1.1 after Gelu). Moving the FFN output MatMul's outlier channels (amax > 4x median, 15 in all) to an fp32 side
    path: agreement 96%, logit-margin error -35%, still -1.5 point, 5% slower: not done. SmoothQuant-style
    scaling made it worse (per-output-channel weight scales absorb the outlier rows); clipping worse still.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from raytune_bsm.model.onnx_graphs import quiet

OP_TYPES = ("MatMul", "Gemm", "Gather")  # Gather: the embedding tables in int8 (a 59 MB graph becomes 23 MB)
PER_CHANNEL = True
MASK_FILL = -60.0  # a masked key's score offset in the int8 graph (module doc): exp(-60) is 0 next to 1 in float32


def quantize_chunks(src: Path, dst: Path) -> dict[str, Any]:
    """Write the int8 chunk graph of `src`; returns how it was made (for the manifest)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs "consider pre-processing" on the root logger
    try:
        with quiet():
            model = _quantize(src)
    finally:
        root.setLevel(level)
    masks = soften_attention_mask(model)
    onnx.save(model, str(dst))
    return {
        "method": "onnxruntime.quantization dynamic (IntegerOps)",
        "weight_type": "int8",
        "activations": "uint8",
        "per_channel": PER_CHANNEL,
        "op_types": list(OP_TYPES),
        "from": src.name,
        "attention_mask_fill": MASK_FILL if masks else None,
    }


def soften_attention_mask(model: onnx.ModelProto, fill: float = MASK_FILL) -> int:
    """In place: the additive attention mask's fill for a masked key (float32's lowest value, or -10000) becomes
    `fill`. Returns how many mask nodes were changed (0 when the pattern is not found: the graph stays as it was).

    The mask is found from each Softmax: its input is an Add of the scores and a mask made by a Where (or a Mul)
    with a constant scalar <= -1e4, possibly behind Expand/Reshape/Unsqueeze/Cast; that scalar input is rewired to
    a new initializer, so nothing else sharing the constant changes."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    initializers = {i.name: i for i in graph.initializer}
    name = "bsm/attention_mask_fill"
    changed: set[str] = set()
    for softmax in (n for n in graph.node if n.op_type == "Softmax"):
        add = producer.get(softmax.input[0])
        if add is None or add.op_type != "Add":
            continue
        for operand in add.input:
            node, hops = producer.get(operand), 0
            while node is not None and node.op_type in ("Expand", "Reshape", "Unsqueeze", "Cast") and hops < 4:
                node, hops = producer.get(node.input[0]), hops + 1
            if node is None or node.op_type not in ("Where", "Mul") or (key := node.name or str(id(node))) in changed:
                continue
            for k in range(1, 3) if node.op_type == "Where" else range(2):
                value = _scalar(node.input[k], producer, initializers)
                if value is not None and value <= -1e4:
                    node.input[k] = name
                    changed.add(key)
    if changed:
        graph.initializer.append(numpy_helper.from_array(np.array(fill, dtype=np.float32), name))
    return len(changed)


def _scalar(name: str, producer: dict[str, onnx.NodeProto], initializers: dict[str, onnx.TensorProto]) -> float | None:
    """The value of a one-element float32 constant (an initializer or a Constant node's value), else None."""
    tensor = initializers.get(name)
    if tensor is None and name in producer and producer[name].op_type == "Constant":
        tensor = next((a.t for a in producer[name].attribute if a.name == "value"), None)
    if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT:
        return None
    array = numpy_helper.to_array(tensor)
    return float(array.reshape(-1)[0]) if array.size == 1 else None


def _quantize(src: Path) -> onnx.ModelProto:
    """quantize_dynamic without its shape-inference pass (a copy of the whole model through onnx's shape inference,
    0.3 s for MiniLM): the graph is marked as inferred and float is the default type of an untyped tensor."""
    options = {"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT}
    try:
        from onnxruntime.quantization import QuantizationMode, QuantType
        from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
        from onnxruntime.quantization.quant_utils import add_infer_metadata
    except ImportError:  # the internal API moved: the public entry point, shape inference included
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory(prefix="bsm-int8-") as tmp:
            out = Path(tmp) / "int8.onnx"
            quantize_dynamic(
                src,
                out,
                op_types_to_quantize=list(OP_TYPES),
                per_channel=PER_CHANNEL,
                weight_type=QuantType.QInt8,
                extra_options=options,
            )
            return onnx.load(str(out))
    model = onnx.load(str(src))
    add_infer_metadata(model)
    q = ONNXQuantizer(
        model,
        PER_CHANNEL,
        False,
        QuantizationMode.IntegerOps,
        False,
        QuantType.QInt8,
        QuantType.QUInt8,
        None,
        [],
        [],
        list(OP_TYPES),
        options,
    )
    q.quantize_model()
    return q.model.model
