"""Citations in a real headless Chromium: a real server on loopback with a real knowledge base bound
to every chat (retrieval under the key's ACL, the answer's [n] markers resolved by the request
path into the `citations` extension field), real API keys, sessions and audit chain. The engine
is scripted to cite ([1], and a dangling [7] the server must drop): a tiny random model never
writes a citation marker. Also: a hostile answer (<script>, <img onerror>, javascript: links)
stays text. The chat screenshot with its open source is the README's docs/img/console-chat.png."""

from __future__ import annotations

import pytest
from console_browser_helpers import ask, css, css_all, login_with_key, shot, wait

from fixtures.console_fakes import ScriptedEngine
from fixtures.console_server import build_kb, governed_app
from fixtures.loopback import LoopbackServer

CITING = ("An outgoing **international wire** costs $35 for Standard customers [1]. "
          "Premier customers pay $15 [1][7].")
EVIL = ("Here is **bold** and `code`.\n\n<script>window.pwned=1</script>\n"
        '<img src=x onerror="window.pwned=2">\n\n- [click](javascript:window.pwned=3)\n- [ok](https://example.org/)')


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("console-kb")
    engine = ScriptedEngine(CITING)
    governed = governed_app(root / "state", engine, kb=build_kb(root / "kb", bind=True))
    server = LoopbackServer(governed.app, governed.state.settings)
    server.governed, server.engine = governed, engine
    yield server
    server.stop()


def test_an_answer_cites_its_sources_and_a_click_opens_one(browser, served, screens, readme_image):
    g = served.governed
    login_with_key(browser, served.url, g.user)  # alice, role user: the chat is her page
    answer = ask(browser, "What does an international wire cost?")
    body = css(answer, ".body")
    assert "[7]" not in body.text  # a marker naming no retrieved source is removed by the server
    links = css_all(body, "a.cite")
    assert [a.text for a in links] == ["[1]", "[1]"]
    sources = css_all(answer, "section.sources li")
    assert len(sources) == 1  # only the cited source; its title, excerpt and document id
    source = sources[0]
    assert css(source, "summary").text == "[1] Wire transfer fees"
    assert css(source, "details").get_attribute("open") is None
    links[0].click()
    wait(browser, lambda d: css(source, "details").get_attribute("open") is not None)
    assert "$35 for Standard customers" in css(source, ".excerpt").text
    assert css(source, ".doc code").text == "wire-fees"
    assert browser.switch_to.active_element == css(source, "summary")  # focus moves to the opened source
    record = g.audit_rows(route="/v1/chat/completions")[0]
    assert record["status"] == 200 and record["key_id"] == g.key_named("alice")["key_id"]
    readme_image(shot(browser, screens, "chat-citation"), "console-chat.png")


def test_hostile_model_answer_never_becomes_html(browser, served, screens):
    login_with_key(browser, served.url, served.governed.user)
    served.engine.answer = EVIL
    try:
        answer = ask(browser, "<b>hello</b>")
    finally:
        served.engine.answer = CITING
    body = css(answer, ".body")
    assert "<script>window.pwned=1</script>" in body.text and "onerror" in body.text
    assert css_all(body, "script, img, iframe") == []
    assert css(body, "strong").text == "bold" and css(body, "code").text == "code"
    hrefs = [a.get_attribute("href") for a in css_all(body, "a")]
    assert hrefs == ["https://example.org/"]
    assert browser.execute_script("return window.pwned === undefined")
    assert css_all(browser, "article.msg.user b") == []  # the user's own text is never HTML either
    rendered = browser.execute_script(
        "var f = window.dtMarkdown.render(arguments[0]); var d = document.createElement('div'); d.appendChild(f);"
        "return [d.querySelectorAll('a').length, d.textContent];", "[x](data:text/html,hi) [y](JAVASCRIPT:1)")
    assert rendered == [0, "[x](data:text/html,hi) [y](JAVASCRIPT:1)"]
    shot(browser, screens, "chat-hostile")
