from __future__ import annotations

import pytest

from domaintune.config import DataConfig
from domaintune.data.sources import expand_path, resolve_sources
from domaintune.errors import DataError


@pytest.fixture
def tree(tmp_path):
    for rel in ["d/b.jsonl", "d/a.jsonl", "d/sub/c.txt", "d/.hidden/x.jsonl", "d/.swp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    return tmp_path


def names(files, root):
    return [f.relative_to(root).as_posix() for f in files]


def test_folder_is_read_recursively_sorted_without_hidden_files(tree):
    root, files = expand_path(str(tree / "d"))
    assert root == tree / "d"
    assert names(files, tree) == ["d/a.jsonl", "d/b.jsonl", "d/sub/c.txt"]


def test_file_and_glob(tree):
    root, files = expand_path(str(tree / "d" / "a.jsonl"))
    assert root == tree / "d" and names(files, tree) == ["d/a.jsonl"]
    root, files = expand_path(str(tree / "d" / "**" / "*.txt"))
    assert root == tree / "d" and names(files, tree) == ["d/sub/c.txt"]


def test_exclude_leaves_out_run_folder(tree):
    _, files = expand_path(str(tree / "d"), exclude=tree / "d" / "sub")
    assert names(files, tree) == ["d/a.jsonl", "d/b.jsonl"]


def test_missing_paths_and_bad_streams_reported_together(tree):
    data = DataConfig(sources=[{"path": str(tree / "d"), "stream": "ok"},
                               {"path": str(tree / "nope" / "*.jsonl"), "stream": "x"},
                               {"path": str(tree / "d"), "stream": "y"}])
    # the schema already rejects such names; the stage re-checks configs built in code
    data.sources[2] = data.sources[2].model_copy(update={"stream": "a/b"})
    with pytest.raises(DataError) as err:
        resolve_sources(data)
    msg = str(err.value)
    assert "data.sources[1].path" in msg and "nope" in msg
    assert "data.sources[2].stream" in msg and "data.sources[0]" not in msg
