"""Every benchmark of issues 9 and 10, one command; writes bench/RESULTS.md. Each figure is a ratio of two things run
side by side in the same process (or, for the CLIs, the same run), so it holds on a busy machine.

    python bench/run.py [--quick] [--work /tmp/bsm-bench-work] [--only SECTION ...]

Benchmarks print and record; they are not tests. RESULTS.md is rewritten after every line, so a run cut short
keeps what it measured; a section that fails says so and the others still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cli  # noqa: E402
import bench_gpu  # noqa: E402
import bench_predict  # noqa: E402
import bench_scoring  # noqa: E402
import bench_serve  # noqa: E402
import bench_startup  # noqa: E402
import bench_startup_vs_before  # noqa: E402
import bench_tokenize_nodes  # noqa: E402
import bench_training  # noqa: E402
from common import THREADS, demo_texts, fit_and_export, long_texts, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
Say = Callable[..., None]


def cli(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## `bsm --help` against `ray --help`")
    r = bench_cli.run(3 if a.quick else 5)
    say(
        f"Median of {r['n']} fresh processes: bsm {r['bsm_s']:.2f} s, ray {r['ray_s']:.2f} s: **bsm ÷ ray = {r['ratio']:.2f}**."
    )


def processor(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## The processor against the bare tokenizer (one core)")
    out = subprocess.run(
        [sys.executable, str(HERE / "bench_processor.py"), "--rows", "1000" if a.quick else "2000"],
        capture_output=True,
        text=True,
        cwd=HERE,
        check=True,
    )
    for line in out.stdout.strip().splitlines():
        say(f"    {line}")


def scoring(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## Scoring: PyTorch against every ONNX Runtime graph bsm ships")
    say(
        "Real default model (all-MiniLM-L6-v2, 4 chunks x 128 tokens, mean pooling) fine-tuned in-process on 1,200 "
        "demo dialogues (2 epochs, the whole model); exported by bsm's exporter with validation batches. Calls of 8 "
        f"records, pre-tokenized, {THREADS} threads (the ONNX Runtime chunk graphs as `bsm predict` runs them: {THREADS} "
        f"calls side by side, one thread each), one process; 'real tokens' is the share of the token slots "
        "computed that hold a real token."
    )
    say()
    sc = bench_scoring.run(Path(a.work), demo=60 if a.quick else 120, long=30 if a.quick else 200, log=print)
    ctx["fitted"] = fitted = sc["fitted"]
    for data in sc["sets"]:
        for line in bench_scoring.table(sc["results"][data.name], data):
            say(line)
    long_rows = sc["results"][sc["sets"][1].name]
    ort_rows = [r for r in long_rows if not r.get("missing") and r["backend"].startswith("ORT")]
    best = max(ort_rows, key=lambda r: r["speedup"])
    ts = next(r for r in long_rows if r["backend"].startswith("TorchScript"))
    ok = best["speedup"] >= 3.5 and ts["accuracy"] - best["accuracy"] <= 0.005
    side = next(r for r in long_rows if r["backend"].startswith("TorchScript,"))
    say(
        f"Long texts, fastest ONNX Runtime graph: {best['backend']}, **{best['speedup']:.2f}× TorchScript** at "
        f"{100 * (best['accuracy'] - ts['accuracy']):+.2f} pt accuracy (goal ≥ 3.5× at ≥ -0.5 pt: {'met' if ok else 'not met'}); "
        f"{best['speedup'] / side['speedup']:.2f}× TorchScript run side by side the same way ({side['speedup']:.2f}× TorchScript)."
    )
    prec = json.loads((fitted["export"] / "manifest.json").read_text()).get("precision") or {}
    say(
        f'The export\'s own record (manifest "precision", {prec.get("labelled_records", "?")} labelled validation '
        f"records): fp32 accuracy {_get(prec, 'fp32', 'accuracy')}, int8 accuracy {_get(prec, 'int8', 'accuracy')}, "
        f"int8 label agreement {_get(prec, 'int8', 'label_agreement')}."
    )


def predict(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## `bsm predict` end to end against its pure scoring time")
    pr = bench_predict.run(
        ctx["fitted"]["export"], long_texts(60 if a.quick else 725, seed=31)
    )  # the 725 documents
    say(
        f"{pr['rows']} long dialogues, Parquet in and out, graph {pr['graph']} ({pr['why']}): end to end "
        f"{pr['end_to_end_s']:.2f} s (export verified, session created, read, tokenized, scored, written), the "
        f"same calls on pre-tokenized records {pr['pure_scoring_s']:.2f} s: **ratio {pr['ratio']:.2f}** (goal ≤ 1.1); "
        f"real tokens {pr['real_fraction']:.0%} of the token slots scored."
    )


def training(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## Training steps")
    tr = bench_training.run(batch=4, steps=2 if a.quick else 4, log=print)
    say(
        "Same model (MiniLM, 2 frozen layers), AdamW, batches of 4 records, median seconds per step after a warm-up "
        "step; real tokens = share of the token slots BERT computes."
    )
    say()
    say("| data | bsm batches s/step | real tokens | fixed [B, C, T] s/step | real tokens | fixed ÷ bsm |")
    say("|---|---|---|---|---|---|")
    for name, r in tr.items():
        if name != "lightning":
            say(
                f"| {name} | {r['bsm']['step_s']:.2f} | {r['bsm']['real_fraction']:.0%} | {r['fixed']['step_s']:.2f} | "
                f"{r['fixed']['real_fraction']:.0%} | {r['speedup']:.2f}× |"
            )
    lp = tr["lightning"]
    say()
    say(
        f"Steady-state step under Lightning {lp['lightning_step_s']:.3f} s against a plain PyTorch loop over the same "
        f"batches {lp['plain_step_s']:.3f} s: **ratio {lp['ratio']:.3f}** (goal ≤ 1.05); medians over "
        f"{lp['steps_each']} steps each, in {lp['rounds']} alternating rounds. In-process, one worker; Ray Train's "
        "own overhead is not in this figure."
    )


def startup(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## Start-up and export")
    fitted = ctx.get("fitted") or {}
    manifest = json.loads((Path(a.work) / "export" / "manifest.json").read_text())
    if fitted.get("export_seconds"):
        say(
            f"Export of the default model (every ONNX graph bsm ships, fp32 and int8, TorchScript, parity): "
            f"{fitted['export_seconds']:.1f} s in this run; the manifest's steps: {manifest.get('timings')}."
        )
    else:
        say(f"Export reused from an earlier run in {a.work}; its manifest's steps: {manifest.get('timings')}.")
    st = bench_startup.run(str(Path(a.work) / "startup"), rows=500 if a.quick else 2000)
    d, tiny, ex = st["default"], st["tiny"], st["export_timings"] or {}
    say()
    say(
        f"A real `bsm submit --follow` on a local cluster bsm started ({st['cluster_up_s']:.1f} s to start it, not "
        f"counted below), first training step = the first step line reaching `--follow`:"
    )
    say()
    say("| run | submission → first training step | submission → exit |")
    say("|---|---|---|")
    say(f"| default model, 3 training steps, export | {d['first_step_s']:.1f} s | {d['total_s']:.1f} s |")
    say(
        f"| tiny BERT, one epoch over {st['rows']} demo dialogues | {tiny['first_step_s']:.1f} s | {tiny['total_s']:.1f} s |"
    )
    say()
    say(
        f"The export of the default model in that run: {ex.get('total', float('nan')):.1f} s in all (goal < 10 s); "
        f"its steps: {ex}."
    )


def before(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## Start-up against the data path before Ray Data")
    r = bench_startup_vs_before.run(rows=500 if a.quick else 2000, rounds=1 if a.quick else 2, log=print)
    b, n = r["median"]["before"], r["median"]["now"]
    say(
        f"The same tiny-BERT job (one epoch, {r['rows']} demo dialogues in train/val/test files) through `bsm submit "
        f"--follow` on one local cluster, from commit {r['before']} (the driver and then every worker read and tokenized "
        f"every split) and from this tree, in alternating rounds; medians of {r['rounds']}. Submission → first progress "
        f"line (10% of the epoch): before {b['first_step_s']:.1f} s, now {n['first_step_s']:.1f} s, **now ÷ before = "
        f"{r['first_step_ratio']:.2f}**; submission → exit: before {b['total_s']:.1f} s, now {n['total_s']:.1f} s, "
        f"**{r['total_ratio']:.2f}** (goal ≤ 1.1)."
    )


def nodes(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## Tokenization on 1 and 2 nodes (Ray Data)")
    r = bench_tokenize_nodes.run(rows=4000 if a.quick else 20000, rounds=1 if a.quick else 2, log=lambda *_: None)
    say(
        f"{r['rows']} demo dialogues read, checked and tokenized by `data.ray_data.prepare_split` on a "
        f"`ray.cluster_utils.Cluster` of nodes with {r['cpus_per_node']} CPUs, tokenizing tasks on every node's CPUs, best of "
        f"alternating rounds: 1 node {r['records_per_s'][1]:,.0f} records/s, 2 nodes {r['records_per_s'][2]:,.0f} "
        f"records/s: **2 nodes ÷ 1 node = {r['ratio']:.2f}** (a node of {r['cpus_per_node']} CPU on this machine's {THREADS} "
        "cores: two such nodes have twice the cores one has)."
    )


def memory(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## Memory of a training job at two data sizes (Ray Data)")
    rows = ["4000", "40000"] if a.quick else ["20000", "200000"]
    out = subprocess.run(
        [sys.executable, str(HERE / "bench_memory.py"), "--rows", *rows],
        capture_output=True,
        text=True,
        cwd=HERE,
        check=True,
    )
    say(
        f"`bench/bench_memory.py --rows {' '.join(rows)}`: the real job entrypoint on a local cluster (tiny BERT, 2 "
        "workers, 3 training batches), splits as directories of 10,000-row Parquet files, always through Ray Data; "
        "peak RSS per process role (goal: the hungriest process grows by under 100 MiB):"
    )
    for line in out.stdout.strip().splitlines():
        say(f"    {line}")


def gpu(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## GPU")
    g = bench_gpu.run(Path(a.work) / "export", records=256 if a.quick else 2048)
    if "skipped" in g:
        say(
            f"Skipped: {g['skipped']}. `python bench/bench_gpu.py` reports records/s, model TFLOP/s and MFU "
            "(÷ the GPU's fp32 and TF32 peak, from a table by device name) where one is present."
        )
        return
    mfu = (
        f"MFU {g['mfu_fp32']:.1%} of fp32 peak / {g['mfu_tf32']:.1%} of TF32 peak"
        if g["peak_known"]
        else "peak unknown"
    )
    say(
        f"{g['gpu']}: {g['records_per_s']:.0f} records/s, {g['tflops']:.1f} TFLOP/s, {mfu}; real tokens {g['real_fraction']:.0%}."
    )


def serve(a: argparse.Namespace, say: Say, ctx: dict) -> None:
    say("## `bsm serve` under load, beside offline scoring")
    fitted = ctx.get("fitted") or fit_and_export(Path(a.work), demo_texts(1200, seed=11), demo_texts(64, seed=12))
    rows = 30 if a.quick else 60
    sets = {"demo": demo_texts(rows, seed=41), "long (4 x 128)": long_texts(rows, seed=42)}
    r = bench_serve.run_on_own_cluster(
        str(fitted["export"]), sets, requests=40 if a.quick else 150, seconds=20, port=8000, precision="auto"
    )
    say(
        "`bench/bench_serve.py`: one replica with every usable CPU on a local cluster, one-record requests over "
        "127.0.0.1 (kept-alive connections), each cell bounded by its request count and 20 s."
    )
    say(bench_serve.table(r))


SECTIONS = [cli, processor, scoring, predict, training, startup, before, nodes, memory, gpu, serve]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the benchmarks run")
    ap.add_argument("--work", default="/tmp/bsm-bench-work")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--only", nargs="*", help="section names to run (default: all)")
    a = ap.parse_args()
    t_start = time.perf_counter()
    md: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        md.append(s)
        Path(a.out).write_text("\n".join(md) + "\n")  # after every line: a run cut short keeps what it measured

    m = machine()
    say("# bsm benchmarks")
    say()
    say(
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC with `python bench/run.py`{' --quick' if a.quick else ''}. "
        f"CPU: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable; {THREADS} threads used); GPU: {m['gpu'] or 'none'}."
    )
    say(
        f"Load average at the start: {', '.join(f'{x:.1f}' for x in m['load_average'])} (other work shared these cores, "
        "so absolute times are slow and noisy; every figure is a ratio of two things measured side by side)."
    )
    say(f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.")
    say()
    ctx: dict[str, Any] = {}
    for section in SECTIONS:
        if a.only and section.__name__ not in a.only:
            continue
        try:
            section(a, say, ctx)
        except Exception as e:  # noqa: BLE001 - a benchmark that fails is reported; the others still run
            say(f"**This section failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}**")
        say()
    say(
        f"Whole run: {time.perf_counter() - t_start:.0f} s; load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}."
    )
    print(f"wrote {a.out}")


def _get(prec: dict, k: str, f: str) -> str:
    v = (prec.get(k) or {}).get(f)
    return f"{v:.4f}" if isinstance(v, (int, float)) else "n/a"


if __name__ == "__main__":
    main()
