# -*- test-case-name: tests.test_router -*-
"""Forward one request to a model's server and relay its answer as it comes (SSE streams included).

The router's own policy governs what the client sees: its CORS headers stay, the child's are dropped, as
are hop-by-hop headers. A client that leaves closes the connection to the child, which cancels the
generation there and frees its slot.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from llamatwist.router.catalog import CHILD_HOST

__all__ = ["forward", "quiet_pool"]

log = logging.getLogger("llamatwist.router")

_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"content-length",
})
_NOT_RELAYED = _HOP_BY_HOP - {b"content-length"} | {b"server", b"date"}


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # no "Starting factory" log line per connection to a child


def quiet_pool(reactor: Any) -> HTTPConnectionPool:
    """Connections to the children: one per request (a stream holds its own), not logged."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    pool._factory = _QuietFactory  # Twisted's documented-by-source extension point
    return pool


class _Relay(protocol.Protocol):
    def __init__(self, request: Request, done: defer.Deferred[None]) -> None:
        self._request = request
        self._done = done

    def dataReceived(self, data: bytes) -> None:
        if not self._request._disconnected:  # Twisted's own flag, no public one
            self._request.write(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(None)
        else:
            self._done.errback(reason)


async def forward(request: Request, agent: Agent, port: int, path: bytes, body: bytes) -> None:
    """Send `request` (its method, `path` with its query, headers and `body`) to the child on `port` and
    write the child's answer to `request` (Klein finishes it). Raises ConnectError & co. before any byte is written
    when the child cannot be reached."""
    headers = Headers()
    for name, values in request.requestHeaders.getAllRawHeaders():
        if name.lower() not in _HOP_BY_HOP:
            headers.setRawHeaders(name, values)
    producer: Any = FileBodyProducer(BytesIO(body)) if body or request.method in (b"POST", b"PUT") else None
    pending = agent.request(request.method, b"http://%s:%d%s" % (CHILD_HOST.encode(), port, path), headers, producer)
    relay: _Relay | None = None

    def client_left(_: Failure) -> None:
        if not pending.called:
            pending.cancel()
        elif relay is not None and relay.transport is not None:
            relay.transport.stopProducing()  # closes the connection: the child cancels the generation

    request.notifyFinish().addErrback(client_left)
    response = await pending
    request.setResponseCode(response.code, response.phrase)
    for name, values in response.headers.getAllRawHeaders():
        lower = name.lower()
        if lower not in _NOT_RELAYED and not lower.startswith(b"access-control-"):
            request.responseHeaders.setRawHeaders(name, values)
    done: defer.Deferred[None] = defer.Deferred()
    relay = _Relay(request, done)
    response.deliverBody(relay)  # type: ignore[call-arg,misc]  # IResponse's method, without self in the stub
    try:
        await done
    except Exception as exc:  # noqa: BLE001  # the child or the client went away mid-answer: nothing more to send
        log.info("answer from port %d cut short: %s", port, exc)
