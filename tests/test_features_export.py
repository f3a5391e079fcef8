"""Side features through export and predict: the training statistics baked into every graph, so ONNX Runtime on
the raw columns (nulls and infinities included) gives PyTorch's probabilities; a text-only export's graphs keep
their inputs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_ENCODER

from raytune_bsm.config import RunConfig
from raytune_bsm.data.features import SIDE_INPUT, to_matrix
from raytune_bsm.errors import ConfigError, DataError

NAMES = ["amount", "flagged", "count"]


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    amount = rng.lognormal(3, 1, n) * (1 + y)
    values = [None if i % 7 == 2 else float(v) for i, v in enumerate(amount)]
    if seed == 9:  # the scored file: infinities and a row with every feature missing too
        values[0], values[1] = float("inf"), float("-inf")
    flagged = [None if (seed == 9 and i == 3) else bool(v) for i, v in enumerate(rng.random(n) < 0.3)]
    count = [None if (seed == 9 and i == 3) else int(v) for v in rng.poisson(2, n) for i in [0]]
    return pa.table(
        {
            "dialogue": [f"order {i}: {'it came' if y[i] else 'still waiting'}\nok" * (1 + i % 3) for i in range(n)],
            "reversal_flag": y.tolist(),
            "order_id": list(range(n)),
            "amount": pa.array(values, pa.float64()),
            "flagged": pa.array(flagged, pa.bool_()),
            "count": pa.array(count, pa.int64()),
        }
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> SimpleNamespace:
    """A tiny model with side features (concat), one training step, exported with a validation batch."""
    import lightning.pytorch as pl

    from raytune_bsm.model.export import export_checkpoint
    from raytune_bsm.model.text_bert import TextBertClassifier
    from raytune_bsm.runner.prepare import prepare

    root = tmp_path_factory.mktemp("features-export")
    for name, n, seed in (("train", 64, 1), ("val", 16, 2), ("score", 24, 9)):
        pq.write_table(_table(n, seed), root / f"{name}.parquet")
    run = RunConfig.from_dict(
        {
            "data": {"train": str(root / "train.parquet"), "val": str(root / "val.parquet"), "feature_fields": NAMES},
            "model": {"encoder_config": TINY_ENCODER, "max_tokens": 24, "max_chunks": 3, "lr": 1e-3},
        }
    )
    prep = prepare(run)
    train_dl, val_dl, _ = prep.loaders(run)
    pl.seed_everything(0)
    model = TextBertClassifier(prep.model_config)
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dl)
    trainer.save_checkpoint(root / "ckpt" / "checkpoint.ckpt")
    manifest = export_checkpoint(str(root / "ckpt"), str(root / "export"), val_batches=[next(iter(val_dl))])
    return SimpleNamespace(root=root, dest=root / "export", manifest=manifest, stats=prep.model_config["feature_stats"])


def _inputs(path: Path) -> dict[str, list]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}


def test_every_graph_but_the_chunk_graph_takes_the_raw_side_features(exported):
    for f in ("model.onnx", "model.int8.onnx"):
        assert _inputs(exported.dest / f) == {
            "input_ids": ["batch", "chunks", "tokens"],
            "attention_mask": ["batch", "chunks", "tokens"],
            SIDE_INPUT: ["batch", "side"],
        }
    assert list(_inputs(exported.dest / "model.head.onnx")) == ["features", SIDE_INPUT]
    assert list(_inputs(exported.dest / "model.chunks.onnx")) == ["input_ids", "attention_mask"]
    ops = {n.op_type for n in onnx.load(str(exported.dest / "model.onnx")).graph.node}
    assert {"IsNaN", "Where", "Max", "Min"} <= ops  # impute and clip inside the graph


def test_bsm_model_json_lists_the_features_their_order_and_statistics(exported):
    info = json.loads((exported.dest / "bsm_model.json").read_text())
    feats = info["features"]
    assert feats["names"] == NAMES and feats["fusion"] == "concat" and feats["input"] == SIDE_INPUT
    assert feats["statistics"]["amount"]["mean"] == pytest.approx(exported.stats["mean"][0])
    assert feats["statistics"]["amount"]["missing"] == pytest.approx(exported.stats["missing"][0])
    assert exported.stats["missing"][0] > 0
    assert info["inputs"][SIDE_INPUT] == {"dtype": "float32", "shape": ["batch", "side"]}


def test_parity_covers_missing_and_infinite_side_features(exported):
    parity = exported.manifest["parity"]
    assert parity["with_missing_side_features"] and parity["with_padding_chunks"]
    for name in ("onnxruntime", "chunks", "torchscript"):
        assert parity[name]["max_abs_diff"] <= 1e-4 and parity[name]["labels_agree"]


def _torch_probs(exported, table: pa.Table) -> np.ndarray:
    from raytune_bsm.data.batching import pad_records
    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
    from raytune_bsm.model.text_bert import load_checkpoint

    model = load_checkpoint(exported.root / "ckpt" / "checkpoint.ckpt")
    processor = ChunkProcessor(ProcessorConfig.of_model(model.config))
    p = processor(table.column("dialogue").to_pylist())
    ids, mask = pad_records(p.ids, p.lens, processor.pad_id)
    side = torch.from_numpy(to_matrix(table, NAMES))
    with torch.no_grad():
        return model.logits(torch.from_numpy(ids), torch.from_numpy(mask), side=side).softmax(-1).double().numpy()


def test_onnx_runtime_on_raw_columns_with_nulls_gives_pytorchs_probabilities(exported, tmp_path):
    """Plain ONNX Runtime (no bsm code) on model.onnx, fed the file's columns as they are (nulls as NaN,
    infinities kept), and `bsm predict`'s chunk graph + head, both match PyTorch on the same rows."""
    import onnxruntime as ort

    from raytune_bsm.data.batching import pad_records
    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
    from raytune_bsm.scoring.predict import predict_file

    table = pq.read_table(exported.root / "score.parquet")
    raw = np.stack([table.column(n).cast(pa.float64()).to_numpy(zero_copy_only=False) for n in NAMES], 1)
    assert np.isnan(raw).any() and np.isinf(raw).any()
    want = _torch_probs(exported, table)

    info = json.loads((exported.dest / "bsm_model.json").read_text())
    processor = ChunkProcessor(ProcessorConfig.of_model(info["processor"]))
    p = processor(table.column("dialogue").to_pylist())
    ids, mask = pad_records(p.ids, p.lens, processor.pad_id)
    session = ort.InferenceSession(str(exported.dest / "model.onnx"))
    logits = session.run(None, {"input_ids": ids, "attention_mask": mask, SIDE_INPUT: raw.astype(np.float32)})[0]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert np.abs(probs - want).max() <= 1e-4

    out = predict_file(
        str(exported.dest), str(exported.root / "score.parquet"), str(tmp_path / "p.parquet"), precision="fp32"
    )
    got = pq.read_table(out)
    assert np.abs(np.stack([got.column("prob_0"), got.column("prob_1")], 1) - want).max() <= 1e-4


def test_predict_without_a_feature_column_is_one_clear_error(exported, tmp_path):
    from raytune_bsm.scoring.predict import Predictor, predict_file

    pq.write_table(_table(8, 9).drop_columns(["count"]), tmp_path / "nocount.parquet")
    with pytest.raises(DataError, match=r"nocount.parquet: missing feature column 'count', which the model reads"):
        predict_file(str(exported.dest), str(tmp_path / "nocount.parquet"), str(tmp_path / "out.parquet"))
    assert not (tmp_path / "out.parquet").exists()
    with pytest.raises(ConfigError, match=r"reads side features \['amount', 'flagged', 'count'\]"):
        Predictor(str(exported.dest)).predict_texts(["hello"])


def test_a_text_only_models_graphs_keep_their_inputs(tmp_path):
    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
    from raytune_bsm.model import onnx_graphs
    from raytune_bsm.model.export import FP32
    from raytune_bsm.model.text_bert import TextBertClassifier

    config = {"text_name": "dialogue", "label_name": "reversal_flag", "tokenizer": "all-MiniLM-L6-v2"}
    model = TextBertClassifier({**config, "encoder_config": TINY_ENCODER, "max_tokens": 24}).eval()
    processor = ChunkProcessor(ProcessorConfig.of_model(model.config))
    example = onnx_graphs.example_inputs(model, processor.pad_id, processor.prefix, processor.suffix)
    onnx_graphs.export_graphs(model, example, tmp_path, FP32)
    assert _inputs(tmp_path / "model.onnx") == {
        "input_ids": ["batch", "chunks", "tokens"],
        "attention_mask": ["batch", "chunks", "tokens"],
    }
    assert list(_inputs(tmp_path / "model.head.onnx")) == ["features"]


def test_report_shows_each_side_features_permutation_importance_and_the_metric_without_them(exported, tmp_path):
    from sklearn.metrics import roc_auc_score

    from raytune_bsm.report import features as side_report

    y = np.array([0, 1, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.8, 0.4, 0.4, 0.9, 0.2, 0.4])  # ties across the classes
    assert side_report.auroc(y, p) == pytest.approx(roc_auc_score(y, p))
    config = {"data": {"test": str(exported.root / "val.parquet"), "feature_fields": NAMES}}
    figure, summary = side_report.report_section(str(exported.dest), config, tmp_path)
    assert figure is not None and (tmp_path / side_report.FILE).stat().st_size > 1000
    assert set(summary) == {"test_auroc_with_side_features", "test_auroc_without_side_features"}
    result = side_report.importance(str(exported.dest), str(exported.root / "val.parquet"), "reversal_flag")
    assert list(result["importance"]) == NAMES and result["records"] == 16
    assert result["with"] == pytest.approx(summary["test_auroc_with_side_features"])
    assert 0.0 <= result["without"] <= 1.0
