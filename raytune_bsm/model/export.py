"""Export a trained checkpoint to a self-contained serving directory, checked before it is published.

    <dest>/
      model.onnx              input_ids, attention_mask int64 [batch, chunks, tokens] (all dynamic) -> logits
                              float32 [batch, classes]; weights inside the one file; opset 18
      model.int8.onnx         the same in int8: ONNX Runtime's fused BERT graph, dynamically quantized
      model.packed.onnx       real chunks only: input_ids, attention_mask int64 [chunks, tokens], pool float32
                              [records, chunks] -> logits float32 [records, classes] (see layout.PACKED_ONNX_FILE)
      model.packed.int8.onnx  the same, int8
      model.torchscript.pt    torch.jit.trace of forward(input_ids, attention_mask) -> logits; loads with
                              torch.jit.load alone (no raytune_bsm needed)
      tokenizer/              the tokenizer's files (tokenizer.json is all a serving process needs)
      bsm_model.json          processor settings, class names, hyperparameters, metrics
      manifest.json           written last: "format": "bsm-export", sha256 and size of every other file, library
                              versions, parity and per-precision figures, the time of each step

The graphs are made in `onnx_graphs` (fp32: BERT traced once, by dynamo), `quantize` (int8: from a trace with eager
attention that ONNX Runtime's fusions match) and checked in `parity` (fp32 within
`tolerance` of PyTorch or nothing is published; int8's agreement and metrics recorded); `publish` puts the
finished directory in place, whole or not at all, and never over a directory that is not an earlier export.
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
from typing import Any, Iterator

from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
from raytune_bsm.errors import ConfigError, ExportError
from raytune_bsm.layout import (EXPORT_FORMAT, FORMAT_VERSION, INPUT_NAMES, INT8_ONNX_FILE, MODEL_JSON, ONNX_FILE,
                                OUTPUT_NAME, PACKED_INT8_ONNX_FILE, PACKED_ONNX_FILE, TOKENIZER_DIR, TORCHSCRIPT_FILE,
                                write_manifest)  # fmt: skip
from raytune_bsm.model import onnx_graphs, parity, publish, quantize
from raytune_bsm.model.checkpoint import locate
from raytune_bsm.model.text_bert import TextBertClassifier, load_checkpoint
from raytune_bsm.storage import filesystem, is_uri

log = logging.getLogger(__name__)

# int8 from ONNX Runtime's fused BERT graph (int8 attention): faster than quantizing the dynamo graph as it is, for
# one more trace of BERT (bench/ measures both); False quantizes the dynamo graph.
FUSE_ATTENTION = True
VERSIONED_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "tokenizers", "lightning", "ray",
                      "raytune-bsm")  # fmt: skip


def export_checkpoint(
    checkpoint: str,
    dest: str,
    *,
    val_batches: list[dict] | None = None,
    metrics: dict | None = None,
    hyperparameters: dict | None = None,
    tolerance: float = 1e-4,
) -> dict:
    """Export `checkpoint` (a Lightning .ckpt, or a Ray checkpoint directory holding checkpoint.ckpt) to `dest`
    (a local path or a pyarrow-fs URI). Returns the manifest. A ConfigError for a destination bsm may not
    replace, an ExportError if a check fails; either way nothing is left at `dest` (an earlier export there stays
    as it was) and no temporary directory remains."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    token = uuid.uuid4().hex[:8]
    remote = is_uri(dest)
    try:
        fs, dest_path = filesystem(dest)
    except (ValueError, NotImplementedError, OSError) as e:  # pyarrow: an unknown scheme, a bad URI
        raise ConfigError(f"--to {dest!r} is not a path or a URI bsm can write to ({str(e).splitlines()[0]})") from None
    publish.check_dest(fs, dest_path, dest)

    with tempfile.TemporaryDirectory(prefix="bsm-export-") as scratch:
        with _timed(timings, "load"):
            model = load_checkpoint(locate(checkpoint, Path(scratch)))  # a bad checkpoint fails before any write
        build = Path(scratch) / "export" if remote else Path(f"{dest_path}.tmp-{token}")
        created = [] if remote else publish.missing_parents(build)
        try:
            build.parent.mkdir(parents=True, exist_ok=True)
            build.mkdir()
            manifest = _build(model, build, val_batches, metrics, hyperparameters, tolerance, timings)
            manifest = {**manifest, "source_checkpoint": checkpoint}
            manifest["timings"]["total"] = round(time.perf_counter() - t0, 2)
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


def _build(model: TextBertClassifier, out: Path, val_batches: list[dict] | None, metrics: dict | None,
           hyperparameters: dict | None, tolerance: float, timings: dict[str, float]) -> dict:  # fmt: skip
    """Every file but the manifest, checked; returns the manifest's content."""
    cfg = model.config
    processor = ChunkProcessor(ProcessorConfig.of_model(cfg))
    num_classes = int(model.num_classes)
    example = onnx_graphs.example_inputs(model, processor.pad_id, processor.prefix, processor.suffix)

    with _timed(timings, "onnx"):
        exporter = onnx_graphs.export_graphs(model, example, out / PACKED_ONNX_FILE, out / ONNX_FILE)
    with _timed(timings, "int8"), tempfile.TemporaryDirectory(prefix="bsm-export-") as scratch:
        quantized = None
        if FUSE_ATTENTION:
            packed_example = onnx_graphs.packed_example(example)
            quantized = quantize.quantize_fused(model, packed_example, out / PACKED_INT8_ONNX_FILE,
                                                out / INT8_ONNX_FILE, Path(scratch))  # fmt: skip
        if quantized is None:
            quantized = quantize.quantize_packed(out / PACKED_ONNX_FILE, out / PACKED_INT8_ONNX_FILE,
                                                 out / INT8_ONNX_FILE)  # fmt: skip
    with _timed(timings, "onnx_checker"):
        bct = {n: onnx_graphs.BCT_DIMS for n in INPUT_NAMES}
        onnx_graphs.check_interface(out / ONNX_FILE, bct, num_classes, full=True)
        onnx_graphs.check_interface(out / PACKED_ONNX_FILE, onnx_graphs.PACKED_DIMS, num_classes, full=True)
        onnx_graphs.check_interface(out / INT8_ONNX_FILE, bct, num_classes)
        onnx_graphs.check_interface(out / PACKED_INT8_ONNX_FILE, onnx_graphs.PACKED_DIMS, num_classes)
    with _timed(timings, "torchscript"):
        onnx_graphs.export_torchscript(model, example, out / TORCHSCRIPT_FILE)
    with _timed(timings, "tokenizer"):
        processor.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
        if not (out / TOKENIZER_DIR / "tokenizer.json").is_file():
            raise ExportError(f"tokenizer {cfg['tokenizer']!r} saved no tokenizer.json; a fast tokenizer is required")
        _write_model_json(out / MODEL_JSON, model, processor, hyperparameters, metrics)
    with _timed(timings, "parity"):
        batches = parity.parity_batches(model, processor, val_batches, tuple(example[0].shape))
        checked, precision = parity.check(model, out, batches, tolerance)
    checked["example_input_shape"] = list(example[0].shape)
    checked["distinct_shapes_besides_example"] = len({tuple(s) for s in checked["shapes"]} - {tuple(example[0].shape)})
    return {
        "format": EXPORT_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "exporter": {"onnx": exporter, "opset": onnx_graphs.OPSET, "torchscript": "torch.jit.trace", "int8": quantized,
                     "bct_from_packed": "a hand-written prefix graph in front of the packed graph"},  # fmt: skip
        "example_input_shape": list(example[0].shape),
        "parity": checked,
        "precision": precision,
        "timings": timings,
    }


def _write_model_json(path: Path, model: TextBertClassifier, processor: ChunkProcessor, hyperparameters: dict | None,
                      metrics: dict | None) -> None:  # fmt: skip
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
        "inputs": {n: {"dtype": "int64", "shape": list(onnx_graphs.BCT_DIMS)} for n in INPUT_NAMES},
        "outputs": {OUTPUT_NAME: {"dtype": "float32", "shape": ["batch", num_classes]}},
        "hyperparameters": hyperparameters if hyperparameters is not None else cfg,
        "metrics": metrics or {},
    }
    path.write_text(json.dumps(info, indent=2, default=str) + "\n")


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = round(time.perf_counter() - t, 2)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
