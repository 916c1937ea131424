from __future__ import annotations

from domaintune.governance.canonical import canonical
from domaintune.governance.neardup import jaccard, shingles

BODY = ("The guarantee is issued under the uniform rules for demand guarantees, and the bank charges a fee "
        "that depends on the amount and the term.")


def test_markup_labels_and_headings_go_words_stay():
    md = f"# Fees and terms\n\n**{BODY}** See [the rules](https://example.com/rules).\n"
    html_page = f"<h1>Fees and terms</h1>\n<p>{BODY} See the rules.</p>"
    chat = "agent: " + BODY.replace("the term.", "the term.\ncustomer: See the rules.")
    plain = f"{BODY} See the rules."
    assert canonical(md) == canonical(html_page) == canonical(chat) == canonical(plain) == plain


def test_chinese_speaker_labels_and_setext_headings():
    assert canonical("客服：您好，请问有什么可以帮您？\n客户：我想开户。") == "您好，请问有什么可以帮您？ 我想开户。"
    assert canonical(f"Fees\n====\n{BODY}") == BODY


def test_short_texts_keep_their_lines_and_urls_times_are_not_labels():
    assert canonical("- savings account\n- current account") == "savings account current account"
    assert canonical("See http://example.com at 10:30 today.") == "See http://example.com at 10:30 today."


def test_a_word_cut_across_turns_costs_little():
    whole = " ".join([BODY] * 3)
    cut = whole.index("uniform") + 3
    chat = f"agent: {whole[:cut]}\ncustomer: {whole[cut:]}"
    assert jaccard(shingles(canonical(chat), 5), shingles(whole, 5)) >= 0.8  # data.near_dedup.threshold
    assert jaccard(shingles(chat, 5), shingles(whole, 5)) < jaccard(shingles(canonical(chat), 5), shingles(whole, 5))


def test_numbered_prefixes_and_single_labels_still_tell_texts_apart():
    assert canonical("doc 1: some ordinary text") != canonical("doc 2: some ordinary text")
    assert canonical("Note: rates change monthly.") == "Note: rates change monthly."
    assert canonical("Step 2: open the app.\nStep 3: sign in.") == "Step 2: open the app. Step 3: sign in."


def _canonical_reference(text: str) -> str:
    """The canonical form as first written (every substitution on every line): the gated one must match."""
    import html
    import re

    from domaintune.governance import canonical as c

    end_punct = re.compile(r"[.!?;:,。！？；：，、…\"'”’)）]\s*$")

    def clean_line(line: str, transcript: bool) -> tuple[str, bool]:
        line = c._LINE_MARKERS.sub("", c._MD_LINK.sub(r"\1", c._TAG.sub(" ", line)), count=1)
        unlabelled = c._SPEAKER.sub("", line, count=1) if transcript else line
        return c._TABLE.sub(" ", c._EMPHASIS.sub("", unlabelled)).strip(), unlabelled != line

    def is_heading(raw: str, clean: str, labelled: bool) -> bool:
        if c._MD_HEADING.match(raw):
            return True
        return not labelled and len(c._TOKENS.findall(clean)) <= c.HEADING_TOKENS and not end_punct.search(clean)

    raw_lines = [raw for raw in html.unescape(text).splitlines() if not c._SETEXT.match(raw)]
    transcript = sum(1 for raw in raw_lines if c._SPEAKER.match(raw)) >= c.MIN_LABELLED_LINES
    lines = [(raw, *clean_line(raw, transcript)) for raw in raw_lines]
    lines = [(raw, clean, labelled) for raw, clean, labelled in lines if clean]
    body = [clean for raw, clean, labelled in lines if not is_heading(raw, clean, labelled)]
    if sum(len(c._TOKENS.findall(line)) for line in body) < c.MIN_BODY_TOKENS:
        body = [clean for _, clean, _ in lines]
    return " ".join(" ".join(body).split())


def test_gated_canonical_form_matches_its_first_definition():
    import random

    rng = random.Random(1)
    bits = ["<b>", "</p>", "&amp;", "[link](http://x)", "# ", "## Head", "> ", "- ", "* ", "1. ", "12) ", "**", "__",
            "`", "~~", "|", "| --- |", "agent: ", "客服：", "[10:32] Li Wei: ", "word", "words here", "end.", "。",
            "\n", "\n", " ", "\t", "=====", "\u2028", "\r\n", "２. ", "¹ ", "x_y", "a~b", "Note: "]
    for _ in range(5000):
        text = "".join(rng.choice(bits) for _ in range(rng.randint(0, 40)))
        assert canonical(text) == _canonical_reference(text), repr(text)
