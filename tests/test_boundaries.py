"""Clean boundaries in the source: one meaning per name, no reads of another object's private
attributes, and the engine and methods independent of the model zoo."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import torch
from torch import nn

from ntksap.batchnorm import batch_statistics

SRC = Path(__file__).resolve().parents[1] / "src" / "ntksap"


def _sources() -> dict[Path, str]:
    return {p: p.read_text() for p in sorted(SRC.rglob("*.py"))}


def test_each_module_level_constant_has_one_meaning():
    defined: dict[str, list[str]] = {}
    for path, text in _sources().items():
        for node in ast.parse(text).body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.isupper():
                        defined.setdefault(target.id, []).append(str(path.relative_to(SRC)))
    for name in ("BACKENDS", "DENSE"):
        assert len(defined.get(name, [])) == 1, (name, defined.get(name))


# ``os._exit`` is the documented way to leave a forked child; ``Tensor._version`` is PyTorch's
# in-place version counter; "numpy._core" is a module name in a string.
ALLOWED = {"os._exit", "numpy._core"}


def test_no_reads_of_another_objects_private_attributes():
    found = []
    for path, text in _sources().items():
        for number, line in enumerate(text.splitlines(), 1):
            for m in re.finditer(r"\b(\w+)\.(_[a-z]\w*)", line):
                owner, attr = m.groups()
                if owner in ("self", "cls") or attr == "_version":
                    continue
                if f"{owner}.{attr}" in ALLOWED:
                    continue
                found.append(f"{path.relative_to(SRC)}:{number}: {m.group(0)}")
    assert not found, found


def test_no_torch_private_c_calls():
    assert not [p.name for p, text in _sources().items() if "torch._C" in text]


def _imports(path: Path) -> set[str]:
    """Absolute names of the ntksap modules ``path`` imports."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_engine_and_methods_import_nothing_from_the_model_zoo():
    modules = [SRC / "engine.py", *sorted((SRC / "methods").glob("*.py"))]
    for path in modules:
        zoo = {n for n in _imports(path) if n == "ntksap.models" or n.startswith("ntksap.models.")}
        assert not zoo, (path.name, zoo)


def test_import_resolution_sees_relative_imports_of_the_zoo():
    """The checker above resolves ``from ..models import x`` (it would miss nothing)."""
    assert "ntksap.models" in _imports(SRC / "cli" / "prune.py")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _edges(path: Path, modules: set[str]) -> set[str]:
    """The ntksap modules ``path`` imports; ``from . import sub`` of a submodule imports that
    submodule, not its package's face."""
    found = {n for n in _imports(path) if n in modules}
    name = _module_name(path)
    package = (name if path.name == "__init__.py" else name.rsplit(".", 1)[0]).split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level and not node.module:
            base = ".".join(package[:len(package) - node.level + 1])
            if all(f"{base}.{a.name}" in modules for a in node.names):
                found.discard(base)
    return found


def test_no_import_cycles_between_modules_function_level_imports_included():
    modules = {_module_name(p): p for p in _sources()}
    graph = {name: _edges(path, set(modules)) - {name} for name, path in modules.items()}
    assert _cycles(graph) == []
    # the checker finds a cycle where there is one
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_last_replayed_is_the_statistics_the_latest_batchnorm_call_used(one_thread):
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 3), nn.BatchNorm1d(3))
    x = torch.randn(8, 3)
    with batch_statistics(model, "record_train") as stats:
        hidden = model[1](model[0](x))  # the second BatchNorm's recorded input
        model[2](hidden)
        stats.set_mode("replay")
        out = model[0](x)
        torch.testing.assert_close(stats.last_replayed()[0], x.mean(0))
        torch.testing.assert_close(stats.last_replayed()[1], x.var(0, unbiased=True))
        model[2](model[1](out))
        torch.testing.assert_close(stats.last_replayed()[0], hidden.mean(0))
        torch.testing.assert_close(stats.last_replayed()[1], hidden.var(0, unbiased=True))


def test_is_batched_sees_only_an_outermost_vmap_level(one_thread):
    from torch.func import jacrev, vmap

    from ntksap.batchnorm import _is_batched

    seen = []

    def f(x):
        seen.append(_is_batched(x))
        return x.sin().sum()

    x = torch.randn(3, 4)
    f(x)
    vmap(f)(x)
    vmap(jacrev(f))(x)  # a gradient-tracking wrapper around a batched tensor
    jacrev(f)(x)
    assert seen == [False, True, False, False]


def _package_imports(package: str) -> dict[str, set[str]]:
    """Module (relative path) -> the ntksap modules it imports, module- and function-level."""
    return {str(p.relative_to(SRC)): {n for n in _imports(p) if n.startswith("ntksap.")}
            for p in sorted((SRC / package).rglob("*.py"))}


def _touches(names: set[str], *modules: str) -> set[str]:
    return {n for n in names if any(n == m or n.startswith(m + ".") for m in modules)}


def test_the_ntk_package_is_mathematics_and_reads_no_run_directory():
    """ntksap.ntk computes on a model and inputs; the spectrum of a run directory is
    ntksap.runs.spectrum's."""
    for module, names in _package_imports("ntk").items():
        assert not _touches(names, "ntksap.rundir", "ntksap.runs", "ntksap.experiment",
                            "ntksap.runners", "ntksap.sweep", "ntksap.train"), module


def test_the_report_imports_neither_training_nor_the_sweeps_internals():
    """The report reads what runs recorded (through ntksap.runs and the public results
    store, ntksap.sweep's Store); it imports no training code and no sweep internals."""
    for module, names in _package_imports("report").items():
        assert not _touches(names, "ntksap.train", "ntksap.pack"), module
        internals = {n for n in _touches(names, "ntksap.sweep")
                     if n not in ("ntksap.sweep", "ntksap.sweep.Store", "ntksap.sweep.StoreError")}
        assert not internals, (module, internals)


def test_only_the_runs_package_drives_a_run():
    """The single-run and IMP drivers live in ntksap.runs; the old name ntksap.experiment
    only re-exports it and nothing in the package imports that old name."""
    face = (SRC / "experiment.py").read_text()
    assert "def " not in face and "class " not in face
    for path in sorted(SRC.rglob("*.py")):
        if path.name != "experiment.py":
            assert "ntksap.experiment" not in _imports(path), path
    assert not (SRC / "sweep" / "imp.py").exists() and not (SRC / "ntk" / "runs.py").exists()


def test_only_runs_config_knows_how_an_imp_record_nests_its_run():
    """``run_settings`` is the one reader of the nesting; no ``.get("run", ...)`` elsewhere."""
    found = [str(p.relative_to(SRC)) for p, text in _sources().items()
             if re.search(r"""\.get\(["']run["']""", text)
             and p != SRC / "runs" / "config.py"]
    assert not found, found


def _module_graph() -> dict[str, set[str]]:
    """ntksap module -> the ntksap modules it imports (module- and function-level; ``from X
    import name`` counts as an import of X.name when that is a module, else of X)."""
    files = {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[:len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    edges.add(target if target in files else source)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
        graph[module] = {e for e in edges if e in files and e != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_in_the_whole_package():
    """Every strongly connected component of the import graph is a single module
    (function-level imports count); the detector itself finds a planted cycle."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _module_graph()
    assert len(graph) > 100 and "ntksap.runs.driver" in graph["ntksap.runs.imp"]
    assert not _cycles(graph), _cycles(graph)


def test_methods_use_only_the_engines_public_selection():
    """A method computes scores; the one piece of the engine it may call is the public
    exact-k selection (ntksap.selection.select and its SCOPES), as NTT does for its masks."""
    for module, names in _package_imports("methods").items():
        engine = _touches(names, "ntksap.engine", "ntksap.masks")
        selection = _touches(names, "ntksap.selection") - {
            "ntksap.selection", "ntksap.selection.select", "ntksap.selection.SCOPES"}
        assert not engine and not selection, (module, engine, selection)


def test_only_the_runs_package_and_the_layout_read_a_runs_config():
    """config.json is read by ntksap.rundir (the layout) and, through it, by ntksap.runs
    (read_run, and the drivers of the run itself); nobody else reads it."""
    for path, text in _sources().items():
        where = path.relative_to(SRC).parts
        if where[0] in ("runs", "rundir.py"):
            continue
        assert not re.search(r"read_config\(|read_record\(|config_path\(", text), path
