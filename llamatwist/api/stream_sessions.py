# -*- test-case-name: tests.test_stream_sessions -*-
"""Resumable streams, as llama-server's (its README-dev "Resumable streaming"): opt in with an
``X-Conversation-Id`` header on a streamed generation request.

Such a stream outlives its connection: every event also goes into the conversation's session (the newest 4 MiB
kept), the generation goes on when the client leaves, and a client reattaches with ``GET
/v1/stream?conv_id=ID&from=N`` (the bytes from offset N, then live ones until the generation ends). ``POST
/v1/streams/lookup {"conversation_ids": [...]}`` says which of the caller's conversations have a session (never
a listing of them all); ``DELETE /v1/stream?conv_id=ID`` stops one (204). One conversation has at most one
session: a new request replaces (and stops) the old one. A finished session is kept 5 minutes; of more than
256 sessions the oldest finished ones go first, then the oldest running ones (stopped).

Everything here runs on the reactor thread.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Final

from klein import Klein
from twisted.internet import defer
from twisted.web.server import Request

from llamatwist.api.errors import InvalidRequest, NotFound
from llamatwist.api.http import handler, query_param, read_json, send_json

__all__ = ["SESSIONS", "StreamSession", "StreamSessions", "conversation_id", "register", "run_detached"]

MAX_BYTES: Final = 4 << 20  # per session; the oldest bytes go first
TTL_SECONDS: Final = 300  # a finished session is kept this long
MAX_SESSIONS: Final = 256  # past it the oldest finished sessions go first, then the oldest running ones


def conversation_id(request: Request) -> str:
    value = request.getHeader(b"x-conversation-id")
    return value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else ""


class StreamSession:
    def __init__(self, conversation: str) -> None:
        self.conversation = conversation
        self.buffer = bytearray()
        self.dropped = 0  # bytes dropped from the front: the buffer starts at this offset
        self.started_at = int(time.time())
        self.completed_at = 0
        self.readers: list[Callable[[bytes | None], None]] = []  # None: the session ended
        self.on_cancel: list[Callable[[], None]] = []  # the generation's cancel, while it runs

    @property
    def total(self) -> int:
        return self.dropped + len(self.buffer)

    @property
    def done(self) -> bool:
        return self.completed_at != 0

    def append(self, data: bytes) -> None:
        if self.done:
            return
        self.buffer += data
        if len(self.buffer) > MAX_BYTES:
            cut = len(self.buffer) - MAX_BYTES
            del self.buffer[:cut]
            self.dropped += cut
        for reader in list(self.readers):
            reader(data)

    def read_from(self, offset: int) -> bytes:
        return bytes(self.buffer[max(0, offset - self.dropped):])

    def finish(self) -> None:
        if self.done:
            return
        self.completed_at = int(time.time())
        self.on_cancel.clear()
        for reader in list(self.readers):
            reader(None)
        self.readers.clear()

    def cancel(self) -> None:
        for cancel in list(self.on_cancel):
            cancel()
        self.finish()

    def lookup_json(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation, "is_done": self.done, "total_bytes": self.total,
                "started_at": self.started_at, "completed_at": self.completed_at}


class StreamSessions:
    """The process's sessions by conversation id (one each)."""

    def __init__(self, clock: Any = None) -> None:
        self._sessions: dict[str, StreamSession] = {}
        self._clock = clock
        self._by_request: weakref.WeakKeyDictionary[Request, StreamSession] = weakref.WeakKeyDictionary()

    def start(self, request: Request) -> StreamSession | None:
        """The session a streamed answer to `request` also writes to (None without X-Conversation-Id)."""
        conv = conversation_id(request)
        if not conv:
            return None
        session = self._by_request[request] = self.create(conv)
        return session

    def of(self, request: Request) -> StreamSession | None:
        return self._by_request.get(request)

    def create(self, conversation: str) -> StreamSession:
        previous = self._sessions.pop(conversation, None)
        if previous is not None:
            previous.cancel()
        session = self._sessions[conversation] = StreamSession(conversation)
        if len(self._sessions) > MAX_SESSIONS:  # bounded memory: 4 MiB each at most
            by_age = sorted(self._sessions.values(), key=lambda s: (not s.done, s.started_at))
            for old in by_age[:len(self._sessions) - MAX_SESSIONS]:
                self.evict_and_cancel(old.conversation)
        return session

    def get(self, conversation: str) -> StreamSession | None:
        return self._sessions.get(conversation)

    def finish(self, session: StreamSession) -> None:
        """The generation ended: readers end too; the session goes after TTL_SECONDS."""
        session.finish()
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor as clock
        clock.callLater(TTL_SECONDS, self._expire, session)

    def _expire(self, session: StreamSession) -> None:
        if self._sessions.get(session.conversation) is session:
            del self._sessions[session.conversation]

    def evict_and_cancel(self, conversation: str) -> None:
        session = self._sessions.pop(conversation, None)
        if session is not None:
            session.cancel()

    def lookup(self, ids: list[str]) -> list[StreamSession]:
        """The sessions of these conversations (an id also matches its ``ID::model`` variants)."""
        out = []
        for rid in ids:
            out += [s for key, s in self._sessions.items() if key == rid or key.startswith(rid + "::")]
        return out

    def stop_all(self) -> None:
        for session in list(self._sessions.values()):
            session.finish()
        self._sessions.clear()


SESSIONS = StreamSessions()  # one per process, as llama-server's


async def run_detached(request: Request, route: Callable[[], Awaitable[Any]]) -> Any:
    """Run a generation route whose stream may outlive its client: the route goes on when the client leaves
    (Klein cancels only what it awaits here), and its session, if it streamed, ends with it."""
    work: defer.Deferred[Any] = defer.Deferred.fromCoroutine(route())  # type: ignore[arg-type]

    def ended(result: Any) -> Any:
        session = SESSIONS.of(request)
        if session is not None:
            SESSIONS.finish(session)
        return result

    work.addBoth(ended)
    visible: defer.Deferred[Any] = defer.Deferred()  # cancelled by Klein when the client leaves; `work` is not
    work.addBoth(lambda result: None if visible.called else visible.callback(result))
    return await visible


def _conv_param(request: Request) -> str:
    conv = query_param(request, "conv_id")
    if not conv:
        raise InvalidRequest("Missing conversation id in path")
    return conv


def register(app: Klein, sessions: StreamSessions = SESSIONS) -> None:
    @app.route("/v1/stream", methods=["GET"])
    @handler
    async def reattach(request: Request) -> Any:
        session = sessions.get(_conv_param(request))
        if session is None:
            raise NotFound("Stream not found or expired")
        text = query_param(request, "from") or "0"
        if not text.isdigit():
            raise InvalidRequest("Invalid 'from' offset")
        offset = int(text)
        if offset < session.dropped:
            raise InvalidRequest("Stream offset lost, please restart")
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.write(session.read_from(offset))  # also sends the headers: a client sees it attached
        if session.done:
            return b""
        ended: defer.Deferred[None] = defer.Deferred()

        def reader(data: bytes | None) -> None:
            if data is None:
                if not ended.called:
                    ended.callback(None)
            elif not request._disconnected:  # Twisted's flag, no public one
                request.write(data)

        def left(_: object) -> None:
            if reader in session.readers:
                session.readers.remove(reader)
            if not ended.called:
                ended.callback(None)

        session.readers.append(reader)
        request.notifyFinish().addBoth(left)
        await ended
        return b""

    @app.route("/v1/stream", methods=["DELETE"])
    @handler
    async def stop(request: Request) -> Any:
        sessions.evict_and_cancel(_conv_param(request))
        request.setResponseCode(204)
        return b""

    @app.route("/v1/streams/lookup", methods=["POST"])
    @handler
    async def lookup(request: Request) -> Any:
        ids = read_json(request).get("conversation_ids")
        wanted = [i for i in ids if isinstance(i, str) and i] if isinstance(ids, list) else []
        return send_json(request, [s.lookup_json() for s in sessions.lookup(wanted)])
