"""HTTP clients, built in one place: the factory the media fetcher and the router's deliveries
are handed.

``HttpClients`` is httpx's transport seam: by default each client opens its own connection
pool; a test (or a deployment with its own needs) passes a transport. Clients never read the
environment (``trust_env=False``): a proxy variable must not reroute signed deliveries or media
downloads behind the operator's back, and redirects are never followed by httpx (the media
fetcher checks every hop itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class HttpClients:
    transport: httpx.AsyncBaseTransport | None = None

    def __call__(self, *, timeout: httpx.Timeout, limits: httpx.Limits) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            transport=self.transport,
            follow_redirects=False,
            trust_env=False,
        )
