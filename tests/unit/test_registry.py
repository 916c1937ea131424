import pytest

from domaintune.errors import ConfigError
from domaintune.registry import Registry, suggest


def test_lazy_lookup_and_did_you_mean():
    reg = Registry("reader")
    reg.register("jsonl", "json:loads")
    import json

    assert reg.get("jsonl") is json.loads
    with pytest.raises(ConfigError, match="unknown reader 'jsnol' \\(did you mean 'jsonl'\\?\\)"):
        reg.get("jsnol")
    assert suggest("zzz", ["jsonl"]) == ""
