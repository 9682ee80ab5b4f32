"""The layers of docs/architecture.md, read from the code's own imports: no circle, no import running back up, and
reports that only render (they import nothing that computes a verdict)."""

import ast
from pathlib import Path

import networkx as nx

SRC = Path(__file__).parents[1] / "src" / "diffaudit"
# Lowest first; a module may import its own layer and those below. Keyed by a module's first name under diffaudit.
LAYERS = (
    {"errors", "io", "ownership", "resources", "config", "progress", "faults", "backend", "samplers", "layout",
     "tracking", "figures", "registry", "words"},
    {"measure"},
    {"data"},
    {"model"},
    {"attacks", "quality", "concepts"},
    {"mitigations", "unlearning", "scale"},
    {"study"},
    {"report"},
    {"demo", "cli"},
)
# What a report may read: records and their readers, never a module that computes a verdict or a score.
REPORT_READS = LAYERS[0] | {"report"}  # the base layer: files, config, layout, figures, words
READERS = {"diffaudit.study.records", "diffaudit.study.audit_records", "diffaudit.study.findings_record",
           "diffaudit.study.results_record", "diffaudit.study.control_records", "diffaudit.study.deletion_record",
           "diffaudit.model.shards", "diffaudit.data.imagefolder"}
LOADERS = {"diffaudit.model.shards", "diffaudit.data.imagefolder"}  # read pictures from disk; not followed further


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every diffaudit module and the diffaudit modules it imports (at any depth: a function's import counts)."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_every_module_has_a_layer() -> None:
    tops = {m.split(".")[1] for m in _imports() if m != "diffaudit"}
    assert tops <= set().union(*LAYERS), f"add to LAYERS: {sorted(tops - set().union(*LAYERS))}"


def test_no_import_runs_back_up() -> None:
    upward = [f"{a} -> {b}" for a, bs in _imports().items() if a != "diffaudit" for b in bs
              if b != "diffaudit" and _layer(b) > _layer(a)]
    assert not upward, "\n".join(sorted(upward))


def test_no_circle() -> None:
    graph = nx.DiGraph([(a, b) for a, bs in _imports().items() for b in bs])
    cycles = list(nx.simple_cycles(graph, length_bound=6))
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_reports_only_render() -> None:
    """Followed through every import (a reader's own imports included, the data and sample loaders excepted)."""
    graph = _imports()
    computing, seen = [], set()
    todo = [m for m in graph if m.startswith("diffaudit.report")]
    while todo:
        module = todo.pop()
        for b in graph[module] - seen:
            seen.add(b)
            if b.split(".")[1] in REPORT_READS or b in READERS - LOADERS:
                todo.append(b)
            elif b not in LOADERS and b != "diffaudit":
                computing.append(f"{module} -> {b}")
    assert not computing, "a report reads records; move the computation to study/findings:\n" + "\n".join(computing)
