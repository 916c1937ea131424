"""DESIGN.md layering, checked on the real import graph of every subpackage:
cli > stages and services > core libraries > core. Stages never import each other (serve may use
kb); core libraries and core modules never import a stage; no import cycles anywhere."""

from domaintune import codegraph

STAGES = {"data", "mix", "synth", "train", "sft", "align", "distill", "eval", "export", "kb", "serve"}
CORE_LIBRARIES = {"training", "instruct", "benchmarks", "governance"}
CORE_PACKAGES = {"config"}  # core, like artifacts and models: below every library
ENTRY_POINTS = {"domaintune.cli", "domaintune.__main__"}  # the CLI sits above the stages
ALLOWED = {("serve", "kb")}  # retrieval is part of answering


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _is_package_unit(unit: str | None) -> bool:
    return unit is not None and (codegraph.SRC / unit / "__init__.py").is_file()


def _violations() -> list[str]:
    out = []
    for mod, deps in codegraph.graph().items():
        if mod in ENTRY_POINTS:
            continue
        here = _unit(mod) if _is_package_unit(_unit(mod)) else None
        for dep in deps:
            there = _unit(dep)
            if there not in STAGES or there == here or (here, there) in ALLOWED:
                continue
            kind = "stage" if here in STAGES else "core library" if here in CORE_LIBRARIES else "core module"
            out.append(f"{kind} {mod} imports stage {dep}")
    return sorted(out)


def test_every_stage_and_library_respects_the_layers():
    assert not _violations(), "layering violated:\n" + "\n".join(_violations())


def test_every_package_is_classified():
    """A new subpackage must be declared a stage or a core library here (so the test covers it)."""
    packages = {p.parent.name for p in codegraph.SRC.glob("*/__init__.py")}
    known = STAGES | CORE_LIBRARIES | CORE_PACKAGES
    assert packages <= known, sorted(packages - known)


def test_no_import_cycles():
    assert codegraph.cycles() == []


def test_the_scanner_sees_real_imports():
    """Guard the guard: the graph finds a known stage → library edge and a function-level import."""
    g = codegraph.graph()
    assert "domaintune.training.loop" in g["domaintune.sft.stage"]
    assert "domaintune.training.heldout" in g["domaintune.training.loop"]  # imported inside a function


def test_stage_fingerprint_covers_what_it_runs():
    files = codegraph.stage_files(codegraph.SRC / "sft" / "__init__.py")
    sft = {p.relative_to(codegraph.SRC).as_posix() for p in files}
    assert "training/loop.py" in sft and "packing.py" in sft and "sft/escalation.py" in sft
    assert not any(p.startswith(("align/", "train/")) for p in sft)
