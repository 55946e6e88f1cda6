"""Media inputs (images, audio, video) carried from the HTTP routes to the decode thread.

A prompt with media is a list of parts — text, token ids and :class:`MediaInput` items, in order — the way
llama-server's prompts carry ``<__media__>`` markers (libmtmd's default marker) with the media listed beside
them. The routes turn what the client sent into a MediaInput with :func:`decode_media` (off the reactor
thread: decoding an image is CPU work); libmtmd, in the engine layer, turns it into chunks.

Images are decoded here with Pillow rather than by libmtmd's stb_image because stb_image reads no WebP and
has no pixel limit; the engine receives plain RGB pixels (``mtmd_bitmap_init``). Audio stays encoded (WAV,
MP3, FLAC): libmtmd's helper decodes and resamples it for the projector. Video stays encoded too (recognised
by its container's magic bytes): libmtmd's helper decodes it with ffmpeg when the prompt is tokenized.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MEDIA_MARKER",
    "EncodedMedia",
    "MediaError",
    "MediaInput",
    "MediaKind",
    "decode_base64",
    "decode_media",
    "media_digest",
    "sniff_video",
    "split_at_markers",
]

# the marker of /completion's prompt_string (multimodal_data): libmtmd's default, or LLAMA_MEDIA_MARKER as
# llama-server reads it; /props reports it as media_marker
MEDIA_MARKER = os.environ.get("LLAMA_MEDIA_MARKER") or "<__media__>"

MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # far above any projector's input; a bomb is refused before decoding

MediaKind = Literal["image", "audio", "video"]
T = TypeVar("T")


class MediaError(ValueError):
    """The media cannot be used: the message names why (a 400 at the route)."""


@dataclass(frozen=True)
class MediaInput:
    """One media item: an image as RGB pixels (``width * height * 3`` bytes, row-major), or an audio or video
    file's bytes (WAV/MP3/FLAC; MP4, WebM, ...) with ``width == height == 0``."""

    kind: MediaKind
    data: bytes = field(repr=False)
    width: int = 0
    height: int = 0

    @property
    def digest(self) -> str:
        """The content hash the prefix cache keys media chunks by (same pixels → same KV)."""
        return media_digest(self.kind, self.width, self.height, self.data)


def media_digest(kind: str, width: int, height: int, data: bytes | memoryview) -> str:
    """The hash of a media item's content: an image's (or a video frame's: ``kind`` "image") pixels, an
    audio file's bytes."""
    h = hashlib.sha256(f"{kind}:{width}x{height}:".encode())
    h.update(data)
    return h.hexdigest()


@dataclass(frozen=True)
class EncodedMedia:
    """A media file's bytes as a request carried them, to be decoded (:func:`decode_media`) off the reactor."""

    data: bytes = field(repr=False)


def decode_base64(text: object, what: str) -> EncodedMedia:
    """A request's base64 media string; MediaError naming ``what`` when it is not valid base64."""
    if not isinstance(text, str):
        raise MediaError(f"{what} must be a base64 string")
    try:
        return EncodedMedia(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise MediaError(f"{what} is not valid base64") from None


def sniff_video(data: bytes) -> str | None:
    """The container a video file's first bytes name (what ffmpeg will be asked to decode), else None."""
    if data[4:8] == b"ftyp" or data[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "MP4/MOV"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska/WebM"
    if data.startswith(b"RIFF") and data[8:12] == b"AVI ":
        return "AVI"
    if data.startswith(b"FLV\x01"):
        return "FLV"
    if data.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "ASF/WMV"
    if data.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "MPEG"
    if len(data) > 376 and data[0] == data[188] == data[376] == 0x47:
        return "MPEG-TS"
    if data.startswith(b"OggS") and b"theora" in data[:64]:
        return "Ogg Theora"
    return None


_AUDIO_MAGIC = (b"RIFF", b"fLaC", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")


def decode_media(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> MediaInput:
    """A client's file bytes → a MediaInput; MediaError names what is wrong with them."""
    if not data:
        raise MediaError("the media file is empty")
    if sniff_video(data):
        return MediaInput("video", data)
    if data.startswith(_AUDIO_MAGIC) and not (data.startswith(b"RIFF") and data[8:12] == b"WEBP"):
        if data.startswith(b"RIFF") and data[8:12] != b"WAVE":
            raise MediaError("unsupported media format: a RIFF file that is neither WAV, AVI nor WebP")
        return MediaInput("audio", data)
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in ("PNG", "JPEG", "WEBP", "GIF", "BMP"):
                    raise MediaError(f"unsupported image format {img.format} (expected PNG, JPEG, WebP or GIF)")
                if img.width * img.height > max_pixels:
                    raise MediaError(
                        f"the image is too large: {img.width}x{img.height} pixels (at most {max_pixels} pixels)"
                    )
                img.seek(0)  # a GIF's first frame
                rgb = img.convert("RGB")
                return MediaInput("image", rgb.tobytes(), rgb.width, rgb.height)
    except MediaError:
        raise
    except UnidentifiedImageError:
        raise MediaError("unsupported media format: not a PNG, JPEG, WebP or GIF image, WAV, MP3 or FLAC audio, "
                         "nor a video (MP4, WebM, MKV, AVI, ...)")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise MediaError(f"the image is too large: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"the image cannot be decoded (corrupt or truncated): {e}") from None


def split_at_markers(text: str, media: Sequence[T]) -> list[str | T]:
    """``text`` with each marker replaced by the next media item, in order.

    The counts must match (llama-server: "number of bitmaps does not match number of markers").
    """
    pieces = text.split(MEDIA_MARKER)
    if len(pieces) - 1 != len(media):
        raise MediaError(
            f"the prompt has {len(pieces) - 1} media marker(s) ({MEDIA_MARKER}) but {len(media)} media file(s)"
        )
    out: list[str | T] = []
    for i, piece in enumerate(pieces):
        if piece:
            out.append(piece)
        if i < len(media):
            out.append(media[i])
    return out
