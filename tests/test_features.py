"""Side features (data/features.py, model SideFeatures): the statistics (training split only), the preprocessing,
a text-only model and batch left exactly as they were, and every bad feature column as one line, exit 1, nothing
written."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_ENCODER
from typer.testing import CliRunner

from raytune_bsm.config import RunConfig
from raytune_bsm.data import features as side
from raytune_bsm.errors import ConfigError

N_TRAIN, N_VAL = 120, 30


def _table(n: int, seed: int, shift: float = 0.0, drop: str | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    amount = [None if i % 10 == 3 else float(v) for i, v in enumerate(rng.lognormal(3, 1, n) + shift)]
    cols = {
        "dialogue": [f"order {i} {'arrived' if y[i] else 'never came'}\nthanks" for i in range(n)],
        "reversal_flag": y.tolist(),
        "order_id": list(range(seed * 1000, seed * 1000 + n)),
        "amount": pa.array(amount, pa.float64()),
        "flagged": pa.array((rng.random(n) < 0.3).tolist()),
        "count": pa.array(rng.poisson(2, n).tolist(), pa.int32()),
        "constant": pa.array([7.0] * n),
        "channel": ["web"] * n,  # a string column: never a feature
    }
    if drop:
        cols.pop(drop)
    return pa.table(cols)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("features")
    pq.write_table(_table(N_TRAIN, 1), root / "train.parquet")
    pq.write_table(_table(N_VAL, 2, shift=1e6), root / "val.parquet")  # far off: would show in the statistics
    pq.write_table(_table(N_VAL, 3, drop="amount"), root / "val_noamount.parquet")
    (root / "user").mkdir()
    return root


def _run(files: Path, **data) -> RunConfig:
    model = {"encoder_config": TINY_ENCODER, "max_tokens": 32, "max_chunks": 2}
    return RunConfig.from_dict({"data": {"train": str(files / "train.parquet"), **data}, "model": model})


def test_statistics_are_fitted_on_the_training_split_only(files):
    from raytune_bsm.runner.prepare import prepare

    prep = prepare(_run(files, val=str(files / "val.parquet"), feature_fields="amount,flagged,count,constant"))
    stats = prep.model_config["feature_stats"]
    train = _table(N_TRAIN, 1)
    amount = np.array([v for v in train.column("amount").to_pylist() if v is not None], np.float32)  # as read
    assert stats["names"] == prep.model_config["feature_fields"] == ["amount", "flagged", "count", "constant"]
    assert stats["rows"] == N_TRAIN  # not a row of the validation split (shifted by 1e6)
    assert math.isclose(stats["mean"][0], amount.astype(np.float64).mean(), rel_tol=1e-9)
    assert math.isclose(stats["std"][0], amount.astype(np.float64).std(ddof=1), rel_tol=1e-9)
    assert stats["min"][0] == amount.min() and stats["max"][0] == amount.max()
    assert stats["missing"] == [pytest.approx(12 / N_TRAIN), 0.0, 0.0, 0.0]  # every 10th amount is null
    assert stats["std"][3] == 1.0 and stats["mean"][3] == 7.0  # a constant column: no division by zero
    # the batch: one raw [B] float32 tensor per feature, NaN where the file holds a null
    batch = prep.train.features
    assert batch.dtype == np.float32 and batch.shape == (N_TRAIN, 4) and np.isnan(batch[:, 0]).sum() == 12


def test_a_split_off_validation_set_is_left_out_of_the_statistics(files):
    from raytune_bsm.runner.prepare import prepare

    prep = prepare(_run(files, feature_fields="amount", val_fraction=0.25))
    assert prep.model_config["feature_stats"]["rows"] == len(prep.train) == N_TRAIN - 30


def test_auto_takes_every_integer_float_and_boolean_column_but_the_label_and_id(files):
    from raytune_bsm.runner.prepare import prepare

    prep = prepare(_run(files, val=str(files / "val.parquet"), feature_fields="auto"))
    assert prep.model_config["feature_fields"] == ["amount", "flagged", "count", "constant"]


def test_side_features_impute_clip_and_standardize_inside_the_model():
    from raytune_bsm.model.text_bert import SideFeatures

    stats = {"names": ["a", "b"], "mean": [10.0, 5.0], "std": [2.0, 1.0], "min": [0.0, 5.0], "max": [20.0, 5.0]}
    module = SideFeatures(stats, hidden=8, dropout=0.0).eval()
    seen = {}
    module.mlp.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    raw = torch.tensor([[float("nan"), 5.0], [float("inf"), float("-inf")], [14.0, 5.0]])
    out = module(raw)
    x = seen["x"]  # [B, 2F]: standardized values, then missing indicators
    assert out.shape == (3, 8) and torch.isfinite(out).all()
    assert x[0].tolist() == [0.0, 0.0, 1.0, 0.0]  # missing -> the mean (0 once standardized) + indicator 1
    assert x[1].tolist() == [5.0, 0.0, 0.0, 0.0]  # +inf -> max 20 -> (20 - 10) / 2; the constant column -> 0
    assert x[2].tolist() == [2.0, 0.0, 0.0, 0.0]


def _model_config(**extra) -> dict:
    base = {"text_name": "dialogue", "label_name": "reversal_flag", "encoder_config": TINY_ENCODER}
    return {**base, "tokenizer": "all-MiniLM-L6-v2", "max_tokens": 32, "max_chunks": 2, **extra}


# The text-only model's own keys beside the encoder's, as every checkpoint before side features held them.
TEXT_ONLY_KEYS = ["classifier.1.bias", "classifier.1.weight", "head.bias", "head.weight"]


def test_a_text_only_model_and_batch_are_those_of_before(files):
    from raytune_bsm.model.text_bert import TextBertClassifier
    from raytune_bsm.runner.prepare import prepare

    model = TextBertClassifier(_model_config())
    assert sorted(k for k in model.state_dict() if not k.startswith("bert.")) == TEXT_ONLY_KEYS
    assert model.classifier[1].in_features == model.config["hidden_common_dim"]
    run = _run(files, val=str(files / "val.parquet"))
    prep = prepare(run)
    assert "feature_stats" not in run.model_config() or prep.model_config["feature_fields"] is None
    batch = next(iter(prep.loaders(run)[0]))
    assert set(batch) == {
        "dialogue_processed_input_ids",
        "dialogue_processed_attention_mask",
        "reversal_flag",
        "id",
        "truncated",
    }
    stats = side.fit(np.zeros((4, 1), np.float32), ["a"])
    fused = TextBertClassifier(_model_config(feature_fields=["a"], feature_stats=stats))
    extra = {k for k in fused.state_dict() if not k.startswith(("bert.", "side."))}
    assert extra == set(TEXT_ONLY_KEYS)  # the side module's keys only, besides a wider classifier
    gated = TextBertClassifier(_model_config(feature_fields=["a"], feature_stats=stats, fusion="gated"))
    assert gated.classifier[1].in_features == gated.config["hidden_common_dim"]
    as_text = TextBertClassifier(_model_config(feature_fields=["a"], feature_stats=stats, fusion="text"))
    assert sorted(k for k in as_text.state_dict() if not k.startswith("bert.")) == TEXT_ONLY_KEYS


def test_features_as_text_writes_name_value_lines_into_the_dialogue(files):
    from raytune_bsm.runner.prepare import prepare

    x = np.array([[3.0, np.nan], [0.125, 1.0]], np.float32)
    assert side.as_text(["hi", ["a", "b"]], x, ["amount", "flag"]) == [
        "hi\namount: 3\nflag: missing",
        ["a", "b", "amount: 0.125", "flag: 1"],
    ]
    run = RunConfig.from_dict(
        {**_run(files, val=str(files / "val.parquet"), feature_fields="amount").to_dict(), "model": {"fusion": "text"}}
    )
    prep = prepare(run)
    assert prep.train.features is None  # no side input: the numbers are in the tokens
    plain = prepare(_run(files, val=str(files / "val.parquet")))
    assert sum(map(len, prep.train.ids)) > sum(map(len, plain.train.ids))


def test_feature_config_is_checked_where_it_enters():
    assert side.wanted("a, b") == ["a", "b"] and side.wanted("auto") == "auto" and side.wanted(None) is None
    with pytest.raises(ConfigError, match="--features must be distinct"):
        RunConfig.from_dict({"data": {"feature_fields": "a,a"}})
    with pytest.raises(ConfigError, match="fusion"):
        RunConfig.from_dict({"model": {"fusion": "attention"}})
    with pytest.raises(ConfigError, match="side-hidden must be at least 1"):
        RunConfig.from_dict({"model": {"side_hidden": 0}})


def _snapshot(roots: list[Path]) -> set[str]:
    return {str(p) for root in roots for p in root.rglob("*")}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--features", "channel"], "train.parquet: feature column 'channel' has type string"),
        (["--features", "amount,nope"], "train.parquet: unknown feature column 'nope'"),
        (
            ["--features", "reversal_flag"],
            "--features 'reversal_flag' is also the --label-field: a column can play one role",
        ),
        (["--features", "amount", "--val", "VAL"], "val_noamount.parquet: missing feature column 'amount'"),
        (["--features", "amount", "--test", "VAL"], "val_noamount.parquet: missing feature column 'amount'"),
    ],
)
def test_a_bad_feature_column_is_one_line_exit_1_and_writes_nothing(files, args, needle, tmp_path, monkeypatch):
    from raytune_bsm.cli import app

    monkeypatch.setenv("BSM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(files / "user")
    monkeypatch.setattr(logging.getLogger("raytune_bsm"), "handlers", [])
    args = [str(files / "val_noamount.parquet") if a == "VAL" else a for a in args]
    before = _snapshot([files, tmp_path])
    r = CliRunner().invoke(
        app,
        ["submit", "--dry-run", "--train", str(files / "train.parquet"), "--storage", str(tmp_path / "runs"), *args],
    )
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("bsm: error: "), r.stderr
    assert needle in lines[0] and r.stdout == ""
    if "--val" in args or "--test" in args:
        assert lines[0].startswith(f"bsm: error: {args[-2]}: ")  # the flag, then the file and the column
    assert _snapshot([files, tmp_path]) == before


def test_dry_run_with_features_plans_them(files, tmp_path, monkeypatch):
    from raytune_bsm.cli import app

    monkeypatch.setenv("BSM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(logging.getLogger("raytune_bsm"), "handlers", [])
    r = CliRunner().invoke(
        app,
        [
            "submit",
            "--dry-run",
            "--train",
            str(files / "train.parquet"),
            "--features",
            "auto",
            "--storage",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert '"feature_fields": "auto"' in r.stdout  # resolved on the cluster against the training files


def test_demo_side_features_are_realistic_carry_signal_and_leave_dialogues_and_labels_alone(monkeypatch):
    from raytune_bsm.demo import generator as demo
    from raytune_bsm.demo.side import SIDE_SCHEMA

    table = demo.make_dialogues(600, seed=5, with_story=True)
    cols = {
        f.name: np.array([np.nan if v is None else v for v in table.column(f.name).to_pylist()]) for f in SIDE_SCHEMA
    }
    assert len(cols) == 11
    for name, x in cols.items():
        if name.endswith("_prob") or name.endswith("_calibrated") or name == "concsi":
            assert np.nanmin(x) >= 0 and np.nanmax(x) <= 1, name
        if name.endswith("_flag"):
            assert set(np.unique(x[~np.isnan(x)])) <= {0, 1}, name
        if name.endswith(("_amt", "_count")):
            assert np.nanmin(x) >= 0, name
    assert 0.01 < np.isnan(cols["bears_abuse_prob"]).mean() < 0.1  # some missing at random
    assert 0.3 < np.isnan(cols["dnr_pmml_score_calibrated"]).mean() < 0.8  # only where that model applies
    y = np.asarray(table.column("reversal_flag"))
    noisy = np.asarray(table.column("label_noise"))
    abuse = cols["bears_abuse_prob"]
    # the numbers know what the dialogue cannot: the labels flipped against the story
    flipped = noisy & ~np.isnan(abuse)
    assert flipped.sum() >= 10
    assert abuse[flipped & (y == 1)].mean() > abuse[flipped & (y == 0)].mean() + 0.3

    # drawn from their own random stream: dialogues and labels are those of a generator without them
    monkeypatch.setattr(
        demo, "side_features", lambda seed, stories: [pa.nulls(len(stories), f.type) for f in SIDE_SCHEMA]
    )
    plain = demo.make_dialogues(600, seed=5, with_story=True)
    for name in ("order_id", "dialogue", "reversal_flag", "order_amount", "days_since_order", "story_label"):
        assert plain.column(name).equals(table.column(name)), name
