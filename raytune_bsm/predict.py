"""Score dialogues with an exported model (see export.py) on ONNX Runtime. No torch, no transformers.

    p = Predictor("runs/demo/export")
    pred, probs = p.predict_texts(["Where is my parcel?\\nTracking says delivered.", ...])
    predict_file("runs/demo/export", "new_claims.parquet")  # -> new_claims.predictions.parquet

The export's `model.onnx` is checked against its manifest's sha256 before it is loaded. Dialogues are tokenized
and chunked by the same `ChunkProcessor` as in training (settings from `bsm_model.json`, tokenizer from
`tokenizer/tokenizer.json`), batched by length (records of similar padded size together, each batch padded to its
own largest chunk count and chunk length), scored, and returned in their original order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from raytune_bsm.errors import ConfigError, DataError, ExportError

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
MODEL_JSON = "bsm_model.json"
MANIFEST = "manifest.json"
TOKENIZER_JSON = "tokenizer/tokenizer.json"
BLOCK = 8192  # records tokenized (and sorted by length) at a time
OUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".parq": "parquet", ".csv": "csv", ".tsv": "tsv",
               ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}  # fmt: skip


class Predictor:
    """An export directory loaded for scoring: ONNX Runtime session, tokenizer and chunk processor."""

    def __init__(self, export_dir: str, provider: str = "CPUExecutionProvider") -> None:
        import onnxruntime as ort

        from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig

        available = ort.get_available_providers()
        if provider not in available:
            raise ConfigError(
                f"--provider {provider!r} is not available in this onnxruntime; available: {', '.join(available)}"
            )
        self.export_dir = export_dir
        if "://" in export_dir and not export_dir.startswith("file://"):  # s3://, gs://, hdfs://: a local copy
            self._tmp = tempfile.TemporaryDirectory(prefix="bsm-predict-")
            root = download_export(export_dir, Path(self._tmp.name) / "export")
        else:
            root = Path(export_dir.removeprefix("file://")).expanduser()
        if not root.is_dir():
            raise ConfigError(f"export directory {export_dir!r} does not exist")
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise ExportError(f"{export_dir}: no {MANIFEST}: not an export, or an incomplete one")
        try:
            self.manifest = json.loads(manifest_path.read_text())
            entries = {e["path"]: e for e in self.manifest["files"]}
        except (ValueError, KeyError, TypeError) as e:
            raise ExportError(f"{manifest_path}: unreadable manifest ({e})") from None
        for rel in (ONNX_FILE, MODEL_JSON, TOKENIZER_JSON):  # every file this class reads, model.onnx first
            _verify(root, rel, entries)

        self.info = json.loads((root / MODEL_JSON).read_text())
        self.class_names: list[str] = [str(c) for c in self.info["class_names"]]
        self.text_field: str = self.info.get("text_field") or self.info["processor"].get("text_field") or "dialogue"
        settings = self.info["processor"]

        pcfg = ProcessorConfig.of_model(settings)
        self.processor = ChunkProcessor.from_tokenizer_file(pcfg, str(root / TOKENIZER_JSON), int(settings["pad_id"]))
        if self.processor.prefix != list(settings["prefix"]) or self.processor.suffix != list(settings["suffix"]):
            raise ExportError(
                f"{export_dir}: the tokenizer's special tokens {self.processor.prefix}/{self.processor.suffix} differ "
                f"from the export's {settings['prefix']}/{settings['suffix']}"
            )
        self.pad_id = int(settings["pad_id"])

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.provider = provider
        providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
        self.session = ort.InferenceSession(str(root / ONNX_FILE), sess_options=opts, providers=providers)
        names = [i.name for i in self.session.get_inputs()]
        if names != ["input_ids", "attention_mask"]:
            raise ExportError(f"{export_dir}: model.onnx inputs are {names}, expected input_ids, attention_mask")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def predict_texts(
        self,
        dialogues: Sequence[Any],
        *,
        batch_size: int = 32,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dialogues (strings, or lists of message strings; None or empty is fine) -> (predicted class index
        int64 [N], probabilities float64 [N, K]), in the order given."""
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
        n = len(dialogues)
        probs = np.zeros((n, self.num_classes), dtype=np.float64)
        if n == 0:
            if progress:
                progress(0, 0)
            return np.zeros(0, dtype=np.int64), probs
        done = 0
        for block in range(0, n, BLOCK):  # tokenize a block at a time: memory stays bounded for big files
            p = self.processor(dialogues[block : block + BLOCK])
            cost = np.fromiter((len(l) * (int(l.max()) if len(l) else 0) for l in p.lens), np.int64, len(p.lens))
            order = np.argsort(-cost, kind="stable")  # similar sizes together, biggest first
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask = self._pad([p.ids[i] for i in idx], [p.lens[i] for i in idx])
                logits = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
                probs[block + idx] = _softmax(logits.astype(np.float64))
                done += len(idx)
                if progress:
                    progress(done, n)
        return probs.argmax(axis=1).astype(np.int64), probs

    def _pad(self, ids: list[np.ndarray], lens: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Records -> int64 [B, C, T] ids and mask, C and T the batch's own maxima (at least 1 each)."""
        C = max(1, max(len(l) for l in lens))
        T = max(1, max((int(l.max()) for l in lens if len(l)), default=1))
        out_ids = np.full((len(ids), C, T), self.pad_id, dtype=np.int64)
        out_mask = np.zeros((len(ids), C, T), dtype=np.int64)
        for b, (flat, ln) in enumerate(zip(ids, lens)):
            start = 0
            for c, k in enumerate(ln):
                out_ids[b, c, :k] = flat[start : start + k]
                out_mask[b, c, :k] = 1
                start += k
        return out_ids, out_mask


def predict_file(
    export_dir: str,
    data: str,
    out: str | None = None,
    *,
    provider: str = "CPUExecutionProvider",
    batch_size: int = 32,
    id_field: str | None = None,
    text_field: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Score every row of `data` (a Parquet/CSV/JSONL file, a directory of them or a glob) and write `id`,
    `predicted` (the class name) and `prob_<class>` per class to `out` (.parquet, .csv or .jsonl, by its
    extension; default `<data stem>.predictions.parquet` next to a single local data file, else in the current
    directory). The file appears whole or not at all. Returns the output path."""
    import pyarrow as pa

    from raytune_bsm.data.dataset import ID_CANDIDATES, expand_path, read_file

    out = out if out is not None else default_output(data)
    fmt = OUT_FORMATS.get(Path(out.split("?")[0]).suffix.lower())
    if fmt is None:
        raise ConfigError(f"--out {out!r}: unknown output type; use .parquet, .csv or .jsonl")
    predictor = Predictor(export_dir, provider=provider)  # checks the export (and provider) before reading data
    text_field = text_field or predictor.text_field

    texts: list[Any] = []
    ids: list[Any] = []
    files = expand_path(data)
    id_col = id_field
    for i, f in enumerate(files):
        t = read_file(f)
        if i == 0 and id_col is None:
            id_col = next((c for c in ID_CANDIDATES if c in t.column_names), None)
        for col, flag in ((text_field, "--text-field"), (id_col, "--id-field")):
            if col is not None and col not in t.column_names:
                raise DataError(
                    f"{f}: missing column {col!r} (columns are {', '.join(t.column_names) or 'none'}); "
                    f"name the right one with {flag}"
                )
        _check_text_type(t.column(text_field).type, f, text_field)
        texts += t.column(text_field).to_pylist()
        ids += t.column(id_col).to_pylist() if id_col else list(range(len(ids), len(ids) + t.num_rows))

    pred, probs = predictor.predict_texts(texts, batch_size=batch_size, progress=progress)
    names = predictor.class_names
    table = pa.table(
        {
            "id": ids,
            "predicted": pa.array([names[i] for i in pred], pa.string()),
            **{f"prob_{c}": pa.array(probs[:, k], pa.float64()) for k, c in enumerate(names)},
        }
    )
    _write(table, out, fmt)
    log.info("wrote %d predictions to %s", table.num_rows, out)
    return out


def default_output(data: str) -> str:
    """`<stem>.predictions.parquet`: next to a single local data file, else in the current directory."""
    if "://" not in data and Path(data).expanduser().is_file():
        p = Path(data).expanduser()
        if os.access(p.parent, os.W_OK):
            return str(p.with_name(f"{p.stem}.predictions.parquet"))
        return str(Path.cwd() / f"{p.stem}.predictions.parquet")
    name = posixpath.basename(data.rstrip("/"))
    stem = Path(name).stem if name and not any(ch in name for ch in "*?[") else ""
    return str(Path.cwd() / (f"{stem}.predictions.parquet" if stem else "predictions.parquet"))


# ----------------------------------------------------------------------------------------------- helpers


def download_export(uri: str, local: Path) -> Path:
    """Copy what a Predictor reads of an export on a pyarrow filesystem (s3://, gs://, hdfs://) to `local`."""
    import pyarrow.fs as pafs

    from raytune_bsm.storage import filesystem

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise ConfigError(f"export directory {uri!r} does not exist")
    for rel in (MANIFEST, ONNX_FILE, MODEL_JSON, TOKENIZER_JSON):
        target = local / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with fs.open_input_stream(posixpath.join(path, rel)) as src, open(target, "wb") as dst:
                while block := src.read(16 << 20):
                    dst.write(block)
        except FileNotFoundError:
            if rel == MANIFEST:
                raise ExportError(f"{uri}: no {MANIFEST}: not an export, or an incomplete one") from None
            raise ExportError(f"{uri}: {rel} is missing (listed in {MANIFEST})") from None
    return local


def _verify(root: Path, rel: str, entries: dict[str, dict]) -> None:
    """The file's sha256 and size against the manifest; an ExportError naming the checksum if they differ."""
    path = root / rel
    entry = entries.get(rel)
    if entry is None:
        raise ExportError(f"{root}: {rel} is not listed in {MANIFEST}")
    if not path.is_file():
        raise ExportError(f"{root}: {rel} is missing (listed in {MANIFEST})")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    if h.hexdigest() != entry["sha256"]:
        raise ExportError(
            f"{path}: sha256 checksum mismatch ({h.hexdigest()[:16]}... is not the manifest's "
            f"{entry['sha256'][:16]}...): the file is corrupt or was changed after export; re-export the model"
        )


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_text_type(t: Any, path: str, field: str) -> None:
    import pyarrow as pa

    is_str = pa.types.is_string(t) or pa.types.is_large_string(t)
    is_list = (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)
    )
    if not (is_str or is_list or pa.types.is_null(t)):
        raise DataError(f"{path}: column {field!r} has type {t}; a dialogue must be a string or a list of strings")


def _write(table: Any, out: str, fmt: str) -> None:
    """The table -> `out` in `fmt`, through a temporary name and a rename (local) or move (URI)."""
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
    elif fmt in ("csv", "tsv"):
        import pyarrow.csv as pcsv

        sink = pa.BufferOutputStream()
        pcsv.write_csv(table, sink, pcsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ","))
        data = sink.getvalue().to_pybytes()
    else:
        lines = [json.dumps(row, ensure_ascii=False, default=str) for row in table.to_pylist()]
        data = ("\n".join(lines) + "\n" if lines else "").encode()

    if "://" in out and not out.startswith("file://"):
        from raytune_bsm.storage import write_bytes

        write_bytes(data, out)
        return
    path = Path(out.removeprefix("file://")).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
