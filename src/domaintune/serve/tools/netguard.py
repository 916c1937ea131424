"""The URL guard every tool that fetches a URL must use (SSRF: vLLM CVE-2025-6242, llama.cpp, LiteLLM).

A URL is refused before any connection unless its scheme is http(s) and EVERY address its host resolves
to is a public unicast address: no loopback, private (RFC 1918, fc00::/7), link-local, CGNAT
(100.64/10), multicast, unspecified, reserved, or cloud metadata address — also when written as an
IPv4-mapped / 6to4 / NAT64 IPv6 address or in decimal, octal, hex or short IPv4 forms (`2130706433`,
`0177.0.0.1`, `0x7f.1`, `127.1`). `fetch` connects to the checked address itself (no second DNS lookup
an attacker could answer differently) and checks every redirect hop the same way.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
            ipaddress.ip_address("100.100.100.200")}  # AWS/GCP/Azure, AWS IPv6, Alibaba
_EXTRA_BLOCKED = [ipaddress.ip_network(n) for n in ("100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15",
                                                    "64:ff9b:1::/48", "2001::/23", "2002::/16")]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
REDIRECTS = {301, 302, 303, 307, 308}


class Refused(Exception):
    """The URL, one of its addresses or a redirect target is not allowed; nothing was connected."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise Refused(f"cannot resolve '{host}': {err}") from None
    return [info[4][0] for info in infos]


def _ipv4_number(part: str) -> int | None:
    """One dotted part as browsers read it: 0x.. hex, 0.. octal, else decimal."""
    try:
        if part[:2].lower() == "0x":
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part, 8)
        return int(part, 10)
    except ValueError:
        return None


def parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """The address a numeric host means in any spelling (WHATWG URL IPv4 parser), or None if not numeric."""
    parts = host.rstrip(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(parts):
        return None
    numbers = [_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(parts)):
        raise Refused(f"'{host}' is not a valid IPv4 address")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def blocked_reason(ip: Address) -> str | None:
    """Why a connection to `ip` is refused, or None for a public unicast address."""
    if ip in METADATA:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = blocked_reason(inner)
            return f"an IPv6 address embedding {inner} ({reason})" if reason else None
    for attr, what in (("is_loopback", "loopback"), ("is_private", "private"), ("is_link_local", "link-local"),
                       ("is_multicast", "multicast"), ("is_unspecified", "unspecified"),
                       ("is_reserved", "reserved")):
        if getattr(ip, attr):
            return f"a {what} address"
    if any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version):
        return "a shared/special-purpose address (CGNAT, benchmarking or IETF)"
    if not ip.is_global:
        return "not a public address"
    return None


@dataclass
class Target:
    url: str
    scheme: str
    host: str
    port: int
    address: str  # the checked address to connect to


class NetGuard:
    def __init__(self, resolver: Resolver | None = None, schemes: tuple[str, ...] = ("http", "https"),
                 max_redirects: int = 5, max_bytes: int = 1_000_000, timeout_s: float = 10.0):
        self.resolver = resolver or system_resolver
        self.schemes, self.max_redirects = schemes, max_redirects
        self.max_bytes, self.timeout_s = max_bytes, timeout_s

    def check(self, url: str) -> Target:
        """The target to connect to, or Refused naming the reason."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise Refused(f"scheme '{scheme}' is not allowed (only {', '.join(self.schemes)})")
        if parts.username or parts.password:
            raise Refused("URLs with credentials (user:password@) are refused")
        host = (parts.hostname or "").lower()
        if not host:
            raise Refused(f"'{url}' has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise Refused(f"'{url}' has an invalid port") from None
        addresses = self._addresses(host, port)
        for ip in addresses:
            reason = blocked_reason(ip)
            if reason:
                raise Refused(f"'{host}' resolves to {ip}, {reason}")
        return Target(url, scheme, host, port, str(addresses[0]))

    def _addresses(self, host: str, port: int) -> list[Address]:
        literal = _literal(host)
        if literal is not None:
            return [literal]
        resolved = self.resolver(host, port)
        if not resolved:
            raise Refused(f"'{host}' resolves to no address")
        out = []
        for raw in resolved:
            try:
                out.append(ipaddress.ip_address(raw.split("%")[0]))
            except ValueError:
                raise Refused(f"'{host}' resolved to '{raw}', which is not an IP address") from None
        return out

    def fetch(self, url: str, client=None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body up to max_bytes) of `url`, following checked redirects.
        `client` is an httpx.Client (tests pass one with a MockTransport)."""
        import httpx

        own = client is None
        client = client or httpx.Client(timeout=self.timeout_s, follow_redirects=False, trust_env=False)
        try:
            for _hop in range(self.max_redirects + 1):
                target = self.check(url)
                response = _pinned_request(client, method, target, self.max_bytes)
                status, headers, body = response
                if status in REDIRECTS and "location" in headers:
                    url = urljoin(url, headers["location"])
                    method = "GET" if status == 303 else method
                    continue
                return response
            raise Refused(f"more than {self.max_redirects} redirects")
        finally:
            if own:
                client.close()


def _literal(host: str) -> Address | None:
    bare = host.strip("[]")
    if ":" in bare:
        try:
            return ipaddress.IPv6Address(bare.split("%")[0])
        except ValueError:
            raise Refused(f"'{host}' is not a valid IPv6 address") from None
    return parse_ipv4_loose(bare)


def _pinned_request(client, method: str, target: Target, max_bytes: int) -> tuple[int, dict[str, str], bytes]:
    """Connect to the checked address, not to a fresh lookup of the name; TLS still verifies the name."""
    parts = urlsplit(target.url)
    ip = ipaddress.ip_address(target.address)
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    pinned = parts._replace(netloc=f"{netloc}:{target.port}").geturl()
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    host_header = target.host if parts.port is None else f"{target.host}:{target.port}"
    with client.stream(method, pinned, headers={"Host": host_header}, extensions=extensions) as response:
        body = bytearray()
        for chunk in response.iter_bytes():
            body.extend(chunk)
            if len(body) > max_bytes:
                raise Refused(f"the response is larger than {max_bytes} bytes")
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, bytes(body)
