"""Bad config inputs of issue 18 (cases 1, 6, 14, 16, 17, 18, 19): YAML bombs and repeated keys in every YAML bsm
reads (--config, --set, --search-space), ranges stated as they are checked, a column used for two roles, hints
that name the flags the user typed, the cluster's missing resources one sentence each, and --threads capped.

Each bad input exits 1 with exactly one stderr line `bsm: error: ...` naming the flag, file or key, prints nothing
on stdout and writes nothing (the matrix of tests/test_bad_inputs.py, whose helpers are copied here). Commands run
in-process (typer's CliRunner); run commands use --dry-run, except those that need a cluster's resources: they go
to a stand-in Ray dashboard on 127.0.0.1 (the two HTTP endpoints bsm asks; a cluster of two 1-CPU nodes cannot run
here), which must see no job submitted.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import signal
import threading
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import JsonHandler, isolate, snapshot, tiny_checkpoint
from typer.testing import CliRunner

from raytune_bsm.cli import app
from raytune_bsm.demo.generator import make_dialogues


def _write(path: Path, data: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


def _laughs(indent: str = "") -> str:
    """A "billion laughs": nine aliases of nine aliases, nine levels: 9^9 strings from ~700 bytes."""
    lines = [f'{indent}a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{indent}{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


DEEP = "[" * 3000 + "]" * 3000  # nested 3,000 levels: PyYAML composes recursively


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("bad-config")
    d = make_dialogues(20, seed=3)
    (root / "data").mkdir()
    pq.write_table(
        pa.table({c: d.column(c) for c in ("dialogue", "reversal_flag", "order_id")}), root / "data" / "good.parquet"
    )
    rec = root / "recipes"
    _write(rec / "laughs.yaml", "model:\n  encoder_config:\n" + _laughs("    "))
    _write(rec / "laughs_tune.yaml", "tune:\n  num_samples: 2\n" + _laughs().replace("a: &a", "x: &a", 1))
    _write(rec / "deep.yaml", f"model:\n  encoder_config:\n    x: {DEEP}\n")
    _write(rec / "deep_block.yaml", "".join(f"{'  ' * i}k{i}:\n" for i in range(3000)) + "  " * 3000 + "v: 1\n")
    _write(rec / "dup.yaml", "model:\n  lr: 0.001\n  dropout: 0.2\n  lr: 0.1\n")
    _write(rec / "dup_top.yaml", "train:\n  max_epochs: 2\nmodel:\n  lr: 0.001\ntrain:\n  seed: 1\n")
    _write(rec / "same_column.yaml", "data:\n  text_field: order_id\n  id_field: order_id\n")
    sp = root / "spaces"
    _write(sp / "laughs.yaml", "lr: &x {choice: [0.001, 0.002]}\nwarmup_ratio: *x\n")
    _write(sp / "deep.yaml", f"lr: {{choice: {DEEP}}}\n")
    _write(sp / "dup.yaml", "lr: {choice: [0.001]}\ndropout: {choice: [0.1]}\nlr: {choice: [0.002]}\n")
    _write(sp / "scaling.yaml", "scaling.cpus_per_worker: {choice: [1, 2]}\n")
    user = root / "user"
    user.mkdir()
    return SimpleNamespace(root=root)


@pytest.fixture
def isolated(ws, tmp_path_factory, monkeypatch):
    """This case's own BSM_HOME and TMPDIR, the workspace's user/ its working directory (conftest.isolate)."""
    return [ws.root, *isolate(ws.root / "user", tmp_path_factory, monkeypatch)]


# ----------------------------------------------------------------------------------------------- a stand-in dashboard


class _Dashboard(JsonHandler):
    """Answers what bsm asks before it submits: /api/version (the Jobs SDK) and the nodes (two of 1 CPU, no GPU).
    Records every request: a POST (a submitted job) fails the tests."""

    nodes: ClassVar[list[dict[str, Any]]] = [
        {"node_ip": f"10.0.0.{i}", "state": "ALIVE", "resources_total": {"CPU": 1.0}} for i in (1, 2)
    ]
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.seen.append(f"GET {path}")
        if path == "/api/version":
            self._json(200, {"version": "4", "ray_version": "2.60.0", "session_name": "session_fake"})
        elif path == "/api/v0/nodes":
            self._json(200, {"result": True, "msg": "", "data": {"result": {"result": self.nodes}}})
        elif path == "/api/cluster_status":
            self._json(200, {"result": True, "data": {"clusterStatus": None}})
        else:
            self._json(404, {})

    def do_POST(self) -> None:
        self.seen.append(f"POST {self.path}")
        self._json(500, {})


@pytest.fixture(scope="module")
def dashboard() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert not [r for r in _Dashboard.seen if r.startswith("POST")], _Dashboard.seen  # nothing was submitted


# ----------------------------------------------------------------------------------------------- the matrix

CASES = [
    # 1: aliases and deep nesting, in every YAML bsm reads
    pytest.param(
        ["submit", "--config", "{ws}/recipes/laughs.yaml"],
        "laughs.yaml: YAML anchors and aliases are not accepted (&a at line 3)",
        id="config-billion-laughs",
    ),
    pytest.param(
        ["tune", "--config", "{ws}/recipes/laughs_tune.yaml"],
        "laughs_tune.yaml: YAML anchors and aliases are not accepted",
        id="config-tune-section-laughs",
    ),
    pytest.param(
        ["submit", "--set", "encoder_config={a: &a [1, 2], b: [*a, *a, *a]}"],
        "--set encoder_config: YAML anchors and aliases are not accepted (&a at column 5)",
        id="set-laughs",
    ),
    pytest.param(
        ["tune", "--search-space", "{ws}/spaces/laughs.yaml"],
        "--search-space {ws}/spaces/laughs.yaml: YAML anchors and aliases are not accepted (&x at line 1)",
        id="space-laughs",
    ),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/deep.yaml"],
        "deep.yaml: nested deeper than 50 levels at line 3",
        id="config-deep-flow",
    ),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/deep_block.yaml"],
        "deep_block.yaml: nested deeper than 50 levels",
        id="config-deep-block",
    ),
    pytest.param(
        ["submit", "--set", f"encoder_config={{x: {DEEP}}}"],
        "--set encoder_config: nested deeper than 50 levels",
        id="set-deep",
    ),
    pytest.param(
        ["tune", "--search-space", "{ws}/spaces/deep.yaml"], "deep.yaml: nested deeper than 50", id="space-deep"
    ),
    # 16: a key given twice
    pytest.param(
        ["submit", "--config", "{ws}/recipes/dup.yaml"],
        "dup.yaml: key model.lr is given twice (lines 2 and 4); keep one",
        id="config-key-twice",
    ),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/dup_top.yaml"],
        "dup_top.yaml: key train is given twice (lines 1 and 5)",
        id="config-section-twice",
    ),
    pytest.param(
        ["tune", "--search-space", "{ws}/spaces/dup.yaml"],
        "dup.yaml: key lr is given twice (lines 1 and 3)",
        id="space-key-twice",
    ),
    pytest.param(
        ["submit", "--set", "encoder_config={hidden_size: 32, hidden_size: 64}"],
        "--set encoder_config: key hidden_size is given twice (columns 2 and 19)",
        id="set-key-twice",
    ),
    # 17: ranges as they are checked
    pytest.param(["submit", "--lr", "0"], "--lr must be in (0, 1), got 0.0", id="lr-0"),
    pytest.param(["submit", "--set", "lr=0"], "--lr must be in (0, 1), got 0.0", id="set-lr-0"),
    pytest.param(["tune", "--lr", "1"], "--lr must be in (0, 1), got 1.0", id="tune-lr-1"),
    pytest.param(["submit", "--set", "dropout=1"], "--dropout must be in [0, 1), got 1.0", id="dropout-1"),
    pytest.param(["submit", "--set", "warmup_ratio=-0.1"], "--warmup-ratio must be in [0, 1), got -0.1", id="warmup"),
    pytest.param(["submit", "--set", "adam_epsilon=0"], "adam_epsilon must be > 0, got 0.0", id="adam-epsilon-0"),
    pytest.param(["submit", "--set", "weight_decay=-1"], "--weight-decay must be >= 0, got -1.0", id="weight-decay"),
    pytest.param(
        ["submit", "--set", "gradient_clip_val=-1"], "gradient_clip_val must be >= 0, got -1.0", id="clip-negative"
    ),
    pytest.param(["submit", "--set", "max_failures=-1"], "max_failures must be >= 0, got -1", id="max-failures"),
    # 14: one column, one role
    pytest.param(
        ["submit", "--text-field", "order_id", "--label-field", "order_id"],
        "--label-field 'order_id' is also the --text-field: a column can play one role (text, label, id, feature)",
        id="label-is-text",
    ),
    pytest.param(
        ["tune", "--label-field", "order_id", "--id-field", "order_id"],
        "--id-field 'order_id' is also the --label-field",
        id="tune-id-is-label",
    ),
    pytest.param(
        ["submit", "--train", "{ws}/data/good.parquet", "--id-field", "dialogue"],
        "--id-field 'dialogue' is also the --text-field",
        id="id-is-default-text",
    ),
    pytest.param(
        ["submit", "--config", "{ws}/recipes/same_column.yaml"],
        "--id-field 'order_id' is also the --text-field",
        id="config-id-is-text",
    ),
    pytest.param(
        [
            "predict",
            "{ws}/exports/none",
            "{ws}/data/good.parquet",
            "--text-field",
            "order_id",
            "--id-field",
            "order_id",
        ],
        "--id-field 'order_id' is also the --text-field",
        id="predict-id-is-text",
    ),
    pytest.param(
        [
            "predict",
            "{ws}/exports/none",
            "{ws}/data/good.parquet",
            "--on-cluster",
            "--out",
            "preds",
            "--dry-run",
            "--text-field",
            "order_id",
            "--id-field",
            "order_id",
        ],
        "--id-field 'order_id' is also the --text-field",
        id="predict-on-cluster-id-is-text",
    ),
    # 18: hints name the flags the user typed (the old per-trial flags are hidden from --help)
    pytest.param(
        ["tune", "--search-space", "{ws}/spaces/scaling.yaml"],
        "scaling.cpus_per_worker cannot be tuned: every trial gets the same resources "
        "(set them with --num-workers, --num-gpus or --cpus-per-worker)",
        id="space-scaling-hint",
    ),
    pytest.param(
        ["tune", "--num-workers", "3", "--address", "{dash}"],
        "cannot fit even one trial: --num-workers 3 with --cpus-per-worker 1 needs 3 CPUs (3 workers x 1 CPUs) "
        "per trial",
        id="tune-num-workers-hint",
    ),
    pytest.param(
        ["tune", "--num-gpus", "2", "--address", "{dash}"],
        "cannot fit even one trial: --num-gpus 2 needs 2 GPU(s)",
        id="tune-num-gpus-hint",
    ),
    # 19: one sentence per missing resource
    pytest.param(
        ["submit", "--num-gpus", "8", "--address", "{dash}", "--storage", "{ws}/runs"],
        "the Ray cluster at {dash} cannot fit the job. "
        "The job needs 8 GPUs (8 workers x 1) and the cluster has 0: train on CPUs (--num-workers, not --num-gpus). "
        "The job needs 32 CPUs (8 workers x 4) and the cluster has 2: ask for fewer (--num-gpus or --cpus-per-worker). "
        "Or use a bigger cluster.",
        id="submit-gpus-and-cpus-missing",
    ),
    pytest.param(
        ["submit", "--num-workers", "2", "--cpus-per-worker", "2", "--address", "{dash}", "--storage", "{ws}/runs"],
        "cannot fit the job. The job needs 4 CPUs (2 workers x 2) and the cluster has 2: "
        "ask for fewer (--num-workers or --cpus-per-worker). Or use a bigger cluster.",
        id="submit-cpus-missing",
    ),
    pytest.param(
        ["submit", "--cpus-per-worker", "2", "--address", "{dash}", "--storage", "{ws}/runs"],
        "cannot fit the job. Each worker needs 2 CPUs on one node and the largest node has 1: "
        "ask for fewer (--num-workers or --cpus-per-worker).",
        id="submit-node-too-small",
    ),
]
RUN_COMMANDS = {"submit", "tune"}
HIDDEN_FLAGS = ("--workers-per-trial", "--gpus-per-trial")


def _args(args: list[str], ws: SimpleNamespace, dash: str) -> list[str]:
    args = [a.replace("{ws}", str(ws.root)).replace("{dash}", dash) for a in args]
    if args[0] in RUN_COMMANDS and "--address" not in args and "--dry-run" not in args:
        args.append("--dry-run")
    return args


@pytest.mark.parametrize("args, needle", CASES)
def test_a_bad_config_is_one_line_exit_1_and_writes_nothing(ws, isolated, dashboard, args, needle):
    args = _args(args, ws, dashboard)
    needle = needle.replace("{ws}", str(ws.root)).replace("{dash}", dashboard)
    before = snapshot(isolated)
    r = CliRunner().invoke(app, args, prog_name="bsm")
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{type(r.exception).__name__}: {r.exception}"
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("bsm: error: ") and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0], lines[0]
    assert not any(flag in lines[0] for flag in HIDDEN_FLAGS if flag not in args), lines[0]
    after = snapshot(isolated)
    assert after == before, {"new or changed": sorted(set(after.items()) - set(before.items()))}


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """A hang (the expansion of a YAML bomb) becomes a failure, not a stuck suite."""

    def stop(*_: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "--config", "{ws}/recipes/laughs.yaml"],
        ["submit", "--set", f"encoder_config={{{_laughs().strip().replace(chr(10), ', ')}}}"],
        ["tune", "--search-space", "{ws}/spaces/laughs.yaml"],
        ["submit", "--config", "{ws}/recipes/deep.yaml"],
    ],
    ids=["config", "set", "search-space", "deep"],
)
def test_a_yaml_bomb_is_refused_in_well_under_a_second_and_a_few_mib(ws, isolated, dashboard, args):
    args = _args(args, ws, dashboard)
    CliRunner().invoke(app, ["submit", "--lr", "0", "--dry-run"], prog_name="bsm")  # imports done before timing
    with _deadline(20):
        t0 = time.perf_counter()
        r = CliRunner().invoke(app, args, prog_name="bsm")
        elapsed = time.perf_counter() - t0
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert elapsed < 1.0, elapsed  # before: minutes in dataclasses.asdict
    tracemalloc.start()  # again, its memory traced (tracing slows Python several times over: not timed)
    try:
        with _deadline(60):
            CliRunner().invoke(app, args, prog_name="bsm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # before: past 800 MB


# ----------------------------------------------------------------------------------------------- 6: --threads


@pytest.fixture(scope="module")
def export(ws) -> Path:
    """A real export of a tiny model (two layers, hidden 32), for predict."""

    from raytune_bsm.model.export import export_checkpoint

    ckpt = tiny_checkpoint(ws.root / "ckpt" / "model.ckpt", chunk_pooling="mean")
    export_checkpoint(str(ckpt), str(ws.root / "export"))
    return ws.root / "export"


def test_predict_threads_beyond_the_cores_are_capped_with_one_warning(ws, export, isolated):
    from raytune_bsm.scoring.sessions import default_threads

    cores = default_threads()
    out = ws.root / "user" / "preds.parquet"
    args = ["predict", str(export), str(ws.root / "data" / "good.parquet"), "--out", str(out), "--threads", "1000"]
    r = CliRunner().invoke(app, args, prog_name="bsm")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out) and pq.read_table(out).num_rows == 20
    warnings = [line for line in r.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, r.stderr
    assert warnings[0].endswith(f"--threads 1000: this machine gives bsm {cores} cores; using {cores} threads")
    out.unlink()


def test_cap_threads_keeps_what_the_cores_allow():
    from raytune_bsm.errors import ConfigError
    from raytune_bsm.resources import cap_threads
    from raytune_bsm.scoring.sessions import default_threads

    cores = default_threads()
    assert cap_threads(None) is None and cap_threads(1) == 1 and cap_threads(cores) == cores
    assert cap_threads(cores + 1) == cores
    with pytest.raises(ConfigError, match="--threads must be at least 1, got 0"):
        cap_threads(0)


def test_check_resources_says_what_each_missing_resource_needs_and_warns_on_an_autoscaling_cluster(
    isolated, caplog, monkeypatch
):
    from raytune_bsm.client.options import SubmitOptions
    from raytune_bsm.client.submit import check_resources, plan
    from raytune_bsm.errors import ClusterError
    from raytune_bsm.resources import ClusterResources, NodeResources

    conn = SimpleNamespace(dashboard_url="http://head:8265")
    sub = plan(SubmitOptions(num_gpus=4, name="gpus"))  # 4 workers x (1 GPU, 4 CPUs)

    def cluster(*nodes: tuple[float, float], autoscale: bool = False) -> ClusterResources:
        ns = [NodeResources(f"10.0.0.{i}", c, g) for i, (c, g) in enumerate(nodes)]
        return ClusterResources(sum(n.cpus for n in ns), sum(n.gpus for n in ns), ns, autoscale, conn.dashboard_url)

    with pytest.raises(ClusterError) as e:
        check_resources(sub, conn, cluster((32, 2)))
    assert str(e.value) == (
        "the Ray cluster at http://head:8265 cannot fit the job. The job needs 4 GPUs (4 workers x 1) and the "
        "cluster has 2: ask for fewer (--num-gpus). Or use a bigger cluster."
    )
    check_resources(sub, conn, cluster((16, 4)))  # fits: nothing raised
    monkeypatch.setattr(logging.getLogger("raytune_bsm"), "propagate", True)  # to caplog's handler
    with caplog.at_level(logging.WARNING, logger="raytune_bsm"):
        check_resources(sub, conn, cluster((8, 0), autoscale=True))
    assert "cluster has 0: train on CPUs" in caplog.text and "will wait for new nodes" in caplog.text
