"""The console in a real headless Chromium against a real server on loopback with a tiny random model
and the real backends (API keys, the audit chain, server-side sessions, rules + review queue, an A/B
experiment, a knowledge base): log in with a key, ask and watch the streamed answer, reopen the
conversation, give feedback that lands in the experiment store, see a run's loss curve load, create
and revoke a key, verify the audit chain (and see it fail after tampering), decide review items,
read the experiment report, re-index the knowledge base; labels, phone width, keyboard, Chinese.
Screenshots of each page go to a pytest tmp folder."""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest
from console_browser_helpers import ask, css, css_all, login_with_key, shot, wait

from fixtures.console_fakes import write_run
from fixtures.console_server import build_kb, governed_app
from fixtures.loopback import LoopbackServer
from fixtures.tiny_model import build_tiny_model_dir


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import torch

    from domaintune.serve.engine.hf import HFEngine, SchedulerLimits
    from domaintune.serve.loading import load_for_serving
    from domaintune.serve.render import ChatRenderer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("console-server")
    model, tokenizer = load_for_serving(build_tiny_model_dir(root / "model"))
    write_run(root / "runs", "finance-demo")
    engine = HFEngine(model, tokenizer, "tiny", SchedulerLimits(max_running=2, threads=1))
    governed = governed_app(root / "state", engine, ChatRenderer(tokenizer), runs_dir=root / "runs",
                            kb=build_kb(root / "kb"), max_tokens=24)
    server = LoopbackServer(governed.app, governed.state.settings)
    server.governed = governed
    yield server
    server.stop()


def _admin(browser, served):
    login_with_key(browser, served.url, served.governed.admin)


def _api_chat(served, secret, content):
    return httpx.post(served.url + "/v1/chat/completions", timeout=60, headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 8})


def test_log_in_ask_see_the_streamed_answer_reopen_it_and_give_feedback(browser, served, screens):
    g = served.governed
    _admin(browser, served)
    assert browser.current_url.endswith("/ui/chat")
    answer = ask(browser, "What is the wire transfer fee?")
    assert css(answer, ".body").text.strip()
    assert "Variant: tone:" in css(answer, ".meta").text  # the experiment's arm and its template are shown
    record = g.audit_rows(route="/v1/chat/completions")[0]
    assert record["status"] == 200 and record["key_id"] == g.key_named("console-admin")["key_id"]
    # the conversation lives in the server-side session store: reopening the page brings it back
    assert "?session=sess_" in browser.current_url
    assert css(browser, "#session-list a").text.startswith("What is the wire")  # listed without a reload
    browser.get(browser.current_url)
    wait(browser, lambda d: "What is the wire transfer fee?" in css(d, "#transcript").text)
    assert len(css_all(browser, "#session-list a")) == 1
    # thumbs up reach POST /v1/feedback and land in the experiment store, on this request
    browser.get(served.url + "/ui/chat")
    answer = ask(browser, "And the fee for a card?")
    css(answer, 'button[data-thumbs="up"]').click()
    wait(browser, lambda d: "Thanks" in css(answer, ".thumbs").text)
    store = g.state.experiments.store
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT request_id, score FROM feedback").fetchall()
    assert len(rows) == 1 and rows[0][1] == 1.0
    assert store.owner(rows[0][0]) == record["principal"]
    shot(browser, screens, "chat")


def test_run_dashboard_loss_curve_loads(browser, served, screens, readme_image):
    _admin(browser, served)
    browser.get(served.url + "/ui/runs")
    css(browser, 'a[href="/ui/runs/finance-demo"]').click()
    image = wait(browser, lambda d: css(d, "img.loss-curve"))
    wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0)
    assert "PASSED" in css(browser, "#gate").text
    assert "fin_qa" in css(browser, "#tasks").text
    readme_image(shot(browser, screens, "runs"), "console-runs.png")


def test_create_a_key_see_its_secret_once_and_revoke_it(browser, served, screens):
    keys = served.governed.state.keys
    _admin(browser, served)
    browser.get(served.url + "/ui/admin/keys")
    css(browser, "#key-name").send_keys("support-bot")
    css(browser, "#create-key").click()
    secret = wait(browser, lambda d: css(d, "#new-key-secret")).get_attribute("value")
    key_id = css(browser, "#new-key-id").text
    assert keys.verify(secret)["key_id"] == key_id and keys.get(key_id)["role"] == "user"
    shot(browser, screens, "admin-keys-created")
    browser.get(served.url + "/ui/admin/keys")
    assert css_all(browser, "#new-key-secret") == [] and secret not in browser.page_source  # shown once
    css(browser, f'button[data-revoke="{key_id}"]').click()
    wait(browser, lambda d: f"Key {key_id} is revoked." in css(d, "main").text)
    assert keys.get(key_id)["revoked_at"] is not None
    admin = served.governed.key_named("console-admin")["key_id"]
    created = [r for r in served.governed.audit_rows(route="/ui/admin/keys") if r["detail"].get("created_key")]
    revoked = served.governed.audit_rows(route="/ui/admin/keys/{key_id}/revoke")
    assert [(r["key_id"], r["detail"]["created_key"]) for r in created] == [(admin, key_id)]  # audited as the admin
    assert [(r["key_id"], r["detail"]["revoked_key"], r["status"]) for r in revoked] == [(admin, key_id, 200)]
    assert all(secret not in str(r) for r in created + revoked)
    page_views = [r for r in served.governed.audit_rows(route="/ui/admin/keys") if r["detail"]["method"] != "POST"]
    assert page_views == []  # the page views are not audited
    assert _api_chat(served, secret, "hello").status_code == 401  # the API refuses it too
    browser.delete_all_cookies()
    browser.get(served.url + "/ui/login")
    css(browser, "#api_key").send_keys(secret)
    css(browser, "#login-key").click()
    wait(browser, lambda d: "error=1" in d.current_url)


def test_verify_the_audit_chain_filter_it_and_see_tampering(browser, served, screens):
    g = served.governed
    assert _api_chat(served, "dt-000000000000.wrong", "hello").status_code == 401  # audited as refused
    _admin(browser, served)
    browser.get(served.url + "/ui/admin/audit")
    css(browser, "#verify-chain").click()
    verdict = wait(browser, lambda d: css(d, "#verdict"))
    assert "The chain is intact" in verdict.text and g.state.audit.verify()["ok"]
    css(browser, "#f-status").send_keys("401")
    css(browser, "form.filters button[type=submit]").click()
    wait(browser, lambda d: "status=401" in d.current_url)
    statuses = browser.execute_script(
        "var t = document.getElementById('audit-records'); if (!t) return [];"
        "var i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent === 'status');"
        "return Array.from(t.tBodies[0].rows).map(r => r.cells[i].textContent);")
    assert statuses and set(statuses) == {"401"}
    shot(browser, screens, "admin-audit")
    db_path = g.root / "audit.sqlite"
    with sqlite3.connect(db_path) as db:  # an attacker turns the first record's status into a success
        body = db.execute("SELECT body FROM audit WHERE seq = 1").fetchone()[0]
        db.execute("UPDATE audit SET body = ? WHERE seq = 1", (json.dumps({**json.loads(body), "status": 299}),))
    try:
        browser.get(served.url + "/ui/admin/audit")
        css(browser, "#verify-chain").click()
        verdict = wait(browser, lambda d: css(d, "#verdict"))
        assert "broken at record 1" in verdict.text and "altered" in verdict.text
        shot(browser, screens, "admin-audit-tampered")
    finally:
        with sqlite3.connect(db_path) as db:
            db.execute("UPDATE audit SET body = ? WHERE seq = 1", (body,))
    assert g.state.audit.verify()["ok"]


def test_review_queue_approve_edit_and_reject(browser, served, screens):
    g = served.governed
    review = g.state.review
    for question in ("loan one", "loan two", "loan three"):  # the hold-loans rule holds each answer
        reply = _api_chat(served, g.user, question).json()
        assert reply["review"]["status"] == "held", reply
    items = {i["prompt"]: i["item_id"] for i in review.list("pending")}
    _admin(browser, served)
    browser.get(served.url + "/ui/admin/review")
    shot(browser, screens, "admin-review")

    def decide(item_id, decision, text=None):
        form = css(browser, f'form[action="/ui/admin/review/{item_id}"]')
        if text is not None:
            box = css(form, "textarea")
            box.clear()
            box.send_keys(text)
        css(form, f'button[value="{decision}"]').click()
        wait(browser, lambda d: f"Decision recorded for {item_id}." in css(d, "main").text)

    decide(items["loan one"], "approve")
    decide(items["loan two"], "edit", "Loans are handled by the branch.")
    decide(items["loan three"], "reject")
    assert [review.get(items[q])["status"] for q in ("loan one", "loan two", "loan three")] \
        == ["approved", "edited", "rejected"]
    assert review.get(items["loan two"])["final"] == "Loans are handled by the branch."
    assert "Nothing waits for review." in css(browser, "main").text
    form = {"csrf": browser.execute_script("return document.querySelector('meta[name=csrf-token]').content"),
            "decision": "approve"}
    again = httpx.post(served.url + f"/ui/admin/review/{items['loan one']}", data=form,
                       cookies={c["name"]: c["value"] for c in browser.get_cookies()})
    assert again.status_code == 400 and "already decided" in again.text  # a 4xx, never a 500
    decided = g.audit_rows(route="/v1/review/items/{item_id}/edit")
    assert decided and decided[0]["key_id"] == g.key_named("console-admin")["key_id"]  # audited as the admin


def test_experiment_report_and_knowledge_base_pages(browser, served, screens):
    _admin(browser, served)
    browser.get(served.url + "/ui/admin/experiments")
    rows = {r.get_attribute("data-variant"): r for r in css_all(browser, "#experiment-tone tbody tr")}
    assert set(rows) == {"A", "B"}
    rated = [v for v, r in rows.items() if "(1/1)" in css(r, "td.rate").text]
    assert len(rated) == 1  # the thumbs up of the first test, on the arm that answered
    assert css(rows["A"], "td.verdict").text == "control"
    assert "[" in css(rows[rated[0]], "td:nth-of-type(5)").text  # its Wilson interval
    shot(browser, screens, "admin-experiments")
    browser.get(served.url + "/ui/admin/kb")
    assert "wire-fees" in css(browser, "main").text and "public" in css(browser, "main").text
    css(browser, 'form[action="/ui/admin/kb/handbook/reindex"] button').click()
    wait(browser, lambda d: "handbook" in css(d, "main p[role=status]").text)
    shot(browser, screens, "admin-kb")


def test_every_control_has_a_label_phone_width_and_keyboard(browser, served, screens):
    _admin(browser, served)
    unlabeled_js = """return Array.from(document.querySelectorAll('input:not([type=hidden]),select,textarea,button'))
      .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
      .map(e => e.outerHTML.slice(0, 80));"""
    pages = ("/ui/chat", "/ui/runs", "/ui/runs/finance-demo", "/ui/admin/keys", "/ui/admin/audit",
             "/ui/admin/review", "/ui/admin/experiments", "/ui/admin/kb")
    for page in pages:
        browser.get(served.url + page)
        assert browser.execute_script(unlabeled_js) == [], page
        browser.set_window_size(390, 844)  # phone width: nothing wider than the screen
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 390 + 1, page
        browser.save_screenshot(str(screens / f"phone-{page.strip('/').replace('/', '-')}.png"))
        browser.set_window_size(1280, 900)
    browser.get(served.url + "/ui/chat")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    active = []
    for _ in range(30):  # the keyboard alone reaches the question box and the send button
        ActionChains(browser).send_keys(Keys.TAB).perform()
        active.append(browser.switch_to.active_element.get_attribute("id"))
        if "send" in active:
            break
    assert "question" in active and "send" in active
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "question", active  # and back
    css(browser, "#question").send_keys("Keyboard only?")
    ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()  # Ctrl+Enter
    wait(browser, lambda d: "Keyboard only?" in css(d, "#transcript").text)
    wait(browser, lambda d: css(d, "article.msg.assistant").get_attribute("data-done") == "true", timeout=60)


def test_chinese_interface(browser, served, screens):
    _admin(browser, served)
    browser.get(served.url + "/ui/runs")
    css(browser, 'a[lang="zh-CN"]').click()
    wait(browser, lambda d: "训练运行" in css(d, "h1").text)
    assert css(browser, "html").get_attribute("lang") == "zh-CN"
    shot(browser, screens, "runs-zh")
    css(browser, 'a[lang="en"]').click()
    wait(browser, lambda d: css(d, "h1").text == "Runs")
