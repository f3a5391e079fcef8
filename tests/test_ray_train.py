"""Ray Train on a simulated two-node cluster (`ray.cluster_utils.Cluster`): placement, DDP sync, fault tolerance."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY_ENCODER, two_node_cluster

from raytune_bsm.config import RunConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes():
    with two_node_cluster(cpus_per_node=1) as cluster:
        yield cluster


def _run(name: str, **train) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": name,
            "model": {"encoder_config": TINY_ENCODER, "lr": 1e-3, "max_tokens": 64, "max_chunks": 4},
            "data": {"demo_rows": 200, "batch_size": 16},
            "train": {"max_epochs": 1, **train},
            "scaling": {"num_workers": 2, "cpus_per_worker": 1, "placement_strategy": "STRICT_SPREAD"},
        }
    )


def _workers(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "bsm_workers").glob("rank-*.json"))]


# One worker per node ending with identical weights (DDP) is asserted by tests/test_multinode_readme.py, which
# trains through the real CLI on two nodes.


def test_killed_worker_resumes_from_latest_checkpoint(two_nodes, tmp_path):
    """SIGKILL one training worker after the first checkpoint; the run restarts from it and finishes."""
    from raytune_bsm.runner.train import fit

    run = _run("killed", max_epochs=4)
    run_dir = tmp_path / "killed"
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(summary=fit(run, storage=str(tmp_path))))
    t.start()
    deadline = time.monotonic() + 300
    # Ray writes its checkpoint manager's snapshot once a reported checkpoint is registered: from then on a
    # restarted worker group gets that checkpoint back.
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    while not snapshot.exists() and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.2)
    assert snapshot.exists(), "no checkpoint was registered"
    victim = next(w for w in _workers(run_dir) if "weights_sha256" not in w)  # a worker still training
    os.kill(victim["pid"], signal.SIGKILL)
    t.join(timeout=600)
    summary = box["summary"]
    assert summary["error"] is None
    assert len(summary["restarts"]) == 1  # the failure it survived, reported
    assert summary["restarts"][0]["resumed_from"].startswith(str(run_dir))
    assert summary["metrics"]["epoch"] == 3  # all four epochs done (0-based)


def _parts(root: Path, rows: int, files: int) -> Path:
    """Demo dialogues as a directory of several Parquet files."""
    import pyarrow.parquet as pq

    from raytune_bsm.demo.generator import make_dialogues

    table = make_dialogues(rows, seed=3)
    root.mkdir(parents=True)
    step = rows // files
    for k in range(files):
        pq.write_table(table.slice(k * step, step), root / f"part-{k}.parquet")
    return root


def test_every_row_is_seen_once_per_epoch_across_two_workers(two_nodes, tmp_path):
    """The datasets prepared once (directories of several Parquet files), split by Ray Train across a worker on
    each node and batched by the very loaders the training loop uses: each epoch, each training row exactly once,
    and both ranks the same number of batches, the number len() announced (the LR schedule's). Validation and
    test splits of odd sizes lose no row to the equal shares: each real row is evaluated exactly once, and the
    one padding copy each gets is marked so the model counts it nowhere."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from raytune_bsm.data.loaders import shard_loaders
    from raytune_bsm.runner.prepare import prepare_ray
    from raytune_bsm.runner.shards import EqualShards

    run = RunConfig.from_dict(
        {
            **_run("rows").to_dict(),
            "data": {
                "train": str(_parts(tmp_path / "train", 200, 5)),
                "val": str(_parts(tmp_path / "val", 45, 3)),
                "test": str(_parts(tmp_path / "test", 21, 3)),
                "batch_size": 16,
                "eval_batch_size": 4,
                "driver_prepare_mib": 0,
            },
        }
    )  # 0: through Ray Data, however small the files
    data = prepare_ray(run)
    assert data.rows == {"train": 200, "val": 45, "test": 21} and data.pads == {"val": 1, "test": 1}

    def loop(config: dict) -> None:
        ctx = ray.train.get_context()
        train_dl, val_dl, test_dl = shard_loaders(run, data.shards(), ctx.get_world_size())
        epochs = []
        for _ in range(2):
            batches = list(train_dl)
            epochs.append({"ids": [i for b in batches for i in b["id"]], "batches": len(batches), "len": len(train_dl)})
        evals = {}
        for name, dl in (("val", val_dl), ("test", test_dl)):
            batches = list(dl)
            evals[name] = {
                "real": [i for b in batches for i, p in zip(b["id"], b["pad"].tolist()) if not p],
                "pads": sum(int(b["pad"].sum()) for b in batches),
                "batches": len(batches),
                "len": len(dl),
            }
        out = Path(config["out"]) / f"rank-{ctx.get_world_rank()}.json"
        out.write_text(json.dumps({"node": ray.get_runtime_context().get_node_id(), "epochs": epochs, "evals": evals}))

    TorchTrainer(
        loop,
        train_loop_config={"out": str(tmp_path)},
        datasets=data.datasets,
        dataset_config=EqualShards(data.shares),
        scaling_config=ray.train.ScalingConfig(num_workers=2, placement_strategy="STRICT_SPREAD"),
        run_config=ray.train.RunConfig(storage_path=str(tmp_path / "ray")),
    ).fit()
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["node"] != ranks[1]["node"]
    train_ids = set(data.datasets["train"].to_pandas()["id"])
    for epoch in (0, 1):
        seen = ranks[0]["epochs"][epoch]["ids"] + ranks[1]["epochs"][epoch]["ids"]
        assert sorted(seen) == sorted(train_ids) and len(seen) == 200  # each row once, across the two ranks
        counts = {(r["epochs"][epoch]["batches"], r["epochs"][epoch]["len"]) for r in ranks}
        assert counts == {(7, 7)}  # 100 rows a rank in batches of 16, on both ranks, as announced
    assert ranks[0]["epochs"][0]["ids"] != ranks[0]["epochs"][1]["ids"]  # a new order each epoch
    for name, n, per_rank in (("val", 45, 23), ("test", 21, 11)):
        real = ranks[0]["evals"][name]["real"] + ranks[1]["evals"][name]["real"]
        ids = data.datasets[name].to_pandas().query("~pad")["id"]
        assert sorted(real) == sorted(ids) and len(real) == n  # every real row once: none dropped, none twice
        assert ranks[0]["evals"][name]["pads"] + ranks[1]["evals"][name]["pads"] == 1
        assert {(r["evals"][name]["batches"], r["evals"][name]["len"]) for r in ranks} == {(-(-per_rank // 4),) * 2}


def test_small_inputs_prepared_by_the_driver_are_the_records_ray_data_prepares(two_nodes, tmp_path):
    """Below data.driver_prepare_mib the job driver reads and tokenizes the files itself: the same records (ids,
    tokens, chunks, labels, cost), the same row counts and padding as the Ray Data path gives for those files."""
    from raytune_bsm.runner.prepare import prepare_ray

    data = {"train": str(_parts(tmp_path / "train", 60, 3)), "val": str(_parts(tmp_path / "val", 15, 3))}
    base = _run("same").to_dict()
    driver, cluster = (
        prepare_ray(RunConfig.from_dict({**base, "data": {**data, "driver_prepare_mib": mib}})) for mib in (8, 0)
    )
    assert driver.rows == cluster.rows == {"train": 60, "val": 15} and driver.pads == cluster.pads == {"val": 1}
    assert driver.labels.names == cluster.labels.names and driver.pad_id == cluster.pad_id
    for name in ("train", "val"):
        a, b = (sorted(p.datasets[name].take_all(), key=lambda r: (r["pad"], r["id"])) for p in (driver, cluster))
        assert [
            {k: list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v for k, v in r.items()} for r in a
        ] == [{k: list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v for k, v in r.items()} for r in b]


@pytest.mark.parametrize("driver_prepare_mib", [0, 8], ids=["ray-data", "driver"])
def test_a_bad_row_in_the_fifth_file_stops_the_run_before_any_worker(two_nodes, tmp_path, capsys, driver_prepare_mib):
    """The job's entrypoint on a directory of 6 files, a null label in row 7 of the fifth: exit code 1, one
    `bsm: error:` line naming that file and row (rows count from 0, as the local path's errors do), and no
    Train worker ever started; the same whether Ray Data or the driver (small inputs) reads the files."""
    import pyarrow.parquet as pq

    from raytune_bsm.runner.train import main

    train = _parts(tmp_path / "train", 300, 6)
    bad = pq.read_table(train / "part-4.parquet").to_pylist()
    bad[7]["reversal_flag"] = None
    pq.write_table(pa_table(bad), train / "part-4.parquet")
    job = {**_run("bad").to_dict(), "storage": str(tmp_path / "runs")}
    job["data"] = {**job["data"], "train": str(train), "driver_prepare_mib": driver_prepare_mib}
    (tmp_path / "bsm_job.json").write_text(json.dumps(job))
    assert main(str(tmp_path / "bsm_job.json")) == 1
    # bsm's own output; lines Ray forwards from other processes (`(TrainController pid=...)`, some left from the
    # previous test's run on this cluster) are not the entrypoint's
    err = "\n".join(ln for ln in capsys.readouterr().err.splitlines() if not re.match(r"(\x1b\[\d+m)?\(\w+ pid=", ln))
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if "error" in ln.lower()] == [
        f"bsm: error: {train / 'part-4.parquet'}: column 'reversal_flag' has 1 null label(s), row 7"
    ]
    assert not (tmp_path / "runs" / "bad" / "bsm_workers").exists()  # no worker started
    assert not (tmp_path / "runs" / "bad" / "bsm_config.json").exists()  # nor was the run recorded


def pa_table(rows: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist(rows)
