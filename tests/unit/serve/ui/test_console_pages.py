"""Chat, runs and admin pages over HTTP: the stream goes through the API's request path, model output
never reaches a page as HTML, the dashboard reads the run folder, admin forms drive the backends."""

from __future__ import annotations

import json
import re
import sqlite3

from fastapi.testclient import TestClient

from fixtures.console_server import csrf_of, login_key, login_open, make_app

EVIL = 'Hi <script>window.pwned=1</script> <img src=x onerror="window.pwned=2"> [x](javascript:alert(1))'


def _chunks(text: str) -> list[dict]:
    return [json.loads(line[5:].strip()) for line in text.splitlines()
            if line.startswith("data:") and line[5:].strip() != "[DONE]"]


def test_chat_streams_through_the_request_path_and_is_audited(governed):
    client, secrets = governed
    login_key(client, secrets["user"])
    token = csrf_of(client.get("/ui/chat").text)
    response = client.post("/ui/api/chat", json={"messages": [{"role": "user", "content": "hello?"}]},
                           headers={"X-CSRF-Token": token})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    chunks = _chunks(response.text)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello **world**"
    assert chunks[0]["id"].startswith("chatcmpl-")
    record = secrets["audit"].query(limit=1)[0]  # the newest record of the real chain
    assert record["route"] == "/v1/chat/completions" and record["status"] == 200
    assert record["key_id"] == secrets["g"].key_named("alice")["key_id"]


def test_chat_rejects_bad_bodies_with_4xx(governed):
    client, secrets = governed
    login_key(client, secrets["user"])
    headers = {"X-CSRF-Token": csrf_of(client.get("/ui/chat").text)}
    assert client.post("/ui/api/chat", content=b"not json", headers=headers).status_code == 400
    assert client.post("/ui/api/chat", json={"messages": []}, headers=headers).status_code == 400
    assert client.post("/ui/api/chat", json={"messages": [{"role": "system", "content": "x"}]},
                       headers=headers).status_code == 400
    other = client.post("/ui/api/chat", json={"messages": [{"role": "user", "content": "x"}], "session_id": "nope"},
                        headers=headers)
    assert other.status_code == 404


def test_model_output_is_never_raw_html():
    app = make_app(answer=EVIL)
    with TestClient(app) as client:
        login_open(client)
        page = client.get("/ui/chat")
        token = csrf_of(page.text)
        stream = client.post("/ui/api/chat", json={"messages": [{"role": "user", "content": "<b>q</b>"}]},
                             headers={"X-CSRF-Token": token})
        # the answer travels as JSON strings inside SSE, rendered by markdown.js into text nodes only
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in _chunks(stream.text) if c["choices"]) \
            == EVIL
        assert "<script>window" not in client.get("/ui/chat").text
    js = (TestClient(app).get("/ui/static/markdown.js").text + TestClient(app).get("/ui/static/chat.js").text)
    assert "innerHTML" not in js and "outerHTML" not in js and "insertAdjacentHTML" not in js \
        and "document.write" not in js and "eval(" not in js


def test_sessions_history_is_per_principal(governed):
    client, secrets = governed
    login_key(client, secrets["user"])
    token = csrf_of(client.get("/ui/chat").text)
    sid = client.post("/ui/api/sessions", headers={"X-CSRF-Token": token}).json()["id"]
    assert client.get(f"/ui/api/sessions/{sid}").json() == {"id": sid, "messages": []}
    assert sid in client.get("/ui/chat").text
    other = TestClient(secrets["app"])
    login_key(other, secrets["admin"])
    assert other.get(f"/ui/api/sessions/{sid}").status_code == 404


def test_runs_dashboard_reads_the_run_folder(governed):
    client, secrets = governed
    login_key(client, secrets["admin"])
    listing = client.get("/ui/runs")
    assert 'href="/ui/runs/demo"' in listing.text
    page = client.get("/ui/runs/demo").text
    for expected in ("12 steps, final loss 2.31", "too_short", "email", "a.txt:1", "41.20", "18.70", "fin_qa",
                     "PASSED", "size_mb", "image?path=train/loss_curves.png"):
        assert expected in page, expected
    image = client.get("/ui/runs/demo/image?path=train/loss_curves.png")
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    for sneaky in ("../../etc/passwd", "data/data_report.json", "train/manifest.json"):
        assert client.get(f"/ui/runs/demo/image?path={sneaky}").status_code == 404
    assert client.get("/ui/runs/..%2F..").status_code == 404
    assert client.get("/ui/runs/nothere").status_code == 404


def test_runs_not_configured_without_runs_dir():
    with TestClient(make_app()) as client:
        login_open(client)
        assert "serve.console.runs_dir" in client.get("/ui/runs").text


def test_keys_create_shows_secret_once_and_revoke(governed):
    client, secrets = governed
    login_key(client, secrets["admin"])
    token = csrf_of(client.get("/ui/admin/keys").text)
    made = client.post("/ui/admin/keys", data={"name": "bot", "role": "user", "groups": "a, b", "csrf": token})
    row = secrets["g"].key_named("bot")
    assert row["groups"] == ["a", "b"] and 'id="new-key-secret"' in made.text
    secret = re.search(r'id="new-key-secret" readonly value="([^"]+)"', made.text).group(1)
    assert secrets["keys"].verify(secret)["key_id"] == row["key_id"]
    assert 'id="new-key-secret"' not in client.get("/ui/admin/keys").text  # shown once
    bad = client.post("/ui/admin/keys", data={"name": "x", "role": "root", "csrf": token})
    assert bad.status_code == 400 and "unknown role" in bad.text
    client.post(f"/ui/admin/keys/{row['key_id']}/revoke", data={"csrf": token})
    assert secrets["keys"].get(row["key_id"])["revoked_at"] is not None
    assert client.post("/ui/admin/keys/nokey/revoke", data={"csrf": token}).status_code == 400


def test_audit_filter_and_verify(governed):
    client, secrets = governed
    login_key(client, secrets["admin"])
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secrets['admin']}"})
    page = client.get("/ui/admin/audit?status=401")
    assert page.text.count("<tr>") == 2  # header + the one refused request
    token = csrf_of(page.text)
    assert client.get("/ui/admin/audit?status=abc").status_code == 400
    verdict = client.post("/ui/admin/audit/verify", data={"csrf": token})
    assert re.search(r"The chain is intact: \d+ records verified", verdict.text)
    refused = secrets["audit"].query(status=401)[0]["seq"]
    with sqlite3.connect(secrets["g"].root / "audit.sqlite") as db:  # tamper with the refused request's record
        body = db.execute("SELECT body FROM audit WHERE seq = ?", (refused,)).fetchone()[0]
        db.execute("UPDATE audit SET body = ? WHERE seq = ?", (body.replace("401", "200"), refused))
    broken = client.post("/ui/admin/audit/verify", data={"csrf": token}).text
    assert f"broken at record {refused}" in broken and "altered" in broken


def test_console_changes_are_audited_as_the_logged_in_key_and_page_views_are_not(governed):
    client, secrets = governed
    login_key(client, secrets["admin"])
    token = csrf_of(client.get("/ui/admin/keys").text)
    created = client.post("/ui/admin/keys", data={"csrf": token, "name": "bot", "role": "user"})
    assert created.status_code == 200
    records = secrets["audit"].query(route="/ui/admin/keys")
    assert [r["detail"]["method"] for r in records] == ["POST"]  # the page views before and after: not audited
    new_key = records[0]["detail"]["created_key"]
    secret = re.search(r"dt-[0-9a-f]+\.[^\s\"'<]+", created.text).group(0)  # shown once, on the page
    assert records[0]["key_id"] == secrets["g"].key_named("console-admin")["key_id"] and new_key in secret
    assert secret not in str(secrets["audit"].query())  # never the secret
    assert secrets["audit"].query(route="/ui/login")[0]["detail"]["method"] == "POST"  # the login itself


def test_review_experiments_kb(governed):
    client, secrets = governed
    review = secrets["app"].state.review
    item = review.add("req1", "someone", ["hold-loans"], "hold", "a loan?", "held answer")
    login_key(client, secrets["admin"])
    page = client.get("/ui/admin/review")
    assert "held answer" in page.text
    token = csrf_of(page.text)
    assert client.post(f"/ui/admin/review/{item}", data={"csrf": token, "decision": "edit", "text": ""}
                       ).status_code == 400  # an edit needs the corrected answer: a 4xx, not a 500
    done = client.post(f"/ui/admin/review/{item}", data={"csrf": token, "decision": "edit", "text": "fixed"})
    assert "Decision recorded" in done.text and "held answer" not in done.text
    assert review.get(item)["status"] == "edited" and review.get(item)["final"] == "fixed"
    again = client.post(f"/ui/admin/review/{item}", data={"csrf": token, "decision": "approve"})
    assert again.status_code == 400 and "already decided" in again.text
    assert client.post("/ui/admin/review/r9", data={"csrf": token, "decision": "approve"}).status_code == 400
    assert client.post(f"/ui/admin/review/{item}", data={"csrf": token, "decision": "shrug"}).status_code == 400
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secrets['user']}"})
    report = client.get("/ui/admin/experiments").text  # the real report: one request in one arm, no feedback
    assert 'id="experiment-tone"' in report and "control" in report and "(0/0)" in report
    assert "1 (0 errors)" in report and "inconclusive" in report
    kb = client.get("/ui/admin/kb").text
    assert "wire-fees" in kb and "public" in kb and "Wire transfer fees" in kb
    assert client.post("/ui/admin/kb/handbook/reindex", data={"csrf": token}).status_code == 200
    assert client.post("/ui/admin/kb/nope/reindex", data={"csrf": token}).status_code == 400


def test_chinese_strings_from_the_catalog(governed):
    from domaintune.serve.ui.i18n import catalog

    assert set(catalog()["en"]) == set(catalog()["zh"])
    client, secrets = governed
    client.get("/ui/lang/zh?next=/ui/login")
    assert "用密钥登录" in client.get("/ui/login").text
    assert client.get("/ui/lang/zh?next=https://evil.example", follow_redirects=False).headers["location"] == "/ui/"
