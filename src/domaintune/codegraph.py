"""The project's own import graph, read from source with `ast` (nothing is imported).

Two users: the runner fingerprints a stage by the files it actually runs (its package plus every
project module it imports, transitively), and the layering tests check stage boundaries and cycles.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

import domaintune

SRC = Path(domaintune.__file__).parent
PACKAGE = "domaintune"


def module_file(module: str) -> Path | None:
    """`domaintune.a.b` → its source file (module or package `__init__`), or None."""
    rel = Path(*module.split(".")[1:])
    for candidate in (SRC / rel / "__init__.py", SRC / f"{rel}.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join((PACKAGE, *parts))


@cache
def _imports_cached(path: Path, mtime_ns: int) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    is_pkg = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = here if is_pkg else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            # `from pkg import sub` may name a submodule
            names |= {f"{mod}.{a.name}" for a in node.names if module_file(f"{mod}.{a.name}")}
    return frozenset(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


def imports(path: Path) -> frozenset[str]:
    """Project modules that `path` imports (module-level and function-level alike)."""
    return _imports_cached(path, path.stat().st_mtime_ns)


def closure(start: list[Path]) -> list[Path]:
    """Every project source file reachable from `start` through imports, sorted."""
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for mod in imports(path):
            # importing a.b.c runs a/__init__ and a/b/__init__ too
            parts = mod.split(".")
            for i in range(2, len(parts) + 1):
                f = module_file(".".join(parts[:i]))
                if f and f not in seen:
                    todo.append(f)
    return sorted(seen)


def stage_files(module_path: Path) -> list[Path]:
    """The files a stage runs: its whole package (or module) and what it imports from the project."""
    if module_path.name == "__init__.py":
        start = sorted(p for p in module_path.parent.rglob("*.py") if "__pycache__" not in p.parts)
    else:
        start = [module_path]
    return closure(start)


def fingerprint_files(module_path: Path) -> list[Path]:
    """What `code_fingerprint` hashes: every file a stage runs, plus the data files (YAML/Jinja) in
    its package and in the subpackages it imports (e.g. governance/pii_patterns.yaml)."""
    files = stage_files(module_path)
    packages = {SRC / f.relative_to(SRC).parts[0] for f in files if len(f.relative_to(SRC).parts) > 1}
    if module_path.name == "__init__.py":
        packages.add(module_path.parent)
    data = {p for pkg in packages for p in pkg.rglob("*") if p.is_file() and p.suffix in {".yaml", ".json", ".jinja"}}
    return sorted(set(files) | data)


def code_fingerprint(module_path: Path) -> str:
    """Hash of the content of every file in `fingerprint_files`, named relative to the package root."""
    h = hashlib.sha256()
    for path in fingerprint_files(module_path):
        h.update(str(path.relative_to(SRC)).encode() + b"\0" + path.read_bytes() + b"\0")
    return "code:" + h.hexdigest()[:16]


def graph() -> dict[str, set[str]]:
    """module → project modules it imports, for every module in the package."""
    out: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name = module_name(path)
        # a module always runs its own parent packages' __init__: not an edge worth a cycle
        out[name] = {m for m in imports(path) if module_file(m) and not name.startswith(m + ".")}
    return out


def cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found
