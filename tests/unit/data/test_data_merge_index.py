"""The merge's on-disk index: its dict-like tables, and the contract of corpus-wide steps."""

from __future__ import annotations

import pytest

from domaintune.artifacts import RunDir
from domaintune.data import run
from domaintune.data.merge_index import MergeIndex
from domaintune.errors import DataError


def test_disk_map_behaves_like_a_dict_and_the_index_file_goes_away(tmp_path):
    index = MergeIndex(tmp_path / "i.sqlite")
    table = index.disk_map()
    table["a"] = "1"
    table[b"\x00\xff"] = "2"  # exact digests are bytes
    table["a"] = "3"
    assert table.get("a") == "3" and table[b"\x00\xff"] == "2" and table.get("missing") is None
    assert sorted(map(str, table)) == ["a", "b'\\x00\\xff'"] and len(table) == 2
    del table["a"]
    with pytest.raises(KeyError):
        table["a"]
    index.close()
    assert not (tmp_path / "i.sqlite").exists()


class Rewrites:
    """A corpus-wide step that (wrongly) changes the text."""

    name, corpus_wide = "rewrite", True

    def __call__(self, rec):
        rec.text = rec.text.upper()
        return rec


def test_a_corpus_wide_step_that_changes_a_record_is_refused(tmp_path, write_jsonl, make_config, make_docs,
                                                             monkeypatch):
    import domaintune.data.stage as stage

    write_jsonl(tmp_path / "a.jsonl", make_docs(3))
    cfg = make_config([{"path": "a.jsonl", "stream": "s"}])
    build = stage.build_steps
    monkeypatch.setattr(stage, "build_steps", lambda data: [*build(data), Rewrites()])
    with pytest.raises(DataError, match="corpus-wide step changed the text"):
        run(cfg, RunDir(tmp_path / "run"))
    assert not (tmp_path / "run" / "data" / ".merge-index.sqlite").exists()
