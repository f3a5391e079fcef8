"""Export a trained checkpoint to a self-contained serving directory, checked before it is published.

    <dest>/
      model.onnx              input_ids, attention_mask int64 [batch, chunks, tokens] (all dynamic) -> logits
                              float32 [batch, classes]; weights inside the one file; opset 18
      model.int8.onnx         the same in int8 (dynamic quantization)
      model.chunks.onnx       chunk level: input_ids, attention_mask int64 [chunks, tokens] -> features float32
                              [chunks, hidden]; what `bsm predict` runs, chunks of many records grouped by length
      model.chunks.int8.onnx  the same, int8
      model.head.onnx         features float32 [records, hidden] (a record's mean chunk features) -> logits
      model.torchscript.pt    torch.jit.trace of forward(input_ids, attention_mask) -> logits; loads with
                              torch.jit.load alone (no raytune_bsm needed)
      tokenizer/              the tokenizer's files (tokenizer.json is all a serving process needs)
      bsm_model.json          processor settings, class names, hyperparameters, metrics; with side features
                              their names in input order, statistics and fusion ("features"), and every graph but
                              the chunk graph takes them raw as `side_features` float32 [batch, F] (NaN: missing)
      manifest.json           written last: "format": "bsm-export", sha256 and size of every other file, library
                              versions, parity and per-precision figures, the time of each step

The graphs are made in `onnx_graphs` (BERT traced once, as the chunk graph; the others put together from it),
`quantize` (int8: the chunk graph quantized, then put together the same way) and checked in `parity` (fp32 within
`tolerance` of PyTorch or nothing is published; int8's agreement and metrics recorded); `publish` puts the
finished directory in place, whole or not at all, and never over a directory that is not an earlier export.
`progress(step, done, total)` is called after each step (the manifest's "timings" name them).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
from raytune_bsm.errors import ConfigError, ExportError
from raytune_bsm.graphs import HEAD, GraphKind
from raytune_bsm.layout import (
    CHUNKS_INT8_ONNX_FILE,
    CHUNKS_ONNX_FILE,
    EXPORT_FORMAT,
    FEATURES_NAME,
    FORMAT_VERSION,
    HEAD_ONNX_FILE,
    INPUT_NAMES,
    INT8_ONNX_FILE,
    MODEL_JSON,
    ONNX_FILE,
    OUTPUT_NAME,
    TOKENIZER_DIR,
    TORCHSCRIPT_FILE,
    write_manifest,
)
from raytune_bsm.model import onnx_graphs, parity, publish, quantize
from raytune_bsm.model.checkpoint import locate
from raytune_bsm.model.text_bert import TextBertClassifier, load_checkpoint
from raytune_bsm.storage import filesystem, is_uri

log = logging.getLogger(__name__)

# The graphs (model.packed*.onnx of earlier exports: replaced by the chunk graph, faster in bench/; predict still
# reads them in an export that has no chunk graph)
FP32 = {GraphKind.CHUNKS: CHUNKS_ONNX_FILE, HEAD: HEAD_ONNX_FILE, GraphKind.BCT: ONNX_FILE}
INT8 = {GraphKind.CHUNKS: CHUNKS_INT8_ONNX_FILE, HEAD: HEAD_ONNX_FILE, GraphKind.BCT: INT8_ONNX_FILE}
STEPS = ("load", "onnx", "int8", "onnx_checker", "torchscript", "tokenizer", "parity", "manifest")
Progress = Callable[[str, int, int], None]
VERSIONED_PACKAGES = (
    "torch",
    "transformers",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "tokenizers",
    "lightning",
    "ray",
    "raytune-bsm",
)


def export_checkpoint(
    checkpoint: str,
    dest: str,
    *,
    val_batches: list[dict] | None = None,
    metrics: dict | None = None,
    hyperparameters: dict | None = None,
    tolerance: float = 1e-4,
    progress: Progress | None = None,
) -> dict:
    """Export `checkpoint` (a Lightning .ckpt, or a Ray checkpoint directory holding checkpoint.ckpt) to `dest`
    (a local path or a pyarrow-fs URI). Returns the manifest. A ConfigError for a destination bsm may not
    replace, an ExportError if a check fails; either way nothing is left at `dest` (an earlier export there stays
    as it was) and no temporary directory remains. `progress(step, steps_done, steps_total)` after each step."""
    timings: dict[str, float] = {}
    steps = _Steps(timings, progress)
    t0 = time.perf_counter()
    token = uuid.uuid4().hex[:8]
    remote = is_uri(dest)
    try:
        fs, dest_path = filesystem(dest)
    except (ValueError, NotImplementedError, OSError) as e:  # pyarrow: an unknown scheme, a bad URI
        raise ConfigError(f"--to {dest!r} is not a path or a URI bsm can write to ({str(e).splitlines()[0]})") from None
    publish.check_dest(fs, dest_path, dest)

    with tempfile.TemporaryDirectory(prefix="bsm-export-") as scratch:
        with steps("load"):
            model = load_checkpoint(locate(checkpoint, Path(scratch)))  # a bad checkpoint fails before any write
        build = Path(scratch) / "export" if remote else Path(f"{dest_path}.tmp-{token}")
        created = [] if remote else publish.missing_parents(build)
        try:
            build.parent.mkdir(parents=True, exist_ok=True)
            build.mkdir()
            manifest = _build(model, build, val_batches, metrics, hyperparameters, tolerance, steps)
            manifest = {**manifest, "source_checkpoint": checkpoint}
            with steps("manifest"):  # hashing and publishing: in no "timings" (the manifest is being written)
                manifest["timings"] = {**timings, "total": round(time.perf_counter() - t0, 2)}
                manifest["export_seconds"] = manifest["timings"]["total"]
                manifest = write_manifest(build, manifest)  # last: the commit marker (sha256 of every file)
                if remote:
                    publish.publish_remote(fs, build, dest_path, token)
                else:
                    publish.publish_local(build, Path(dest_path), token)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            for p in reversed(created):  # folders made for the build only
                if p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
            raise
    log.info("exported %s to %s in %.1fs (%s)", checkpoint, dest, time.perf_counter() - t0, manifest["timings"])
    return manifest


def _build(
    model: TextBertClassifier,
    out: Path,
    val_batches: list[dict] | None,
    metrics: dict | None,
    hyperparameters: dict | None,
    tolerance: float,
    steps: _Steps,
) -> dict:
    """Every file but the manifest, checked; returns the manifest's content."""
    cfg = model.config
    processor = ChunkProcessor(ProcessorConfig.of_model(cfg))
    num_classes, hidden = int(model.num_classes), int(model.bert.config.hidden_size)
    example = onnx_graphs.example_inputs(model, processor.pad_id, processor.prefix, processor.suffix)

    with steps("onnx"):
        exporter = onnx_graphs.export_graphs(model, example, out, FP32)
    with steps("int8"):
        quantized = quantize.quantize_chunks(out / FP32[GraphKind.CHUNKS], out / INT8[GraphKind.CHUNKS])
        onnx_graphs.compose(*(out / INT8[k] for k in (GraphKind.CHUNKS, HEAD, GraphKind.BCT)))
    with steps("onnx_checker"):  # shape inference (full) once per kind of graph; int8 shares their structure
        bct = {**{n: onnx_graphs.BCT_DIMS for n in INPUT_NAMES}, **onnx_graphs.side_dims(model, "batch")}
        onnx_graphs.check_interface(out / ONNX_FILE, bct, num_classes, full=True)
        onnx_graphs.check_interface(
            out / CHUNKS_ONNX_FILE, onnx_graphs.CHUNK_DIMS, hidden, full=True, output=FEATURES_NAME
        )
        onnx_graphs.check_interface(out / CHUNKS_INT8_ONNX_FILE, onnx_graphs.CHUNK_DIMS, hidden, output=FEATURES_NAME)
        onnx_graphs.check_interface(out / INT8_ONNX_FILE, bct, num_classes)
    with steps("torchscript"):
        onnx_graphs.export_torchscript(model, example, out / TORCHSCRIPT_FILE)
    with steps("tokenizer"):
        processor.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
        if not (out / TOKENIZER_DIR / "tokenizer.json").is_file():
            raise ExportError(f"tokenizer {cfg['tokenizer']!r} saved no tokenizer.json; a fast tokenizer is required")
        _write_model_json(out / MODEL_JSON, model, processor, hyperparameters, metrics)
    with steps("parity"):
        shapes, labelled = parity.parity_batches(model, processor, val_batches, tuple(example[0].shape))
        checked, precision = parity.check(model, out, processor.pad_id, shapes, labelled, tolerance)
    checked["example_input_shape"] = list(example[0].shape)
    checked["distinct_shapes_besides_example"] = len({tuple(s) for s in checked["shapes"]} - {tuple(example[0].shape)})
    return {
        "format": EXPORT_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "exporter": {
            "onnx": exporter,
            "opset": onnx_graphs.OPSET,
            "torchscript": "torch.jit.trace",
            "int8": quantized,
            "graphs": "BERT traced once (model.chunks.onnx); model.head.onnx traced; model*.onnx [B, C, T] "
            "= a hand-written prefix graph + chunks + pool @ features + head",
        },
        "example_input_shape": list(example[0].shape),
        "parity": checked,
        "precision": precision,
        "timings": steps.timings,
    }


def _write_model_json(
    path: Path, model: TextBertClassifier, processor: ChunkProcessor, hyperparameters: dict | None, metrics: dict | None
) -> None:
    cfg = model.config
    num_classes = int(model.num_classes)
    info = {
        "format": "bsm-model",
        "format_version": FORMAT_VERSION,
        "text_field": cfg["text_name"],
        "label_field": cfg["label_name"],
        "id_field": cfg.get("id_name"),
        "class_names": [str(c) for c in (cfg.get("class_names") or range(num_classes))],
        "num_classes": num_classes,
        "processor": {**processor.settings(), "text_field": cfg["text_name"]},
        "inputs": {
            **{n: {"dtype": "int64", "shape": list(onnx_graphs.BCT_DIMS)} for n in INPUT_NAMES},
            **{n: {"dtype": "float32", "shape": list(d)} for n, d in onnx_graphs.side_dims(model, "batch").items()},
        },
        "features": _features(cfg),
        "outputs": {OUTPUT_NAME: {"dtype": "float32", "shape": ["batch", num_classes]}},
        "hyperparameters": hyperparameters if hyperparameters is not None else cfg,
        "metrics": metrics or {},
    }
    path.write_text(json.dumps(info, indent=2, default=str) + "\n")


def _features(cfg: dict) -> dict | None:
    """What scoring needs of the side features: names in input order, training statistics, fusion (None: none)."""
    if not cfg.get("feature_fields"):
        return None
    stats = cfg["feature_stats"] or {}
    return {
        "names": list(cfg["feature_fields"]),
        "fusion": cfg["fusion"],
        "input": "side_features" if cfg["fusion"] != "text" else None,  # "text": written into the dialogue
        "statistics": {
            n: {k: stats[k][i] for k in ("mean", "std", "min", "max", "missing")}
            for i, n in enumerate(cfg["feature_fields"])
        }
        if stats
        else {},
    }


class _Steps:
    """Times each step into `timings` and reports it to `progress` (step, steps done, steps in all)."""

    def __init__(self, timings: dict[str, float], progress: Progress | None) -> None:
        self.timings, self.progress, self.done = timings, progress, 0

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = round(time.perf_counter() - t, 2)
        self.done += 1
        if self.progress:
            self.progress(step, self.done, len(STEPS))


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
