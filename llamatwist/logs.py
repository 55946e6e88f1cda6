# -*- test-case-name: tests.test_cli -*-
"""One log stream for the server, shaped by -v, --log-disable and --log-file.

Run as ``llamatwist``, Python's `logging` owns the output and Twisted's log
events are forwarded into it. Run under ``twistd``, twistd owns the output
(its --logfile, --syslog, ...) and Python's log records are forwarded into
Twisted's log instead. Either way there is a single stream, and no loop.

Lines look like llama.cpp's: ``I 15:04:05.123 llamatwist.engine: message``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:
    from twisted.logger import ILogObserver

    from llamatwist.config import ServerConfig

__all__ = ["JsonlFormatter", "LogFormatter", "level", "setup"]

_LETTERS: Final = {
    logging.DEBUG: "D",
    logging.INFO: "I",
    logging.WARNING: "W",
    logging.ERROR: "E",
    logging.CRITICAL: "C",
}


# llama.cpp's colours (common/log.cpp): the letter in colour; warnings, errors and debug lines stay coloured
_COLORS: Final = {
    logging.DEBUG: ("\033[33m", False),
    logging.INFO: ("\033[32m", True),
    logging.WARNING: ("\033[35m", False),
    logging.ERROR: ("\033[31m", False),
    logging.CRITICAL: ("\033[31m", False),
}
_RESET: Final = "\033[0m"
_BLUE: Final = "\033[34m"


class LogFormatter(logging.Formatter):
    """``<level letter> <HH:MM:SS.mmm> <logger>: <message>``; --no-log-prefix drops the letter,
    --no-log-timestamps the time, --log-colors colours them as llama.cpp does."""

    def __init__(self, *, prefix: bool = True, timestamps: bool = True, colors: bool = False) -> None:
        super().__init__("%(name)s: %(message)s")
        self.prefix, self.timestamps, self.colors = prefix, timestamps, colors

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head = ""
        if self.timestamps:
            stamp = f"{self.formatTime(record, '%H:%M:%S')}.{int(record.msecs):03d} "
            head = f"{_BLUE}{stamp}{_RESET}" if self.colors else stamp
        if self.prefix:
            letter = _LETTERS.get(record.levelno, record.levelname[:1])
            if self.colors:
                color, reset = _COLORS.get(record.levelno, ("", False))
                return f"{color}{letter} {_RESET if reset else ''}{head}{text}{'' if reset else _RESET}"
            return f"{letter} {head}{text}"
        return head + text


class JsonlFormatter(logging.Formatter):
    """--log-jsonl: one JSON object a line, as llama.cpp writes it: ``type``, ``time`` (microseconds since
    start-up, 0 with --no-log-timestamps), ``level`` (debug/info/warn/error), ``msg``."""

    _LEVELS: Final = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
                      logging.ERROR: "error", logging.CRITICAL: "error"}

    def __init__(self, *, timestamps: bool = True) -> None:
        super().__init__("%(name)s: %(message)s")
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "type": "log",
            "time": int(record.relativeCreated * 1000) if self.timestamps else 0,
            "level": self._LEVELS.get(record.levelno, "none"),
            "msg": super().format(record) + "\n",
        }, ensure_ascii=False)


def level(config: ServerConfig) -> int:
    """The logging level for -v and -lv (llama.cpp's verbosity threshold: 3 = info)."""
    if config.verbose or config.log_verbosity >= 4:
        return logging.DEBUG
    return {3: logging.INFO, 2: logging.WARNING}.get(config.log_verbosity, logging.ERROR)


# What setup() installed, so that calling it again replaces rather than adds.
_handlers: list[logging.Handler] = []
_twisted_bridged = False


def setup(config: ServerConfig, *, under_twistd: bool = False) -> None:
    """Configure logging for `config`; safe to call more than once.

    INFO by default, DEBUG with -v, nothing at all with --log-disable. The
    log goes to stderr, and also to --log-file (truncated, as llama.cpp does)
    when one is given. `under_twistd` hands the output to twistd instead.
    """
    root = logging.getLogger()
    for handler in _handlers:
        root.removeHandler(handler)
        handler.close()
    _handlers.clear()

    if config.log_disable:
        # NullHandler also keeps logging's last-resort stderr handler quiet.
        _install(root, logging.NullHandler())
        root.setLevel(logging.CRITICAL + 1)
        if not under_twistd:
            _bridge_twisted()  # else Twisted prints critical events itself
        return
    root.setLevel(level(config))

    if under_twistd:
        _install(root, _ToTwisted())
        return
    colors = config.log_colors == "on" or (config.log_colors == "auto" and sys.stderr.isatty())
    plain: logging.Formatter = LogFormatter(prefix=config.log_prefix, timestamps=config.log_timestamps)
    if config.log_jsonl:  # llama.cpp writes JSON lines to stdout, never coloured
        console = logging.StreamHandler(sys.stdout)
        plain = JsonlFormatter(timestamps=config.log_timestamps)
        console.setFormatter(plain)
    else:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(LogFormatter(prefix=config.log_prefix, timestamps=config.log_timestamps, colors=colors))
    _install(root, console)
    if config.log_file:
        file = ReopenableFileHandler(config.log_file, mode="w", encoding="utf-8")
        file.setFormatter(plain)
        _install(root, file)
    _bridge_twisted()


class ReopenableFileHandler(logging.FileHandler):
    """--log-file: truncated at start-up (as llama.cpp), appended to when reopened after logrotate."""

    def reopen(self) -> None:
        self.acquire()
        try:
            self.close()  # the next record opens the file again, by name
            self.mode = "a"
            self._closed = False  # type: ignore[attr-defined]  # logging.Handler's; close() set it
        finally:
            self.release()


def reopen_files() -> None:
    """SIGHUP: reopen --log-file, so that logrotate's rename (or move) takes effect."""
    for handler in _handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()
    logging.getLogger("llamatwist").info("log file reopened")


def _install(root: logging.Logger, handler: logging.Handler) -> None:
    root.addHandler(handler)
    _handlers.append(handler)


def _bridge_twisted() -> None:
    """Send Twisted's log events (including those buffered so far) to logging."""
    global _twisted_bridged
    if _twisted_bridged:
        return
    from twisted.logger import globalLogBeginner

    # redirectStandardIO=False: print() and tracebacks must stay on the real
    # stderr, which is also where our StreamHandler writes (a redirect loops).
    observer = cast("ILogObserver", _twisted_to_logging)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    _twisted_bridged = True


def _twisted_to_logging(event: dict[str, Any]) -> None:
    from twisted.logger import LogLevel, formatEvent

    levels = {
        LogLevel.debug: logging.DEBUG,
        LogLevel.info: logging.INFO,
        LogLevel.warn: logging.WARNING,
        LogLevel.error: logging.ERROR,
        LogLevel.critical: logging.CRITICAL,
    }
    level = levels.get(event.get("log_level", LogLevel.info), logging.INFO)
    namespace = event.get("log_namespace")
    # Events from the legacy twisted.python.log API all share one namespace.
    if not namespace or namespace == "log_legacy":
        namespace = "twisted"
    logger = logging.getLogger(namespace)
    if not logger.isEnabledFor(level):
        return
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}".strip()
    logger.log(level, "%s", text)


class _ToTwisted(logging.Handler):
    """Forwards Python log records to Twisted's logger (used under twistd)."""

    def emit(self, record: logging.LogRecord) -> None:
        from twisted.logger import Logger, LogLevel

        if record.levelno >= logging.CRITICAL:
            level = LogLevel.critical
        elif record.levelno >= logging.ERROR:
            level = LogLevel.error
        elif record.levelno >= logging.WARNING:
            level = LogLevel.warn
        elif record.levelno >= logging.INFO:
            level = LogLevel.info
        else:
            level = LogLevel.debug
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # noqa: BLE001 - the logging.Handler contract
            self.handleError(record)
            return
        Logger(namespace=record.name).emit(level, "{text}", text=text)


# --------------------------------------------------------------------------
# The access log behind a reverse proxy.

#: llamatwist's own setting (llama-server has none): the peers whose X-Forwarded-For is believed.
TRUSTED_PROXIES_ENV = "LLAMATWIST_TRUSTED_PROXIES"
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"  # a proxy on the same host, as packaging/nginx sets it up


def trusted_proxies(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """LLAMATWIST_TRUSTED_PROXIES: comma-separated addresses; empty trusts none."""
    value = environ.get(TRUSTED_PROXIES_ENV, DEFAULT_TRUSTED_PROXIES)
    return frozenset(_ip(part) or part.strip() for part in value.split(",") if part.strip())


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def forwarded_client(peer: str, forwarded_for: bytes | None, trusted: frozenset[str]) -> str:
    """The client's address: the nearest hop not a trusted proxy, walking X-Forwarded-For from its right
    end (the hop the trusted peer added) for as long as each hop is trusted; values it cannot parse stop
    the walk, so a client cannot put just anything in the log."""
    client = peer
    if forwarded_for is None or _ip(peer) not in trusted:
        return client
    hops = forwarded_for.decode("latin-1").split(",")
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            break
        client = address
        if address not in trusted:
            break
    return client


class _ForwardedRequest:
    """The request as the access log sees it: the client address from X-Forwarded-For when trusted."""

    def __init__(self, request: Any, host: str) -> None:
        from twisted.internet.address import IPv4Address, IPv6Address

        self._request = request
        self._address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 0)

    def getClientAddress(self) -> Any:
        return self._address

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def access_log_formatter(trusted: frozenset[str], base: Callable[[str, Any], str]) -> Callable[[str, Any], str]:
    """Site(logFormatter=...): `base`'s line, with the forwarded client's address behind a trusted proxy."""

    def line(timestamp: str, request: Any) -> str:
        peer = getattr(request.getClientAddress(), "host", None)
        if not isinstance(peer, str) or not trusted:
            return base(timestamp, request)
        client = forwarded_client(peer, request.getHeader(b"x-forwarded-for"), trusted)
        return base(timestamp, request if client == peer else _ForwardedRequest(request, client))

    return line
