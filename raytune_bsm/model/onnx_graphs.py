"""The graphs an export holds, traced from the trained model, and their checks.

    chunks     input_ids, attention_mask int64 [chunks, tokens] -> features float32 [chunks, hidden]: BERT and the
               chunk pooling only, so a call can hold the chunks of many records grouped by length
    head       features float32 [records, hidden] (a record's mean over its chunks) -> logits [records, classes]:
               the dropout-free head and classifier
    packed     (in memory only) input_ids, attention_mask int64 [chunks, tokens], pool float32 [records, chunks]
               -> logits float32 [records, classes]: chunks + `pool @ features` + head; pool[r, c] = 1/n_r when
               chunk c is one of record r's n_r chunks, else 0. Exports before the chunk graph shipped it as
               model.packed.onnx; the chunk graph replaced it (faster: calls of chunks sorted by length, bench/)
    [B, C, T]  input_ids, attention_mask int64 [batch, chunks, tokens] -> logits float32 [batch, classes]: the
               seed-compatible interface: a small hand-written "prefix" graph turns the [B, C, T] inputs into the
               packed ones (every chunk, an empty one attending to its first position and weighted 0) in front of
               the packed graph's nodes.

BERT is traced once, as the chunk graph, by the TorchScript-based exporter with eager attention (about 1 s for
MiniLM against about 5 s for the dynamo exporter, and ONNX Runtime fuses that graph's attention itself: 1.4x faster
than the dynamo graph of SDPA, bench/); the dynamo exporter is the fallback. The other graphs are put together from
the chunk graph and the head without tracing again, and so are their int8 twins (`quantize`). TorchScript
(`model.torchscript.pt`) traces the model's dense [B, C, T] path.

A model with side features (data/features.py) gives the head, and so every graph but the chunk graph, a second
input `side_features` float32 [records, F]: the raw values, NaN where missing. The model's own preprocessing
(clip to the training range, impute the mean, missing indicators, standardize) is traced into the head with it,
so an ONNX Runtime user feeds the raw columns.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import onnx
import torch

from raytune_bsm.data.batching import ATTENTION_MASK, INPUT_IDS, POOL
from raytune_bsm.data.features import SIDE_INPUT
from raytune_bsm.errors import ExportError
from raytune_bsm.graphs import HEAD, GraphKind
from raytune_bsm.layout import FEATURES_NAME, INPUT_NAMES, OUTPUT_NAME, PACKED_INPUT_NAMES

log = logging.getLogger(__name__)

OPSET = 18  # the torch.onnx dynamo exporter's native opset; onnxruntime >= 1.14 runs it
BCT_DIMS = ("batch", "chunks", "tokens")
CHUNK_DIMS = {INPUT_IDS: ("chunks", "tokens"), ATTENTION_MASK: ("chunks", "tokens")}
PACKED_DIMS = {**CHUNK_DIMS, POOL: ("records", "chunks")}
_PREFIX_OUT = ("bct/input_ids", "bct/attention_mask", "bct/pool")  # the prefix's outputs: the packed inputs


class LogitsModule(torch.nn.Module):
    """[B, C, T] ids and mask -> [B, classes] through the model's static (dense) path: what TorchScript traces."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, side_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.model.logits(input_ids, attention_mask, dense=True, side=side_features)


class ChunksModule(torch.nn.Module):
    """Chunks only: [N, T] ids and mask -> [N, H] pooled features (BERT and the chunk pooling)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model._pool(input_ids, attention_mask)  # [N, H]


class HeadModule(torch.nn.Module):
    """A record's mean chunk features [R, H] -> logits [R, classes]; dropout is the identity at inference."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, side_features: torch.Tensor | None = None) -> torch.Tensor:
        text = self.model.head(features)  # [R, H] -> [R, hidden_common_dim]
        return self.model.classifier(self.model.fuse(text, side_features))  # -> [R, classes]


def side_example(model: Any, rows: int) -> torch.Tensor | None:
    """Raw side features [rows, F] for tracing: values about the training mean, one missing, one infinite (so the
    traced graph keeps the imputation and the clipping); None for a text-only model."""
    if not model.feature_fields:
        return None
    stats = model.config["feature_stats"]
    x = torch.tensor(stats["mean"], dtype=torch.float32).repeat(rows, 1) + torch.tensor(stats["std"]) * 0.5
    x[0, 0] = float("nan")
    x[-1, -1] = float("inf")
    return x  # [rows, F]


def side_dims(model: Any, rows: str = "records") -> dict[str, tuple[str, ...]]:
    """The side input's dims, {} for a text-only model."""
    return {SIDE_INPUT: (rows, "side")} if model.feature_fields else {}


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' chatter (deprecation notes, tracer warnings about transformers' shape checks that
    do not change the graph); the parity check is what tells the export is right."""
    names = (
        "torch.onnx",
        "torch.export",
        "torch._export",
        "torch.fx",
        "torch._dynamo",
        "torch.utils._sympy",
        "torch.fx.experimental.symbolic_shapes",
        "onnxscript",
    )
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


def chunks_example(example: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The example's three real chunks: ids and mask [3, 8] (no dimension is 1, so none is specialised)."""
    ids, mask = (t.reshape(-1, t.shape[-1]) for t in example)
    keep = mask.any(dim=1)
    return ids[keep].clone(), mask[keep].clone()


def export_onnx(
    module: torch.nn.Module,
    example: tuple,
    path: Path,
    dims: dict[str, tuple[str, ...]],
    outputs: dict[str, tuple[str, ...]],
    max_tokens: int,
) -> str:
    """torch.onnx.export, every input dimension dynamic: the TorchScript-based exporter (faster to export and, with
    eager attention, a graph ONNX Runtime fuses better), else the dynamo one. Returns which exporter wrote it."""
    names = list(dims)
    try:
        axes = {n: dict(enumerate(a)) for n, a in {**dims, **outputs}.items()}
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=names,
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
        return "torch.onnx.export(dynamo=False)"
    except Exception as e:  # noqa: BLE001 - any exporter failure: try the dynamo exporter before giving up
        log.warning(
            "the TorchScript-based ONNX exporter failed (%s: %s); trying the dynamo exporter",
            e.__class__.__name__,
            str(e).splitlines()[0] if str(e) else "",
        )
        path.unlink(missing_ok=True)
    try:
        # BERT's position table bounds the tokens; without the bound torch.export refuses the dimension
        symbols = {d: torch.export.Dim(d, max=max_tokens if d == "tokens" else None) for a in dims.values() for d in a}
        shapes = {n: {i: symbols[d] for i, d in enumerate(axes)} for n, axes in dims.items()}
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=names,
            output_names=list(outputs),
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"ONNX export failed with both exporters: {e.__class__.__name__}: {e}") from e
    return "torch.onnx.export(dynamo=True)"


def export_chunks(model: Any, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> str:
    """The chunk graph, traced with eager attention (the pattern ONNX Runtime's attention fusion matches)."""
    before = model.bert.config._attn_implementation
    model.bert.set_attn_implementation("eager")
    try:
        with torch.no_grad(), quiet():
            return export_onnx(
                ChunksModule(model).eval(),
                chunks_example(example),
                path,
                CHUNK_DIMS,
                {FEATURES_NAME: ("chunks",)},
                int(model.bert.config.max_position_embeddings),
            )
    finally:
        model.bert.set_attn_implementation(before)


def export_head(model: Any, path: Path) -> None:
    """The head graph: a few ops, traced in milliseconds."""
    features = torch.randn(2, int(model.bert.config.hidden_size))  # [R, H]
    side = side_example(model, 2)
    with torch.no_grad(), quiet():
        export_onnx(
            HeadModule(model).eval(),
            (features,) if side is None else (features, side),
            path,
            {FEATURES_NAME: ("records",), **side_dims(model)},
            {OUTPUT_NAME: ("records",)},
            int(model.bert.config.max_position_embeddings),
        )


def with_head(chunks: onnx.ModelProto, head: onnx.ModelProto) -> onnx.ModelProto:
    """The packed graph, made in place from the chunk graph (fp32 or int8 alike): `pool @ features` [R, H], then
    the head's nodes (names prefixed "head/")."""
    head = onnx.compose.add_prefix(head, "head/")
    graph, hg = chunks.graph, head.graph
    renames = {hg.output[0].name: OUTPUT_NAME}
    for n in hg.node:
        n.output[:] = [renames.get(o, o) for o in n.output]
    pool = onnx.helper.make_tensor_value_info(POOL, onnx.TensorProto.FLOAT, list(PACKED_DIMS[POOL]))
    mean = onnx.helper.make_node("MatMul", [POOL, graph.output[0].name], [hg.input[0].name], name="pool_chunks")
    side = [i for i in hg.input if i.name == f"head/{SIDE_INPUT}"]  # raw side features [R, F], if the model has any
    for n in hg.node:
        n.input[:] = [SIDE_INPUT if i == f"head/{SIDE_INPUT}" else i for i in n.input]
    graph.node.extend([mean, *hg.node])  # [R, N] @ [N, H] -> [R, H]: each record's mean over its chunks
    graph.initializer.extend(hg.initializer)
    graph.input.append(pool)
    for i in side:
        i.name = SIDE_INPUT
        graph.input.append(i)
    out = onnx.ValueInfoProto()
    out.CopyFrom(hg.output[0])
    out.name = OUTPUT_NAME
    del graph.output[:]
    graph.output.append(out)
    have = {o.domain for o in chunks.opset_import}
    chunks.opset_import.extend(o for o in head.opset_import if o.domain not in have)
    chunks.ir_version = max(chunks.ir_version, head.ir_version)
    return chunks


def compose(chunks: Path, head: Path, bct: Path) -> None:
    """Write the [B, C, T] graph made from the chunk graph and the head graph files."""
    onnx.save(with_bct_inputs(with_head(onnx.load(str(chunks)), onnx.load(str(head)))), str(bct))


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
        node("Shape", [INPUT_IDS], ["shape"]),
        node("Slice", ["shape", "k0", "k1"], ["B"]),
        node("Slice", ["shape", "k1", "k2"], ["C"]),
        node("Slice", ["shape", "k2", "k3"], ["T"]),
        node("Mul", ["B", "C"], ["BC"]),
        node("Concat", ["BC", "T"], ["flat_shape"], axis=0),
        node("Reshape", [INPUT_IDS, "flat_shape"], [_PREFIX_OUT[0]]),  # [B*C, T]
        node("Reshape", [ATTENTION_MASK, "flat_shape"], ["mask"]),  # [B*C, T]
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
    inits += [
        H.make_tensor("bct/zero", TP.INT64, [], [0]),
        H.make_tensor("bct/one", TP.INT64, [], [1]),
        H.make_tensor("bct/one_f", TP.FLOAT, [], [1.0]),
    ]
    ins = [H.make_tensor_value_info(n, TP.INT64, list(BCT_DIMS)) for n in INPUT_NAMES]
    outs = [
        H.make_tensor_value_info(_PREFIX_OUT[0], TP.INT64, ["flat_chunks", "tokens"]),
        H.make_tensor_value_info(_PREFIX_OUT[1], TP.INT64, ["flat_chunks", "tokens"]),
        H.make_tensor_value_info(_PREFIX_OUT[2], TP.FLOAT, ["batch", "flat_chunks"]),
    ]
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
    side = [i for i in graph.input if i.name == SIDE_INPUT]  # one row per record: [batch, F]
    for i in side:
        i.type.tensor_type.shape.dim[0].dim_param = "batch"
    del graph.input[:]
    graph.input.extend([*prefix.input, *side])
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"  # one record per batch row
    return packed


def export_graphs(model: Any, example: tuple[torch.Tensor, torch.Tensor], out: Path, files: dict[str, str]) -> str:
    """The fp32 graphs in `out` (BERT traced once; `files` maps GraphKind.CHUNKS, HEAD and GraphKind.BCT to file
    names). Returns the exporter that traced BERT."""
    exporter = export_chunks(model, example, out / files[GraphKind.CHUNKS])
    export_head(model, out / files[HEAD])
    compose(out / files[GraphKind.CHUNKS], out / files[HEAD], out / files[GraphKind.BCT])
    return exporter


def check_interface(
    path: Path, inputs: dict[str, tuple[str, ...]], width: int, full: bool = False, output: str = OUTPUT_NAME
) -> None:
    """The ONNX checker (with shape inference if `full`), and the interface: names, dtypes, dynamic dims; one
    float32 output `output` [n, width]."""
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
        want = onnx.TensorProto.FLOAT if name in (POOL, FEATURES_NAME, SIDE_INPUT) else onnx.TensorProto.INT64
        dims = [d.dim_param for d in tt.shape.dim]
        if tt.elem_type != want or len(dims) != len(inputs.get(name, ())) or not all(dims):
            problems.append(f"input {name} is elem_type {tt.elem_type} dims {dims}, expected {inputs.get(name)}")
    outs = [(o.name, o.type.tensor_type) for o in graph.output]
    dims = [d.dim_param or d.dim_value for d in outs[0][1].shape.dim] if outs else []
    if (
        [n for n, _ in outs] != [output]
        or outs[0][1].elem_type != onnx.TensorProto.FLOAT
        or len(dims) != 2
        or dims[1] != width
        or not isinstance(dims[0], str)
    ):
        problems.append(f"outputs are {[n for n, _ in outs]} dims {dims}, expected {output} float32 [n, {width}]")
    if problems:
        raise ExportError(f"{path.name} has the wrong interface: " + "; ".join(problems))


def export_torchscript(model: Any, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
    """torch.jit.trace of the dense [B, C, T] path; the parity check runs it on other shapes."""
    # Lightning's `trainer` property raises outside a Trainer, and tracing probes every attribute of every
    # submodule; this flag is Lightning's own switch for scripting/tracing a LightningModule.
    model._jit_is_scripting = True
    side = side_example(model, int(example[0].shape[0]))
    try:
        with torch.no_grad(), quiet():
            inputs = tuple(example) if side is None else (*example, side)
            traced = torch.jit.trace(LogitsModule(model).eval(), inputs, check_trace=False)
    except Exception as e:  # noqa: BLE001 - TracingCheckError and friends
        raise ExportError(f"TorchScript trace failed: {e.__class__.__name__}: {str(e)[:500]}") from None
    finally:
        del model._jit_is_scripting
    torch.jit.save(traced, str(path))
