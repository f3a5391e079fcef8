"""Configuration: one default per key (the recipes in jobs/ and `--dry-run` agree), every value type-checked where
it enters, --model/--storage checked before submission, `bsm submit --resume`. All through `--dry-run`: no cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from raytune_bsm.cli import app
from raytune_bsm.config import REFERENCE_DEFAULTS, RunConfig, apply_overrides, resolve_model_config
from raytune_bsm.errors import ConfigError

JOBS = Path(__file__).resolve().parents[1] / "jobs"
RECIPES = sorted(p for p in JOBS.glob("*.yaml") if p.name != "search_space.yaml")
DERIVED = {"model.text_name", "model.label_name", "model.id_name"}  # from data.text_field / label_field / id_field


def dry_run(*args: str) -> dict:
    r = CliRunner().invoke(app, [*args, "--dry-run"])
    assert r.exit_code == 0, r.stderr or r.output
    return json.loads(r.stdout)


def fails(*args: str) -> str:
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 1 and r.stdout == "", (args, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsm: error: "), r.stderr
    return lines[0].removeprefix("bsm: error: ")


@pytest.fixture(autouse=True)
def _home(bsm_home):  # every test its own BSM_HOME: the default storage lives there
    return bsm_home


# ----------------------------------------------------------------------------------------------- one default per key


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_the_dry_run_plan_shows_every_value_of_the_recipe(recipe, bsm_home):
    d = yaml.safe_load(recipe.read_text())
    command = "tune" if "tune" in d else "submit"
    plan = dry_run(command, "--config", str(recipe))
    config = plan["config"]
    assert plan["submission_id"] == f"bsm-{d['name']}"
    for section in ("model", "data", "train", "scaling"):
        for key, value in (d.get(section) or {}).items():
            assert config[section][key] == value, f"{recipe.name}: {section}.{key}"
    for key, value in (d.get("tune") or {}).items():
        if key != "search_space" or value is not None:  # null: the default space, shown resolved
            assert config["tune"][key] == value, f"{recipe.name}: tune.{key}"
    assert config["storage"] == (d["storage"] or str(bsm_home / "runs"))  # null: the (local) cluster's default


def test_train_recipe_lists_every_key_with_the_default_a_bare_dry_run_uses():
    """jobs/train.yaml is bsm's defaults: `bsm submit --dry-run` with no recipe shows exactly its values."""
    text = (JOBS / "train.yaml").read_text()
    recipe = yaml.safe_load(text)
    plan = dry_run("submit", "--name", recipe["name"])["config"]
    commented = set(re.findall(r"^\s*#\s*(\w+):", text, re.M))  # documented but left out (their default is computed)
    for section in ("model", "data", "train", "scaling"):
        for key, value in plan[section].items():
            if f"{section}.{key}" in DERIVED:
                continue
            if key in commented and key not in recipe[section]:
                continue
            assert key in recipe[section], f"jobs/train.yaml lacks {section}.{key}"
            assert recipe[section][key] == value, f"{section}.{key}: recipe {recipe[section][key]!r}, default {value!r}"
    assert recipe["resume"] is plan["resume"] is False


def test_bsm_defaults_are_the_readmes_and_the_reference_ones_stay_with_the_bare_module():
    cfg = RunConfig().model_config()
    plan = dry_run("submit", "--name", "d")["config"]
    # README: the last 2 chunks of 128 tokens, mean pooling, 2 frozen layers, lr 2e-4, batch 8
    assert (cfg["max_chunks"], cfg["max_tokens"], cfg["keep_chunks"]) == (2, 128, "last")
    assert (cfg["chunk_pooling"], cfg["freeze_layers"], cfg["lr"]) == ("mean", 2, 2e-4)
    assert plan["data"]["batch_size"] == 8 and plan["model"]["lr"] == 2e-4 and plan["model"]["max_chunks"] == 2
    assert all(cfg[k] != v for k, v in REFERENCE_DEFAULTS.items())  # only keys where the two differ are listed
    bare = resolve_model_config({"text_name": "t", "label_name": "y"})  # what TextBertBase(config) fills in
    assert {k: bare[k] for k in REFERENCE_DEFAULTS} == REFERENCE_DEFAULTS
    assert bare["lr"] == 2e-5 and bare["max_chunks"] == 8 and bare["tokenizer"] == "bert-base-cased"


def test_search_space_file_is_what_the_tune_plan_samples():
    space_file = JOBS / "search_space.yaml"
    plan = dry_run("tune", "--search-space", str(space_file), "--name", "s")
    space = plan["config"]["tune"]["search_space"]
    written = {k: v for k, v in yaml.safe_load(space_file.read_text()).items() if k != "mode"}
    assert {f"model.{k}": v for k, v in written.items()}.items() <= space.items()


# ----------------------------------------------------------------------------------------------- submit == tune


def test_tune_takes_the_submit_options_with_the_same_meaning_per_trial():
    run = dry_run(
        "tune",
        "--name",
        "t",
        "--num-workers",
        "2",
        "--cpus-per-worker",
        "1",
        "--lr",
        "1e-4",
        "--max-chunks",
        "3",
        "--batch-size",
        "4",
    )["config"]
    assert run["scaling"]["num_workers"] == 2 and run["scaling"]["cpus_per_worker"] == 1
    assert run["model"]["lr"] == 1e-4 and run["model"]["max_chunks"] == 3 and run["data"]["batch_size"] == 4
    assert "model.lr" not in run["tune"]["search_space"]  # given as a flag: fixed in every trial, not sampled
    assert "model.warmup_ratio" in run["tune"]["search_space"]
    gpus = dry_run("tune", "--name", "g", "--num-gpus", "2")
    assert gpus["scaling"]["num_workers"] == 2 and gpus["scaling"]["resources_per_worker"]["GPU"] == 1
    same = dry_run(
        "submit",
        "--name",
        "t",
        "--num-workers",
        "2",
        "--cpus-per-worker",
        "1",
        "--lr",
        "1e-4",
        "--max-chunks",
        "3",
        "--batch-size",
        "4",
    )["config"]
    for section in ("model", "data", "scaling"):
        assert run[section] == same[section], section


# ----------------------------------------------------------------------------------------------- types


def test_numbers_without_a_dot_are_numbers_everywhere(tmp_path):
    assert dry_run("submit", "--name", "n", "--set", "lr=1e-5")["config"]["model"]["lr"] == 1e-5
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  lr: 1e-5\n  weight_decay: 1E-3\ntrain:\n  precision: 32\n")  # YAML 1.1: strings
    config = dry_run("submit", "--name", "n", "--config", str(recipe))["config"]
    assert config["model"]["lr"] == 1e-5 and config["model"]["weight_decay"] == 1e-3
    assert config["train"]["precision"] == "32"
    assert apply_overrides({}, ["data.batch_size=16", "use_gpu=false"]) == {
        "data": {"batch_size": 16},
        "scaling": {"use_gpu": False},
    }


@pytest.mark.parametrize(
    "sets, message",
    [
        ("lr=abc", "--set lr: expected a number, got 'abc'"),
        ("batch_size=1.5", "--set batch_size: expected an integer, got 1.5"),
        ("batch_size=true", "--set batch_size: expected an integer, got True"),
        ("lr=.nan", "--set lr: expected a number (finite), got nan"),
        ("group_by_length=maybe", "--set group_by_length: expected true or false, got 'maybe'"),
        ("mode=up", "--set mode: expected one of max, min, got 'up'"),
        ("metric_choices=auroc", "--set metric_choices: expected a list, got 'auroc'"),
        ("name=[a]", "--set name: expected a string, got ['a']"),
    ],
)
def test_a_bad_set_value_names_the_key_and_the_value(sets, message):
    assert fails("submit", "--dry-run", "--set", sets) == message


def test_a_bad_recipe_value_names_the_file_and_the_key(tmp_path):
    recipe = tmp_path / "train.yaml"
    recipe.write_text("model:\n  lr: abc\n")
    assert (
        fails("submit", "--dry-run", "--config", str(recipe))
        == f"--config {recipe}: model.lr: expected a number, got 'abc'"
    )
    recipe.write_text("data: [1, 2]\n")
    assert "data: expected a mapping" in fails("submit", "--dry-run", "--config", str(recipe))
    recipe.write_text("tune:\n  num_samples: many\n")
    assert fails("tune", "--dry-run", "--config", str(recipe)) == (
        f"--config {recipe}: tune.num_samples: expected an integer, got 'many'"
    )


def test_stored_records_are_type_checked_too():
    with pytest.raises(ConfigError, match=r"rec.json: scaling.num_workers: expected an integer, got 'two'"):
        RunConfig.from_dict({"scaling": {"num_workers": "two"}}, where="rec.json: ")
    assert RunConfig.from_dict({"model": {"lr": "3e-4"}}).model["lr"] == 3e-4


# ----------------------------------------------------------------------------------------------- model, storage


def test_model_must_exist_or_look_like_a_hub_name(tmp_path):
    assert fails("submit", "--dry-run", "--model", "/nonexistent") == (
        "--model /nonexistent: no such directory, and not a Hugging Face model name (org/name)"
    )
    assert "--model ./nope" in fails("submit", "--dry-run", "--model", "./nope")
    assert dry_run("submit", "--model", "someorg/somemodel")["config"]["model"]["tokenizer"] == "someorg/somemodel"
    assert dry_run("submit", "--model", "sentence-transformers/all-MiniLM-L6-v2")["config"]["model"]["tokenizer"]


def test_storage_is_made_absolute_and_unknown_schemes_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = dry_run("submit", "--name", "s", "--storage", "runs")
    assert plan["config"]["storage"] == str(tmp_path / "runs")
    assert plan["metadata"]["bsm_run_dir"] == str(tmp_path / "runs" / "s")
    assert dry_run("submit", "--storage", "s3://bucket/runs")["config"]["storage"] == "s3://bucket/runs"
    assert fails("submit", "--dry-run", "--storage", "ftp://host/runs").startswith(
        "--storage ftp://host/runs: unknown scheme ftp://"
    )
    assert "needs a bucket" in fails("submit", "--dry-run", "--storage", "s3://")
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


# ----------------------------------------------------------------------------------------------- resume


def test_submit_resume_continues_the_stored_run_under_its_name_and_storage(tmp_path):
    storage = tmp_path / "runs"
    plan = dry_run("submit", "--name", "r1", "--storage", str(storage), "--lr", "1e-4")
    (storage / "r1").mkdir(parents=True)
    (storage / "r1" / "bsm_config.json").write_text(json.dumps(plan["config"]))  # as the job writes it

    again = fails("submit", "--dry-run", "--name", "r1", "--storage", str(storage))
    assert "already exists" in again and "bsm submit --resume r1" in again
    resumed = dry_run("submit", "--resume", "r1", "--storage", str(storage))
    assert resumed["config"]["resume"] is True
    assert resumed["config"]["name"] == "r1" and resumed["config"]["storage"] == str(storage)
    assert resumed["config"]["model"]["lr"] == 1e-4
    assert re.fullmatch(r"bsm-r1-resume-\d{8}-\d{6}", resumed["submission_id"])
    assert resumed["entrypoint"] == plan["entrypoint"]

    assert fails("submit", "--dry-run", "--resume", "r1", "--storage", str(storage), "--lr", "1") == (
        "--resume r1 continues the run as it was submitted; drop --lr"
    )
    assert "no run 'r2'" in fails("submit", "--dry-run", "--resume", "r2", "--storage", str(storage))
    (storage / "r1" / "bsm_config.json").write_text("{not json")
    assert "bsm_config.json: not valid JSON" in fails(
        "submit", "--dry-run", "--resume", "r1", "--storage", str(storage)
    )
