"""Export: a real Lightning checkpoint of a tiny BERT -> ONNX + TorchScript + tokenizer + manifest, checked."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_ENCODER, write_parquet

from raytune_bsm.config import DataConfig
from raytune_bsm.data.batching import Collate, EncodedDataset
from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
from raytune_bsm.data.splits import load_split
from raytune_bsm.demo.generator import make_dialogues
from raytune_bsm.errors import ConfigError, ExportError
from raytune_bsm.layout import parse_manifest
from raytune_bsm.model import export as export_mod
from raytune_bsm.model import publish as publish_mod
from raytune_bsm.model.export import export_checkpoint
from raytune_bsm.model.text_bert import TextBertClassifier, load_checkpoint

CLASSES = ["keep", "reverse"]
MODEL_CFG = {
    "text_name": "dialogue",
    "label_name": "reversal_flag",
    "tokenizer": "all-MiniLM-L6-v2",
    "encoder_config": TINY_ENCODER,
    "class_names": CLASSES,
    "max_chunks": 4,
    "max_tokens": 32,
    "lr": 1e-3,
}
IDS, MASK = "dialogue_processed_input_ids", "dialogue_processed_attention_mask"


def _leftovers(dest: Path) -> list[str]:
    """Temporary or moved-aside siblings of an export directory."""
    prefixes = (f"{dest.name}.tmp-", f"{dest.name}.old-")
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(prefixes))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One real Lightning training step on demo dialogues; the checkpoint saved the way Ray Train does
    (a directory holding checkpoint.ckpt), then exported once with validation batches."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    root = tmp_path_factory.mktemp("export")
    table = make_dialogues(24, seed=1)
    data = write_parquet(root / "train.parquet", **{c: table.column(c).to_pylist() for c in table.column_names})
    split, labels = load_split(str(data), DataConfig(), None)
    processor = ChunkProcessor(ProcessorConfig(max_chunks=4, max_tokens=32))
    p = processor(split.texts)
    ds = EncodedDataset(p.ids, p.lens, split.labels, split.ids)
    collate = Collate(ds, "dialogue", "reversal_flag", "order_id", processor.pad_id)
    loader = DataLoader(ds, batch_size=8, collate_fn=collate)

    pl.seed_everything(0)
    model = TextBertClassifier(MODEL_CFG)
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    ckpt_dir = root / "checkpoint_000000"
    trainer.save_checkpoint(ckpt_dir / "checkpoint.ckpt")

    val_batches = [collate(list(range(0, 5))), collate(list(range(5, 12)))]
    dest = root / "run" / "export"
    steps: list[tuple[str, int, int]] = []
    manifest = export_checkpoint(
        str(ckpt_dir),
        str(dest),
        val_batches=val_batches,
        metrics={"val_accuracy": 0.5},
        progress=lambda *a: steps.append(a),
    )
    return SimpleNamespace(
        root=root,
        ckpt_dir=ckpt_dir,
        dest=dest,
        manifest=manifest,
        processor=processor,
        model=load_checkpoint(ckpt_dir / "checkpoint.ckpt"),
        val_batches=val_batches,
        steps=steps,
    )


def fresh_inputs(pad_id: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Shapes the export never saw: a single token, many chunks with all-padding ones, long chunks, and a record
    with no chunk at all beside others."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for B, C, T in [(1, 1, 3), (3, 6, 19), (5, 2, 40), (2, 7, 11)]:
        ids = torch.randint(1000, 29000, (B, C, T), generator=g)
        ids[:, :, 0] = 101  # [CLS]
        mask = torch.ones(B, C, T, dtype=torch.long)
        if C > 1:
            mask[:, C // 2 :, :] = 0  # all-padding chunks at the end of every record
            mask[0, 0, T // 2 + 1 :] = 0  # a short chunk
        if B > 2:
            mask[1] = 0  # a record with no chunks at all
        ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_id))
        out.append((ids, mask))
    return out


def test_export_writes_every_file_and_a_correct_manifest(trained):
    dest, man = trained.dest, trained.manifest
    for name in (
        "model.onnx",
        "model.int8.onnx",
        "model.chunks.onnx",
        "model.chunks.int8.onnx",
        "model.head.onnx",
        "model.torchscript.pt",
        "tokenizer/tokenizer.json",
        "bsm_model.json",
        "manifest.json",
    ):
        assert (dest / name).is_file(), name
    assert not (dest / "model.packed.onnx").exists()  # replaced by the chunk graph
    on_disk = json.loads((dest / "manifest.json").read_text())
    assert on_disk == man == parse_manifest((dest / "manifest.json").read_bytes(), str(dest))
    assert man["format"] == "bsm-export"
    listed = {e["path"] for e in man["files"]}
    actual = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == actual
    for e in man["files"]:
        data = (dest / e["path"]).read_bytes()
        assert e["sha256"] == hashlib.sha256(data).hexdigest() and e["size"] == len(data), e["path"]
    assert {"torch", "transformers", "onnx", "onnxruntime", "ray"} <= set(man["versions"])
    assert man["versions"]["torch"] == torch.__version__
    assert man["created"] and man["exporter"]["opset"] >= 17
    par = man["parity"]
    for runtime in ("onnxruntime", "chunks", "torchscript"):
        assert par[runtime]["max_abs_diff"] <= 1e-4 and par[runtime]["labels_agree"] is True
    assert par["with_padding_chunks"] and par["distinct_shapes_besides_example"] >= 3
    assert any(s.startswith("val[") for s in par["sources"])  # the given validation batches were used
    assert _leftovers(dest) == []


def test_bsm_model_json_has_processor_settings_classes_and_hyperparameters(trained):
    info = json.loads((trained.dest / "bsm_model.json").read_text())
    assert info["class_names"] == CLASSES and info["num_classes"] == 2
    assert info["text_field"] == "dialogue"
    settings = trained.processor.settings()
    for key in ("max_chunks", "max_tokens", "keep_chunks", "pad_id", "prefix", "suffix"):
        assert info["processor"][key] == settings[key], key
    assert info["hyperparameters"]["lr"] == 1e-3 and info["hyperparameters"]["max_tokens"] == 32
    assert info["metrics"] == {"val_accuracy": 0.5}


def test_onnx_model_passes_the_checker_and_has_three_dynamic_dims(trained):
    import onnx

    path = str(trained.dest / "model.onnx")
    onnx.checker.check_model(path, full_check=True)
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["logits"]
    for i in graph.input:
        assert i.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = i.type.tensor_type.shape.dim
        assert len(dims) == 3 and all(d.dim_param for d in dims), dims
    out = graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT
    assert out.shape.dim[0].dim_param and out.shape.dim[1].dim_value == 2
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)  # weights inside


def test_onnxruntime_torchscript_and_pytorch_agree_on_fresh_shapes(trained):
    import onnxruntime as ort

    session = ort.InferenceSession(str(trained.dest / "model.onnx"), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(trained.dest / "model.torchscript.pt"))
    model = trained.model
    seen = {tuple(s) for s in trained.manifest["parity"]["shapes"]} | {tuple(trained.manifest["example_input_shape"])}
    for ids, mask in fresh_inputs(trained.processor.pad_id, seed=7):
        assert tuple(ids.shape) not in seen
        with torch.no_grad():
            ref = model.logits(ids, mask).numpy()
            ts = scripted(ids, mask).numpy()
        onnx_out = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        assert onnx_out.dtype == np.float32 and onnx_out.shape == (ids.shape[0], 2)
        assert np.abs(onnx_out - ref).max() <= 1e-4, ids.shape
        assert np.abs(ts - ref).max() <= 1e-4, ids.shape
        assert (onnx_out.argmax(1) == ref.argmax(1)).all() and (ts.argmax(1) == ref.argmax(1)).all()
        if ids.shape[0] > 2:  # the record with no chunk gets the head's bias, not NaN
            with torch.no_grad():
                bias = model.classifier(model.head.bias.unsqueeze(0)).numpy()[0]
            assert np.abs(onnx_out[1] - bias).max() <= 1e-5


def test_torchscript_loads_without_raytune_bsm(trained, tmp_path):
    ids, mask = fresh_inputs(trained.processor.pad_id, seed=3)[1]
    torch.save({"ids": ids, "mask": mask}, tmp_path / "inputs.pt")
    code = (
        "import sys, json\n"
        "sys.modules['raytune_bsm'] = None  # any import of the package fails\n"
        "import torch\n"
        f"m = torch.jit.load({str(trained.dest / 'model.torchscript.pt')!r})\n"
        f"x = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
        "with torch.no_grad():\n"
        "    out = m(x['ids'], x['mask'])\n"
        "assert not any(k.startswith('raytune_bsm') and sys.modules[k] is not None for k in sys.modules)\n"
        "print(json.dumps(out.tolist()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    with torch.no_grad():
        ref = trained.model.logits(ids, mask).numpy()
    assert np.abs(out - ref).max() <= 1e-4


def test_failed_parity_raises_and_publishes_nothing(trained):
    dest = trained.root / "failed" / "export"
    with pytest.raises(ExportError, match=r"parity check failed .*max \|Δ logits\|"):
        export_checkpoint(str(trained.ckpt_dir), str(dest), tolerance=-1)
    assert not dest.exists()
    assert not dest.parent.exists()  # the folder made for it goes too: nothing of the failed export is left
    assert sorted(p.name for p in trained.root.iterdir() if p.name.startswith("failed")) == []


def test_failed_export_over_an_existing_export_leaves_it_untouched(trained, tmp_path, monkeypatch):
    """A failure midway (here: after part of the directory is written) keeps the earlier export as it was."""
    import shutil

    dest = tmp_path / "export"
    shutil.copytree(trained.dest, dest)
    before = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}

    def half_written(model, out, *a, **k):
        (out / "model.onnx").write_bytes(b"half")
        raise ExportError("injected failure")

    monkeypatch.setattr(export_mod, "_build", half_written)
    with pytest.raises(ExportError, match="injected"):
        export_checkpoint(str(trained.ckpt_dir / "checkpoint.ckpt"), str(dest))
    after = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert before == after
    assert _leftovers(dest) == []


def test_reexport_replaces_an_existing_export_atomically(trained, tmp_path, monkeypatch):
    import shutil

    dest = tmp_path / "export"
    shutil.copytree(trained.dest, dest)
    man = json.loads((dest / "manifest.json").read_text())  # an earlier export with a file the new one lacks
    man["files"].append({"path": "stale.bin", "sha256": "0" * 64, "size": 4})
    (dest / "manifest.json").write_text(json.dumps(man))
    (dest / "stale.bin").write_bytes(b"old!")
    renames: list[tuple[str, str]] = []
    real_rename = os.rename

    def spy(src, dst):
        if Path(dst) == dest:  # the moment the new export appears: it is already complete
            man = json.loads((Path(src) / "manifest.json").read_text())
            assert all((Path(src) / e["path"]).is_file() for e in man["files"])
        renames.append((str(src), str(dst)))
        return real_rename(src, dst)

    monkeypatch.setattr(publish_mod.os, "rename", spy)
    manifest = export_checkpoint(str(trained.ckpt_dir), str(dest), hyperparameters={"lr": 0.5})
    assert not (dest / "stale.bin").exists()
    assert json.loads((dest / "bsm_model.json").read_text())["hyperparameters"] == {"lr": 0.5}
    assert json.loads((dest / "manifest.json").read_text()) == manifest
    assert [Path(d).name for _, d in renames][-1] == "export"  # the old one moved aside, the new one moved in
    assert any(".old-" in d for _, d in renames)
    assert _leftovers(dest) == []


def test_refuses_to_replace_a_directory_that_is_not_an_export(trained, tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="non-empty directory that bsm did not export"):
        export_checkpoint(str(trained.ckpt_dir), str(dest))
    assert (dest / "notes.txt").read_text() == "keep me"


def test_missing_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        export_checkpoint(str(tmp_path / "nope.ckpt"), str(tmp_path / "export"))
    (tmp_path / "ckdir").mkdir()
    with pytest.raises(ConfigError, match="without checkpoint.ckpt"):
        export_checkpoint(str(tmp_path / "ckdir"), str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()


class _ObjectStoreLike:
    """A local pyarrow filesystem that, like S3, cannot move a directory."""

    def __init__(self) -> None:
        import pyarrow.fs as pafs

        self.fs, self.moves = pafs.LocalFileSystem(), []

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def move(self, src: str, dst: str) -> None:
        import pyarrow.fs as pafs

        if self.fs.get_file_info(src).type == pafs.FileType.Directory:
            raise NotImplementedError("no directory moves on this store")
        self.moves.append(posixpath_basename(dst))
        self.fs.move(src, dst)


def posixpath_basename(p: str) -> str:
    return p.rsplit("/", 1)[-1]


@pytest.mark.parametrize("store", ["hdfs-like", "s3-like"])
def test_remote_publish_moves_the_manifest_last_and_cleans_up(trained, tmp_path, store):
    import pyarrow.fs as pafs

    fs = pafs.LocalFileSystem() if store == "hdfs-like" else _ObjectStoreLike()
    dest = tmp_path / "bucket" / "run" / "export"
    dest.mkdir(parents=True)
    (dest / "manifest.json").write_text("{}")  # an earlier export, replaced
    (dest / "old.bin").write_text("old")
    publish_mod.publish_remote(fs, trained.dest, str(dest), "abcd1234")
    assert (dest / "manifest.json").read_bytes() == (trained.dest / "manifest.json").read_bytes()
    assert not (dest / "old.bin").exists()
    assert (dest / "tokenizer" / "tokenizer.json").is_file()
    assert _leftovers(dest) == []
    if store == "s3-like":
        assert fs.moves[-1] == "manifest.json" and len(fs.moves) == len(trained.manifest["files"]) + 1


def test_falls_back_to_the_dynamo_onnx_exporter(trained, tmp_path, monkeypatch):
    """If the TorchScript-based exporter fails (a torch without it), the dynamo exporter's graphs pass the same
    checks and parity."""
    real_export = torch.onnx.export

    def no_legacy(*args, **kwargs):
        if not kwargs.get("dynamo", True):
            raise RuntimeError("TorchScript-based exporter unavailable")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_legacy)
    manifest = export_checkpoint(str(trained.ckpt_dir), str(tmp_path / "export"))
    assert manifest["exporter"]["onnx"] == "torch.onnx.export(dynamo=True)"
    for graph in ("onnxruntime", "chunks"):
        assert manifest["parity"][graph]["max_abs_diff"] <= 1e-4


def test_a_file_that_is_not_a_checkpoint_is_an_export_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ExportError, match="not a bsm Lightning checkpoint"):
        export_checkpoint(str(bad), str(tmp_path / "export"))
    (tmp_path / "junk.ckpt").write_bytes(b"not a pickle")
    with pytest.raises(ExportError, match="not a bsm Lightning checkpoint"):
        export_checkpoint(str(tmp_path / "junk.ckpt"), str(tmp_path / "export"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt", "junk.ckpt"]


# ------------------------------------------------------------------------- packed and int8 graphs (issue 10)


def test_chunk_and_head_graphs_have_dynamic_chunks_tokens_records(trained):
    import onnx

    graph = onnx.load(str(trained.dest / "model.chunks.onnx")).graph
    dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"input_ids": ["chunks", "tokens"], "attention_mask": ["chunks", "tokens"]}
    out = graph.output[0]
    assert out.name == "features" and [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == [
        "chunks",
        32,
    ]
    head = onnx.load(str(trained.dest / "model.head.onnx")).graph
    assert [i.name for i in head.input] == ["features"] and [o.name for o in head.output] == ["logits"]
    assert head.input[0].type.tensor_type.shape.dim[0].dim_param == "records"


def _chunk_logits(dest: Path, graph: str, ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> np.ndarray:
    """[B, C, T] -> logits [B, K] through a chunk graph and the head, called the way `bsm predict` calls them."""
    from raytune_bsm.model.parity import records
    from raytune_bsm.scoring.batching import plan_block, run_plan
    from raytune_bsm.scoring.sessions import Scorer

    rec_ids, rec_lens = records(ids.numpy(), mask.numpy())
    plan = plan_block(rec_ids, rec_lens, pad_id, 32, "chunks")
    return run_plan(plan, Scorer(str(dest / graph), threads=1), Scorer(str(dest / "model.head.onnx"), threads=1))


@pytest.mark.parametrize("seed", [3, 4])
def test_chunk_graph_and_head_match_the_bct_model_on_random_shapes(trained, seed):
    """The chunk graph over the chunks of all records sorted by length, each record's mean, then the head: the
    same labels as model.onnx and PyTorch, logits within 1e-4, a record with no chunk included."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    B, C, T = 6, 4, 37
    ids = torch.randint(1000, 29000, (B, C, T), generator=g)
    mask = torch.zeros(B, C, T, dtype=torch.long)
    for b, n in enumerate([1, C, 0, 2, 3, C]):  # record 2 has no chunk
        for c in range(n):
            mask[b, c, : int(torch.randint(2, T + 1, (1,), generator=g))] = 1
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, trained.processor.pad_id))
    got = _chunk_logits(trained.dest, "model.chunks.onnx", ids, mask, trained.processor.pad_id)
    bct = ort.InferenceSession(str(trained.dest / "model.onnx"), providers=["CPUExecutionProvider"])
    bct_out = bct.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        ref = trained.model.logits(ids, mask).numpy()
    assert got.shape == ref.shape == bct_out.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-4 and np.abs(got - bct_out).max() <= 1e-4
    assert (got.argmax(1) == ref.argmax(1)).all() and (got.argmax(1) == bct_out.argmax(1)).all()


def test_int8_models_are_quantized_checked_and_recorded_per_precision(trained):
    import onnx

    int8 = ("model.int8.onnx", "model.chunks.int8.onnx")
    for name in int8:
        ops = {n.op_type for n in onnx.load(str(trained.dest / name)).graph.node}
        assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}, (name, ops)
        size = (trained.dest / name).stat().st_size
        assert size < (trained.dest / name.replace(".int8", "")).stat().st_size, name
    prec = trained.manifest["precision"]
    assert prec["labelled_records"] == 12  # the two validation batches given: 5 + 7 records
    for p in ("fp32", "int8"):
        assert set(prec[p]) >= {"accuracy", "auroc", "label_agreement", "max_abs_diff", "files", "measured_on"}
        assert 0.0 <= prec[p]["accuracy"] <= 1.0 and 0.0 <= prec[p]["label_agreement"] <= 1.0
    assert set(prec["int8"]["files"]) == set(int8) and prec["int8"]["measured_on"] == "model.chunks.int8.onnx"
    assert prec["fp32"]["label_agreement"] == 1.0 and prec["fp32"]["max_abs_diff"] <= 1e-4
    # the recorded figures are those of the graphs on disk, run as predict runs them: recompute both accuracies
    for p, graph in (("fp32", "model.chunks.onnx"), ("int8", "model.chunks.int8.onnx")):
        right = total = 0
        for b in trained.val_batches:
            logits = _chunk_logits(trained.dest, graph, b[IDS], b[MASK], trained.processor.pad_id)
            right += int((logits.argmax(1) == b["reversal_flag"].numpy()).sum())
            total += len(logits)
        assert prec[p]["accuracy"] == pytest.approx(right / total), p
    with torch.no_grad():  # fp32's metric stands for PyTorch's
        torch_right = sum(
            int((trained.model.logits(b[IDS], b[MASK]).argmax(1) == b["reversal_flag"]).sum())
            for b in trained.val_batches
        )
    assert prec["fp32"]["accuracy"] == pytest.approx(torch_right / 12)


def test_int8_graphs_fill_masked_attention_keys_with_a_moderate_value(trained):
    """quantize.soften_attention_mask: the int8 graphs' attention mask fills a masked key with MASK_FILL (exp of
    float32's lowest value takes MLAS's slow path); the fp32 graphs keep the trace's mask."""
    import onnx
    from onnx import numpy_helper

    from raytune_bsm.model import quantize

    assert trained.manifest["exporter"]["int8"]["attention_mask_fill"] == quantize.MASK_FILL
    for name in ("model.chunks.int8.onnx", "model.int8.onnx", "model.chunks.onnx"):
        graph = onnx.load(str(trained.dest / name)).graph
        fills = {
            i.name: float(numpy_helper.to_array(i)) for i in graph.initializer if i.name.endswith("attention_mask_fill")
        }
        where = [list(n.input) for n in graph.node if n.op_type == "Where" and any(i in fills for i in n.input)]
        if "int8" in name:
            assert list(fills.values()) == [quantize.MASK_FILL] and len(where) == 1, name
        else:
            assert not fills and not where, name
    # the same function: the fp32 chunk graph with and without the change, on chunks with padding
    import onnxruntime as ort

    fp32 = onnx.load(str(trained.dest / "model.chunks.onnx"))
    softened = onnx.load(str(trained.dest / "model.chunks.onnx"))
    assert quantize.soften_attention_mask(softened) == 1
    ids = np.array([[101, 2023, 2003, 1037, 3231, 102, 0, 0], [101, 2023, 102, 0, 0, 0, 0, 0]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}
    before, after = (
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        for m in (fp32, softened)
    )
    assert np.abs(before - after).max() <= 1e-6


def test_export_records_the_time_of_each_step(trained):
    t = trained.manifest["timings"]
    assert set(t) >= {"load", "onnx", "int8", "torchscript", "parity", "total"}
    assert 0 < t["total"] and sum(v for k, v in t.items() if k != "total") <= t["total"] + 0.5


def test_export_reports_progress_after_each_step(trained):
    names = [s for s, _, _ in trained.steps]
    assert names == list(export_mod.STEPS) and set(names) >= {"load", "onnx", "int8", "torchscript", "parity"}
    assert [d for _, d, _ in trained.steps] == list(range(1, len(names) + 1))
    assert {total for *_, total in trained.steps} == {len(names)}
