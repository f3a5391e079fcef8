"""The chunked BERT model, on a tiny BERT built from a config (no download)."""

from __future__ import annotations

import math

import pytest
import torch

from raytune_bsm.errors import ConfigError
from raytune_bsm.model.text_bert import TextBertBase, TextBertClassifier, load_checkpoint

IDS, MASK = "dialogue_processed_input_ids", "dialogue_processed_attention_mask"


def make(tiny_encoder: dict, cls=TextBertBase, **cfg) -> TextBertBase:
    torch.manual_seed(0)
    return cls({"text_name": "dialogue", "label_name": "y", "encoder_config": tiny_encoder, **cfg}).eval()


def batch(B: int = 3, C: int = 4, T: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (B, C, T), generator=g)
    mask = torch.ones(B, C, T, dtype=torch.long)
    mask[0, 2:] = 0  # record 0: two chunks
    mask[1, 0, 5:] = 0  # record 1: a short first chunk
    mask[2, 1:] = 0  # record 2: one chunk
    ids = ids * mask  # padding id 0
    return {IDS: ids, MASK: mask}


def test_output_shape_is_batch_by_hidden_common_dim(tiny_encoder):
    m = make(tiny_encoder, hidden_common_dim=17)
    out = m(batch(B=3))
    assert out.shape == (3, 17)
    assert m.config["tokenizer"] == "bert-base-cased"  # the reference default is kept for old configs


def test_all_empty_chunks_raise_value_error(tiny_encoder):
    m = make(tiny_encoder)
    b = batch()
    b[MASK] = torch.zeros_like(b[MASK])
    with pytest.raises(ValueError, match="every chunk in the batch is empty"):
        m(b)


def test_appending_all_padding_chunks_changes_no_record(tiny_encoder):
    m = make(tiny_encoder)
    b = batch()
    padded = {k: torch.cat([v, torch.zeros(3, 5, v.shape[2], dtype=v.dtype)], dim=1) for k, v in b.items()}
    with torch.no_grad():
        out, out_padded = m(b), m(padded)
    assert out.shape == out_padded.shape
    assert (out - out_padded).abs().max().item() <= 1e-5
    assert not torch.isnan(out_padded).any()


def test_record_output_does_not_depend_on_its_batch(tiny_encoder):
    """A record alone and the same record in a batch with longer records give the same output."""
    m = make(tiny_encoder)
    b = batch()
    with torch.no_grad():
        together = m(b)
        alone = m({IDS: b[IDS][2:3, :1, :], MASK: b[MASK][2:3, :1, :]})
    assert (together[2] - alone[0]).abs().max().item() <= 1e-5


def test_record_with_no_chunks_gives_zero_features_not_nan(tiny_encoder):
    m = make(tiny_encoder)
    b = batch()
    b[MASK][1] = 0
    with torch.no_grad():
        out = m(b)
    assert not torch.isnan(out).any()
    assert torch.allclose(out[1], m.head.bias)  # mean of nothing is 0 -> the head's bias


def test_dense_export_path_matches_sparse_path(tiny_encoder):
    m = make(tiny_encoder, cls=TextBertClassifier)
    b = batch(B=4, C=3, T=9, seed=3)
    b[MASK][3] = 0
    with torch.no_grad():
        sparse = m.logits(b[IDS], b[MASK])
        dense = m.logits(b[IDS], b[MASK], dense=True)
    assert not torch.isnan(dense).any()
    assert (sparse - dense).abs().max().item() <= 1e-5


def test_reinit_layers_changes_top_layer_only_without_reinit_pooler(tiny_encoder):
    before = make(tiny_encoder)
    after = make(tiny_encoder, reinit_layers=1, reinit_pooler=False)
    changed = {
        name
        for (name, p), (_, q) in zip(before.bert.named_parameters(), after.bert.named_parameters())
        if not torch.equal(p, q)
    }
    assert changed, "reinit_layers=1 changed nothing"
    assert all(n.startswith("encoder.layer.1.") for n in changed), changed
    assert any("LayerNorm" in n for n in changed) is False  # LayerNorm already is (1, 0) at init: unchanged
    top = after.bert.encoder.layer[1]
    assert torch.count_nonzero(top.attention.self.query.bias) == 0
    assert torch.equal(before.bert.pooler.dense.weight, after.bert.pooler.dense.weight)


def test_reinit_pooler_alone_redraws_pooler(tiny_encoder):
    before = make(tiny_encoder)
    after = make(tiny_encoder, reinit_pooler=True)
    assert not torch.equal(before.bert.pooler.dense.weight, after.bert.pooler.dense.weight)
    assert torch.count_nonzero(after.bert.pooler.dense.bias) == 0
    assert torch.equal(
        before.bert.encoder.layer[1].output.dense.weight, after.bert.encoder.layer[1].output.dense.weight
    )


@pytest.mark.parametrize("n", [-1, 3])
def test_reinit_layers_out_of_range_names_key_and_layer_count(tiny_encoder, n):
    with pytest.raises(ConfigError, match=r"reinit-layers must be between 0 and 2 \(the model has 2 encoder layers\)"):
        make(tiny_encoder, reinit_layers=n)


def test_unknown_config_key_is_an_error(tiny_encoder):
    with pytest.raises(ConfigError, match="unknown model config key.*learning_rate"):
        make(tiny_encoder, learning_rate=0.1)


def _trainer_stub(steps: int):
    class T:
        estimated_stepping_batches = steps

    return T()


def test_optimizer_decays_weights_only_and_schedules_warmup(tiny_encoder):
    m = make(tiny_encoder, cls=TextBertClassifier, weight_decay=0.05, warmup_steps=10, lr=1e-3, scheduler="linear")
    m.trainer = None
    m._trainer = _trainer_stub(100)  # only estimated_stepping_batches is read
    conf = m.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in m.named_parameters()}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert any("LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert any(names[id(p)].endswith("bias") for p in no_decay["params"])
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and math.isclose(lrs[10], 1e-3) and lrs[5] < lrs[10]  # warmup
    assert lrs[99] < 2e-5  # linear decay to ~0


@pytest.mark.parametrize("name", ["cosine", "polynomial", "constant"])
def test_each_schedule_is_built(tiny_encoder, name):
    m = make(tiny_encoder, cls=TextBertClassifier, warmup_steps=2, lr=1e-3, scheduler=name)
    m._trainer = _trainer_stub(20)
    conf = m.configure_optimizers()
    sched = conf["lr_scheduler"]["scheduler"]
    for _ in range(10):
        conf["optimizer"].step()
        sched.step()
    lr = sched.get_last_lr()[0]
    assert (lr == pytest.approx(1e-3)) if name == "constant" else (lr < 1e-3)


def test_run_scheduler_false_means_constant_lr(tiny_encoder):
    m = make(tiny_encoder, cls=TextBertClassifier, run_scheduler=False, lr=3e-4)
    opt = m.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 3e-4


def test_checkpoint_alone_rebuilds_model_and_processor_settings(tiny_encoder, tmp_path):
    m = make(tiny_encoder, cls=TextBertClassifier, max_chunks=5, max_tokens=64, class_names=["no", "yes"])
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams)}, path)  # as Lightning saves it
    again = load_checkpoint(path)
    assert again.config["max_chunks"] == 5 and again.config["max_tokens"] == 64
    assert again.config["class_names"] == ["no", "yes"]
    b = batch()
    with torch.no_grad():
        assert torch.equal(m.logits(b[IDS], b[MASK]), again.logits(b[IDS], b[MASK]))


def test_padding_copies_count_in_no_metric_and_no_prediction(tiny_encoder):
    """An evaluated split is padded to equal shares per rank with copies marked `pad` (runner/prepare.py): the
    model runs them (every rank runs the same batches) but counts them in no metric and writes no prediction."""
    m = make(tiny_encoder, cls=TextBertClassifier, class_names=["no", "yes"])
    m.log = lambda *a, **k: None  # no Trainer here: Lightning's logging needs one
    b = {**batch(), "y": torch.tensor([1, 0, 1]), "id": ["a", "b", "a-copy"], "pad": torch.tensor([False, False, True])}
    with torch.no_grad():
        m.test_step(b, 0)
        m.validation_step(b, 0)
        logits = m.logits(b[IDS], b[MASK])
    assert [r["id"] for r in m.test_rows] == ["a", "b"]
    assert [r["pred"] for r in m.test_rows] == logits[:2].argmax(-1).tolist()
    assert seen(m.test_metrics["test_accuracy"]) == seen(m.val_metrics["val_accuracy"]) == 2  # the 2 real rows
    only_pad = {**b, "pad": torch.tensor([True, True, True])}
    with torch.no_grad():
        m.test_step(only_pad, 1)
    assert len(m.test_rows) == 2 and seen(m.test_metrics["test_accuracy"]) == 2


def seen(metric) -> int:
    """Records a binary torchmetrics stat-scores metric has counted."""
    return int(metric.tp + metric.fp + metric.tn + metric.fn)
