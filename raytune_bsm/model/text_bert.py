"""The chunked BERT classifier.

A record is up to C chunks of up to T tokens. BERT encodes every non-empty chunk; the pooled outputs are
averaged over the record's non-empty chunks; dropout and a linear layer give the record's features:

    input_ids, attention_mask [B, C, T]
      -> non-empty chunks [N, T] -> BERT pooled output [N, H] -> back in place [B, C, H]
      -> mean over the record's non-empty chunks [B, H] -> Dropout -> Linear [B, hidden_common_dim]

With side features (`feature_fields`, data/features.py) the record's numbers join the text features:

    the batch's per-feature [B] keys -> raw [B, F] (NaN: missing) -> SideFeatures [B, side_hidden]
      concat: [text features, side] [B, hidden_common_dim + side_hidden]
      gated:  sigmoid(Linear(side)) * text features + Linear(side) [B, hidden_common_dim]

`fusion: text` writes the numbers into the dialogue instead and changes nothing here. Without feature fields
the modules, their checkpoint keys and the batch are those of a text-only model.

`TextBertBase` is that feature extractor, config- and batch-compatible with the reference design.
`TextBertClassifier` adds the classification head, loss, metrics, optimizer and schedule for training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from raytune_bsm.config import resolve_model_config  # defaults and checks live with the torch-free configs
from raytune_bsm.data.batching import ID, PAD, TRUNCATED, ids_key, mask_key
from raytune_bsm.errors import ConfigError, ExportError
from raytune_bsm.model.checkpoint import safe_load
from raytune_bsm.model.encoder import load_encoder


class SideFeatures(nn.Module):
    """Raw side features [B, F] -> [B, side_hidden]. The training statistics are buffers, so the preprocessing
    runs inside the model and every traced graph: clip to the training [min, max] (infinities too), impute the
    training mean where missing (NaN) plus a 0/1 missing indicator per feature, standardize; then a small MLP
    (LayerNorm first, as AutoGluon's numeric MLP)."""

    def __init__(self, stats: dict[str, Any], hidden: int, dropout: float) -> None:
        super().__init__()
        F_ = len(stats["names"])
        for name in ("mean", "std", "min", "max"):
            self.register_buffer(name, torch.tensor(stats[name], dtype=torch.float32).view(1, F_))  # [1, F]
        self.mlp = nn.Sequential(
            nn.LayerNorm(2 * F_), nn.Linear(2 * F_, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        missing = torch.isnan(raw)  # [B, F]
        x = torch.where(missing, self.mean, raw)  # [B, F]: NaN -> the training mean
        x = torch.minimum(torch.maximum(x, self.min), self.max)  # +-inf and outliers -> the training range
        z = (x - self.mean) / self.std  # [B, F]; a constant column has std 1
        return self.mlp(torch.cat([z, missing.to(z.dtype)], dim=1))  # [B, 2F] -> [B, side_hidden]


class TextBertBase(pl.LightningModule):
    """Chunked-BERT features: batch dict -> [B, hidden_common_dim]."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = resolve_model_config(config)
        self.save_hyperparameters({"config": self.config})  # a checkpoint alone rebuilds the model
        cfg = self.config
        self.ids_key, self.mask_key = ids_key(cfg["text_name"]), mask_key(cfg["text_name"])

        # Mean pooling builds no pooler: an unused layer would stall DDP's gradient sync.
        self.bert = load_encoder(cfg["tokenizer"], cfg["encoder_config"], pooler=cfg["chunk_pooling"] == "pooler")
        H = self.bert.config.hidden_size
        self.dropout = nn.Dropout(cfg["dropout"])
        self.head = nn.Linear(H, cfg["hidden_common_dim"])
        self.out_dim = cfg["hidden_common_dim"]  # what forward() gives per record
        self.feature_fields = list(cfg["feature_fields"] or []) if cfg["fusion"] != "text" else []
        if self.feature_fields:
            if not cfg["feature_stats"]:
                raise ConfigError("a model with feature_fields needs their feature_stats (prepared data gives them)")
            self.side = SideFeatures(cfg["feature_stats"], cfg["side_hidden"], cfg["dropout"])
            if cfg["fusion"] == "gated":
                self.gate = nn.Linear(cfg["side_hidden"], cfg["hidden_common_dim"])
                self.side_proj = nn.Linear(cfg["side_hidden"], cfg["hidden_common_dim"])
            else:
                self.out_dim += cfg["side_hidden"]
        self._reinit(cfg["reinit_pooler"], cfg["reinit_layers"])
        self._freeze(cfg["freeze_layers"])
        # `from_pretrained` returns the encoder in eval mode and Lightning keeps each module's mode, so without
        # this the encoder's own dropout would silently stay off while fine-tuning. Frozen layers stay in eval.
        self.train()

    def _reinit(self, reinit_pooler: bool, reinit_layers: int) -> None:
        """Re-draw the pooler and/or the top `reinit_layers` encoder layers, independently of each other."""
        std = self.bert.config.initializer_range
        n_layers = len(self.bert.encoder.layer)
        if not 0 <= reinit_layers <= n_layers:
            raise ConfigError(
                f"--reinit-layers must be between 0 and {n_layers} (the model has {n_layers} encoder layers), "
                f"got {reinit_layers}"
            )

        def init(module: nn.Module) -> None:
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
            if isinstance(module, nn.LayerNorm):
                module.weight.data.fill_(1.0)
                module.bias.data.zero_()

        if reinit_pooler and self.bert.pooler is not None:
            self.bert.pooler.dense.weight.data.normal_(mean=0.0, std=std)
            self.bert.pooler.dense.bias.data.zero_()
        for layer in self.bert.encoder.layer[n_layers - reinit_layers :] if reinit_layers else []:
            layer.apply(init)

    def _freeze(self, n: int) -> None:
        """No gradients for the embeddings and the bottom `n` encoder layers."""
        n_layers = len(self.bert.encoder.layer)
        if n > n_layers:
            raise ConfigError(f"--freeze-layers must be between 0 and {n_layers}, got {n}")
        self._frozen = [self.bert.embeddings, *self.bert.encoder.layer[:n]] if n else []
        for module in self._frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> "TextBertBase":
        """Frozen layers never train, so they stay in eval mode (no dropout noise in features nobody learns)."""
        super().train(mode)
        for module in getattr(self, "_frozen", []):
            module.eval()
        return self

    def _pool(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[N, T] chunks -> [N, H]: BERT's pooler output, or the mean of the chunk's token states."""
        out = self.bert(input_ids=ids, attention_mask=mask)
        if self.config["chunk_pooling"] == "pooler":
            return out.pooler_output
        m = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)  # [N, T, 1]
        return (out.last_hidden_state * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, dense: bool = False) -> torch.Tensor:
        """[B, C, T] ids and mask -> [B, hidden_common_dim].

        `dense=False` (training and eval): only non-empty chunks go through BERT, so padding chunks cost nothing.
        `dense=True` (export): every chunk goes through BERT, giving a static graph that traces cleanly; an empty
        chunk attends to its first position only (a fully masked row would give NaN in SDPA) and is then dropped
        from the mean, so both paths give the same numbers.
        """
        B, C, T = input_ids.shape
        ids = input_ids.reshape(B * C, T)  # [B*C, T]
        mask = attention_mask.reshape(B * C, T)  # [B*C, T]
        nonempty = mask.bool().any(dim=1)  # [B*C]

        if dense:
            first_only = torch.zeros_like(mask)
            first_only[:, 0] = 1
            safe_mask = torch.where(nonempty.unsqueeze(1), mask, first_only)
            pooled = self._pool(ids, safe_mask)  # [B*C, H]
        else:
            keep = nonempty.nonzero().squeeze(1)  # [N]
            if keep.numel() == 0:
                raise ValueError("every chunk in the batch is empty (attention_mask is all zeros)")
            T_used = int(mask[keep].any(dim=0).nonzero().max()) + 1  # drop padding columns no kept chunk uses
            pooled_kept = self._pool(ids[keep, :T_used], mask[keep, :T_used])  # [N, H]
            pooled = pooled_kept.new_zeros(B * C, pooled_kept.shape[1]).index_copy(0, keep, pooled_kept)

        pooled = pooled.view(B, C, -1)  # [B, C, H]
        chunk_mask = nonempty.view(B, C, 1)  # [B, C, 1]
        summed = torch.where(chunk_mask, pooled, torch.zeros_like(pooled)).sum(dim=1)  # [B, H]
        count = chunk_mask.sum(dim=1).clamp(min=1).to(pooled.dtype)  # [B, 1]; 0 chunks -> zeros, not NaN
        features = summed / count  # [B, H]
        return self.head(self.dropout(features))  # [B, hidden_common_dim]

    def side_input(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """The batch's side features, one [B] tensor per feature, gathered to raw [B, F] (None: text only)."""
        if not self.feature_fields:
            return None
        return torch.stack([batch[n].float() for n in self.feature_fields], dim=1)  # [B, F]

    def fuse(self, text: torch.Tensor, raw: torch.Tensor | None) -> torch.Tensor:
        """Text features [B, hidden_common_dim] and raw side features [B, F] -> [B, out_dim]."""
        if not self.feature_fields:
            return text
        if raw is None:
            raise ValueError(f"this model reads side features {self.feature_fields}; none were given")
        side = self.side(raw.to(text.dtype))  # [B, side_hidden]
        if self.config["fusion"] == "gated":
            return torch.sigmoid(self.gate(side)) * text + self.side_proj(side)  # [B, hidden_common_dim]
        return torch.cat([text, side], dim=1)  # [B, hidden_common_dim + side_hidden]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.fuse(self.encode(batch[self.ids_key], batch[self.mask_key]), self.side_input(batch))


class TextBertClassifier(TextBertBase):
    """TextBertBase + a classification head, trained with cross-entropy, AdamW and a warmup schedule."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        self.num_classes = cfg["num_classes"]
        self.classifier = nn.Sequential(nn.GELU(), nn.Linear(self.out_dim, self.num_classes))
        self.val_metrics = self._metrics("val_")
        self.test_metrics = self._metrics("test_")
        self.test_rows: list[dict[str, Any]] = []

    def _metrics(self, prefix: str):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import AUROC, Accuracy, F1Score, Precision, Recall

        if self.num_classes == 2:
            kw: dict[str, Any] = {"task": "binary"}
        else:
            kw = {"task": "multiclass", "num_classes": self.num_classes, "average": "macro"}
        make = {"accuracy": Accuracy, "f1_score": F1Score, "auroc": AUROC, "precision": Precision, "recall": Recall}
        if self.num_classes > 2:  # accuracy stays micro (the fraction right); the others are macro
            make["accuracy"] = lambda **k: Accuracy(task="multiclass", num_classes=self.num_classes)
        return MetricCollection({m: make[m](**kw) for m in self.config["metric_choices"]}, prefix=prefix)

    def logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        dense: bool = False,
        side: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, C, T] ids and mask (and raw side features [B, F]) -> [B, num_classes]."""
        return self.classifier(self.fuse(self.encode(input_ids, attention_mask, dense=dense), side))

    def _step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.logits(batch[self.ids_key], batch[self.mask_key], side=self.side_input(batch))
        labels = batch[self.config["label_name"]]
        return F.cross_entropy(logits.float(), labels), logits.float(), labels

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=-1)
        return probs[:, 1] if self.num_classes == 2 else probs  # binary metrics take P(class 1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _, labels = self._step(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def _eval_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]] | None:
        """(loss, logits, labels, kept row indices) over the batch's real records. A split evaluated on several
        ranks is padded to an equal share per rank with copies marked `pad` (data/streaming.py): they run, so
        every rank runs the same batches, but count in no metric and no prediction. None: only padding."""
        logits = self.logits(batch[self.ids_key], batch[self.mask_key], side=self.side_input(batch)).float()
        labels = batch[self.config["label_name"]]  # [B]
        keep = list(range(len(labels)))
        pad = batch.get(PAD)
        if pad is not None and bool(pad.any()):
            keep = [i for i, p in enumerate(pad.tolist()) if not p]
            if not keep:
                return None
            logits, labels = logits[keep], labels[keep]  # [K, num_classes], [K]
        return F.cross_entropy(logits, labels), logits, labels, keep

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        step = self._eval_step(batch)
        if step is None:
            return
        loss, logits, labels, _ = step
        self.val_metrics.update(self._scores(logits), labels)
        self.log("val_loss", loss, on_epoch=True, sync_dist=True, batch_size=len(labels))

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        step = self._eval_step(batch)
        if step is None:
            return
        loss, logits, labels, keep = step
        self.test_metrics.update(self._scores(logits), labels)
        self.log("test_loss", loss, on_epoch=True, sync_dist=True, batch_size=len(labels))
        probs = logits.softmax(dim=-1).cpu()  # [K, num_classes]
        ids = batch[self.config["id_name"] or ID]
        chunks = batch[self.mask_key].bool().any(dim=-1).sum(dim=-1).tolist()  # [B]: chunks kept per record
        cut = batch.get(TRUNCATED) or [None] * len(ids)  # more than max_chunks chunks (None: not known)
        for k, i in enumerate(keep):
            self.test_rows.append(
                {
                    "id": ids[i],
                    "label": int(labels[k]),
                    "pred": int(probs[k].argmax()),
                    "probs": probs[k].tolist(),
                    "num_chunks": chunks[i],
                    "truncated": cut[i],
                }
            )

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def configure_optimizers(self) -> Any:
        cfg = self.config
        # Weight decay on weights only: not on biases, not on LayerNorm.
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": cfg["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=cfg["lr"], eps=cfg["adam_epsilon"])
        if not cfg["run_scheduler"]:
            return optimizer  # constant learning rate

        from transformers import get_scheduler

        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = cfg["warmup_steps"] or int(math.ceil(cfg["warmup_ratio"] * total))
        name = {"constant": "constant_with_warmup"}.get(cfg["scheduler"], cfg["scheduler"])
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=min(warmup, total), num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> TextBertClassifier:
    """Rebuild a trained classifier from a checkpoint file alone (its config travels inside it). The file is read
    without running code from it (`safe_load`); an ExportError if it is not this project's checkpoint."""
    ckpt = safe_load(path, map_location)
    try:
        model = TextBertClassifier(ckpt["hyper_parameters"]["config"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ExportError(
            f"checkpoint {str(path)!r} does not fit a bsm model ({e.__class__.__name__}: {first})"
        ) from None
    return model.eval()
