"""Call the API's own routes from a console route, in this process, as the console's principal.

The request runs the whole app (every hook, the audit record, the metrics) exactly as an API
client's would; only the credential differs: `acting_as` supplies the session's principal.
"""

from __future__ import annotations

import json

from domaintune.serve.ui.sessions import acting_as


def inner_scope(scope: dict, path: str, body: bytes, extra_headers: list[tuple[bytes, bytes]] = ()) -> dict:
    """The console request's scope re-aimed at an API route: no cookie, no console CSRF header, a JSON body."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"accept", b"text/event-stream, application/json"), *extra_headers]
    return {**scope, "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers}


def replay(body: bytes, receive):
    """A receive() that delivers `body` once, then listens to the real connection (to see a disconnect)."""
    sent = False

    async def inner():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return inner


async def call_json(app, scope: dict, receive, principal, path: str, payload: dict) -> tuple[int, dict]:
    """POST `payload` to `path` and collect the JSON answer (status, body)."""
    body = json.dumps(payload).encode("utf-8")
    status, chunks = 500, []

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    with acting_as(principal):
        await app(inner_scope(scope, path, body), replay(body, receive), send)
    raw = b"".join(chunks)
    try:
        return status, json.loads(raw) if raw else {}
    except ValueError:
        return status, {"error": {"message": raw[:200].decode("utf-8", "replace")}}
