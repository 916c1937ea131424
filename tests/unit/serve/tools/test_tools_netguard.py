"""netguard: every non-public address, in every spelling, and every redirect hop is refused before a connect."""

from __future__ import annotations

import httpx
import pytest

from domaintune.serve.tools.netguard import NetGuard, Refused, parse_ipv4_loose

PUBLIC = "93.184.215.14"


def resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise Refused(f"cannot resolve '{host}'")
        return table[host]
    return resolve


GUARD = NetGuard(resolver({"example.com": [PUBLIC], "localhost": ["127.0.0.1", "::1"],
                           "rebind.example": [PUBLIC, "127.0.0.1"],
                           "inner.example": ["10.1.2.3"], "v6.example": ["::ffff:169.254.169.254"]}))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://localhost/", "http://LOCALHOST/", "http://[::1]/", "http://0.0.0.0/",
    "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1/", "http://[fc00::1]/", "http://[fd12::1]/",
    "http://169.254.1.1/", "http://[fe80::1]/", "http://100.64.0.1/", "http://100.127.255.254/",
    "http://224.0.0.1/", "http://[ff02::1]/", "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/", "http://100.100.100.200/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a00:1]/", "http://[2002:7f00:1::]/",  # NAT64 and 6to4 wrapping of 10.0.0.1 / 127.0.0.1
    "http://2130706433/", "http://0177.0.0.1/", "http://0x7f.0.0.1/", "http://0x7f000001/", "http://127.1/",
    "http://017700000001/", "http://0251.0376.0251.0376/",  # octal 169.254.169.254
    "http://rebind.example/", "http://inner.example/", "http://v6.example/",
    "file:///etc/passwd", "gopher://example.com/", "http://user:pw@example.com/", "http://nowhere.invalid/",
])
def test_refused(url):
    with pytest.raises(Refused):
        GUARD.check(url)


def test_public_addresses_pass_and_loose_spellings_parse_like_browsers():
    assert GUARD.check("https://example.com/x").address == PUBLIC
    assert GUARD.check("http://93.184.215.14:8080/").port == 8080
    assert str(parse_ipv4_loose("0x7f.1")) == "127.0.0.1" and str(parse_ipv4_loose("3232235777")) == "192.168.1.1"
    assert parse_ipv4_loose("example") is None


def _client(routes: dict[str, httpx.Response], seen: list[str]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host} {request.headers['host']}")
        return routes[request.headers["host"] + request.url.path]
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_fetch_pins_the_checked_address_and_checks_every_redirect_hop():
    seen: list[str] = []
    guard = NetGuard(resolver({"example.com": [PUBLIC], "cdn.example": ["93.184.215.15"],
                               "inner.example": ["10.1.2.3"]}))
    routes = {"example.com/a": httpx.Response(302, headers={"location": "http://cdn.example/b"}),
              "cdn.example/b": httpx.Response(200, content=b"hello"),
              "example.com/evil": httpx.Response(301, headers={"location": "http://169.254.169.254/latest"}),
              "example.com/inner": httpx.Response(307, headers={"location": "http://inner.example/"}),
              "example.com/loop": httpx.Response(302, headers={"location": "/loop"})}
    with _client(routes, seen) as client:
        assert guard.fetch("http://example.com/a", client) == (200, {"content-length": "5"}, b"hello")
        assert seen == [f"{PUBLIC} example.com", "93.184.215.15 cdn.example"]  # connected to the checked IPs
        seen.clear()
        for url in ("http://example.com/evil", "http://example.com/inner"):
            with pytest.raises(Refused):
                guard.fetch(url, client)
        assert seen == [f"{PUBLIC} example.com"] * 2  # the redirect target was never contacted
        with pytest.raises(Refused, match="more than 5 redirects"):
            guard.fetch("http://example.com/loop", client)


def test_fetch_caps_the_body():
    routes = {"example.com/big": httpx.Response(200, content=b"x" * 5000)}
    with _client(routes, []) as client, pytest.raises(Refused, match="larger than 1000 bytes"):
        NetGuard(resolver({"example.com": [PUBLIC]}), max_bytes=1000).fetch("http://example.com/big", client)
