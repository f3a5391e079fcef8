"""What every benchmark shares: the machine's description, timers, the data distributions and the model.

The model is the real default encoder (all-MiniLM-L6-v2, from the offline package) fine-tuned in-process on 1,200
demo dialogues (two epochs, a few minutes on 2 cores), exported by bsm's own exporter with validation batches, so
the export records both precisions' accuracy like a real run's.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

THREADS = len(os.sched_getaffinity(0))
C, T = 4, 128  # the long-text setting of issue 10: 4 chunks of 128 tokens
LABEL = "reversal_flag"


def machine() -> dict[str, Any]:
    """CPU model, cores, load average, library versions: printed beside every figure."""
    import numpy
    import onnxruntime
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }
    for mod in ("transformers", "lightning", "ray", "pyarrow", "tokenizers"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": THREADS,
        "load_average": os.getloadavg(),
        "gpu": _gpu_name(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def median_of(fn: Callable[[], Any], n: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(n))


def run_cli(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(args, capture_output=True, check=True, timeout=300)
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------- data


@dataclass
class Texts:
    name: str
    texts: list[str]
    labels: list[int]


def demo_texts(rows: int, seed: int) -> Texts:
    from raytune_bsm.demo.generator import make_dialogues

    t = make_dialogues(rows, seed=seed)
    return Texts("demo", t.column("dialogue").to_pylist(), t.column(LABEL).to_pylist())


def long_texts(rows: int, seed: int, per_record: int = 4) -> Texts:
    """Long dialogues: `per_record` demo dialogues of the same label back to back (4 x 128 tokens after the
    processor keeps the last 4 chunks), so the label stays the record's."""
    import numpy as np

    base = demo_texts(rows * per_record * 2, seed)
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    by_label = {y: [i for i, v in enumerate(base.labels) if v == y] for y in set(base.labels)}
    for k in range(rows):
        y = base.labels[k]
        pick = rng.choice(by_label[y], size=per_record, replace=False)
        texts.append("\n".join(base.texts[i] for i in pick))
        labels.append(y)
    return Texts("long (4 x 128)", texts, labels)


# ------------------------------------------------------------------------------------------- the model


def model_config(**over: Any) -> dict[str, Any]:
    return {
        "text_name": "dialogue",
        "label_name": LABEL,
        "tokenizer": "all-MiniLM-L6-v2",
        "is_binary": True,
        "num_classes": 2,
        "class_names": ["0", "1"],
        "max_chunks": C,
        "max_tokens": T,
        "chunk_pooling": "mean",
        "pack_from": "kept_end",
        "run_scheduler": False,
        **over,
    }


def collate_for(processor: Any, texts: Texts, cfg: dict[str, Any]) -> tuple[Any, Any]:
    """(EncodedDataset, Collate) of `texts`, as training builds them."""
    import numpy as np

    from raytune_bsm.data.batching import Collate, EncodedDataset

    p = processor(texts.texts)
    ds = EncodedDataset(p.ids, p.lens, np.asarray(texts.labels, dtype=np.int64), list(range(len(texts.texts))))
    return ds, Collate(ds, cfg["text_name"], cfg["label_name"], None, processor.pad_id)


def fit_and_export(
    work: Path, train: Texts, val: Texts, log: Callable[[str], None] = print, epochs: int = 2
) -> dict[str, Any]:
    """Fine-tune the whole model on `train` (AdamW, lr 5e-5, batches of 16 records grouped by length, `epochs`
    epochs: a few minutes on 2 cores), save a checkpoint, export it with bsm (validation batches from `val`).
    Reuses a fine-tuned export already in `work`. Returns {"export", "model", "fit_seconds", "export_seconds"}.

    A fine-tuned model, like the ones users export: int8's accuracy loss depends on the model's margins, and a
    head on frozen features (what this did before, 66% accurate) flips labels on noise a trained model ignores."""
    import numpy as np
    import torch

    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
    from raytune_bsm.model.export import export_checkpoint
    from raytune_bsm.model.text_bert import TextBertClassifier

    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    cfg = model_config()
    model = TextBertClassifier(cfg).eval()
    processor = ChunkProcessor(ProcessorConfig.of_model(model.config))
    export, ckpt = work / "export", work / "model.finetuned.ckpt"
    saved = torch.load(ckpt, weights_only=True) if ckpt.is_file() else None
    if (
        (export / "manifest.json").is_file()
        and saved
        and saved["hyper_parameters"] == json.loads(json.dumps(dict(model.hparams)))
    ):
        model.load_state_dict(saved["state_dict"])  # the same model config as now: its fine-tune and export reused
        return {"export": export, "model": model.eval(), "fit_seconds": None, "export_seconds": None}
    t0 = time.perf_counter()
    ds, collate = collate_for(processor, train, cfg)
    order = np.argsort([int(sum(lens)) for lens in ds.lens], kind="stable")
    batches = [[int(i) for i in order[s : s + 16]] for s in range(0, len(order), 16)]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(epochs):
        for k in rng.permutation(len(batches)):
            b = collate(batches[k])
            loss = torch.nn.functional.cross_entropy(
                model.logits(b[collate.ids_key], b[collate.mask_key]), b[cfg["label_name"]]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    fit = time.perf_counter() - t0
    log(f"fine-tuned on {len(ds)} records x {epochs} epochs in {fit:.0f}s (last batch's loss {loss.item():.3f})")

    work.mkdir(parents=True, exist_ok=True)
    hp = json.loads(json.dumps(dict(model.hparams)))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hp}, ckpt)
    vds, vcollate = collate_for(processor, val, cfg)
    val_batches = [vcollate(list(range(s, min(s + 16, len(vds))))) for s in range(0, min(64, len(vds)), 16)]
    shutil.rmtree(export, ignore_errors=True)  # the bench's own work folder: an export of an older model
    t0 = time.perf_counter()
    export_checkpoint(str(ckpt), str(export), val_batches=val_batches)
    took = time.perf_counter() - t0
    log(f"exported in {took:.1f}s")
    return {"export": export, "model": model, "fit_seconds": fit, "export_seconds": took}


def python() -> str:
    return sys.executable
