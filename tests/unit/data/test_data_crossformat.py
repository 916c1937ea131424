"""One text exported four ways (txt, Markdown with a heading, an HTML page, a chat transcript cut
mid-word) is one document after the data stage: near-dup signatures use the canonical form."""

from __future__ import annotations

import json

from domaintune.artifacts import RunDir
from domaintune.data import run

SENTENCES = [
    "A cross-border guarantee lets the bank of an exporter promise payment to a foreign buyer.",
    "The promise holds if the exporter fails to deliver the goods under the sales contract.",
    "The guarantee is issued under the uniform rules for demand guarantees of the chamber.",
    "The bank charges a fee that depends on the amount, the term and the risk of the buyer.",
    "Applications are reviewed within five working days once every document has arrived.",
    "A counter guarantee from the buyer's bank may be asked for when the amount is large.",
    "Claims under the guarantee must be made in writing before the expiry date it states.",
    "The trade finance desk answers questions about wording, fees and claims every weekday.",
]
HEADING = "Cross-border guarantees"


def export_all(folder) -> None:
    folder.mkdir()
    (folder / "guide.txt").write_text(" ".join(SENTENCES[:4]) + "\n\n" + " ".join(SENTENCES[4:]) + "\n",
                                      encoding="utf-8")
    (folder / "guide.md").write_text(f"# {HEADING}\n\n" + " ".join(SENTENCES[:4]) + "\n\n"
                                     + " ".join(SENTENCES[4:]) + "\n", encoding="utf-8")
    paragraphs = "".join(f"<p>{s}</p>" for s in SENTENCES)
    (folder / "guide.html").write_text(
        f"<html><head><title>{HEADING} | Harbor Bank</title></head><body><nav><a href='/'>Home</a> | "
        f"<a href='/login'>Login</a></nav><main><article><h1>{HEADING}</h1>{paragraphs}</article></main>"
        "<footer>© Harbor Bank 2026</footer></body></html>", encoding="utf-8")
    # the transcript: one sentence per turn, speakers alternating, one turn cut in the middle of a word
    turns = list(SENTENCES)
    cut = turns[2].index("uniform") + 3
    turns[2:3] = [turns[2][:cut], turns[2][cut:]]
    rows = [{"conversation_id": "c1", "turn": i, "speaker": ("agent", "customer")[i % 2], "text": t}
            for i, t in enumerate(turns)]
    (folder / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_one_text_in_four_formats_survives_once(tmp_path, make_config):
    export_all(tmp_path / "exports")
    sources = [{"path": "exports/guide.txt", "stream": "s", "name": "txt"},
               {"path": "exports/guide.md", "stream": "s", "name": "md"},
               {"path": "exports/guide.html", "stream": "s", "name": "html"},
               {"path": "exports/chat.jsonl", "stream": "s", "name": "chat", "format": "chat"}]
    run(make_config(sources), RunDir(tmp_path / "run"))
    out = tmp_path / "run" / "data"
    kept = [json.loads(line) for split in ("train", "val", "test")
            for line in (out / "s" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(kept) == 1, [k["id"] for k in kept]
    assert sorted(r["reason"] for r in rejects) == ["near_duplicate"] * 3
    # the survivor's text is its own export as read, markup and all: only the signature was canonical
    survivor = kept[0]
    if survivor["source"]["name"] == "chat":
        assert survivor["text"].startswith("agent: ") and "\ncustomer: " in survivor["text"]
    elif survivor["source"]["name"] == "md":
        assert survivor["text"].startswith(f"# {HEADING}")
    else:
        assert SENTENCES[0] in survivor["text"]
