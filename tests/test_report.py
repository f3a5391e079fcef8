"""`bsm report` on real runs: a real in-process training run (tiny BERT, demo data, two epochs), a real
three-class run, and (slow) a real Ray Train run with its export and a real Ray Tune sweep. The PNGs decode at
their sizes, the numbers in the page are torchmetrics' on the stored predictions, and the page opens in a real
headless Chromium with no console error and every image loaded."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TINY_ENCODER

from raytune_bsm.errors import ConfigError
from raytune_bsm.report import build_report

# What each figure must measure, in pixels (width, height).
SIZES = {
    "learning_curves.png": (1000, 420),
    "roc_pr.png": (1000, 420),
    "confusion.png": (1000, 420),
    "calibration.png": (640, 480),
    "accuracy_by_length.png": (640, 480),
    "sweep_parallel.png": (1000, 420),
    "sweep_lr.png": (640, 480),
    "sweep_trials.png": (1000, 420),
}
CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), shutil.which("chromium")
)


def _train_locally(out: Path, **data) -> Path:
    """A real run of the training loop in this process (runtime local): TensorBoard events, predictions, metrics."""
    from raytune_bsm.config import RunConfig
    from raytune_bsm.runner.worker import train_loop

    d = {
        "name": out.name,
        "model": {"encoder_config": TINY_ENCODER, "lr": 2e-3, "max_tokens": 64, "max_chunks": 4},
        "data": {"demo_rows": 300, "batch_size": 16, **data},
        "train": {"max_epochs": 2, "output_dir": str(out)},
        "scaling": {"cpus_per_worker": 1},
    }
    train_loop(RunConfig.from_dict(d).to_dict())
    return out


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    return _train_locally(tmp_path_factory.mktemp("runs") / "tiny")


def _png_size(path: Path) -> tuple[int, int]:
    import matplotlib.image

    h, w = matplotlib.image.imread(str(path)).shape[:2]
    return w, h


def _shown(html: str) -> dict[str, float]:
    """The headline numbers of the page: data-metric="name" data-value="..." (the first table: the test split)."""
    first = html.split('<table class="metrics">')[1]
    return {k: float(v) for k, v in re.findall(r'data-metric="([^"]+)" data-value="([^"]+)"', first)}


def _torchmetrics_on(pred_path: Path | str, classes: list[str]) -> dict[str, float]:
    import torch
    import torchmetrics.functional.classification as tm

    t = pq.read_table(pred_path)
    target = torch.tensor([classes.index(str(v)) for v in t.column("label").to_pylist()])
    probs = torch.tensor([t.column(f"prob_{c}").to_pylist() for c in classes]).T  # [N, C]
    if len(classes) == 2:
        return {
            "auroc": float(tm.binary_auroc(probs[:, 1], target)),
            "accuracy": float(tm.binary_accuracy(probs[:, 1], target)),
        }
    n = len(classes)
    return {
        "auroc": float(tm.multiclass_auroc(probs, target, num_classes=n)),
        "accuracy": float(tm.multiclass_accuracy(probs, target, num_classes=n, average="micro")),
    }


def _check_report(result: dict, expect: set[str]) -> str:
    html_path = Path(result["html"])
    assert html_path.is_file() and html_path.parent == Path(result["dir"])
    names = {Path(p).name for p in result["pngs"]}
    assert names == expect, names
    html = html_path.read_text()
    for p in map(Path, result["pngs"]):
        assert _png_size(p) == SIZES[p.name], p.name
        assert base64.b64encode(p.read_bytes()).decode() in html  # the same image, embedded
    assert "<script" not in html and "<link" not in html and not re.search(r'(src|href)="(https?:)?//', html)
    assert not list(html_path.parent.parent.glob(f".{html_path.parent.name}.tmp-*"))  # nothing half-written left
    return html


def test_report_of_a_real_local_run(local_run, tmp_path):
    result = build_report(str(local_run), str(tmp_path / "report"))
    html = _check_report(
        result, {"learning_curves.png", "roc_pr.png", "confusion.png", "calibration.png", "accuracy_by_length.png"}
    )
    expected = _torchmetrics_on(local_run / "test_predictions.parquet", ["0", "1"])
    shown = _shown(html)
    assert shown["auroc"] == pytest.approx(expected["auroc"], abs=1e-6)
    assert shown["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    # and the run's own test metrics (the model's torchmetrics during trainer.test) agree with the page
    stored = json.loads((local_run / "metrics.json").read_text())
    assert shown["auroc"] == pytest.approx(stored["test_auroc"], abs=1e-5)
    assert shown["accuracy"] == pytest.approx(stored["test_accuracy"], abs=1e-6)
    assert result["metrics"]["auroc"] == shown["auroc"]


def test_accuracy_by_length_from_the_chunks_the_runner_recorded(local_run, tmp_path):
    """The runner stores each test record's chunks kept and whether it was truncated; they are what the run's own
    processor gives for that record's text, and the report's bucket table is computed from them."""
    from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig
    from raytune_bsm.runner.prepare import demo_data_dir

    run = local_run
    config = json.loads((run / "config.json").read_text())
    proc = ChunkProcessor(ProcessorConfig.of_model(config["model"]))
    test = pq.read_table(demo_data_dir(300) / "test.parquet").to_pylist()
    by_id = {r["order_id"]: r["dialogue"] for r in test}
    preds = pq.read_table(run / "test_predictions.parquet")
    texts = [by_id[i] for i in preds.column("id").to_pylist()]
    chunks = [len(proc([t]).lens[0]) for t in texts]
    cut = [proc([t]).truncated > 0 for t in texts]
    assert preds.column("num_chunks").to_pylist() == chunks and preds.column("truncated").to_pylist() == cut
    result = build_report(str(run), str(tmp_path / "report"))
    html = _check_report(
        result, {"learning_curves.png", "roc_pr.png", "confusion.png", "calibration.png", "accuracy_by_length.png"}
    )
    right = [a == b for a, b in zip(preds.column("label").to_pylist(), preds.column("predicted").to_pylist())]
    for k in sorted(set(chunks)):
        sel = [r for r, c in zip(right, chunks) if c == k]
        acc = sum(sel) / len(sel)
        shown = str(int(acc)) if acc in (0.0, 1.0) else f"{acc:.4f}"
        n_cut = sum(t for t, c in zip(cut, chunks) if c == k)
        cells = "".join(f'<td class="num">{v}</td>' for v in (k, len(sel), shown, n_cut))
        assert f"<tr>{cells}</tr>" in html, (k, cells)
    assert sum(cut) > 0  # the case the bucket table is for
    assert f'test records truncated</td><td class="num">{sum(cut)}<' in html


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory) -> Path:
    """A real three-class run: the demo dialogues, labelled by their message count modulo 3."""
    from raytune_bsm.runner.prepare import demo_data_dir

    base, out = demo_data_dir(300), tmp_path_factory.mktemp("multi")
    for split in ("train", "val", "test"):
        t = pq.read_table(base / f"{split}.parquet")
        tier = pa.array([f"tier<{n % 3}>" for n in t.column("num_messages").to_pylist()])  # a name to escape
        pq.write_table(t.append_column("tier", tier), out / f"{split}.parquet")
    data = {s: str(out / f"{s}.parquet") for s in ("train", "val", "test")}
    return _train_locally(out / "three", label_field="tier", **data)


def test_report_of_a_real_three_class_run(multiclass_run, tmp_path):
    result = build_report(str(multiclass_run), str(tmp_path / "r"))
    html = _check_report(
        result, {"learning_curves.png", "roc_pr.png", "confusion.png", "calibration.png", "accuracy_by_length.png"}
    )
    classes = json.loads((multiclass_run / "config.json").read_text())["model"]["class_names"]
    assert len(classes) == 3
    expected = _torchmetrics_on(multiclass_run / "test_predictions.parquet", classes)
    shown = _shown(html)
    assert shown["auroc"] == pytest.approx(expected["auroc"], abs=1e-6)
    assert shown["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert html.count("<td>tier&lt;") >= 3 and not re.search(r"tier<\d", html)  # per-class rows, escaped


def test_report_of_a_run_on_s3(local_run, tmp_path, s3):
    """Run storage on S3 (moto's real S3 API on 127.0.0.1): the same report as from the local directory,
    learning curves from the event files included."""
    uri = s3.upload(local_run, "runs/tiny")
    remote = build_report(uri, str(tmp_path / "remote"))
    local = build_report(str(local_run), str(tmp_path / "local"))
    assert [Path(p).name for p in remote["pngs"]] == [Path(p).name for p in local["pngs"]]
    assert "learning_curves.png" in {Path(p).name for p in remote["pngs"]}
    assert remote["metrics"] == local["metrics"]
    assert _shown(Path(remote["html"]).read_text()) == _shown(Path(local["html"]).read_text())


def test_epoch_records_merge_with_event_files_and_a_retrained_epoch_counts_once(local_run, tmp_path):
    """bsm_epochs.json (what Ray runs and trials record per report) completed by the TensorBoard event files; an
    epoch reported twice (trained again after a worker failure) is drawn once, with its last report."""
    from raytune_bsm.report.sources import load

    run = tmp_path / "run"
    shutil.copytree(local_run, run)
    reports = [{"epoch": 0, "val_auroc": 0.5}, {"epoch": 1, "val_auroc": 0.6}, {"epoch": 1, "val_auroc": 0.7}]
    (run / "bsm_epochs.json").write_text(json.dumps(reports))
    epochs = load(str(run)).epochs
    assert [e["epoch"] for e in epochs] == [0, 1] and epochs[1]["val_auroc"] == 0.7
    assert all(
        isinstance(e.get("train_loss_epoch_mean"), float) and isinstance(e.get("val_loss"), float) for e in epochs
    )


def test_text_from_the_run_is_escaped(local_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(local_run, run)
    config = json.loads((run / "config.json").read_text())
    config["name"] = "<script>alert(1)</script>"
    config["data"]["train"] = '"><img src=x onerror=alert(2)>'
    (run / "config.json").write_text(json.dumps(config))
    html = Path(build_report(str(run), str(tmp_path / "r"))["html"]).read_text()
    assert "<script" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in html


def test_out_dir_rules(local_run, tmp_path, monkeypatch):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty and is not a bsm report"):
        build_report(str(local_run), str(foreign))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    monkeypatch.chdir(tmp_path)
    first = build_report(str(local_run))  # default: <run name>-report here
    assert Path(first["dir"]) == tmp_path / "tiny-report"
    (Path(first["dir"]) / "stale.png").write_bytes(b"old")  # a figure the earlier report wrote: its marker says so
    marker = json.loads((Path(first["dir"]) / ".bsm-report").read_text())
    (Path(first["dir"]) / ".bsm-report").write_text(json.dumps({**marker, "files": [*marker["files"], "stale.png"]}))
    again = build_report(str(local_run))  # an earlier report is replaced whole
    assert again["dir"] == first["dir"] and not (Path(again["dir"]) / "stale.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "tiny-report"]  # no temp or old dirs left

    with pytest.raises(ConfigError, match="does not exist"):
        build_report(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="not a run, sweep or export"):
        build_report(str(foreign))
    with pytest.raises(ConfigError, match="no source given"):
        build_report("")


def test_report_opens_in_a_real_headless_browser(local_run, tmp_path):
    html = Path(build_report(str(local_run), str(tmp_path / "r"))["html"])
    _open_in_chromium(html, expect_images=5)


def _open_in_chromium(html: Path, expect_images: int) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; Chromium from apt: apt-get install chromium)")
    if not CHROMIUM:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            problems, requests = [], []
            page.on(
                "console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
            )
        finally:
            browser.close()
    assert problems == []
    assert len(images) == expect_images and all(ok and w > 0 and h > 0 for ok, w, h in images), images
    assert [u for u in requests if not u.startswith("data:")] == [html.as_uri()]  # nothing fetched but the page


# ------------------------------------------------------------------------------------ Ray: a run and a sweep


@pytest.fixture(scope="module")
def ray_runs(tmp_path_factory):
    """A real Ray Train run (exported) and a real 3-trial ASHA sweep, on a Ray instance of this module's own."""
    import ray

    from raytune_bsm import sweep as sw
    from raytune_bsm.config import RunConfig
    from raytune_bsm.runner import tune as sr
    from raytune_bsm.runner.train import fit

    def tiny(name: str, epochs: int) -> RunConfig:
        d = RunConfig(name=name).to_dict()
        d["model"].update(encoder_config=dict(TINY_ENCODER), max_tokens=64, max_chunks=4, lr=2e-3)
        d["data"].update(demo_rows=300, batch_size=32)
        d["train"].update(max_epochs=epochs, save_top_k=1, max_failures=0)
        return RunConfig.from_dict(d)

    storage = tmp_path_factory.mktemp("ray-storage")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        run = fit(tiny("rayrun", 2), storage=str(storage))
        assert run["error"] is None
        space = {
            "lr": {"grid": [2e-3, 1e-5, 0.5]},
            "warmup_ratio": {"uniform": [0.0, 0.2]},
            "reinit_layers": {"choice": [0, 1]},
        }
        summary = sr.run_sweep(
            tiny("sweep", 3),
            sw.SweepConfig(num_samples=1, search_space=space, reduction_factor=2),
            storage=str(storage),
        )
        assert summary["best_trial"]
    finally:
        ray.shutdown()
    return storage / "rayrun", storage / "sweep"


@pytest.mark.slow
def test_report_of_a_real_ray_run_and_its_export(ray_runs, tmp_path):
    run_dir, _ = ray_runs
    by_run = build_report(str(run_dir), str(tmp_path / "a"))
    html = _check_report(
        by_run, {"learning_curves.png", "roc_pr.png", "confusion.png", "calibration.png", "accuracy_by_length.png"}
    )
    parts = sorted((run_dir / "test_predictions").glob("*.parquet"))
    expected = _torchmetrics_on(run_dir / "test_predictions", ["0", "1"]) if parts else {}
    assert _shown(html)["auroc"] == pytest.approx(expected["auroc"], abs=1e-6)
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert "parity against PyTorch" in html and "onnxruntime" in html and "torchscript" in html
    assert f"{manifest['parity']['records']}" in html
    # the export directory of a run reports the run, export included
    by_export = build_report(str(run_dir / "export"), str(tmp_path / "b"))
    assert _shown(Path(by_export["html"]).read_text()) == _shown(html)
    # a fetched export alone: its tables (parity, metrics, hyperparameters), no plots, and it says why
    fetched = tmp_path / "fetched"
    shutil.copytree(run_dir / "export", fetched)
    alone = build_report(str(fetched), str(tmp_path / "c"))
    text = _check_report(alone, set())
    assert "parity against PyTorch" in text and "an export alone holds no predictions" in text
    _open_in_chromium(Path(by_run["html"]), expect_images=5)


@pytest.mark.slow
def test_report_of_a_real_sweep(ray_runs, tmp_path):
    _, sweep_dir = ray_runs
    result = build_report(str(sweep_dir), str(tmp_path / "s"))
    html = _check_report(
        result,
        {
            "learning_curves.png",
            "roc_pr.png",
            "confusion.png",
            "calibration.png",
            "accuracy_by_length.png",
            "sweep_parallel.png",
            "sweep_lr.png",
            "sweep_trials.png",
        },
    )
    rows = pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    assert len(rows) == 3
    for r in rows:  # every trial in the table, with the epochs it reached
        assert f'<td>{r["trial_id"]}</td><td>{r["status"]}</td><td class="num">{r["iterations"]}</td>' in html
    # every trial's workers streamed shards of the one copy the sweep tokenized; none read the files itself
    workers = [json.loads(p.read_text()) for p in (sweep_dir / "runs").glob("*/bsm_workers/rank-*.json")]
    assert len(workers) >= 3 and {w["data"] for w in workers} == {"shard"}
    best = json.loads((sweep_dir / "bsm_result.json").read_text())["best_trial"]["trial_id"]
    expected = _torchmetrics_on(sweep_dir / "runs" / best / "test_predictions", ["0", "1"])
    assert _shown(html)["auroc"] == pytest.approx(expected["auroc"], abs=1e-6)
    _open_in_chromium(Path(result["html"]), expect_images=8)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
