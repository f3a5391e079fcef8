"""Export a trained checkpoint to a self-contained serving directory, checked for parity before it is published.

    <dest>/
      model.onnx            input_ids, attention_mask int64 [batch, chunks, tokens] (all dynamic) -> logits float32
                            [batch, num_classes]; weights inside the one file; opset 18
      model.torchscript.pt  torch.jit.trace of the same function: forward(input_ids, attention_mask) -> logits;
                            loads with torch.jit.load alone (no raytune_bsm needed)
      tokenizer/            the tokenizer's files (tokenizer.json is all a serving process needs)
      bsm_model.json        processor settings, class names, hyperparameters, metrics
      manifest.json         written last: sha256 and size of every other file, library versions, parity figures

Both runtimes run the model's dense path (`TextBertClassifier.logits(..., dense=True)`): every chunk goes through
BERT, empty chunks are dropped from the mean, so the graph has no data-dependent control flow. Before anything is
published, ONNX Runtime and the reloaded TorchScript module are compared with the PyTorch model's own (sparse)
path on batches of several shapes, including all-padding chunks; a difference above `tolerance` or any changed
predicted label is an `ExportError` and nothing is published.

Publishing: the directory is built under `<dest>.tmp-<random>` and renamed into place. On a local (or NFS)
filesystem that rename is atomic; an existing export at `dest` is moved aside first and deleted after. Object
stores (s3://, gs://) have no atomic directory rename: the files are uploaded under `<dest>.tmp-<random>` and
moved to `dest` one by one with `manifest.json` moved last, so the manifest is the commit marker: a reader must
treat a directory without a manifest, or whose files do not match it, as incomplete.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import pickle
import posixpath
import shutil
import tempfile
import time
import uuid
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from raytune_bsm.errors import ConfigError, ExportError
from raytune_bsm.storage import filesystem, is_uri

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
TOKENIZER_DIR = "tokenizer"
MODEL_JSON = "bsm_model.json"
MANIFEST = "manifest.json"
CHECKPOINT_NAME = "checkpoint.ckpt"  # the file inside a Ray Train checkpoint directory
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
DYNAMIC_DIMS = ("batch", "chunks", "tokens")
OPSET = 18  # the torch.onnx dynamo exporter's native opset; onnxruntime >= 1.14 runs it
FORMAT_VERSION = 1
MAX_VAL_BATCHES = 8  # validation batches used by the parity check (the first ones given)
VERSIONED_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "tokenizers", "lightning", "ray",
                      "raytune-bsm")  # fmt: skip

# Synthetic dialogues for the parity check when no validation batches are given: different lengths, so the
# batches have different chunk counts and chunk lengths, and one empty dialogue (a record with no chunks).
_SHORT = "Where is my order?\nIt was delivered yesterday, here is the tracking."
_MEDIUM = "\n".join(
    [
        "Hi, the blender I ordered arrived with a cracked jar.",
        "Sorry to hear that. Can you send a photo of the damage?",
        "Sure, photo attached. The crack runs along the base and it leaks.",
        "Thanks. I can offer a partial refund of 20 percent or a replacement.",
        "I would prefer a full refund, I do not trust the packaging.",
    ]
)
_LONG = "\n".join(
    f"Message {i}: the buyer says the package never arrived and the seller answers that tracking shows it was "
    f"delivered to the front door on day {i}, with a photo of the parcel and the carrier's signature record."
    for i in range(14)
)
_SYNTHETIC = [_SHORT, _MEDIUM, _LONG, "", _MEDIUM + "\n" + _SHORT, _LONG[: len(_LONG) // 3]]


# --------------------------------------------------------------------------------------------- public API


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
    (a local path or a pyarrow-fs URI). Returns the manifest. Raises `ExportError` if a check fails, in which
    case nothing is left at `dest` (an earlier export there stays as it was) and no temporary directory remains.
    """
    t0 = time.perf_counter()
    token = uuid.uuid4().hex[:8]
    remote = is_uri(dest)
    fs, dest_path = filesystem(dest)
    _check_dest(fs, dest_path, dest)

    with tempfile.TemporaryDirectory(prefix="bsm-export-") as scratch:
        model = _load_model(checkpoint, Path(scratch))  # a bad checkpoint fails before anything is written
        if remote:
            build = Path(scratch) / "export"
        else:
            build = Path(f"{dest_path}.tmp-{token}")
            build.parent.mkdir(parents=True, exist_ok=True)
        try:
            build.mkdir()
            manifest = _build(model, build, val_batches, metrics, hyperparameters, tolerance, checkpoint)
            manifest["export_seconds"] = round(time.perf_counter() - t0, 2)
            _write_json(build / MANIFEST, manifest)  # last: the commit marker
            if remote:
                _publish_remote(fs, build, dest_path, token)
            else:
                _publish_local(build, Path(dest_path), token)
        except BaseException:
            if not remote:
                shutil.rmtree(build, ignore_errors=True)
            raise
    log.info("exported %s to %s in %.1fs", checkpoint, dest, time.perf_counter() - t0)
    return manifest


def read_manifest(export_dir: str) -> dict:
    """The manifest of an export directory (local or URI); an ExportError if it has none."""
    fs, path = filesystem(export_dir)
    try:
        with fs.open_input_stream(posixpath.join(path, MANIFEST)) as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError) as e:
        raise ExportError(f"{export_dir}: no {MANIFEST} (not an export, or an incomplete one): {e}") from None


# ---------------------------------------------------------------------------------------------- building


def _load_model(checkpoint: str, scratch: Path) -> Any:
    """The checkpoint (file, Ray checkpoint directory, either local or a URI) -> the model in eval mode."""
    from raytune_bsm.model.text_bert import load_checkpoint

    if is_uri(checkpoint):
        import pyarrow.fs as pafs

        fs, path = filesystem(checkpoint)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            path = posixpath.join(path, CHECKPOINT_NAME)
            info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise ConfigError(f"checkpoint {checkpoint!r}: no such file (nor a directory holding {CHECKPOINT_NAME})")
        local = scratch / CHECKPOINT_NAME
        with fs.open_input_stream(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 16 << 20)
    else:
        local = Path(checkpoint.removeprefix("file://")).expanduser()
        if local.is_dir():
            if not (local / CHECKPOINT_NAME).is_file():
                found = sorted(p.name for p in local.glob("*.ckpt"))
                raise ConfigError(
                    f"checkpoint {checkpoint!r} is a directory without {CHECKPOINT_NAME}"
                    + (f" (it has {', '.join(found)}; give one of those files)" if found else "")
                )
            local = local / CHECKPOINT_NAME
        elif not local.is_file():
            raise ConfigError(f"checkpoint {checkpoint!r}: no such file or directory")
    try:
        return load_checkpoint(local).eval()
    except (KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise ExportError(
            f"checkpoint {checkpoint!r} is not a bsm Lightning checkpoint ({e.__class__.__name__}: {e})"
        ) from None


def _build(
    model: Any,
    out: Path,
    val_batches: list[dict] | None,
    metrics: dict | None,
    hyperparameters: dict | None,
    tolerance: float,
    source: str,
) -> dict:
    import torch

    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig

    cfg = model.config
    processor = ChunkProcessor(ProcessorConfig.of_model(cfg))
    num_classes = int(model.num_classes)
    class_names = [str(c) for c in (cfg.get("class_names") or range(num_classes))]
    wrapper = _logits_module(model)
    example = _example_inputs(processor, model)
    timings: dict[str, float] = {}

    with torch.no_grad(), _quiet():
        t = time.perf_counter()
        exporter = _export_onnx(wrapper, example, out / ONNX_FILE)
        timings["onnx_seconds"] = round(time.perf_counter() - t, 2)
        _check_onnx(out / ONNX_FILE, num_classes)

        t = time.perf_counter()
        _export_torchscript(wrapper, model, example, out / TORCHSCRIPT_FILE)
        timings["torchscript_seconds"] = round(time.perf_counter() - t, 2)

    processor.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    if not (out / TOKENIZER_DIR / "tokenizer.json").is_file():
        raise ExportError(f"tokenizer {cfg['tokenizer']!r} saved no tokenizer.json; a fast tokenizer is required")

    settings = processor.settings()
    _write_json(
        out / MODEL_JSON,
        {
            "format": "bsm-model",
            "format_version": FORMAT_VERSION,
            "text_field": cfg["text_name"],
            "label_field": cfg["label_name"],
            "id_field": cfg.get("id_name"),
            "class_names": class_names,
            "num_classes": num_classes,
            "processor": {**settings, "text_field": cfg["text_name"]},
            "inputs": {n: {"dtype": "int64", "shape": list(DYNAMIC_DIMS)} for n in INPUT_NAMES},
            "outputs": {OUTPUT_NAME: {"dtype": "float32", "shape": ["batch", num_classes]}},
            "hyperparameters": hyperparameters if hyperparameters is not None else cfg,
            "metrics": metrics or {},
        },
    )

    t = time.perf_counter()
    parity = _parity(model, processor, out, val_batches, tuple(example[0].shape), tolerance)
    timings["parity_seconds"] = round(time.perf_counter() - t, 2)

    return {
        "format": "bsm-export",
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source_checkpoint": source,
        "files": _file_entries(out),
        "versions": _versions(),
        "exporter": {**exporter, "torchscript": "torch.jit.trace"},
        "example_input_shape": list(example[0].shape),
        "parity": parity,
        "timings": timings,
    }


def _logits_module(model: Any) -> Any:
    """forward(input_ids, attention_mask) -> logits through the model's static (dense) path, as an nn.Module
    (defined here so that importing this module does not import torch)."""
    import torch

    class LogitsModule(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model.logits(input_ids, attention_mask, dense=True)

    return LogitsModule(model).eval()


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' chatter (deprecation notes, tracer warnings about transformers' shape checks that
    do not change the graph, 'torchvision is not installed'); the parity check is what tells the export is
    right."""
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


def _example_inputs(processor: Any, model: Any) -> tuple[Any, Any]:
    """[2, 3, 8] ids and mask with partial padding and an all-padding chunk, so that the traced graph keeps the
    attention mask (transformers skips it for an all-ones mask) and the empty-chunk handling. No dimension is 1
    (torch.export would specialise it) and the shape is one the parity check does not use."""
    import torch

    B, C, T = 2, 3, 8
    vocab = int(model.bert.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    lo = min(1000, max(1, vocab // 4))
    content = torch.randint(lo, vocab, (B, C, T), generator=g)
    lengths = [[8, 5, 0], [6, 0, 0]]
    ids = torch.full((B, C, T), processor.pad_id, dtype=torch.int64)
    mask = torch.zeros((B, C, T), dtype=torch.int64)
    pre, suf = processor.prefix, processor.suffix
    for b in range(B):
        for c in range(C):
            n = lengths[b][c]
            if n:
                row = pre + content[b, c, : n - len(pre) - len(suf)].tolist() + suf
                ids[b, c, :n] = torch.tensor(row[:n])
                mask[b, c, :n] = 1
    return ids, mask


def _export_onnx(wrapper: Any, example: tuple[Any, Any], path: Path) -> dict[str, Any]:
    """torch.onnx.export with the torch.export-based (dynamo) exporter; the TorchScript-based one is deprecated in
    torch >= 2.9 and only a fallback here if the dynamo exporter fails."""
    import torch

    try:
        batch, chunks, tokens = (torch.export.Dim(n) for n in DYNAMIC_DIMS)
        shapes = {n: {0: batch, 1: chunks, 2: tokens} for n in INPUT_NAMES}
        torch.onnx.export(
            wrapper,
            example,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,  # the weights stay inside the one .onnx file (models under 2 GB)
            optimize=True,
            verbose=False,
        )
        return {"onnx": "torch.onnx.export(dynamo=True)", "opset": OPSET}
    except Exception as e:  # noqa: BLE001 - any exporter failure: try the legacy exporter before giving up
        log.warning("the dynamo ONNX exporter failed (%s: %s); trying the TorchScript-based exporter",
                    e.__class__.__name__, str(e).splitlines()[0] if str(e) else "")  # fmt: skip
        path.unlink(missing_ok=True)
    axes = {n: dict(enumerate(DYNAMIC_DIMS)) for n in INPUT_NAMES}
    axes[OUTPUT_NAME] = {0: "batch"}
    try:
        torch.onnx.export(
            wrapper,
            example,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"ONNX export failed with both exporters: {e.__class__.__name__}: {e}") from e
    return {"onnx": "torch.onnx.export(dynamo=False)", "opset": 17}


def _check_onnx(path: Path, num_classes: int) -> None:
    """The ONNX checker (full, with shape inference), and the interface: names, dtypes, dynamic dims."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001 - onnx raises several checker error types
        raise ExportError(f"the exported ONNX model fails onnx.checker: {e}") from None
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {i.name: i for i in graph.input}
    outputs = {o.name: o for o in graph.output}
    problems = []
    if list(inputs) != list(INPUT_NAMES):
        problems.append(f"inputs are {list(inputs)}, expected {list(INPUT_NAMES)}")
    if list(outputs) != [OUTPUT_NAME]:
        problems.append(f"outputs are {list(outputs)}, expected [{OUTPUT_NAME!r}]")
    for name, vi in inputs.items():
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.INT64:
            problems.append(f"input {name} has elem_type {tt.elem_type}, expected int64")
        dims = [d.dim_param for d in tt.shape.dim]
        if len(dims) != 3 or not all(dims):
            problems.append(f"input {name} has dims {dims}, expected three dynamic dims")
    for name, vi in outputs.items():
        tt = vi.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in tt.shape.dim]
        ok = tt.elem_type == onnx.TensorProto.FLOAT and len(dims) == 2 and dims[1] == num_classes
        if not (ok and tt.shape.dim[0].dim_param):
            problems.append(
                f"output {name} is elem_type {tt.elem_type} dims {dims}, expected float32 [batch, {num_classes}]"
            )
    if problems:
        raise ExportError("the exported ONNX model has the wrong interface: " + "; ".join(problems))


def _export_torchscript(wrapper: Any, model: Any, example: tuple[Any, Any], path: Path) -> None:
    import torch

    check = [_shrink(example, 1, 2, 5), _grow(example, extra_chunks=2, extra_tokens=3)]
    # Lightning's `trainer` property raises outside a Trainer, and tracing probes every attribute of every
    # submodule; this flag is Lightning's own switch for scripting/tracing a LightningModule.
    model._jit_is_scripting = True
    try:
        traced = torch.jit.trace(wrapper, example, check_trace=True, check_inputs=check, check_tolerance=1e-4)
    except Exception as e:  # noqa: BLE001 - TracingCheckError and friends
        detail = str(e) if len(str(e)) <= 2000 else str(e)[:2000] + " ..."
        raise ExportError(f"TorchScript trace failed or does not generalise to other shapes: {detail}") from None
    finally:
        del model._jit_is_scripting
    torch.jit.save(traced, str(path))


def _shrink(example: tuple[Any, Any], B: int, C: int, T: int) -> tuple[Any, Any]:
    ids, mask = example
    return ids[:B, :C, :T].clone(), mask[:B, :C, :T].clone()


def _grow(example: tuple[Any, Any], extra_chunks: int, extra_tokens: int) -> tuple[Any, Any]:
    """Append all-padding chunks and padding token columns (pad id 0 does not matter: the mask is 0 there)."""
    import torch.nn.functional as F

    ids, mask = example
    pad = (0, extra_tokens, 0, extra_chunks)
    return F.pad(ids, pad, value=0), F.pad(mask, pad, value=0)


# ------------------------------------------------------------------------------------------------ parity


def _parity_batches(
    model: Any, processor: Any, val_batches: list[dict] | None, example_shape: tuple[int, ...]
) -> list[tuple[Any, Any, str]]:
    """(ids, mask, where-from) batches: the given validation batches (or synthetic ones), plus copies with
    all-padding chunks and padding columns appended, plus synthetic ones until there are >= 3 shapes that differ
    from the example input."""
    import torch

    max_pos = int(model.bert.config.max_position_embeddings)
    out: list[tuple[Any, Any, str]] = []
    for i, b in enumerate((val_batches or [])[:MAX_VAL_BATCHES]):
        ids = torch.as_tensor(b[model.ids_key]).detach().cpu().long()
        mask = torch.as_tensor(b[model.mask_key]).detach().cpu().long()
        out.append((ids, mask, f"val[{i}]"))
    synthetic = _synthetic_batches(processor)
    if not out:
        out = synthetic
    for ids, mask, src in list(out[:2]):  # (at most 4 records of each: the point is the shape, not the volume)
        extra_tokens = 3 if ids.shape[2] + 3 <= max_pos else 0
        g_ids, g_mask = _grow((ids[:4], mask[:4]), extra_chunks=2, extra_tokens=extra_tokens)
        out.append((g_ids, g_mask, f"{src}[:4]+2 empty chunks+{extra_tokens} pad tokens"))
    # a record whose chunks are all padding, in a batch with others (the model gives it the head's bias)
    ids, mask, src = out[0]
    if ids.shape[0] > 1:
        mask = mask[:3].clone()
        mask[-1] = 0
        out.append((ids[:3], mask, f"{src}[:3] with its last record emptied"))
    shapes = {tuple(i.shape) for i, _, _ in out} - {tuple(example_shape)}
    for b in synthetic:
        if len(shapes) >= 3:
            break
        if tuple(b[0].shape) not in shapes and tuple(b[0].shape) != tuple(example_shape):
            out.append(b)
            shapes.add(tuple(b[0].shape))
    out = [b for b in out if bool(b[1].any())]  # the sparse reference path needs one non-empty chunk
    return out


def _synthetic_batches(processor: Any) -> list[tuple[Any, Any, str]]:
    from raytune_bsm.data.dataset import Collate, EncodedDataset

    p = processor(_SYNTHETIC)
    ds = EncodedDataset(p.ids, p.lens, np.zeros(len(_SYNTHETIC), dtype=np.int64), list(range(len(_SYNTHETIC))))
    collate = Collate(ds, "x", "y", None, processor.pad_id)
    out = []
    for idx in ([1, 3, 0], [0], [2, 5], [4, 0]):
        b = collate(idx)
        out.append((b[collate.ids_key], b[collate.mask_key], f"synthetic{idx}"))
    return out


def _parity(
    model: Any,
    processor: Any,
    out: Path,
    val_batches: list[dict] | None,
    example_shape: tuple[int, ...],
    tolerance: float,
) -> dict[str, Any]:
    """ONNX Runtime and the reloaded TorchScript file against the PyTorch model's sparse path."""
    import onnxruntime as ort
    import torch

    batches = _parity_batches(model, processor, val_batches, example_shape)
    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    with _quiet():  # torch.jit.load's deprecation note
        scripted = torch.jit.load(str(out / TORCHSCRIPT_FILE), map_location="cpu").eval()
    figures = {
        r: {"max_abs_diff": 0.0, "labels_agree": True, "label_mismatches": 0} for r in ("onnxruntime", "torchscript")
    }
    records = 0
    with torch.no_grad():
        for ids, mask, _ in batches:
            ref = model.logits(ids, mask).float().numpy()
            feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
            got = {
                "onnxruntime": session.run([OUTPUT_NAME], feed)[0],
                "torchscript": scripted(ids, mask).float().numpy(),
            }
            records += len(ref)
            for runtime, logits in got.items():
                f = figures[runtime]
                if logits.shape != ref.shape:
                    raise ExportError(f"parity: {runtime} gave logits of shape {logits.shape}, PyTorch {ref.shape}")
                diff = float(np.max(np.abs(logits - ref))) if ref.size else 0.0
                if not np.isfinite(diff):
                    diff = float("inf")
                f["max_abs_diff"] = max(f["max_abs_diff"], diff)
                mismatches = int((logits.argmax(-1) != ref.argmax(-1)).sum())
                f["label_mismatches"] += mismatches
                f["labels_agree"] = f["labels_agree"] and mismatches == 0
    parity = {
        **figures,
        "tolerance": tolerance,
        "reference": "PyTorch eval, logits(dense=False)",
        "records": records,
        "shapes": [list(ids.shape) for ids, _, _ in batches],
        "sources": [src for _, _, src in batches],
        "example_input_shape": list(example_shape),
        "distinct_shapes_besides_example": len({tuple(i.shape) for i, _, _ in batches} - {tuple(example_shape)}),
        "with_padding_chunks": any(bool((~m.bool().any(-1)).any()) for _, m, _ in batches),
    }
    failed = [r for r, f in figures.items() if not (f["max_abs_diff"] <= tolerance and f["labels_agree"])]
    if failed:
        detail = "; ".join(
            f"{r}: max |Δ logits| {figures[r]['max_abs_diff']:.3g}, "
            f"{figures[r]['label_mismatches']} predicted label(s) differ" for r in failed
        )
        raise ExportError(
            f"parity check failed (tolerance {tolerance:g}) against PyTorch on {records} records in shapes "
            f"{parity['shapes']}: {detail}; nothing was published"
        )
    log.info(
        "parity on %d records, shapes %s: onnxruntime max |Δ| %.2e, torchscript max |Δ| %.2e, labels agree",
        records, parity["shapes"], figures["onnxruntime"]["max_abs_diff"], figures["torchscript"]["max_abs_diff"],
    )  # fmt: skip
    return parity


# ----------------------------------------------------------------------------------- manifest and publishing


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


def _file_entries(root: Path) -> list[dict[str, Any]]:
    """Every file under `root` but the manifest: relative path, sha256, size in bytes."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p != root / MANIFEST)
    return [{"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size} for p in files]


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def _check_dest(fs: Any, path: str, dest: str) -> None:
    """An existing `dest` is replaced only if it is an earlier export (or empty): never a user's other data."""
    import pyarrow.fs as pafs

    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return
    if info.type != pafs.FileType.Directory:
        raise ConfigError(f"export destination {dest!r} exists and is not a directory")
    names = {posixpath.basename(i.path) for i in fs.get_file_info(pafs.FileSelector(path))}
    if names and not names & {MANIFEST, MODEL_JSON}:
        raise ConfigError(
            f"export destination {dest!r} exists and is not a bsm export (no {MANIFEST}); refusing to replace it: "
            "give a new or empty directory"
        )


def _publish_local(build: Path, dest: Path, token: str) -> None:
    """Rename the finished directory into place; an earlier export is moved aside first and deleted after."""
    if not dest.exists():
        os.rename(build, dest)
        return
    old = dest.with_name(f"{dest.name}.old-{token}")
    os.rename(dest, old)
    try:
        os.rename(build, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _publish_remote(fs: Any, build: Path, dest: str, token: str) -> None:
    """Upload under `<dest>.tmp-<token>`, then move into `dest`. Object stores cannot rename a directory
    atomically: files are moved one by one, the manifest last (a reader checks it), and an earlier export's
    manifest is deleted first so no reader takes a half-replaced directory for complete."""
    import pyarrow.fs as pafs

    tmp = f"{dest}.tmp-{token}"
    files = sorted((p for p in build.rglob("*") if p.is_file()), key=lambda p: (p.name == MANIFEST, str(p)))
    try:
        for p in files:
            rel = p.relative_to(build).as_posix()
            target = posixpath.join(tmp, rel)
            fs.create_dir(posixpath.dirname(target), recursive=True)
            with open(p, "rb") as src, fs.open_output_stream(target) as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
        if fs.get_file_info(dest).type != pafs.FileType.NotFound:
            try:
                fs.delete_file(posixpath.join(dest, MANIFEST))
            except (FileNotFoundError, OSError):
                pass
            fs.delete_dir(dest)
        try:
            fs.move(tmp, dest)  # a real rename where the filesystem has one (HDFS)
            return
        except (NotImplementedError, OSError):
            pass  # S3/GCS: no directory move; file by file below, the manifest last
        for p in files:
            rel = p.relative_to(build).as_posix()
            fs.create_dir(posixpath.dirname(posixpath.join(dest, rel)), recursive=True)
            fs.move(posixpath.join(tmp, rel), posixpath.join(dest, rel))
    finally:
        try:
            fs.delete_dir(tmp)
        except (FileNotFoundError, OSError):
            pass
