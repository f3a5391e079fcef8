"""The graphs an export holds, traced from the trained model, and their checks.

    packed     input_ids, attention_mask int64 [chunks, tokens], pool float32 [records, chunks] -> logits
               float32 [records, classes]: only real chunks go through BERT; pool[r, c] = 1/n_r when chunk c is one
               of record r's n_r chunks, else 0, so `pool @ chunk_embeddings` is each record's mean.
    [B, C, T]  input_ids, attention_mask int64 [batch, chunks, tokens] -> logits float32 [batch, classes]: the
               seed-compatible interface. Built without a second BERT export: a small hand-written "prefix" graph
               turns the [B, C, T] inputs into the packed ones (every chunk, an empty one attending to its first
               position and weighted 0) and is put in front of the packed graph's nodes.

BERT is traced once, with the torch.export-based (dynamo) exporter (the TorchScript-based one only as a
fallback); the int8 graphs are quantized from the packed one and given the same prefix. TorchScript (`model.torchscript.pt`) traces the model's dense [B, C, T] path.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import onnx
import torch

from raytune_bsm.errors import ExportError
from raytune_bsm.layout import INPUT_NAMES, OUTPUT_NAME, PACKED_INPUT_NAMES

log = logging.getLogger(__name__)

OPSET = 18  # the torch.onnx dynamo exporter's native opset; onnxruntime >= 1.14 runs it
BCT_DIMS = ("batch", "chunks", "tokens")
PACKED_DIMS = {"input_ids": ("chunks", "tokens"), "attention_mask": ("chunks", "tokens"), "pool": ("records", "chunks")}
_PREFIX_OUT = ("bct/input_ids", "bct/attention_mask", "bct/pool")  # the prefix's outputs: the packed inputs


class LogitsModule(torch.nn.Module):
    """[B, C, T] ids and mask -> [B, classes] through the model's static (dense) path: what TorchScript traces."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.logits(input_ids, attention_mask, dense=True)


class PackedModule(torch.nn.Module):
    """Real chunks only: [N, T] ids and mask, [R, N] pool -> [R, classes]."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        chunks = self.model._pool(input_ids, attention_mask)  # [N, H]
        features = pool @ chunks  # [R, N] @ [N, H] -> [R, H]: each record's mean over its chunks
        return self.model.classifier(self.model.head(self.model.dropout(features)))  # [R, classes]


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' chatter (deprecation notes, tracer warnings about transformers' shape checks that
    do not change the graph); the parity check is what tells the export is right."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "torch._dynamo", "torch.utils._sympy",
             "torch.fx.experimental.symbolic_shapes", "onnxscript")  # fmt: skip
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lvl in zip(loggers, levels):
                lg.setLevel(lvl)


def example_inputs(model: Any, pad_id: int, prefix: list[int], suffix: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[2, 3, 8] ids and mask with partial padding and an all-padding chunk, so that the traced graph keeps the
    attention mask (transformers skips it for an all-ones mask) and the empty-chunk handling. No dimension is 1
    (torch.export would specialise it) and the shape is one the parity check does not use."""
    B, C, T = 2, 3, 8
    vocab = int(model.bert.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    content = torch.randint(min(1000, max(1, vocab // 4)), vocab, (B, C, T), generator=g)
    lengths = [[8, 5, 0], [6, 0, 0]]
    ids = torch.full((B, C, T), pad_id, dtype=torch.int64)
    mask = torch.zeros((B, C, T), dtype=torch.int64)
    for b in range(B):
        for c in range(C):
            if n := lengths[b][c]:
                row = prefix + content[b, c, : n - len(prefix) - len(suffix)].tolist() + suffix
                ids[b, c, :n] = torch.tensor(row[:n])
                mask[b, c, :n] = 1
    return ids, mask


def packed_example(example: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The example's three real chunks [3, 8] and their pool [2, 3] (distinct sizes: none is specialised)."""
    ids, mask = (t.reshape(-1, t.shape[-1]) for t in example)
    keep = mask.any(dim=1)
    pool = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    return ids[keep].clone(), mask[keep].clone(), pool


def export_onnx(module: torch.nn.Module, example: tuple, path: Path, dims: dict[str, tuple[str, ...]],
                outputs: tuple[str, ...], max_tokens: int) -> str:  # fmt: skip
    """torch.onnx.export with the dynamo exporter (the TorchScript-based one is deprecated in torch >= 2.9 and
    only a fallback here); every input dimension dynamic. Returns which exporter wrote the file."""
    names = list(dims)
    try:
        # BERT's position table bounds the tokens; without the bound torch.export refuses the dimension
        symbols = {d: torch.export.Dim(d, max=max_tokens if d == "tokens" else None) for a in dims.values() for d in a}
        shapes = {n: {i: symbols[d] for i, d in enumerate(axes)} for n, axes in dims.items()}
        torch.onnx.export(module, example, str(path), input_names=names, output_names=list(outputs),
                          dynamic_shapes=shapes, opset_version=OPSET, dynamo=True, external_data=False,
                          optimize=True, verbose=False)  # fmt: skip
        return "torch.onnx.export(dynamo=True)"
    except Exception as e:  # noqa: BLE001 - any exporter failure: try the legacy exporter before giving up
        log.warning("the dynamo ONNX exporter failed (%s: %s); trying the TorchScript-based exporter",
                    e.__class__.__name__, str(e).splitlines()[0] if str(e) else "")  # fmt: skip
        path.unlink(missing_ok=True)
    try:
        axes = {n: dict(enumerate(a)) for n, a in dims.items()}
        torch.onnx.export(module, example, str(path), input_names=names, output_names=list(outputs),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)  # fmt: skip
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"ONNX export failed with both exporters: {e.__class__.__name__}: {e}") from e
    return "torch.onnx.export(dynamo=False)"


def prefix_graph(ir_version: int, opsets: list[Any]) -> onnx.ModelProto:
    """[B, C, T] ids and mask -> the packed graph's inputs over every chunk: ids [B*C, T], a mask in which an
    empty chunk attends to its first position (a fully masked row gives NaN in attention), and pool [B, B*C]
    holding 1/n_b over record b's n_b non-empty chunks (a record with none gets a zero row: the head's bias).
    Written by hand: a few ops, where tracing them would cost seconds of exporter time."""
    H, TP = onnx.helper, onnx.TensorProto

    def node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> onnx.NodeProto:
        own = lambda n: n if n in INPUT_NAMES or n in _PREFIX_OUT else f"bct/{n}"  # noqa: E731 - no clashes
        return H.make_node(op, [own(i) for i in inputs], [own(o) for o in outputs], name=f"bct/{outputs[0]}", **attrs)

    nodes = [
        node("Shape", ["input_ids"], ["shape"]),
        node("Slice", ["shape", "k0", "k1"], ["B"]),
        node("Slice", ["shape", "k1", "k2"], ["C"]),
        node("Slice", ["shape", "k2", "k3"], ["T"]),
        node("Mul", ["B", "C"], ["BC"]),
        node("Concat", ["BC", "T"], ["flat_shape"], axis=0),
        node("Reshape", ["input_ids", "flat_shape"], [_PREFIX_OUT[0]]),  # [B*C, T]
        node("Reshape", ["attention_mask", "flat_shape"], ["mask"]),  # [B*C, T]
        node("ReduceMax", ["mask", "k1"], ["row_max"], keepdims=1),  # [B*C, 1]
        node("Greater", ["row_max", "zero"], ["nonempty"]),  # [B*C, 1] bool
        node("Squeeze", ["T", "k0"], ["T_scalar"]),
        node("Range", ["zero", "T_scalar", "one"], ["positions"]),  # [T]
        node("Equal", ["positions", "zero"], ["is_first"]),
        node("Cast", ["is_first"], ["first_only"], to=TP.INT64),  # [T]: 1 at position 0 only
        node("Where", ["nonempty", "mask", "first_only"], [_PREFIX_OUT[1]]),  # [B*C, T]
        node("Concat", ["B", "C"], ["bc_shape"], axis=0),
        node("Cast", ["nonempty"], ["nonempty_f"], to=TP.FLOAT),
        node("Reshape", ["nonempty_f", "bc_shape"], ["weight"]),  # [B, C]
        node("ReduceSum", ["weight", "k1"], ["count"], keepdims=1),  # [B, 1]
        node("Max", ["count", "one_f"], ["count_safe"]),  # 0 chunks -> a zero row, not NaN
        node("Div", ["weight", "count_safe"], ["share"]),  # [B, C]
        node("Concat", ["B", "B"], ["bb_shape"], axis=0),
        node("ConstantOfShape", ["bb_shape"], ["zeros_bb"], value=H.make_tensor("z", TP.FLOAT, [1], [0.0])),
        node("EyeLike", ["zeros_bb"], ["eye"]),  # [B, B]
        node("Unsqueeze", ["eye", "k2"], ["eye3"]),  # [B, B, 1]
        node("Unsqueeze", ["share", "k0"], ["share3"]),  # [1, B, C]
        node("Mul", ["eye3", "share3"], ["blocks"]),  # [B, B, C]: record b's own chunks only
        node("Concat", ["B", "BC"], ["pool_shape"], axis=0),
        node("Reshape", ["blocks", "pool_shape"], [_PREFIX_OUT[2]]),  # [B, B*C]
    ]
    inits = [H.make_tensor(f"bct/k{i}", TP.INT64, [1], [i]) for i in range(4)]
    inits += [H.make_tensor("bct/zero", TP.INT64, [], [0]), H.make_tensor("bct/one", TP.INT64, [], [1]),
              H.make_tensor("bct/one_f", TP.FLOAT, [], [1.0])]  # fmt: skip
    ins = [H.make_tensor_value_info(n, TP.INT64, list(BCT_DIMS)) for n in INPUT_NAMES]
    outs = [H.make_tensor_value_info(_PREFIX_OUT[0], TP.INT64, ["flat_chunks", "tokens"]),
            H.make_tensor_value_info(_PREFIX_OUT[1], TP.INT64, ["flat_chunks", "tokens"]),
            H.make_tensor_value_info(_PREFIX_OUT[2], TP.FLOAT, ["batch", "flat_chunks"])]  # fmt: skip
    graph = H.make_graph(nodes, "bct_to_packed", ins, outs, initializer=inits)
    return H.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def with_bct_inputs(packed: onnx.ModelProto) -> onnx.ModelProto:
    """The [B, C, T] model, made in place from `packed` (fp32 or int8 alike): the prefix graph's nodes go first
    and its outputs replace the packed graph's inputs."""
    prefix = prefix_graph(packed.ir_version, list(packed.opset_import)).graph
    graph = packed.graph
    renames = dict(zip(PACKED_INPUT_NAMES, _PREFIX_OUT))
    for n in graph.node:
        n.input[:] = [renames.get(i, i) for i in n.input]
    nodes = list(prefix.node) + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(prefix.initializer)
    del graph.input[:]
    graph.input.extend(prefix.input)
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"  # one record per batch row
    return packed


def export_graphs(model: Any, example: tuple[torch.Tensor, torch.Tensor], packed_path: Path, bct_path: Path) -> str:
    """Export the packed graph from `model` (BERT traced once), then the [B, C, T] graph as prefix + packed.
    Returns the exporter that wrote it."""
    max_tokens = int(model.bert.config.max_position_embeddings)
    with torch.no_grad(), quiet():
        exporter = export_onnx(PackedModule(model).eval(), packed_example(example), packed_path, PACKED_DIMS,
                               (OUTPUT_NAME,), max_tokens)  # fmt: skip
    onnx.save(with_bct_inputs(onnx.load(str(packed_path))), str(bct_path))
    return exporter

def check_interface(path: Path, inputs: dict[str, tuple[str, ...]], num_classes: int, full: bool = False) -> None:
    """The ONNX checker (with shape inference if `full`), and the interface: names, dtypes, dynamic dims."""
    try:
        onnx.checker.check_model(str(path), full_check=full)
    except Exception as e:  # noqa: BLE001 - onnx raises several checker error types
        raise ExportError(f"{path.name} fails onnx.checker: {str(e).splitlines()[0]}") from None
    graph = onnx.load(str(path), load_external_data=False).graph
    got = {i.name: i.type.tensor_type for i in graph.input}
    problems = []
    if list(got) != list(inputs):
        problems.append(f"inputs are {list(got)}, expected {list(inputs)}")
    for name, tt in got.items():
        want = onnx.TensorProto.FLOAT if name == "pool" else onnx.TensorProto.INT64
        dims = [d.dim_param for d in tt.shape.dim]
        if tt.elem_type != want or len(dims) != len(inputs.get(name, ())) or not all(dims):
            problems.append(f"input {name} is elem_type {tt.elem_type} dims {dims}, expected {inputs.get(name)}")
    outs = [(o.name, o.type.tensor_type) for o in graph.output]
    dims = [d.dim_param or d.dim_value for d in outs[0][1].shape.dim] if outs else []
    if [n for n, _ in outs] != [OUTPUT_NAME] or outs[0][1].elem_type != onnx.TensorProto.FLOAT or len(dims) != 2 \
            or dims[1] != num_classes or not isinstance(dims[0], str):  # fmt: skip
        problems.append(f"outputs are {[n for n, _ in outs]} dims {dims}, expected {OUTPUT_NAME} float32 [n, {num_classes}]")
    if problems:
        raise ExportError(f"{path.name} has the wrong interface: " + "; ".join(problems))


def export_torchscript(model: Any, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
    """torch.jit.trace of the dense [B, C, T] path; the parity check runs it on other shapes."""
    # Lightning's `trainer` property raises outside a Trainer, and tracing probes every attribute of every
    # submodule; this flag is Lightning's own switch for scripting/tracing a LightningModule.
    model._jit_is_scripting = True
    try:
        with torch.no_grad(), quiet():
            traced = torch.jit.trace(LogitsModule(model).eval(), example, check_trace=False)
    except Exception as e:  # noqa: BLE001 - TracingCheckError and friends
        raise ExportError(f"TorchScript trace failed: {e.__class__.__name__}: {str(e)[:500]}") from None
    finally:
        del model._jit_is_scripting
    torch.jit.save(traced, str(path))
