"""Score dialogues with an exported model (see model/export.py) on ONNX Runtime. No torch, no transformers.

    p = Predictor("runs/demo/export")
    pred, probs = p.predict_texts(["Where is my parcel?\\nTracking says delivered.", ...])
    predict_file("runs/demo/export", "new_claims.parquet")  # -> new_claims.predictions.parquet

Every file read of the export is checked against its manifest's sha256 first (layout.verify_file). The graph is
the chunk graph and its head when the export has them (the chunks of a block of records sorted by length, see
scoring/batching.py), else the packed one, else `model.onnx`; int8 or fp32 per `precision` (scoring/sessions.py). Dialogues are tokenized and chunked by the training-time
`ChunkProcessor` (settings from `bsm_model.json`, tokenizer from `tokenizer/tokenizer.json`) on a background
thread while the previous block is scored; results come back in the order given. Files stream: a block of rows
is read, scored and written before the next one is read (scoring/files.py), so memory stays flat.

A model with side features (`bsm_model.json` "features") reads those columns too, raw: nulls are NaN and the
graph imputes, clips and standardizes them as in training; a file without one of them is an error.
"""

from __future__ import annotations

import json
import logging
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import pyarrow as pa

from raytune_bsm import layout, storage
from raytune_bsm.config import check_field_roles
from raytune_bsm.data import features as side
from raytune_bsm.data.columns import plain
from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
from raytune_bsm.data.readers import list_files
from raytune_bsm.data.splits import check_text_type
from raytune_bsm.errors import ConfigError, DataError, ExportError
from raytune_bsm.graphs import GraphKind
from raytune_bsm.scoring.batching import Plan, plan_block, run_plan
from raytune_bsm.scoring.files import (
    OutputFile,
    check_output,
    column_names,
    default_output,
    id_column,
    output_format,
    predictions_table,
    read_batches,
    total_rows,
)
from raytune_bsm.scoring.sessions import INPUTS, Scorer, choose_graph, streams_for

log = logging.getLogger(__name__)

BLOCK = 8192  # records read at a time
PIECE = 1024  # records tokenized and scored at a time (grouped by length within)
FIRST_PIECE = 32  # the first piece: scoring starts after tokenizing this many
T = TypeVar("T")
U = TypeVar("U")


class Predictor:
    """An export loaded for scoring: its ONNX Runtime sessions (the graph, and the chunk graph's head; created
    once), the tokenizer and the processor."""

    def __init__(
        self,
        export_dir: str,
        provider: str = "CPUExecutionProvider",
        *,
        precision: str = "auto",
        threads: int | None = None,
    ) -> None:
        self.export_dir = export_dir
        root, self.manifest = self._open(export_dir, precision)
        self.choice = choose_graph(self.manifest, precision)
        entries = {e["path"]: e for e in self.manifest["files"]}
        for rel in (*self.choice.files, layout.MODEL_JSON, layout.TOKENIZER_JSON):  # every file this class reads
            if rel not in entries:
                raise ExportError(f"{export_dir}: {rel} is not listed in {layout.MANIFEST}; re-export the model")
            layout.verify_file(root / rel, entries[rel])

        self.info = json.loads((root / layout.MODEL_JSON).read_text())
        self.class_names: list[str] = [str(c) for c in self.info["class_names"]]
        self.text_field: str = self.info.get("text_field") or self.info["processor"].get("text_field") or "dialogue"
        settings = self.info["processor"]
        self.pad_id = int(settings["pad_id"])
        pcfg = ProcessorConfig.of_model(settings)
        self.processor = ChunkProcessor.from_tokenizer_file(pcfg, str(root / layout.TOKENIZER_JSON), self.pad_id)
        if self.processor.prefix != list(settings["prefix"]) or self.processor.suffix != list(settings["suffix"]):
            raise ExportError(
                f"{export_dir}: the tokenizer's special tokens {self.processor.prefix}/{self.processor.suffix} differ "
                f"from the export's {settings['prefix']}/{settings['suffix']}"
            )
        feats = self.info.get("features") or {}
        self.feature_names: list[str] = list(feats.get("names") or [])  # columns read next to the text, in order
        self.features_as_text = feats.get("fusion") == "text"  # written into the dialogue, no graph input
        self.scorer = Scorer(str(root / self.choice.file), provider, threads, streams_for(self.choice.kind))
        self.head = Scorer(str(root / self.choice.head), provider, threads, streams=1) if self.choice.head else None
        self.provider = provider
        want = INPUTS[self.choice.kind] + (
            [side.SIDE_INPUT] if self.side_input and self.choice.kind == GraphKind.BCT else []
        )
        if self.scorer.input_names != want:
            raise ExportError(f"{export_dir}: {self.choice.file} inputs are {self.scorer.input_names}, expected {want}")
        self.real = self.slots = 0  # token slots scored so far: real tokens, all
        # Said once the first block scored (predict_file), so a bad data file is one error line, not two.
        self.summary = (
            f"scoring with {self.choice.file} ({self.choice.precision}; {self.choice.why}), "
            f"{self.scorer.threads} threads, {self.scorer.streams} call(s) at a time"
        )

    def _open(self, export_dir: str, precision: str) -> tuple[Path, dict[str, Any]]:
        """(a local directory holding the export, its manifest); of a remote export, what is read is copied to a
        temporary directory (verified), the graph once the manifest has told which one."""
        if storage.is_uri(export_dir):
            self._tmp = tempfile.TemporaryDirectory(prefix="bsm-predict-")
            root = Path(self._tmp.name) / "export"
            manifest = layout.download_export(export_dir, Path(self._tmp.name) / "manifest", only=[])
            graphs = choose_graph(manifest, precision).files
            return root, layout.download_export(export_dir, root, [*graphs, layout.MODEL_JSON, layout.TOKENIZER_JSON])
        root = Path(export_dir.removeprefix("file://")).expanduser()
        if not root.is_dir():
            raise ConfigError(f"export directory {export_dir!r} does not exist")
        if not (root / layout.MANIFEST).is_file():
            raise ExportError(f"{export_dir}: no {layout.MANIFEST}: not an export, or an incomplete one")
        return root, layout.download_export(str(root), None, only=[])  # the manifest, never through a link

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def real_fraction(self) -> float:
        """The fraction of the token slots computed so far that held a real token."""
        return self.real / self.slots if self.slots else 1.0

    @property
    def side_input(self) -> bool:
        """The graphs take the side features as an input (`side_features`)."""
        return bool(self.feature_names) and not self.features_as_text

    def calls(self, dialogues: Sequence[Any], batch_size: int, features: np.ndarray | None = None) -> Plan:
        """Tokenize a block of dialogues and cut it into session calls (thread-safe: touches no state).
        `batch_size`: records per call, or chunks per call for the chunk graph. `features`: the records' raw
        side features float32 [n, F] in `feature_names` order (NaN: missing), for a model that reads them."""
        if self.feature_names:
            if features is None or features.shape != (len(dialogues), len(self.feature_names)):
                got = "none" if features is None else f"shape {features.shape}"
                raise ConfigError(
                    f"this model reads side features {self.feature_names}: give them as [{len(dialogues)}, "
                    f"{len(self.feature_names)}] (got {got})"
                )
            features = np.asarray(features, np.float32)
            if self.features_as_text:
                dialogues, features = side.as_text(dialogues, features, self.feature_names), None
        p = self.processor(dialogues)
        return plan_block(p.ids, p.lens, self.pad_id, batch_size, self.choice.kind, features, self.scorer.streams)

    def block_inputs(self, batch: pa.RecordBatch | pa.Table, text_field: str) -> tuple[list[Any], np.ndarray | None]:
        """(dialogues, raw side features [n, F] or None) of a block read with `scoring.files.read_batches` (or a
        Ray Data batch)."""
        x = side.to_matrix(batch, self.feature_names) if self.feature_names else None
        return batch.column(text_field).to_pylist(), x

    def check_columns(self, names: Sequence[str], where: str) -> None:
        """A scored file has every side-feature column the model reads (one line naming the file and column)."""
        missing = [n for n in self.feature_names if n not in names]
        if missing:
            raise DataError(
                f"{where}: missing feature column {missing[0]!r}, which the model reads "
                f"(columns are {', '.join(names) or 'none'})"
            )

    def score(self, n: int, plan: Plan, on_call: Callable[[int], None] | None = None) -> np.ndarray:
        """Run a block's calls -> probabilities float64 [n, K] in the block's order. `on_call(k)`: k more
        records done."""
        if n != plan.n:
            raise ValueError(f"the plan holds {plan.n} records, not {n}")
        if n == 0:
            return np.zeros((0, self.num_classes), dtype=np.float64)
        logits = run_plan(plan, self.scorer, self.head, on_call)
        for call in plan.calls:
            self.real, self.slots = self.real + call.real, self.slots + call.slots
        return _softmax(logits.astype(np.float64))

    def predict_texts(
        self,
        dialogues: Sequence[Any],
        *,
        batch_size: int = 32,
        progress: Callable[[int, int], None] | None = None,
        features: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dialogues (strings, or lists of message strings; None or empty is fine) -> (predicted class index
        int64 [N], probabilities float64 [N, K]), in the order given. `features`: raw side features [N, F] in
        `feature_names` order (NaN: missing), for a model that reads them."""
        _check_batch_size(batch_size)
        n, done = len(dialogues), [0]
        if n == 0:
            if progress:
                progress(0, 0)
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.num_classes), dtype=np.float64)

        def on_call(k: int) -> None:
            done[0] += k
            if progress:
                progress(done[0], n)

        blocks = (
            (dialogues[s : s + BLOCK], features[s : s + BLOCK] if features is not None else None)
            for s in range(0, n, BLOCK)
        )
        parts = [
            self.score(len(b), calls, on_call)
            for (b, _), calls in pipelined(blocks, lambda b: (b, self.calls(b[0], batch_size, b[1])))
        ]
        probs = np.concatenate(parts)
        return probs.argmax(axis=1).astype(np.int64), probs


def predict_file(
    export_dir: str,
    data: str,
    out: str | None = None,
    *,
    provider: str = "CPUExecutionProvider",
    batch_size: int = 32,
    id_field: str | None = None,
    text_field: str | None = None,
    precision: str = "auto",
    threads: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> str:
    """Score every row of `data` (a Parquet/CSV/JSONL file, a directory of them or a glob; local or a URI) and
    write `id`, `predicted` (the class name) and `prob_<class>` per class to `out` (.parquet, .csv or .jsonl, by
    its extension; default `<data stem>.predictions.parquet` next to a single local data file, else in the
    current directory), a block at a time. The file appears whole or not at all; an existing one is replaced
    only with `overwrite`, the input never. `progress(done, total)`: total is None when the files do not say it
    (CSV, JSON Lines). Returns the output path."""
    _check_batch_size(batch_size)
    out = out if out is not None else default_output(data)
    fmt = output_format(out)
    inputs = list_files(data)
    check_output(out, data, inputs, overwrite)
    storage.check_writable(out, "--out")  # before any row is scored
    predictor = Predictor(export_dir, provider=provider, precision=precision, threads=threads)
    text_field = text_field or predictor.text_field
    id_col, id_name, id_note = id_column(id_field, predictor.info.get("id_field"), column_names(inputs[0]))
    check_field_roles([("--text-field", text_field), ("--id-field", id_col)])  # the export's text field too
    columns = [text_field] + ([id_col] if id_col else []) + predictor.feature_names
    for inp in inputs if predictor.feature_names else []:
        predictor.check_columns(column_names(inp), inp.name)
    total = total_rows(inputs)
    done = [0]

    def on_call(k: int) -> None:
        done[0] += k
        if progress:
            progress(done[0], total)

    def prepare(item: tuple[Any, pa.RecordBatch]) -> tuple[Any, pa.RecordBatch, Plan]:
        inp, batch = item
        check_text_type(batch.column(0).type, inp.name, text_field)
        side.check_types(batch.schema, predictor.feature_names, inp.name)
        texts, x = predictor.block_inputs(batch, text_field)
        return inp, batch, predictor.calls(texts, batch_size, x)

    writer = OutputFile(out, fmt)
    try:
        row = 0
        for inp, batch, calls in pipelined(pieces(inputs, columns), prepare):
            probs = predictor.score(batch.num_rows, calls, on_call)
            ids = plain(batch.column(1)) if id_col else pa.array(np.arange(row, row + batch.num_rows, dtype=np.int64))
            writer.write(predictions_table(ids, probs, predictor.class_names, writer.schema, inp.name, id_col, id_name))
            if row == 0:
                log.info("%s; %s", predictor.summary, id_note)
            row += batch.num_rows
        writer.commit(
            predictions_table(
                pa.array([], pa.int64()),
                np.zeros((0, predictor.num_classes)),
                predictor.class_names,
                None,
                "",
                None,
                id_name,
            ).schema
        )
    except BaseException:
        writer.abort()
        raise
    log.info("wrote %d predictions to %s (%.0f%% of token slots real)", row, out, 100 * predictor.real_fraction)
    return out


def pieces(inputs: list[Any], columns: list[str]) -> Iterator[tuple[Any, pa.RecordBatch]]:
    """(input file, its next records) in pieces of FIRST_PIECE records, doubling up to PIECE: the first call is
    scored after tokenizing a few records, and from then on the tokenizer works ahead of the session."""
    size = FIRST_PIECE
    for inp in inputs:
        for batch in read_batches(inp, columns, BLOCK):
            start = 0
            while start < batch.num_rows:
                yield inp, batch.slice(start, size)
                start, size = start + size, min(2 * size, PIECE)


def pipelined(items: Iterable[T], prepare: Callable[[T], U], depth: int = 2) -> Iterator[U]:
    """`prepare(item)` for every item on a background thread, at most `depth` items ahead of the consumer, so
    reading and tokenizing (the Rust tokenizer and pyarrow release the GIL) overlap with scoring. An error in
    the thread is raised here; stopping early stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((True, prepare(item)))
            q.put((True, end))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            q.put((False, e))

    thread = threading.Thread(target=work, name="bsm-tokenize", daemon=True)
    thread.start()
    try:
        while True:
            ok, value = q.get()
            if not ok:
                raise value
            if value is end:
                return
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # let a blocked put() finish so the thread sees `stop`
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


# ----------------------------------------------------------------------------------------------- helpers


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
