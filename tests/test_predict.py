"""Prediction from an export on ONNX Runtime: same answers as the PyTorch model, real files in and out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_ENCODER, write_parquet

from raytune_bsm.data.batching import Collate, EncodedDataset
from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
from raytune_bsm.demo.generator import make_dialogues
from raytune_bsm.errors import ConfigError, DataError, ExportError
from raytune_bsm.model.export import export_checkpoint
from raytune_bsm.model.text_bert import TextBertClassifier
from raytune_bsm.scoring.predict import Predictor, predict_file

CLASSES = ["refund", "partial", "reversed"]


_BUILT: dict[str, SimpleNamespace] = {}  # the export is built once per session (test_predict_*.py import it)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A 3-class tiny model saved as {state_dict, hyper_parameters} and exported (synthetic parity batches),
    and a Parquet file of demo dialogues with a few empty ones."""
    if "export" not in _BUILT:
        _BUILT["export"] = _build_export(tmp_path_factory)
    return _BUILT["export"]


def _build_export(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = TextBertClassifier(
        {
            "text_name": "dialogue",
            "label_name": "y",
            "tokenizer": "all-MiniLM-L6-v2",
            "encoder_config": TINY_ENCODER,
            "is_binary": False,
            "num_classes": 3,
            "class_names": CLASSES,
            "max_chunks": 3,
            "max_tokens": 24,
            "chunk_pooling": "mean",
        }  # the export tests use the pooler; this covers mean pooling end to end
    ).eval()
    ckpt = root / "model.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": json.loads(json.dumps(dict(model.hparams)))}, ckpt
    )
    dest = root / "export"
    export_checkpoint(str(ckpt), str(dest))

    table = make_dialogues(45, seed=2)
    texts = table.column("dialogue").to_pylist()
    texts[3], texts[17], texts[30] = "", None, "   \n  "  # empty dialogues are scored too (zero chunks)
    ids = table.column("order_id").to_pylist()
    data = write_parquet(root / "data" / "claims.parquet", order_id=ids, dialogue=texts)
    return SimpleNamespace(root=root, dest=dest, model=model, data=data, texts=texts, ids=ids)


def pytorch_probs(model, texts: list, batch_size: int = 7) -> np.ndarray:
    """The reference: the training-time processor and collate, the model's normal (sparse) path."""
    processor = ChunkProcessor(ProcessorConfig(max_chunks=3, max_tokens=24))
    p = processor(texts)
    ds = EncodedDataset(p.ids, p.lens, np.zeros(len(texts), dtype=np.int64), list(range(len(texts))))
    collate = Collate(ds, "dialogue", "y", None, processor.pad_id)
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            b = collate(list(range(start, min(start + batch_size, len(texts)))))
            out.append(model.logits(b[collate.ids_key], b[collate.mask_key]).softmax(-1).double().numpy())
    return np.concatenate(out)


def test_predict_file_matches_pytorch_for_every_row(exported):
    calls: list[tuple[int, int]] = []
    out = predict_file(
        str(exported.dest), str(exported.data), batch_size=8, overwrite=True, progress=lambda d, n: calls.append((d, n))
    )
    assert out == str(exported.data.with_name("claims.predictions.parquet"))
    t = pq.read_table(out)
    assert t.column_names == ["id", "predicted"] + [f"prob_{c}" for c in CLASSES]
    assert t.column("id").to_pylist() == exported.ids  # the order_id column, in the file's order
    probs = np.stack([t.column(f"prob_{c}").to_numpy() for c in CLASSES], axis=1)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    ref = pytorch_probs(exported.model, exported.texts)
    assert np.abs(probs - ref).max() <= 1e-4
    assert t.column("predicted").to_pylist() == [CLASSES[i] for i in ref.argmax(1)]
    assert calls[-1] == (45, 45) and len(calls) > 4 and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_predict_texts_returns_indices_and_probabilities_in_order(exported):
    p = Predictor(str(exported.dest))
    texts = exported.texts[:10][::-1] + [["Buyer: where is it?", "Seller: shipped today."]]
    pred, probs = p.predict_texts(texts, batch_size=4)
    assert pred.shape == (11,) and probs.shape == (11, 3)
    ref = pytorch_probs(exported.model, texts)
    assert (pred == ref.argmax(1)).all() and np.abs(probs - ref).max() <= 1e-4
    empty_pred, empty_probs = p.predict_texts([])
    assert empty_pred.shape == (0,) and empty_probs.shape == (0, 3)
    _, probs_empty = p.predict_texts(["", None])  # a batch of nothing: [2, 1, 1] input, head bias
    assert np.allclose(probs_empty[0], probs_empty[1]) and np.allclose(probs_empty.sum(1), 1)


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_output_format_follows_the_extension(exported, tmp_path, ext):
    out = predict_file(str(exported.dest), str(exported.data), str(tmp_path / f"p.{ext}"))
    ref = pq.read_table(
        predict_file(str(exported.dest), str(exported.data), str(tmp_path / "p.parquet"), overwrite=True)
    )
    if ext == "csv":
        t = pcsv.read_csv(out)
    else:
        rows = [json.loads(line) for line in Path(out).read_text().splitlines()]
        t = pa.Table.from_pylist(rows)
    assert t.column("predicted").to_pylist() == ref.column("predicted").to_pylist()
    assert [str(v) for v in t.column("id").to_pylist()] == [str(v) for v in ref.column("id").to_pylist()]
    np.testing.assert_allclose(t.column("prob_refund").to_numpy(), ref.column("prob_refund").to_numpy(), rtol=1e-6)
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_text_and_id_fields_can_be_named_and_row_numbers_are_the_default_id(exported, tmp_path):
    data = tmp_path / "in.csv"
    pcsv.write_csv(pa.table({"msg": exported.texts[:5], "other": list("abcde")}), data)
    with pytest.raises(DataError, match="missing column 'dialogue'.*--text-field"):
        predict_file(str(exported.dest), str(data))
    t = pq.read_table(predict_file(str(exported.dest), str(data), text_field="msg"))
    assert t.column("id").to_pylist() == [0, 1, 2, 3, 4]
    t = pq.read_table(predict_file(str(exported.dest), str(data), text_field="msg", id_field="other", overwrite=True))
    assert t.column("id").to_pylist() == list("abcde")


def test_unknown_provider_is_a_config_error_listing_the_available_ones(exported):
    with pytest.raises(ConfigError, match="CUDAExecutionProvider.*available: .*CPUExecutionProvider"):
        Predictor(str(exported.dest), provider="CUDAExecutionProvider")
    with pytest.raises(ConfigError, match="unknown output type"):
        predict_file(str(exported.dest), str(exported.data), "out.xlsx")


def test_tampered_model_is_refused_with_a_checksum_error(exported, tmp_path):
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(exported.dest, copy)
    graph = Predictor(str(copy)).choice.file  # the graph predict reads (the packed one in a new export)
    data = bytearray((copy / graph).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / graph).write_bytes(bytes(data))
    with pytest.raises(ExportError, match=f"{graph}: checksum mismatch"):
        Predictor(str(copy))
    (copy / "manifest.json").unlink()
    with pytest.raises(ExportError, match="no manifest.json"):
        Predictor(str(copy))


def test_predict_imports_no_torch(exported, tmp_path):
    code = (
        "import sys\n"
        "import raytune_bsm.scoring.predict as p\n"
        "assert 'torch' not in sys.modules, 'import'\n"
        f"pred, probs = p.Predictor({str(exported.dest)!r}).predict_texts(['Buyer: hi\\nSeller: hello', ''])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'lightning'))\n"
        "assert not bad, bad\n"
        "print(pred.tolist())\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(json.loads(proc.stdout.strip().splitlines()[-1])) == 2


def test_records_are_tokenized_in_blocks_and_keep_their_order(exported, monkeypatch):
    import raytune_bsm.scoring.predict as predict_mod

    p = Predictor(str(exported.dest))
    whole_pred, whole_probs = p.predict_texts(exported.texts, batch_size=5)
    monkeypatch.setattr(predict_mod, "BLOCK", 7)
    pred, probs = p.predict_texts(exported.texts, batch_size=5)
    assert (pred == whole_pred).all() and np.abs(probs - whole_probs).max() <= 1e-5
