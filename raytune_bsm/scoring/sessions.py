"""Which of an export's graphs to run, and ONNX Runtime sessions that run it (CPU, or CUDA with IO binding).

An export holds graphs of up to three kinds (`GraphKind`), each in fp32 and int8 (names in layout.py, shapes in
scoring/batching.py): the chunk graph `model.chunks.onnx` with its head `model.head.onnx` (the newest: chunks of
many records per call, grouped by length), the packed graph `model.packed.onnx` (exports since issue 10.2), and
the [B, C, T] `model.onnx` (every export has it). `bsm predict` takes the newest kind the export has. The
manifest's "precision" records each precision's validation metrics, measured at export time:

    "precision": {"fp32": {"accuracy": 0.968, "auroc": 0.99}, "int8": {"accuracy": 0.970, "auroc": 0.99}}

`--precision auto` (the default) takes int8 when every metric both record is within 0.5 point of fp32's.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from raytune_bsm import layout
from raytune_bsm.data.batching import ATTENTION_MASK, INPUT_IDS
from raytune_bsm.errors import ConfigError, ExportError
from raytune_bsm.graphs import GraphKind

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "int8")
MAX_LOSS = 0.005  # int8 may lose at most 0.5 point of any recorded metric
NOT_METRICS = ("agreement", "max_abs", "diff", "n_", "records")  # recorded next to metrics, not quality
GRAPHS = {  # (kind, precision) -> file; kinds newest first
    (GraphKind.CHUNKS, "fp32"): layout.CHUNKS_ONNX_FILE,
    (GraphKind.CHUNKS, "int8"): layout.CHUNKS_INT8_ONNX_FILE,
    (GraphKind.PACKED, "fp32"): layout.PACKED_ONNX_FILE,
    (GraphKind.PACKED, "int8"): layout.PACKED_INT8_ONNX_FILE,
    (GraphKind.BCT, "fp32"): layout.ONNX_FILE,
    (GraphKind.BCT, "int8"): layout.INT8_ONNX_FILE,
}
# ORT's CPU SkipLayerNormalization kernel is a scalar loop with a division per element: 5x slower than Add +
# LayerNormalization (the vectorised kernel) on [8, 128, 384]; without the fusion the int8 chunk graph runs 1.15x
# faster on 1 core, fp32 the same (bench/, issue 10)
CPU_DISABLED_FUSIONS = ("SkipLayerNormFusion",)
INPUTS = {  # kind -> the graph's token inputs
    GraphKind.CHUNKS: [INPUT_IDS, ATTENTION_MASK],
    GraphKind.PACKED: list(layout.PACKED_INPUT_NAMES),
    GraphKind.BCT: list(layout.INPUT_NAMES),
}


@dataclass(frozen=True)
class Choice:
    file: str  # the graph's path inside the export
    kind: GraphKind  # its inputs' shapes: scoring/batching.py
    precision: str  # "fp32" or "int8"
    why: str

    @property
    def packed(self) -> bool:
        """[N, T] inputs of whole records and a pool (model.packed*.onnx)."""
        return self.kind == GraphKind.PACKED

    @property
    def head(self) -> str | None:
        """The head graph the chunk graph's features go through."""
        return layout.HEAD_ONNX_FILE if self.kind == GraphKind.CHUNKS else None

    @property
    def files(self) -> list[str]:
        """The graph files scoring reads."""
        return [self.file] + ([self.head] if self.head else [])


def streams_for(kind: GraphKind) -> int | None:
    """Calls a Scorer of this kind of graph runs side by side: one per core for the chunk graph (its calls of 1,024
    token slots are too small to spread over the cores); one for whole-record graphs (calls of 4,096 slots,
    measured slower side by side)."""
    return None if kind == GraphKind.CHUNKS else 1


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def int8_within_tolerance(precision: dict[str, Any] | None) -> tuple[bool, str]:
    """(int8 is good enough, why) from the manifest's "precision" record."""
    if not isinstance(precision, dict) or not isinstance(precision.get("int8"), dict):
        return False, "the export records no int8 metrics"
    fp32, int8 = precision.get("fp32") or {}, precision["int8"]
    common = [
        k
        for k in fp32
        if k in int8
        and not any(s in k for s in NOT_METRICS)
        and isinstance(fp32[k], (int, float))
        and isinstance(int8[k], (int, float))
    ]
    if not common:
        return False, "the export records no metric for both fp32 and int8"
    worst = max(common, key=lambda k: fp32[k] - int8[k])
    loss = float(fp32[worst]) - float(int8[worst])
    text = f"int8 {worst} {float(int8[worst]):.4f} vs fp32 {float(fp32[worst]):.4f}"
    return loss <= MAX_LOSS + 1e-12, text


def choose_graph(manifest: dict[str, Any], precision: str = "auto") -> Choice:
    """The graph `bsm predict` runs: the newest kind of graph the export has, int8 per `precision` (see module doc)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    files = {f["path"] for f in manifest.get("files", [])}
    kind = next(
        (
            k
            for k in (GraphKind.CHUNKS, GraphKind.PACKED)
            if GRAPHS[(k, "fp32")] in files and (k != GraphKind.CHUNKS or layout.HEAD_ONNX_FILE in files)
        ),
        GraphKind.BCT,
    )
    has_int8 = GRAPHS[(kind, "int8")] in files
    if precision == "int8":
        if not has_int8:
            raise ConfigError(
                f"--precision int8: this export has no {GRAPHS[(kind, 'int8')]} (an older export?); "
                "use --precision fp32 or re-export the model"
            )
        return Choice(GRAPHS[(kind, "int8")], kind, "int8", "--precision int8")
    if precision == "fp32":
        return Choice(GRAPHS[(kind, "fp32")], kind, "fp32", "--precision fp32")
    ok, why = int8_within_tolerance(manifest.get("precision"))
    if has_int8 and ok:
        return Choice(GRAPHS[(kind, "int8")], kind, "int8", f"auto: {why}, within 0.5 point")
    if not has_int8:
        why = "the export has no int8 graph"
    elif " vs " in why:
        why += ", more than 0.5 point apart"
    return Choice(GRAPHS[(kind, "fp32")], kind, "fp32", f"auto: {why}")


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class Scorer:
    """One ONNX Runtime session over one graph, created once; `__call__(feeds)` -> its one output (logits float32
    [R, K], or features [N, H] for the chunk graph); `__call__(array)` feeds a one-input graph (the head);
    `map(feeds)` runs many calls, `streams` at a time.

    CPU: `threads` cores in all, as `streams` calls running at once (default: one per core) with threads/streams
    intra-op threads each; all graph optimizations on but CPU_DISABLED_FUSIONS. Calls side by side beat one call
    spread over every core: each op of a 1,024-token call is too small to split well, and the threads of one
    call wait for each other after every op (2 cores, int8 chunk graph, long texts: 2 calls of 1 thread each
    1.10-1.13x faster than 1 call of 2 threads; bench/ also runs TorchScript that way). Calls of whole records
    ([B, C, T], 4,096 slots) measured slower side by side (`streams_for`). CUDA: one call at
    a time; inputs copied to the GPU once per call and the output bound on the device (IO binding), so ORT does
    no hidden host<->device copies."""

    def __init__(
        self, path: str, provider: str = "CPUExecutionProvider", threads: int | None = None, streams: int | None = None
    ) -> None:
        import onnxruntime as ort

        available = available_providers()
        if provider not in available:
            raise ConfigError(
                f"--provider {provider!r} is not available in this onnxruntime; available: {', '.join(available)}"
            )
        threads = default_threads() if threads is None else threads
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        if provider != "CPUExecutionProvider":
            streams = 1
        else:
            streams = threads if streams is None else max(1, min(streams, threads))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads // streams
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.provider, self.threads, self.streams = provider, threads, streams
        # ORT runs calls on one session side by side (Run is thread-safe); the pool's threads make the calls
        self._pool = ThreadPoolExecutor(streams, thread_name_prefix="bsm-ort") if streams > 1 else None
        providers: list[Any] = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
        disabled = list(CPU_DISABLED_FUSIONS) if provider == "CPUExecutionProvider" else []
        try:
            self.session = ort.InferenceSession(
                path, sess_options=opts, providers=providers, disabled_optimizers=disabled
            )
        except Exception as e:  # noqa: BLE001 - ORT raises its own untyped errors for a bad graph
            raise ExportError(f"{path}: ONNX Runtime cannot load this graph: {str(e).splitlines()[0]}") from None
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.output = self.session.get_outputs()[0].name
        self.width = inputs[0].shape[-1] if isinstance(inputs[0].shape[-1], int) else None  # the head's H
        self.cuda = provider == "CUDAExecutionProvider"

    def __call__(self, feeds: dict[str, np.ndarray] | np.ndarray) -> np.ndarray:
        if isinstance(feeds, np.ndarray):
            feeds = {self.input_names[0]: feeds}
        if self.cuda:
            return self._run_bound(feeds, "cuda")
        return self.session.run([self.output], feeds)[0]

    def map(self, feeds: Iterable[dict[str, np.ndarray]]) -> Iterator[np.ndarray]:
        """The outputs of many calls, in order, `streams` calls running at a time."""
        return self._pool.map(self, feeds) if self._pool is not None else map(self, feeds)

    def _run_bound(self, feeds: dict[str, np.ndarray], device: str) -> np.ndarray:
        """One call through IO binding: inputs placed on `device` once, the output allocated there by ORT."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name, array in feeds.items():  # one host->device copy per input
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, 0)
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(self.output, device, 0)  # the output stays on the device until copied
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]  # one device->host copy
