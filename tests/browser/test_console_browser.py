"""The console in a real headless Chromium against a real server on loopback with a tiny model:
log in with a key, ask and watch the streamed answer, see a run's loss curve load, create and
revoke a key, verify the audit chain; a hostile model answer never becomes HTML; phone width,
labels, Chinese strings. Screenshots of each page go to a pytest tmp folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from console_browser_helpers import LoopbackServer, css, css_all, shot, wait

from fixtures.console_fakes import (
    FakeAudit,
    FakeExperiments,
    FakeKB,
    FakeKeys,
    FakeReview,
    FakeSessions,
    KeyAuth,
    ScriptedEngine,
    scripted_renderer,
    write_run,
)
from fixtures.tiny_model import build_tiny_model_dir

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
EVIL = ("Here is **bold** and `code`.\n\n<script>window.pwned=1</script>\n"
        '<img src=x onerror="window.pwned=2">\n\n- [click](javascript:window.pwned=3)\n- [ok](https://example.org/)')


@pytest.fixture(scope="module")
def governed_server(tmp_path_factory):
    import torch

    from domaintune.config.serve import ServeConfig
    from domaintune.serve.app import create_app
    from domaintune.serve.engine.hf import HFEngine, SchedulerLimits
    from domaintune.serve.hooks import Hooks
    from domaintune.serve.loading import load_for_serving
    from domaintune.serve.render import ChatRenderer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("console-server")
    model, tokenizer = load_for_serving(build_tiny_model_dir(root / "model"))
    runs_dir = root / "runs"
    write_run(runs_dir, "finance-demo")
    keys, audit = FakeKeys(), FakeAudit()
    settings = ServeConfig(port=0, console={"runs_dir": str(runs_dir), "max_tokens": 24})
    app = create_app(HFEngine(model, tokenizer, "tiny", SchedulerLimits(max_running=2, threads=1)),
                     ChatRenderer(tokenizer), settings, Hooks(auth=KeyAuth(keys), audit=audit))
    app.state.keys, app.state.audit, app.state.sessions = keys, audit, FakeSessions()
    app.state.review = FakeReview([{"id": "r1", "text": "An answer held for review.", "reason": "rule: pii"}])
    app.state.experiments = FakeExperiments()  # the report and feedback interface (no A/B assignment)
    app.state.kb = FakeKB()
    _, secret = keys.create("console-admin", "admin")
    server = LoopbackServer(app, settings)
    yield server, secret, keys, audit
    server.stop()


@pytest.fixture(scope="module")
def open_server():
    from domaintune.config.serve import ServeConfig
    from domaintune.serve.app import create_app

    settings = ServeConfig(port=0)
    server = LoopbackServer(create_app(ScriptedEngine(EVIL), scripted_renderer, settings), settings)
    yield server
    server.stop()


def _login_with_key(driver, url, secret):
    driver.delete_all_cookies()
    driver.get(url + "/ui/login")
    css(driver, "#api_key").send_keys(secret)
    css(driver, "#login-key").click()
    wait(driver, lambda d: d.current_url.endswith("/ui/chat"))


def _ask(driver, question):
    before = len(css_all(driver, "article.msg.assistant"))
    box = css(driver, "#question")
    box.send_keys(question)
    css(driver, "#send").click()
    wait(driver, lambda d: len(css_all(d, "article.msg.assistant")) > before)
    answer = css_all(driver, "article.msg.assistant")[-1]
    wait(driver, lambda d: answer.get_attribute("data-done") in ("true", "error"), timeout=60)
    assert answer.get_attribute("data-done") == "true", answer.text
    return answer


def test_log_in_ask_and_see_the_streamed_answer(browser, governed_server, screens, readme_images):
    server, secret, _keys, audit = governed_server
    _login_with_key(browser, server.url, secret)
    answer = _ask(browser, "What is the wire transfer fee?")
    assert css(answer, ".body").text.strip()
    assert audit.rows[-1]["route"] == "/v1/chat/completions" and audit.rows[-1]["status"] == 200
    css(answer, 'button[data-thumbs="up"]').click()  # thumbs reach POST /v1/feedback as this principal
    wait(browser, lambda d: "Thanks" in css(answer, ".thumbs").text)
    experiments = server.app.state.experiments
    assert experiments.feedbacks[-1][1]["thumbs"] == "up"
    assert experiments.feedbacks[-1][1]["request_id"].startswith("chatcmpl-")
    path = shot(browser, screens, "chat")
    if readme_images:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / "console-chat.png")


def test_run_dashboard_loss_curve_loads(browser, governed_server, screens, readme_images):
    server = governed_server[0]
    browser.get(server.url + "/ui/runs")
    css(browser, 'a[href="/ui/runs/finance-demo"]').click()
    image = wait(browser, lambda d: css(d, "img.loss-curve"))
    wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0)
    assert "PASSED" in css(browser, "#gate").text
    assert "fin_qa" in css(browser, "#tasks").text
    path = shot(browser, screens, "runs")
    if readme_images:
        shutil.copyfile(path, DOCS_IMG / "console-runs.png")


def test_create_and_revoke_a_key_and_verify_the_audit_chain(browser, governed_server, screens):
    server, _secret, keys, _audit = governed_server
    browser.get(server.url + "/ui/admin/keys")
    css(browser, "#key-name").send_keys("support-bot")
    css(browser, "#create-key").click()
    secret = wait(browser, lambda d: css(d, "#new-key-secret")).get_attribute("value")
    key_id = css(browser, "#new-key-id").text
    assert keys.principal(secret) is not None
    shot(browser, screens, "admin-keys-created")
    css(browser, f'button[data-revoke="{key_id}"]').click()
    wait(browser, lambda d: f"Key {key_id} is revoked." in css(d, "main").text)
    assert keys.rows[key_id]["revoked"] and keys.principal(secret) is None
    browser.get(server.url + "/ui/admin/audit")
    css(browser, "#verify-chain").click()
    verdict = wait(browser, lambda d: css(d, "#verdict"))
    assert "intact" in verdict.text
    shot(browser, screens, "admin-audit")
    for page in ("review", "experiments", "kb"):
        browser.get(server.url + f"/ui/admin/{page}")
        shot(browser, screens, f"admin-{page}")


def test_every_control_has_a_label_and_phone_width_fits(browser, governed_server, screens):
    server = governed_server[0]
    unlabeled_js = """return Array.from(document.querySelectorAll('input:not([type=hidden]),select,textarea,button'))
      .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
      .map(e => e.outerHTML.slice(0, 80));"""
    for page in ("/ui/chat", "/ui/runs/finance-demo", "/ui/admin/keys", "/ui/admin/audit", "/ui/admin/review",
                 "/ui/admin/kb"):
        browser.get(server.url + page)
        assert browser.execute_script(unlabeled_js) == [], page
    browser.get(server.url + "/ui/chat")
    browser.set_window_size(390, 844)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390 + 1
    browser.save_screenshot(str(screens / "chat-phone.png"))
    browser.set_window_size(1280, 900)
    browser.get(server.url + "/ui/chat")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    active = []
    for _ in range(30):  # the keyboard alone reaches the question box and the send button
        ActionChains(browser).send_keys(Keys.TAB).perform()
        active.append(browser.switch_to.active_element.get_attribute("id"))
        if "send" in active:
            break
    assert "question" in active and "send" in active


def test_chinese_interface(browser, governed_server, screens):
    server = governed_server[0]
    browser.get(server.url + "/ui/runs")
    css(browser, 'a[lang="zh-CN"]').click()
    wait(browser, lambda d: "训练运行" in css(d, "h1").text)
    assert css(browser, "html").get_attribute("lang") == "zh-CN"
    shot(browser, screens, "runs-zh")
    css(browser, 'a[lang="en"]').click()
    wait(browser, lambda d: css(d, "h1").text == "Runs")


def test_hostile_model_answer_never_becomes_html(browser, open_server, screens):
    browser.delete_all_cookies()
    browser.get(open_server.url + "/ui/login")
    assert "without API keys" in browser.page_source
    css(browser, "#login-open").click()
    wait(browser, lambda d: d.current_url.endswith("/ui/chat"))
    answer = _ask(browser, "<b>hello</b>")
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
