"""The layout is the architecture: imports between the stage packages go one way, no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "emergence_lab"
# what each package (or top-level module) may import from emergence_lab, besides itself
ALLOWED = {
    "registry": set(), "console": set(), "procs": {"console"}, "files": set(), "errors": set(),
    "measure": {"registry"},
    "models": {"measure", "registry"},
    "data": {"registry", "files"},
    "prune": {"measure", "models", "registry"},
    "store": {"procs"},
    "config": {"measure", "models", "data", "prune", "store", "registry"},
    "run": {"config", "measure", "models", "data", "prune", "store", "registry", "procs", "files",
            "errors", "console"},
    "sweep": {"run", "config", "measure", "data", "store", "registry", "procs", "errors",
              "console"},
    "report": {"measure", "prune", "store", "registry"},
}


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    """The emergence_lab units a module imports, anywhere in it (function-local imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "emergence_lab":
                out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names
                    if a.name.startswith("emergence_lab.")}
    return out


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_one_way(path):
    unit = _unit(path)
    assert unit in ALLOWED, f"{path.relative_to(SRC)}: a new top-level unit; add it to the layout"
    bad = _imports(path) - ALLOWED[unit] - {unit}
    assert not bad, f"{path.relative_to(SRC)} ({unit}/) imports {sorted(bad)}"


def test_the_rule_has_no_cycle():
    def visit(u: str, stack: tuple[str, ...]) -> None:
        assert u not in stack, f"cycle {' -> '.join((*stack, u))}"
        for v in ALLOWED[u]:
            visit(v, (*stack, u))

    for u in ALLOWED:
        visit(u, ())


def test_nothing_in_emergence_lab_imports_the_hydra_plugin():
    paths = {_module_name(p): p for root in ROOTS for p in root.rglob("*.py")}
    known = set(paths)
    bad = {m for m, p in paths.items() if m.startswith("emergence_lab")
           and any(d.startswith("hydra_plugins") for d in _all_imports(p, known))}
    assert not bad, sorted(bad)


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from emergence_lab.report import claims\n"
                   "from emergence_lab import procs, files\n")
    assert _imports(bad) == {"report", "procs", "files"}


ROOTS = (SRC, SRC.parent / "hydra_plugins")  # the project's two import roots under src/


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_imports(path: Path, known: set[str]) -> set[str]:
    """The project's modules a module imports anywhere in it, function-level imports too."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            out |= subs or {node.module}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out & known


def test_no_module_import_cycle():
    """Between modules, not only packages, over emergence_lab and the Hydra plugin and with
    function-level imports: a package's __init__ importing its own options
    (import_submodules) is the one edge allowed back."""
    paths = {_module_name(p): p for root in ROOTS for p in root.rglob("*.py")}
    known = set(paths)
    graph = {m: {d for d in _all_imports(p, known) if not m.startswith(d + ".")}
             for m, p in paths.items()}
    done: set[str] = set()

    def visit(m: str, stack: tuple[str, ...]) -> None:
        assert m not in stack, f"import cycle {' -> '.join((*stack, m))}"
        if m in done:
            return
        for d in graph[m]:
            visit(d, (*stack, m))
        done.add(m)

    for m in sorted(graph):
        visit(m, ())


def test_no_module_over_300_lines_no_function_over_60():
    long_modules, long_functions = [], []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 300:
            long_modules.append(f"{path.relative_to(SRC)} ({text.count(chr(10))})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long_functions.append(f"{path.relative_to(SRC)}:{node.name} ({n})")
    assert not long_modules and not long_functions, (long_modules, long_functions)


def _registry_names() -> dict[str, set[str]]:
    """The names of every option registry, by the package that owns the registry."""
    from emergence_lab.data import DATASETS
    from emergence_lab.measure.counting import COUNTINGS
    from emergence_lab.measure.landscape import MEASURES
    from emergence_lab.measure.rules import RULES
    from emergence_lab.models import INITS, MODELS
    from emergence_lab.prune.base import RESETS, SCHEDULES, STRATEGIES
    from emergence_lab.report.claims import CLAIMS

    owned = {"measure": (RULES, COUNTINGS, MEASURES), "models": (MODELS, INITS),
             "data": (DATASETS,), "prune": (STRATEGIES, SCHEDULES, RESETS), "report": (CLAIMS,)}
    return {pkg: {n for r in regs for n in r.names()} for pkg, regs in owned.items()}


def _compared_names(path: Path, names: set[str]) -> list[str]:
    """String constants among `names` that a module compares with (==, !=, in): a branch on an
    option's name."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for part in [node.left, *node.comparators]:
                consts = part.elts if isinstance(part, (ast.Tuple, ast.List, ast.Set)) else [part]
                out += [f"line {node.lineno}: {c.value!r}" for c in consts
                        if isinstance(c, ast.Constant) and c.value in names]
    return out


def test_no_branch_on_an_option_name_outside_its_registry():
    """`if name == "..."` outside a registry means the design is wrong: an option's traits
    belong on its registry entry."""
    owned = _registry_names()
    bad = []
    for path in MODULES:
        unit = _unit(path)
        names = set().union(*(n for pkg, n in owned.items() if pkg != unit))
        bad += [f"{path.relative_to(SRC)} {hit}" for hit in _compared_names(path, names)]
    assert not bad, bad


def test_the_name_checker_sees_a_branch(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f(c):\n    return c.rule == 'mean' or c.name in ('snip', 'x')\n")
    assert len(_compared_names(bad, {"mean", "snip"})) == 2
