"""Side features on the demo data: text only against the three ways to add the eleven numeric fields.

    text only            the dialogue alone (today's model)
    concat               SideFeatures MLP on the numbers, concatenated with the text features (fusion: concat)
    gated                the numbers gate the text features (fusion: gated)
    features as text     `name: value` lines written into the dialogue, no model change (fusion: text)

Each variant is trained in-process on the same demo split with the same seed (bsm's own prepare, loaders and
model under Lightning), then scored on the test split: AUROC and accuracy (PyTorch), training seconds per epoch,
and the export's scoring speed (records/s through `Predictor`, the ONNX Runtime graphs `bsm predict` runs).
For the concat model, the permutation importance of each side feature on the test split (AUROC lost when that
column is shuffled, mean of --repeats shuffles).

    python bench/bench_features.py [--rows 2000] [--epochs 2] [--max-tokens 64] [--export "text only,concat"]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = {"text only": None, "concat": "concat", "gated": "gated", "features as text": "text"}


def _auroc(y: Any, p: Any) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _encode(model: Any, loader: Any) -> list[tuple[Any, Any, Any]]:
    """Per batch: (text features [B, hidden_common_dim], raw side features or None, labels), BERT run once."""
    import torch

    with torch.no_grad():
        return [
            (model.encode(b[model.ids_key], b[model.mask_key]), model.side_input(b), b[model.config["label_name"]])
            for b in loader
        ]


def _probs(model: Any, encoded: list, side_override: Any = None) -> tuple[Any, Any]:
    """P(class 1) and labels over encoded batches; `side_override(batch_index, side)` replaces the side features
    (permutation importance: only the head runs again)."""
    import numpy as np
    import torch

    ps, ys = [], []
    with torch.no_grad():
        for i, (text, side, y) in enumerate(encoded):
            if side_override is not None:
                side = side_override(i, side)
            ps.append(model.classifier(model.fuse(text, side)).softmax(-1)[:, 1].numpy())
            ys.append(y.numpy())
    return np.concatenate(ps), np.concatenate(ys)


def run_variant(name: str, fusion: str | None, data: dict[str, str], args: argparse.Namespace, out: Path) -> dict:
    import lightning.pytorch as pl
    import numpy as np

    from raytune_bsm.config import RunConfig
    from raytune_bsm.demo.side import SIDE_SCHEMA
    from raytune_bsm.model.text_bert import TextBertClassifier
    from raytune_bsm.runner.prepare import prepare

    model_cfg: dict[str, Any] = {
        "max_tokens": args.max_tokens,
        "max_chunks": args.max_chunks,
        "lr": args.lr,
        "freeze_layers": args.freeze_layers,
    }
    if args.tiny:
        model_cfg["encoder_config"] = {
            "vocab_size": 30522,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 512,
        }
        model_cfg["freeze_layers"] = 0
    if fusion:
        model_cfg["fusion"] = fusion
    features = ",".join(f.name for f in SIDE_SCHEMA) if fusion else None
    run = RunConfig.from_dict(
        {
            "data": {**data, "batch_size": args.batch_size, "feature_fields": features},
            "model": model_cfg,
            "train": {"max_epochs": args.epochs, "seed": 0},
        }
    )
    prep = prepare(run)
    train_dl, _, test_dl = prep.loaders(run)
    pl.seed_everything(0)
    model = TextBertClassifier(prep.model_config)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
    )
    t = time.perf_counter()
    trainer.fit(model, train_dl)
    epoch_s = (time.perf_counter() - t) / args.epochs
    model.eval()
    t = time.perf_counter()
    encoded = _encode(model, test_dl)
    torch_rps = sum(len(e[2]) for e in encoded) / (time.perf_counter() - t)
    p, y = _probs(model, encoded)
    row = {
        "variant": name,
        "auroc": _auroc(y, p),
        "accuracy": float(((p > 0.5) == y).mean()),
        "epoch_s": epoch_s,
        "records": len(y),
        "torch_records_per_s": torch_rps,
    }
    if fusion in ("concat", "gated") and args.repeats:
        rng = np.random.default_rng(0)
        names = prep.model_config["feature_fields"]
        sides = [e[1] for e in encoded]
        import torch

        full = torch.cat(sides)
        drops = {}
        for k, n in enumerate(names):
            losses = []
            for _ in range(args.repeats):
                shuffled = full.clone()
                shuffled[:, k] = full[rng.permutation(len(full)), k]
                parts = torch.split(shuffled, [len(s) for s in sides])
                p_k, y_k = _probs(model, encoded, lambda i, s, parts=parts: parts[i])
                losses.append(row["auroc"] - _auroc(y_k, p_k))
            drops[n] = float(np.mean(losses))
        row["importance"] = drops
        p0, _ = _probs(model, encoded, lambda i, s: torch.full_like(s, float("nan")))  # every feature missing
        row["auroc_without_features"] = _auroc(y, p0)
    if name in args.export.split(","):
        from raytune_bsm.model.export import export_checkpoint
        from raytune_bsm.scoring.predict import Predictor

        ckpt = out / name.replace(" ", "-") / "ckpt"
        trainer.save_checkpoint(ckpt / "checkpoint.ckpt")
        dest = out / name.replace(" ", "-") / "export"
        export_checkpoint(str(ckpt), str(dest))
        import pyarrow.parquet as pq

        from raytune_bsm.data.features import to_matrix

        table = pq.read_table(data["test"])
        predictor = Predictor(str(dest), precision="fp32")
        x = to_matrix(table, predictor.feature_names) if predictor.feature_names else None
        texts = table.column("dialogue").to_pylist()
        predictor.predict_texts(texts[:16], features=x[:16] if x is not None else None)  # warm-up
        t = time.perf_counter()
        predictor.predict_texts(texts, features=x)
        row["records_per_s"] = len(texts) / (time.perf_counter() - t)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-chunks", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--freeze-layers", type=int, default=2, help="bsm's default; more: cheaper steps on busy CPUs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer encoder from a config instead of MiniLM")
    ap.add_argument("--export", default="text only,concat", help="variants exported and scored with ONNX Runtime")
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    args = ap.parse_args()

    import torch

    from raytune_bsm.demo.generator import write_demo_data

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    out = Path(tempfile.mkdtemp(prefix="bsm-bench-features-"))
    paths = write_demo_data(out / "data", rows=args.rows, seed=0)
    data = {k: str(v) for k, v in paths.items()}
    print(f"load average {os.getloadavg()}; rows {args.rows}; epochs {args.epochs}; {vars(args)}", flush=True)
    rows = []
    chosen = args.only.split(",") if args.only else list(VARIANTS)
    for name in chosen:
        row = run_variant(name, VARIANTS[name], data, args, out)
        print(row, flush=True)
        rows.append(row)
    base = next((r for r in rows if r["variant"] == "text only"), None)
    print(
        "\n| variant | test AUROC | Δ AUROC vs text only | accuracy | s / epoch | records/s (ORT) | records/s (PyTorch) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        delta = f"{r['auroc'] - base['auroc']:+.3f}" if base else ""
        rps = f"{r['records_per_s']:.1f}" if "records_per_s" in r else "not measured"
        print(
            f"| {r['variant']} | {r['auroc']:.3f} | {delta} | {r['accuracy']:.3f} | {r['epoch_s']:.0f} | {rps} "
            f"| {r['torch_records_per_s']:.1f} |"
        )
    for r in rows:
        if "importance" in r:
            print(
                f"\n{r['variant']}: test AUROC {r['auroc']:.3f}, every side feature missing "
                f"{r['auroc_without_features']:.3f}; permutation importance (AUROC lost):"
            )
            for n, v in sorted(r["importance"].items(), key=lambda kv: -kv[1]):
                print(f"    {n:28s} {v:+.4f}")


if __name__ == "__main__":
    main()
