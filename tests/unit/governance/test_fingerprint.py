"""The data stage runs governance/ code and tables: editing them must re-run the stage."""

from domaintune import codegraph


def test_data_stage_fingerprint_covers_the_governance_tables():
    files = {p.relative_to(codegraph.SRC).as_posix() for p in codegraph.fingerprint_files(
        codegraph.SRC / "data" / "__init__.py")}
    assert {"governance/pii.py", "governance/pii_patterns.yaml", "governance/langid_stopwords.yaml",
            "data/quality_boilerplate.yaml"} <= files
    assert not any(p.startswith(("sft/", "train/", "instruct/")) for p in files)
