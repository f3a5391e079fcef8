"""The chunk graph (chunks of many records sorted by length, [N, T] -> features, then the head), the packed graph
(only non-empty chunks, [N, T] + pool [R, N]) and the int8 graphs: same answers as the [B, C, T] model.onnx and
PyTorch, real ONNX Runtime sessions; and how `bsm predict` picks a graph and a precision."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict import CLASSES, exported, pytorch_probs  # noqa: F401  (the module fixture: a tiny export)

from raytune_bsm import layout
from raytune_bsm.errors import ConfigError
from raytune_bsm.scoring.batching import (
    CALL_TOKENS,
    make_call,
    pack_records,
    pad_records,
    plan_block,
    plan_calls,
    real_share,
)
from raytune_bsm.scoring.predict import Predictor
from raytune_bsm.scoring.sessions import GRAPHS, Scorer, choose_graph, int8_within_tolerance

PACKED, PACKED_INT8, INT8 = GRAPHS[("packed", "fp32")], GRAPHS[("packed", "int8")], GRAPHS[("bct", "int8")]
CHUNKS, CHUNKS_INT8, HEAD = GRAPHS[("chunks", "fp32")], GRAPHS[("chunks", "int8")], layout.HEAD_ONNX_FILE


def add_packed_graphs(model: torch.nn.Module, export_dir: Path, precision: dict | None) -> None:
    """Give an export the graphs of the layout contract, if its exporter did not write them yet: the packed
    graph (input_ids, attention_mask int64 [N, T], pool float32 [R, N] -> logits [R, K]) and dynamic-int8 twins
    of both graphs; then rewrite the manifest with `precision`."""
    import json

    from onnxruntime.quantization import QuantType, quantize_dynamic

    files = {f["path"] for f in json.loads((export_dir / layout.MANIFEST).read_text())["files"]}
    if PACKED not in files:

        class Packed(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, pool):  # [N, T], [N, T], [R, N]
                pooled = self.model._pool(input_ids, attention_mask)  # [N, H]
                features = pool @ pooled  # [R, H]: each record's mean over its chunks
                return self.model.classifier(self.model.head(self.model.dropout(features)))  # [R, K]

        ids = torch.randint(1000, 2000, (3, 8))
        mask = torch.ones(3, 8, dtype=torch.int64)
        mask[1, 5:] = 0
        pool = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
        with torch.no_grad():
            torch.onnx.export(
                Packed().eval(),
                (ids, mask, pool),
                str(export_dir / PACKED),
                dynamo=False,
                opset_version=17,
                input_names=["input_ids", "attention_mask", "pool"],
                output_names=["logits"],
                dynamic_axes={
                    "input_ids": {0: "chunks", 1: "tokens"},
                    "attention_mask": {0: "chunks", 1: "tokens"},
                    "pool": {0: "records", 1: "chunks"},
                    "logits": {0: "records"},
                },
            )
    for src, dst in ((layout.ONNX_FILE, INT8), (PACKED, PACKED_INT8)):
        if dst not in files:
            quantize_dynamic(str(export_dir / src), str(export_dir / dst), weight_type=QuantType.QInt8)
    manifest = json.loads((export_dir / layout.MANIFEST).read_text())
    manifest.pop("files")
    if precision is None:
        manifest.pop("precision", None)
    else:
        manifest["precision"] = precision
    layout.write_manifest(export_dir, manifest)


@pytest.fixture(scope="module")
def packed_export(exported, tmp_path_factory):  # noqa: F811
    """A new export (chunk graphs included) whose record puts int8 within 0.5 point of fp32."""
    dest = tmp_path_factory.mktemp("packed") / "export"
    shutil.copytree(exported.dest, dest)
    add_packed_graphs(
        exported.model, dest, {"fp32": {"accuracy": 0.90, "auroc": 0.95}, "int8": {"accuracy": 0.897, "auroc": 0.951}}
    )
    return dest


@pytest.fixture(scope="module")
def older_export(packed_export, tmp_path_factory):
    """An export from before the chunk graph: the same, without model.chunks*.onnx and model.head.onnx."""
    import json

    dest = tmp_path_factory.mktemp("older") / "export"
    shutil.copytree(packed_export, dest)
    for f in (CHUNKS, CHUNKS_INT8, HEAD):
        (dest / f).unlink()
    manifest = json.loads((dest / layout.MANIFEST).read_text())
    manifest.pop("files")
    layout.write_manifest(dest, manifest)
    return dest


def _manifest(*graphs: str, precision: dict | None = None) -> dict:
    files = [{"path": g, "sha256": "0" * 64, "size": 1} for g in (layout.ONNX_FILE, *graphs)]
    return {"files": files, **({"precision": precision} if precision else {})}


CLOSE = {"fp32": {"accuracy": 0.950, "auroc": 0.980}, "int8": {"accuracy": 0.946, "auroc": 0.981}}
FAR = {"fp32": {"accuracy": 0.950, "auroc": 0.980}, "int8": {"accuracy": 0.944, "auroc": 0.981}}


def test_the_newest_kind_of_graph_the_export_has_is_chosen():
    everything = (CHUNKS, CHUNKS_INT8, HEAD, PACKED, PACKED_INT8, INT8)
    c = choose_graph(_manifest(*everything, precision=CLOSE))
    assert (c.file, c.kind, c.precision, c.files) == (CHUNKS_INT8, "chunks", "int8", [CHUNKS_INT8, HEAD])
    c = choose_graph(_manifest(*everything, precision=FAR))
    assert (c.file, c.head, c.packed) == (CHUNKS, HEAD, False)
    c = choose_graph(_manifest(CHUNKS, CHUNKS_INT8, PACKED, PACKED_INT8, precision=CLOSE))  # no head: not usable
    assert (c.file, c.kind, c.packed, c.files) == (PACKED_INT8, "packed", True, [PACKED_INT8])
    assert choose_graph(_manifest(CHUNKS, HEAD), "fp32").file == CHUNKS
    with pytest.raises(ConfigError, match="no model.chunks.int8.onnx"):
        choose_graph(_manifest(CHUNKS, HEAD, PACKED_INT8), "int8")


def test_auto_takes_int8_within_half_a_point_and_fp32_otherwise():
    c = choose_graph(_manifest(PACKED, PACKED_INT8, INT8, precision=CLOSE))
    assert (c.file, c.packed, c.precision) == (PACKED_INT8, True, "int8") and "within 0.5 point" in c.why
    c = choose_graph(_manifest(PACKED, PACKED_INT8, INT8, precision=FAR))  # accuracy 0.6 point lower
    assert (c.file, c.precision) == (PACKED, "fp32") and "accuracy 0.9440 vs fp32 0.9500" in c.why
    assert choose_graph(_manifest(INT8, precision=CLOSE)).file == INT8  # no packed graph: the [B, C, T] int8 one
    assert choose_graph(_manifest(PACKED, PACKED_INT8)).file == PACKED  # int8 with no recorded metrics: fp32
    old = choose_graph(_manifest())  # an export from before int8 and packing
    assert (old.file, old.packed, old.precision) == (layout.ONNX_FILE, False, "fp32")
    ok, why = int8_within_tolerance(
        {"fp32": {"accuracy": 0.9, "label_agreement": 1.0}, "int8": {"accuracy": 0.9, "label_agreement": 0.9}}
    )
    assert ok, why  # label agreement is recorded next to the metrics, but is not one


def test_precision_flag_overrides_and_int8_must_exist():
    assert choose_graph(_manifest(PACKED, PACKED_INT8, precision=CLOSE), "fp32").file == PACKED
    assert choose_graph(_manifest(PACKED, PACKED_INT8, precision=FAR), "int8").file == PACKED_INT8
    with pytest.raises(ConfigError, match="--precision int8: this export has no model.int8.onnx"):
        choose_graph(_manifest(), "int8")
    with pytest.raises(ConfigError, match="--precision must be one of auto, fp32, int8, got 'fp16'"):
        choose_graph(_manifest(), "fp16")


def test_packed_graph_gives_the_labels_and_logits_of_the_bct_model(exported, older_export):  # noqa: F811
    """An export without the chunk graph scores with the packed graph, as before it."""
    texts = exported.texts
    ref = pytorch_probs(exported.model, texts)
    packed = Predictor(str(older_export), precision="fp32", threads=1)
    assert (packed.choice.file, packed.choice.packed) == (PACKED, True)
    pred, probs = packed.predict_texts(texts, batch_size=8)
    assert (pred == ref.argmax(1)).all() and np.abs(probs - ref).max() <= 1e-4

    # the same records through model.onnx, [B, C, T]: same logits, and more padding computed
    bct = Scorer(str(older_export / layout.ONNX_FILE), threads=1)
    p = packed.processor(texts)
    bct_slots = 0
    for records in plan_calls(p.lens, 8, packed=True):
        a = make_call(p.ids, p.lens, records, packed.pad_id, packed=True)
        b = make_call(p.ids, p.lens, records, packed.pad_id, packed=False)
        np.testing.assert_allclose(packed.scorer(a.feeds), bct(b.feeds), atol=1e-4)
        assert a.real == b.real and a.slots <= b.slots
        bct_slots += b.slots
    # the best a call of whole records can do: every record padded only to its own longest chunk
    real = sum(int(l.sum()) for l in p.lens)
    bound = real / sum(len(l) * int(l.max()) for l in p.lens if len(l))
    assert packed.real_fraction > real / bct_slots and packed.real_fraction >= 0.95 * bound, packed.real_fraction


def test_int8_graphs_stay_close_to_fp32_and_auto_picks_them(exported, packed_export, older_export):  # noqa: F811
    for export, graph in ((packed_export, CHUNKS_INT8), (older_export, PACKED_INT8)):
        auto = Predictor(str(export), threads=1)  # the fixture's record: int8 accuracy 0.3 point lower
        assert (auto.choice.file, auto.choice.precision) == (graph, "int8")
        _, probs = auto.predict_texts(exported.texts)
        _, fp32 = Predictor(str(export), precision="fp32").predict_texts(exported.texts)
        assert np.abs(probs - fp32).max() < 0.05, graph


def test_chunk_graph_gives_the_labels_and_logits_of_pytorch_with_90_percent_real_tokens(exported, packed_export):  # noqa: F811
    """The default of a new export: the chunks of a block's records sorted by length, calls of at most 8 chunks
    here, each record's mean through the head: PyTorch's labels and probabilities (empty dialogues included), and
    at least 90% of the token slots computed hold real tokens, where whole-record calls stay below that."""
    texts = exported.texts
    ref = pytorch_probs(exported.model, texts)
    chunks = Predictor(str(packed_export), precision="fp32", threads=1)
    assert (chunks.choice.file, chunks.choice.kind, chunks.choice.head) == (CHUNKS, "chunks", HEAD)
    done: list[int] = []
    pred, probs = chunks.predict_texts(texts, batch_size=8, progress=lambda d, n: done.append(d))
    assert (pred == ref.argmax(1)).all() and np.abs(probs - ref).max() <= 1e-4
    assert done[-1] == len(texts) and done == sorted(done)
    p = chunks.processor(texts)
    lens = [len(l) for l in p.lens]
    assert min(lens) == 0 and max(lens) == 3 and len(set(np.concatenate(p.lens).tolist())) > 5  # mixed lengths
    plan = plan_block(p.ids, p.lens, chunks.pad_id, 8, "chunks")
    assert chunks.real_fraction == real_share([plan]) >= 0.9
    assert real_share([plan_block(p.ids, p.lens, chunks.pad_id, 8, "packed")]) < real_share([plan])
    every = np.sort(np.concatenate([c.rows for c in plan.calls]))
    assert (every == np.arange(sum(lens))).all()  # every chunk scored exactly once
    assert all(len(c.rows) <= 8 and c.slots <= max(CALL_TOKENS, c.feeds["input_ids"].shape[1]) for c in plan.calls)
    only_empty = chunks.predict_texts(["", None], batch_size=8)[1]  # no chunk in the block: the head's bias,
    assert np.abs(only_empty - ref[lens.index(0)]).max() <= 1e-4  # as an empty dialogue scores beside others


def test_pack_and_pad_put_every_token_where_the_graphs_expect_it():
    ids = [np.array([101, 7, 102, 101, 8, 9, 102], np.int32), np.zeros(0, np.int32), np.array([101, 5, 102], np.int32)]
    lens = [np.array([3, 4], np.int32), np.zeros(0, np.int32), np.array([3], np.int32)]
    input_ids, mask, pool = pack_records(ids, lens, pad_id=0)
    assert input_ids.tolist() == [[101, 7, 102, 0], [101, 8, 9, 102], [101, 5, 102, 0]]
    assert mask.sum(1).tolist() == [3, 4, 3]
    assert pool.tolist() == [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # the empty record pools nothing
    bct_ids, bct_mask = pad_records(ids, lens, pad_id=0)
    assert bct_ids.shape == (3, 2, 4) and bct_ids[0].tolist() == input_ids[:2].tolist()
    assert bct_mask[1].sum() == 0 and bct_ids[2, 0].tolist() == [101, 5, 102, 0]
    only_empty = pack_records([np.zeros(0, np.int32)] * 2, [np.zeros(0, np.int32)] * 2, pad_id=0)
    assert [a.shape for a in only_empty] == [(1, 1), (1, 1), (2, 1)] and only_empty[2].sum() == 0


def test_io_binding_path_gives_the_plain_run_answer_cpu_device_stands_in_for_cuda(packed_export):
    """The CUDA provider's IO-binding code, run with the CPU device (no GPU here)."""
    scorer = Scorer(str(packed_export / PACKED), threads=1)
    ids = [np.array([101, 2000, 2001, 102], np.int32)] * 3
    call = make_call(ids, [np.array([4], np.int32)] * 3, np.arange(3), 0, packed=True)
    np.testing.assert_allclose(scorer._run_bound(call.feeds, "cpu"), scorer(call.feeds), atol=1e-6)


def test_calls_side_by_side_give_each_call_its_own_output_in_order(packed_export):
    """Scorer.map with two calls at a time (the CPU default on 2 or more cores): the same outputs as one call
    after another, each in its call's place, whatever order the calls finish in."""
    one, two = Scorer(str(packed_export / PACKED), threads=1), Scorer(str(packed_export / PACKED), threads=2)
    assert (one.streams, two.streams) == (1, 2)
    calls = []
    for n in (1, 7, 2, 5, 3, 8):  # records of different lengths: calls of different sizes finish at different times
        ids = [np.array([101, *range(2000, 2000 + n), 102], np.int32)] * n
        calls.append(make_call(ids, [np.array([n + 2], np.int32)] * n, np.arange(n), 0, packed=True).feeds)
    side_by_side = list(two.map(calls))
    assert [o.shape[0] for o in side_by_side] == [1, 7, 2, 5, 3, 8]
    for got, feeds in zip(side_by_side, calls):
        np.testing.assert_allclose(got, one(feeds), atol=1e-5)


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
    reason="needs onnxruntime-gpu and a GPU",
)
def test_cuda_provider_scores_like_the_cpu(exported, packed_export):  # noqa: F811
    cpu = Predictor(str(packed_export), precision="fp32").predict_texts(exported.texts)[1]
    gpu = Predictor(str(packed_export), "CUDAExecutionProvider", precision="fp32").predict_texts(exported.texts)[1]
    assert np.abs(cpu - gpu).max() < 1e-3
