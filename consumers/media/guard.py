"""Which media URLs the worker may fetch: ``filePath`` comes from outside.

Only http and https, and only hosts whose every resolved address is on the public internet —
private, loopback, link-local, shared, reserved and multicast ranges are refused unless the
operator allow-listed the host. The check runs on every redirect hop. For http the request is
pinned to the address that was checked, so a second DNS answer (rebinding) cannot send it
elsewhere; for https the name is kept (certificates are issued for names) and TLS verification
binds the connection to that name, which an internal service cannot present.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from consumers.media.exceptions import FetchRetriable, RefusedURL

Resolver = Callable[[str, int], Awaitable[list[str]]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


async def resolve(host: str, port: int) -> list[str]:
    """The host's addresses, as the system resolver gives them."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Target:
    """Where one request goes: ``connect`` is the URL to open (pinned for http)."""

    url: httpx.URL
    connect: httpx.URL
    host: str


class AddressGuard:
    def __init__(self, allow_hosts: frozenset[str], resolver: Resolver = resolve) -> None:
        self._allow = frozenset(host.lower() for host in allow_hosts)
        self._resolve = resolver

    async def check(self, url: httpx.URL) -> Target:
        """The target to connect to; raises RefusedURL, or FetchRetriable if DNS fails."""
        if url.scheme not in ("http", "https"):
            raise RefusedURL(f"refused {url.scheme or 'relative'} URL: only http and https")
        host = url.host.lower()
        if not host:
            raise RefusedURL("refused URL without a host")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                found = await self._resolve(host, port)
            except (OSError, UnicodeError) as exc:
                raise FetchRetriable(f"cannot resolve {host}: {exc}") from exc
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
        if not addresses:
            raise FetchRetriable(f"{host} has no address")
        if host not in self._allow:
            blocked = [str(a) for a in addresses if not is_public(a)]
            if blocked:
                raise RefusedURL(
                    f"refused {host}: resolves to non-public address {', '.join(blocked)}"
                )
        connect = url if url.scheme == "https" else url.copy_with(host=str(addresses[0]))
        return Target(url=url, connect=connect, host=host)
