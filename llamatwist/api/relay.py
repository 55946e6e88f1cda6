# -*- test-case-name: tests.test_router -*-
"""Send one request on to another HTTP server and relay its answer as it comes (SSE streams included).

The router forwards to its models' servers with it, and /cors-proxy (the web UI's MCP proxy) to the URL it is
given. This server's own policy governs what the client sees: its CORS headers stay, the far side's are
dropped, as are hop-by-hop headers. A client that leaves closes the far connection, which cancels the work
there (a model's server frees the slot).
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, RedirectAgent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.server import Request

__all__ = ["HOP_BY_HOP", "relay"]

log = logging.getLogger("llamatwist.relay")

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"content-length",
})
_NOT_RELAYED = HOP_BY_HOP - {b"content-length"} | {b"server", b"date"}


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


async def relay(request: Request, agent: Agent | RedirectAgent, method: bytes, url: bytes, headers: Headers, body: bytes) -> None:
    """Send `method` `url` with `headers` and `body` and write the answer to `request` (Klein finishes it).
    Raises ConnectError & co. before any byte is written when the far side cannot be reached."""
    producer: Any = FileBodyProducer(BytesIO(body)) if body or method in (b"POST", b"PUT") else None
    pending = agent.request(method, url, headers, producer)
    relayed: _Relay | None = None

    def client_left(_: Failure) -> None:
        if not pending.called:
            pending.cancel()
        elif relayed is not None and relayed.transport is not None:
            relayed.transport.stopProducing()  # closes the connection: the far side stops

    request.notifyFinish().addErrback(client_left)
    response = await pending
    request.setResponseCode(response.code, response.phrase)
    for name, values in response.headers.getAllRawHeaders():
        lower = name.lower()
        if lower not in _NOT_RELAYED and not lower.startswith(b"access-control-"):
            request.responseHeaders.setRawHeaders(name, values)
    done: defer.Deferred[None] = defer.Deferred()
    relayed = _Relay(request, done)
    response.deliverBody(relayed)  # type: ignore[call-arg,misc]  # IResponse's method, without self in the stub
    try:
        await done
    except Exception as exc:  # noqa: BLE001  # the far side or the client went away mid-answer: nothing more to send
        log.info("answer from %s cut short: %s", url.decode("ascii", "replace"), exc)
