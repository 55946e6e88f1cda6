# -*- test-case-name: tests.test_slot_persistence -*-
"""Slot save files: validated names, atomic writes, a header that ties the
state to the model that produced it (pure I/O, no libllama)."""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llamatwist.runtime.errors import SlotFileError

__all__ = ["SlotFile", "SlotFileError", "read_slot_file", "validate_filename", "write_slot_file"]

MAGIC = b"LLAMATWIST-SLOT\x01"


def validate_filename(name: object) -> str:
    """A plain file name: no separators, no '..', not absolute, not hidden."""
    if not isinstance(name, str) or not name:
        raise SlotFileError("Invalid filename")
    if (
        "/" in name or "\\" in name or "\x00" in name or name.startswith(".")
        or os.path.isabs(name) or len(name.encode()) > 255
    ):
        raise SlotFileError("Invalid filename")
    return name


@dataclass(frozen=True)
class SlotFile:
    model: str  # identity of the model the state belongs to
    tokens: list[int]
    state: bytes
    adapters: tuple[float, ...] = ()  # the LoRA scales the KV was computed under


def write_slot_file(path: Path, slot: SlotFile) -> int:
    """Write atomically (temporary file, fsync, rename): a crash never leaves a
    truncated file under the final name. Returns the bytes written."""
    header = json.dumps({"model": slot.model, "n_tokens": len(slot.tokens), "adapters": list(slot.adapters)}).encode()
    body = b"".join((
        MAGIC, struct.pack("<I", len(header)), header,
        struct.pack(f"<{len(slot.tokens)}i", *slot.tokens), slot.state,
    ))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(body)


def _read_regular(path: Path) -> bytes:
    """The file's bytes; a symlink (which could point out of --slot-save-path) or anything but a regular
    file (a FIFO would block the reader) is refused. The name has no separators (validate_filename), so
    only this last component could be a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SlotFileError(f"slot file not found: {path.name}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SlotFileError(f"{path.name} is a symbolic link: refused") from None
        raise SlotFileError(f"cannot read slot file {path.name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise SlotFileError(f"{path.name} is not a regular file: refused")
        try:
            return fh.read()
        except OSError as exc:
            raise SlotFileError(f"cannot read slot file {path.name}: {exc.strerror}") from None


def read_slot_file(path: Path, model: str) -> SlotFile:
    data = _read_regular(path)
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise SlotFileError(f"{path.name} is not a llamatwist slot file")
    pos = len(MAGIC)
    (n_header,) = struct.unpack_from("<I", data, pos)
    pos += 4
    try:
        header = json.loads(data[pos : pos + n_header])
        n_tokens = int(header["n_tokens"])
        adapters = tuple(float(x) for x in header.get("adapters", ()))
    except (ValueError, KeyError, TypeError):
        raise SlotFileError(f"{path.name} has a damaged header") from None
    pos += n_header
    if header.get("model") != model:
        raise SlotFileError(f"{path.name} was saved by a different model ({header.get('model')})")
    if len(data) < pos + 4 * n_tokens:
        raise SlotFileError(f"{path.name} is truncated")
    tokens = list(struct.unpack_from(f"<{n_tokens}i", data, pos))
    return SlotFile(model, tokens, data[pos + 4 * n_tokens :], adapters)
