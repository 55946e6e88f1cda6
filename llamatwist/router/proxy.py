# -*- test-case-name: tests.test_router -*-
"""Forward one request to a model's server and relay its answer as it comes (api/relay.py).

A client that leaves closes the connection to the child, which cancels the generation there and frees its
slot.
"""

from __future__ import annotations

from typing import Any

from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from llamatwist.api.relay import HOP_BY_HOP, relay
from llamatwist.router.catalog import CHILD_HOST

__all__ = ["forward", "quiet_pool"]


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # no "Starting factory" log line per connection to a child


def quiet_pool(reactor: Any) -> HTTPConnectionPool:
    """Connections to the children: one per request (a stream holds its own), not logged."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    pool._factory = _QuietFactory  # Twisted's documented-by-source extension point
    return pool


async def forward(request: Request, agent: Agent, port: int, path: bytes, body: bytes) -> None:
    """Send `request` (its method, `path` with its query, headers and `body`) to the child on `port` and
    write the child's answer to `request` (Klein finishes it). Raises ConnectError & co. before any byte is written
    when the child cannot be reached."""
    headers = Headers()
    for name, values in request.requestHeaders.getAllRawHeaders():
        if name.lower() not in HOP_BY_HOP:
            headers.setRawHeaders(name, values)
    await relay(request, agent, request.method, b"http://%s:%d%s" % (CHILD_HOST.encode(), port, path), headers, body)
