"""The streaming merge writes exactly what the in-memory merge wrote before it.

GOLDEN holds sha256 hashes of every output file, computed with the in-memory merge (commit 1f55334, before
the on-disk index) on the corpora below: exact and near copies across files and shards, clashing ids,
quality scores that reorder keepers, records the filters reject, a row that does not parse, two streams,
kept near-duplicates, a metadata stratum, and exact dedup off (identical texts then share a split group).
A change here means the merge's output changed: that is a behaviour change to review, not a hash to
refresh."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from domaintune.artifacts import RunDir
from domaintune.data import run

OUTPUTS = ["rejects.jsonl", "lineage.jsonl", "stats.json", "streams.json", "data_report.json",
           *(f"{s}/{p}.jsonl" for s in ("main", "side") for p in ("train", "val", "test"))]

GOLDEN = {
    "defaults": {
        "rejects.jsonl": "c8f90249ceaf2d86ddb3025b5d29e38e9a2fdc13f00dbfd1104e16b12a5f88c5",
        "lineage.jsonl": "881d9b879467060dc1b98b9c364f351fa52c3c628b729abba26a0e1675c6bd0e",
        "stats.json": "e23f9b5ce48b554f5035d278635243f889682bbc21ab00c07405bd363a4b3e57",
        "streams.json": "d6e3705a85f5f7d4b200651b3628a85df8357f0c9c066f7665d1582c37ec58e5",
        "data_report.json": "3592eb0ded46887ccce1124daa18c767dcca37af4f7c515037dc637f89b17afd",
        "main/train.jsonl": "0a7e6d3508a67442c90876c248da347875ceaa0bd8e1c5eeb2a4fdecfc4e20e5",
        "main/val.jsonl": "3091556280a4487783e941390725b773d21478bb13d490060df530578683eb94",
        "main/test.jsonl": "e29cf723d52aee1f3ba6b854b43ab630b3e11b235dd0a14dffaf5a1c7be81fe9",
        "side/train.jsonl": "b70163b1f9bd0adfda984914c981ec11e922e303a067f3f177647b499b711abd",
        "side/val.jsonl": "c0afa1b087a660fc5c67cd19b9ad0bcb7d282fe74e58cfc77f1f407dc88c6321",
        "side/test.jsonl": "709be796e1753db3a74a123ee5d174d075d958b521813325c7cc559302fee453",
    },
    "keep_meta_noexact": {
        "rejects.jsonl": "0c8ec5d24ca9ed9eecb8efb507f35bb308247d5e96608e6510499eabd0da4b4b",
        "lineage.jsonl": "4f9bac4d96a1a8296ca16bb02e93503d7f6f48f3495c3220e04bb8a480a45b5f",
        "stats.json": "f29ae9ad1860762e9f24fb2be69609b57b9e51bd4e08f43f97538861733a2c4e",
        "streams.json": "ff4bfb7550e5f56e814c01a49609b23ac1a03f5e93d79a7c6c39fc1caf2afbe6",
        "data_report.json": "a78f7e4b16479ba99f5a6e9674b67649406ad0bb14927d126374cbd1cc068d00",
        "main/train.jsonl": "e9d6f95c2cada766273350ae655f4110151afb9ec2d5883d5a994ab366cd3a2f",
        "main/val.jsonl": "7d37702e31d8f6c914cab2c603267fea95d3fa953b129c04cbecf8c0b08d0a93",
        "main/test.jsonl": "108567aba0ecb0c1751f548fe69754404d554fd716dd663620e1009b3fa7e2de",
        "side/train.jsonl": "ae1d9d5f048e70dedb5098f66214a57aefc8c4050eea1510783299f9441e10ca",
        "side/val.jsonl": "c0afa1b087a660fc5c67cd19b9ad0bcb7d282fe74e58cfc77f1f407dc88c6321",
        "side/test.jsonl": "709be796e1753db3a74a123ee5d174d075d958b521813325c7cc559302fee453",
    },
}

CONFIGS = {
    "defaults": {"engine": {"tasks": 3}},
    "keep_meta_noexact": {"engine": {"tasks": 2}, "near_dedup": {"action": "keep"}, "exact_dedup": False,
                          "split": {"stratify": "meta.dept"}},
}


def _words(rng: random.Random, n: int) -> str:
    return " ".join("w" + "".join(chr(97 + int(d)) for d in str(rng.randrange(3000))) for _ in range(n))


def corpus(seed: int = 0) -> dict[str, list]:
    """File name -> rows (a str row is written as is: a line that is not JSON)."""
    rng = random.Random(seed)
    base = [{"id": f"a{i}", "text": _words(rng, rng.randrange(40, 160)), "dept": ("loans", "cards", "fx")[i % 3],
             "quality_score": round(rng.random(), 3)} for i in range(90)]
    later: list = []
    for i in range(0, 90, 6):  # exact copies (one space doubled: the same once normalized), other files
        later.append({**base[i], "id": f"x{i}", "text": base[i]["text"].replace(" ", "  ", 1),
                      "quality_score": round(rng.random(), 3)})
    for i in range(1, 90, 5):  # near copies: a few words changed; some longer, some of better quality
        tokens = base[i]["text"].split()
        for j in rng.sample(range(len(tokens)), 2):
            tokens[j] = "changed"
        if i % 3 == 0:
            tokens += ["with", "a", "tail"]
        later.append({**base[i], "id": f"n{i}", "text": " ".join(tokens), "quality_score": round(rng.random(), 3)})
    later.append({**base[1], "id": "n1b", "text": base[1]["text"] + " second copy"})  # a cluster of three
    later += [{"id": "a5", "text": _words(rng, 60)}, {"id": "a7", "text": _words(rng, 70), "quality_score": 0.99}]
    later += [{"id": "short", "text": "too short"}, {"id": "digits", "text": "123 456 789 " * 20}, "{not json"]
    side = [{"id": f"s{i}", "text": _words(rng, rng.randrange(30, 90)), "dept": "fx"} for i in range(30)]
    side.append({**side[3], "id": "s3copy"})
    side.append({"id": "a0x", "text": base[0]["text"]})  # the same text in the other stream
    return {"a.jsonl": base[:50], "b.jsonl": base[50:] + later[:20], "c.jsonl": later[20:], "side.jsonl": side}


def write_corpus(root, write_jsonl) -> None:
    for name, rows in corpus().items():
        path = write_jsonl(root / name, [r for r in rows if isinstance(r, dict)])
        bad = [r for r in rows if isinstance(r, str)]
        if bad:
            path.write_text(path.read_text(encoding="utf-8") + "".join(b + "\n" for b in bad), encoding="utf-8")


def output_hashes(out, root) -> dict[str, str]:
    """sha256 per output file, with the temporary folder's path replaced (lineage and rejects name files)."""
    hashes = {}
    for rel in OUTPUTS:
        path = out / rel
        blob = path.read_text(encoding="utf-8").replace(str(root), "<root>") if path.is_file() else "<missing>"
        hashes[rel] = hashlib.sha256(blob.encode("utf-8")).hexdigest()
    return hashes


def run_variant(tmp_path, write_jsonl, make_config, name: str) -> dict[str, str]:
    write_corpus(tmp_path / "raw", write_jsonl)
    sources = [{"path": f"raw/{f}", "stream": "main", "id_field": "id"} for f in ("a.jsonl", "b.jsonl", "c.jsonl")]
    sources.append({"path": "raw/side.jsonl", "stream": "side", "id_field": "id"})
    cfg = make_config(sources, seed=3, max_reject_fraction=1.0, **CONFIGS[name])
    run(cfg, RunDir(tmp_path / "run"))
    return output_hashes(tmp_path / "run" / "data", tmp_path)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_outputs_are_byte_identical_to_the_in_memory_merge(tmp_path, write_jsonl, make_config, name):
    got = run_variant(tmp_path, write_jsonl, make_config, name)
    changed = [rel for rel in OUTPUTS if got[rel] != GOLDEN[name][rel]]
    assert not changed, f"{name}: outputs differ from the in-memory merge's: {changed}\n{json.dumps(got, indent=1)}"
