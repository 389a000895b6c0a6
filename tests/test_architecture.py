"""The import graph of the product packages, read statically with ``ast`` (nothing is imported).

Two rules: ``hdh_cli`` is a leaf that nothing else imports (the code location must load without
the command line), and the code location's modules import each other without a cycle. Every
import counts: top level, inside functions (how cycles used to be hidden), under
``if TYPE_CHECKING:``, relative, and ``importlib.import_module("literal")``.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = "hdh_cli"
CODE_LOCATION = (
    "hdh_assets",
    "resources",
    "sensors",
    "jobs",
    "portal",
    "synthetic",
    "dicomweb",
    "viewer",
    "auth",
    "gateway",
    "package_manager",
)
PRODUCT_PACKAGES = (*CODE_LOCATION, CLI)


@dataclass(frozen=True)
class Import:
    """One import statement's target, as written (resolved to absolute), and where it is."""

    source: str  # the importing module, dotted
    target: str  # the imported module (or ``package.name`` when name is not a submodule)
    path: str  # the importing file, relative to the root
    line: int
    kind: str  # top-level, function-local, TYPE_CHECKING or importlib

    def where(self) -> str:
        return f"{self.path}:{self.line} ({self.kind})"


def discover_modules(root: Path, packages: tuple[str, ...] = PRODUCT_PACKAGES) -> dict[str, Path]:
    """Every module of the packages by dotted name; a package's ``__init__`` is the package."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    """(target, line, kind) of every import in one module; ``from x import y`` gives x and x.y."""

    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package = module, is_package
        self.found: list[tuple[list[str], int, str]] = []
        self._kinds: list[str] = []

    def _kind(self) -> str:
        return self._kinds[-1] if self._kinds else "top-level"

    def _within(self, kind: str, nodes) -> None:
        self._kinds.append(kind)
        for node in nodes:
            self.visit(node)
        self._kinds.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:  # decorators and defaults run at definition time
            self.visit(decorator)
        self.visit(node.args)
        kind = self._kind() if self._kind() == "TYPE_CHECKING" else "function-local"
        self._within(kind, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._within("TYPE_CHECKING", node.body)
            self._within(self._kind(), node.orelse)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(([alias.name], node.lineno, self._kind()))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the package holding this module, up level - 1 more
            package = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            anchor = package[: len(package) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        # Whether y is a submodule is decided against the known modules by the caller.
        targets = [base, *(f"{base}.{a.name}" for a in node.names if a.name != "*")]
        self.found.append((targets, node.lineno, self._kind()))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if (
            name in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self.found.append(([node.args[0].value], node.lineno, "importlib"))
        self.generic_visit(node)


def read_imports(root: Path, packages: tuple[str, ...] = PRODUCT_PACKAGES) -> list[Import]:
    """Every import of every module of the packages, resolved to absolute dotted names."""
    modules = discover_modules(root, packages)
    imports = []
    for module, path in modules.items():
        collector = _Collector(module, path.name == "__init__.py")
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        relative = path.relative_to(root).as_posix()
        for targets, line, kind in collector.found:
            base, *names = targets
            submodules = [name for name in names if name in modules]
            # from x import y: y when it is a submodule, else x itself (y is defined in x).
            for target in submodules or [base]:
                imports.append(Import(module, target, relative, line, kind))
            if submodules and len(submodules) < len(names):
                imports.append(Import(module, base, relative, line, kind))
    return imports


def forbidden_cli_imports(root: Path) -> list[str]:
    """Every import of hdh_cli from a module outside it, as 'file:line (kind): statement'."""
    return sorted(
        f"{imp.where()}: {imp.source} imports {imp.target}"
        for imp in read_imports(root)
        if imp.source.split(".")[0] != CLI and imp.target.split(".")[0] == CLI
    )


def import_graph(root: Path) -> dict[str, dict[str, list[Import]]]:
    """source -> target -> the imports making that edge, among the code location's modules.

    ``import a.b.c`` is an edge to ``a.b.c`` and also to the package inits ``a`` and ``a.b``
    that importing it executes, except those that enclose the importer: they are already
    initialised (or initialising) when the importer runs. So a package whose ``__init__``
    re-exports its own modules (``resources/lake/__init__.py``) is not a cycle, while an init
    that imports something leading back to the importer is. The simpler rule, an edge from each
    module to its own parent inits, reports exactly such re-exports as false cycles
    (``resources.lake -> resources.lake.io_manager -> resources.lake``), so it is not used.
    Imports under ``if TYPE_CHECKING:`` never run: annotations only, no edge.
    """
    modules = discover_modules(root, CODE_LOCATION)
    graph: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for imp in read_imports(root, CODE_LOCATION):
        if imp.kind == "TYPE_CHECKING":
            continue
        parts = imp.target.split(".")
        prefixes = [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
        known = [p for p in prefixes if p in modules]
        if not known:
            continue  # third party, standard library, or hdh_cli (the other test's concern)
        enclosing = {
            ".".join(imp.source.split(".")[:n]) for n in range(1, imp.source.count(".") + 2)
        }
        for target in known:  # the longest is the module itself, the others its package inits
            if target not in enclosing:
                graph[imp.source][target].append(imp)
    return graph


def _strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Tarjan's components with more than one module, each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def find_cycles(graph: dict[str, dict[str, list[Import]]]) -> list[str]:
    """One shortest cycle per strongly connected component, as its chain and each edge's lines."""
    reports = []
    for component in _strongly_connected(graph):
        members, start = set(component), component[0]
        parents: dict[str, str] = {}
        queue, last = deque([start]), None
        while last is None:  # breadth first from start, inside the component, back to start
            node = queue.popleft()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    last = node
                    break
                if nxt in members and nxt not in parents:
                    parents[nxt] = node
                    queue.append(nxt)
        chain = [last]
        while chain[-1] != start:
            chain.append(parents[chain[-1]])
        chain = [*reversed(chain), start]
        lines = [" -> ".join(chain)]
        for source, target in itertools.pairwise(chain):
            where = "; ".join(imp.where() for imp in graph[source][target])
            via = "" if target in {i.target for i in graph[source][target]} else " (package init)"
            lines.append(f"    {source} -> {target}{via}: {where}")
        if len(members) > len(chain) - 1:
            lines.append(
                f"    (the shortest cycle among {len(members)} modules: {', '.join(component)})"
            )
        reports.append("\n".join(lines))
    return reports


def test_nothing_outside_the_cli_imports_it():
    found = forbidden_cli_imports(ROOT)
    assert not found, "hdh_cli imported from outside hdh_cli/:\n" + "\n".join(found)


def test_the_code_location_has_no_import_cycle():
    cycles = find_cycles(import_graph(ROOT))
    assert not cycles, "import cycles in the code location:\n" + "\n".join(cycles)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_cycle_hidden_in_a_function_or_closed_by_a_package_init_is_reported(tmp_path):
    root = _write(
        tmp_path,
        {
            "hdh_assets/__init__.py": "",
            "hdh_assets/a.py": "import hdh_assets.pkg.c\n",
            # A re-export of its own module (relative): not a cycle by itself.
            "hdh_assets/pkg/__init__.py": "from .c import thing\n",
            "hdh_assets/pkg/c.py": "thing = 1\n\ndef f():\n    from hdh_assets import a\n",
            "resources/__init__.py": "",
            "resources/home.py": "from resources.lake.tables import Table\n",
            "resources/lake/__init__.py": "from resources.lake.io import IO\n",
            "resources/lake/io.py": "from resources.home import Home\n",
            "resources/lake/tables.py": "Table = 1\n",
        },
    )
    cycles = find_cycles(import_graph(root))
    chains = [report.splitlines()[0] for report in cycles]
    assert chains == [
        "hdh_assets.a -> hdh_assets.pkg.c -> hdh_assets.a",
        "resources.home -> resources.lake -> resources.lake.io -> resources.home",
    ]
    assert "hdh_assets/pkg/c.py:4 (function-local)" in cycles[0]
    assert "resources.home -> resources.lake (package init): resources/home.py:1" in cycles[1]
    # Without the function-local import and the init's import, the graph is acyclic.
    _write(root, {"hdh_assets/pkg/c.py": "thing = 1\n", "resources/lake/__init__.py": ""})
    assert find_cycles(import_graph(root)) == []


def test_an_import_of_the_cli_from_the_code_location_is_reported(tmp_path):
    root = _write(
        tmp_path,
        {
            "hdh_cli/__init__.py": "",
            "hdh_cli/main.py": "from sensors.s import x\n",  # the cli may import anything
            "sensors/__init__.py": "",
            "sensors/s.py": "x = 1\n\n\ndef run():\n    from hdh_cli.main import cli\n",
            "portal/__init__.py": "from hdh_cli import main\n",
        },
    )
    assert forbidden_cli_imports(root) == [
        "portal/__init__.py:1 (top-level): portal imports hdh_cli.main",
        "sensors/s.py:5 (function-local): sensors.s imports hdh_cli.main",
    ]
