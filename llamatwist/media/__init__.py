"""Media inputs (images, audio) carried from the HTTP routes to the decode thread.

A prompt with media is a list of parts — text, token ids and :class:`MediaInput` items, in order — the way
llama-server's prompts carry ``<__media__>`` markers (libmtmd's default marker) with the media listed beside
them. The routes decode what the client sent into bytes here; libmtmd (in the engine layer, on the decode
thread's side) turns the bytes into bitmaps and the bitmaps into chunks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["MEDIA_MARKER", "MediaInput", "MediaKind", "split_at_markers"]

MEDIA_MARKER = "<__media__>"  # mtmd_default_marker() of the pinned libmtmd

MediaKind = Literal["image", "audio"]


@dataclass(frozen=True)
class MediaInput:
    """One media file as the client sent it (PNG/JPEG/WebP/GIF, WAV/MP3/FLAC), already base64-decoded."""

    kind: MediaKind
    data: bytes = field(repr=False)

    @property
    def digest(self) -> str:
        """A stable name for the file's bytes (logs, tests); the prefix cache keys by the decoded bitmap."""
        return hashlib.sha256(self.data).hexdigest()[:16]


def split_at_markers(text: str, media: list[MediaInput]) -> list[str | MediaInput]:
    """``text`` with each marker replaced by the next media item, in order.

    The count must match (llama-server: "number of bitmaps does not match number of markers"); the caller
    turns the ValueError into a 400.
    """
    pieces = text.split(MEDIA_MARKER)
    if len(pieces) - 1 != len(media):
        raise ValueError(
            f"the prompt has {len(pieces) - 1} media marker(s) ({MEDIA_MARKER}) but {len(media)} media file(s)"
        )
    out: list[str | MediaInput] = []
    for i, piece in enumerate(pieces):
        if piece:
            out.append(piece)
        if i < len(media):
            out.append(media[i])
    return out
