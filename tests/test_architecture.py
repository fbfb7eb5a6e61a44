"""The shape of the house: `rag/` is a library of subpackages, `api/` and `ingest/` thin shells.

Every import statement of the three packages is read (inside functions too, since a lazy import
still ties two modules together), and the rules below are checked on that graph.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rag", "api", "ingest")
SHARED_TOP_MODULES = {"rag.config", "rag.errors", "rag.indexes", "rag.evaluation"}
SUBPACKAGES = {"ingest", "embed", "ask", "guard", "store", "engine", "shared"}
FRAMEWORKS = {"fastapi", "starlette", "uvicorn", "click"}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a module of ours, or a third-party top-level name
    line: int


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.append(Import(name, child if child in modules else base, node.lineno))
    return found


def graph() -> tuple[dict[str, Path], list[Import]]:
    modules = module_files()
    edges = [i for name, path in modules.items() for i in imports_of(name, path, modules)]
    return modules, edges


def own_edges(modules: dict[str, Path], edges: list[Import]) -> dict[str, set[str]]:
    """Module -> the modules of ours that importing it runs: the target and the packages above
    it, except the importer's own packages (which Python has already started)."""
    out: dict[str, set[str]] = {name: set() for name in modules}
    for edge in edges:
        if edge.target not in modules:
            continue
        parts = edge.target.split(".")
        for depth in range(1, len(parts) + 1):
            step = ".".join(parts[:depth])
            if step in modules and step != edge.importer and not _contains(step, edge.importer):
                out[edge.importer].add(step)
    return out


def _contains(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def _within(package: str, module: str) -> bool:
    return module == package or _contains(package, module)


def cycles(out: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(out[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(out):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    modules, edges = graph()
    assert cycles(own_edges(modules, edges)) == []


def test_cycle_check_finds_a_cycle() -> None:
    out = {"rag.a": {"rag.b"}, "rag.b": {"rag.c"}, "rag.c": {"rag.a"}, "rag.d": {"rag.a"}}
    assert cycles(out) == [["rag.a", "rag.b", "rag.c"]]


def test_library_imports_no_web_or_cli_framework() -> None:
    _, edges = graph()
    offending = [
        f"{e.importer}:{e.line} imports {e.target}"
        for e in edges
        if e.importer.split(".")[0] == "rag" and e.target.split(".")[0] in FRAMEWORKS
    ]
    assert offending == []


def test_library_modules_live_in_subpackages() -> None:
    modules = module_files()
    library = [n.split(".") for n in modules if n.startswith("rag.")]
    top = {
        ".".join(p) for p in library if len(p) == 2 and modules[".".join(p)].name != "__init__.py"
    }
    assert top <= SHARED_TOP_MODULES, sorted(top - SHARED_TOP_MODULES)
    assert {p[1] for p in library if len(p) > 2} == SUBPACKAGES


def test_each_subpackage_says_what_lives_there() -> None:
    for sub in sorted(SUBPACKAGES):
        init = ROOT / "rag" / sub / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"rag/{sub}/__init__.py has no docstring"
        assert len(doc.splitlines()) <= 2, f"rag/{sub}/__init__.py: say it in two lines"


def test_other_rooms_use_a_subpackage_through_its_exports() -> None:
    """Outside `rag/X/`, code imports `rag.X`, never one of its modules."""
    modules, edges = graph()
    offending = []
    for edge in edges:
        parts = edge.target.split(".")
        if len(parts) < 3 or parts[0] != "rag" or parts[1] not in SUBPACKAGES:
            continue
        if edge.target not in modules or modules[edge.target].name == "__init__.py":
            continue
        if not _within(f"rag.{parts[1]}", edge.importer):
            offending.append(f"{edge.importer}:{edge.line} imports {edge.target}")
    assert offending == []
