"""Stages never import each other, and core modules never import stages (DESIGN.md layering)."""

import ast
from pathlib import Path

import domaintune

SRC = Path(domaintune.__file__).parent
STAGE_PACKAGES = {"data", "mix", "synth", "train", "align", "eval", "export", "serve"}
ENTRY_POINTS = {"cli.py"}  # the CLI sits above the stages and may name them


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.startswith("domaintune.")}


def _owner(module: str) -> str | None:
    part = module.split(".")[1]
    return part if part in STAGE_PACKAGES else None


def test_stage_packages_do_not_import_each_other():
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        here = rel.parts[0] if len(rel.parts) > 1 else None
        for mod in _imports(path):
            other = _owner(mod)
            if other and here in STAGE_PACKAGES and other != here:
                offenders.append(f"{rel} imports {mod}")
            if other and here is None and rel.name not in ENTRY_POINTS:
                offenders.append(f"core module {rel} imports stage {mod}")
    assert not offenders, "layering violated:\n" + "\n".join(offenders)


def test_the_check_sees_stage_imports():
    """Guard the guard: the import scanner really finds a cross-stage import."""
    sample = SRC / "mix" / "stage.py"
    assert any(_owner(m) == "mix" for m in _imports(sample))


def test_benchmarks_library_imports_no_stage():
    """benchmarks/ is shared by the eval stage and training's auto-eval, so it sits below both."""
    offenders = [f"{p.relative_to(SRC)} imports {m}" for p in (SRC / "benchmarks").rglob("*.py")
                 for m in _imports(p) if _owner(m)]
    assert not offenders, "\n".join(offenders)
