"""Index: lexical/dense/hybrid retrieval, incremental build (changed re-embedded, deleted gone everywhere,
version moves), the embedder check, and the governed data-stage output as the default source."""

from __future__ import annotations

import json

import numpy as np
import pytest
from kb_helpers import HashEmbedder, count_tokens, load, write_run

from domaintune.kb.index import KBError
from domaintune.kb.index import load as load_index
from domaintune.kb.service import build_from_config, index_dir, open_from_config

OPEN = type("P", (), {"id": "local", "key_id": None, "user": None, "groups": frozenset(), "scopes": {}})()

DOCS = [
    {"id": "wire", "text": "Wire transfer fees\n\nAn outgoing international wire costs $35 for Standard customers. "
                           "Premier customers pay $20."},
    {"id": "cards", "text": "Card replacement\n\nA replacement card costs $10. Express delivery costs $25."},
    {"id": "zh-wire", "text": "汇款费用\n\n海港银行标准客户境外汇出汇款的手续费是35美元。尊享客户为20美元。"},
    {"id": "rates", "text": "Term deposits\n\nThe 12-month term deposit rate is 3.75%. The 6-month rate is 3.40%."},
]


def _build(tmp_path, docs=DOCS, embedder=None, **kb):
    config = write_run(tmp_path, docs, kb=kb or None)
    cfg = load(config)
    embedder = embedder or HashEmbedder()
    return cfg, build_from_config(cfg, counter=count_tokens, embedder=embedder, tokenizer_id="words"), embedder


@pytest.mark.parametrize("mode", ["lexical", "dense", "hybrid"])
def test_each_mode_finds_the_right_document(tmp_path, mode):
    cfg, report, emb = _build(tmp_path)
    assert report.documents == 4 and report.chunks >= 4 and report.added == [d["id"] for d in DOCS]
    kb = open_from_config(cfg, embedder=emb, mode=mode)
    assert kb.search(OPEN, "term deposit rate 12-month", 1)[0].document_id == "rates"
    if mode != "dense":  # the hashing stand-in embedder has no Chinese words
        assert kb.search(OPEN, "境外汇款手续费", 1)[0].document_id == "zh-wire"
    hit = kb.search(OPEN, "replacement card express delivery", 1)[0]
    doc = DOCS[1]["text"]
    assert doc[hit.start:hit.end] == hit.text and hit.chunk_id.startswith("cards#") and hit.lineage_id == "cards"


def test_incremental_build_reembeds_changes_and_deletes_everywhere(tmp_path):
    cfg, first, emb = _build(tmp_path)
    folder = index_dir(cfg)
    embedded = emb.embedded
    docs = [dict(DOCS[0], text=DOCS[0]["text"] + " Recalls cost $25."), DOCS[1], DOCS[3],
            {"id": "new", "text": "Stop payments cost $20 per cheque."}]
    write_run(tmp_path, docs)
    second = build_from_config(cfg, counter=count_tokens, embedder=emb, tokenizer_id="words")
    assert second.changed == ["wire"] and second.added == ["new"] and second.deleted == ["zh-wire"]
    assert second.version != first.version
    new_chunks = sum(1 for c in load_index(folder).chunks if c.document_id in ("wire", "new"))
    assert emb.embedded - embedded == second.embedded_chunks == new_chunks  # unchanged docs are not re-embedded
    data = load_index(folder)
    assert "zh-wire" not in data.documents and all(c.document_id != "zh-wire" for c in data.chunks)
    assert data.dense.shape[0] == len(data.chunks)
    # the kept rows are the vectors of their own chunks (rows moved, not mixed up)
    for row, c in enumerate(data.chunks):
        assert np.allclose(data.dense[row], emb.passages([f"{c.title}\n{c.text}" if not c.text.startswith(c.title)
                                                          else c.text])[0])
    kb = open_from_config(cfg, embedder=emb, mode="hybrid")
    for mode in ("lexical", "dense", "hybrid"):
        assert all(h.document_id != "zh-wire" for h in kb.search(OPEN, "海港银行标准客户境外汇出汇款", 10, mode=mode))
    third = build_from_config(cfg, counter=count_tokens, embedder=emb, tokenizer_id="words")
    assert third.version == second.version and third.embedded_chunks == 0  # nothing changed


def test_a_different_query_embedder_is_refused(tmp_path):
    cfg, _, _ = _build(tmp_path)
    with pytest.raises(KBError, match="embedded with hash-bow"):
        open_from_config(cfg, embedder=HashEmbedder(weights_hash="1" * 64), mode="hybrid")
    with pytest.raises(KBError, match="embedded with hash-bow"):
        open_from_config(cfg, embedder=HashEmbedder(model_id="other"), mode="dense")
    # a changed embedder at build time re-embeds everything instead of mixing vector spaces
    other = HashEmbedder(model_id="other")
    report = build_from_config(cfg, counter=count_tokens, embedder=other, tokenizer_id="words")
    assert report.embedded_chunks == report.chunks


def test_lexical_only_index_is_first_class(tmp_path):
    config = write_run(tmp_path, DOCS, kb={"sources": [{"stream": "docs", "acl": ["public"]}],
                                           "retrieval": {"mode": "lexical"}})
    cfg = load(config)
    report = build_from_config(cfg, counter=count_tokens, tokenizer_id="words")
    assert report.embedded_chunks == 0 and not (index_dir(cfg) / "dense.npy").exists()
    kb = open_from_config(cfg)
    assert kb.search(OPEN, "wire international", 1)[0].document_id == "wire"
    with pytest.raises(KBError, match="lexical-only"):
        open_from_config(cfg, embedder=HashEmbedder(), mode="hybrid")


def test_corrupt_or_missing_index_names_the_fix(tmp_path):
    cfg, _, emb = _build(tmp_path)
    (index_dir(cfg) / "chunks.jsonl").write_text("{not json\n")
    with pytest.raises(KBError, match="kb build"):
        open_from_config(cfg, embedder=emb)
    with pytest.raises(KBError, match="kb build CONFIG` first"):
        load_index(tmp_path / "nowhere")


def test_governed_output_is_the_source_and_metadata_is_kept(tmp_path):
    cfg, _, _ = _build(tmp_path)
    docs = {d["id"]: d for d in json.loads((index_dir(cfg) / "documents.json").read_text())}
    assert docs["wire"]["title"] == "Wire transfer fees" and docs["wire"]["acl"] == ["public"]
    assert docs["wire"]["source"] == "stream:docs" and len(docs["wire"]["version"]) == 16
