# -*- test-case-name: tests.test_multimodal -*-
"""libmtmd: a multimodal projector (``--mmproj``) beside the text model.

`Projector.tokenize` turns a prompt of text and media parts into text token ids and media chunks (images are
given as RGB pixels, audio and video as their file's bytes; libmtmd preprocesses them, a video becoming texts
and frames in video.py); it is thread-safe and runs in the thread pool. `Projector.eval` encodes one media
chunk and decodes its embeddings into a sequence of the llama_context: decode thread only, like every use of
the context.

Above this module a media chunk is an opaque :class:`MediaChunk`; in token lists it stands as a run of
placeholder ids (negative, derived from the media's content hash, one per position), so the prefix cache
matches the same image again and never a different one. One per *position*, not per token: an M-RoPE model
(Qwen2-VL and kin) gives an image's tokens 2-D positions spanning only max(rows, columns) sequence positions,
so a token list's length stays the sequence's next position for every model; such an image holds
`MediaChunk.extra_cells` more KV cells than its run of placeholders. One media item may be several chunks
(libmtmd cuts audio into 30 s windows for whisper-style encoders): each chunk is matched to its item by the id
libmtmd copies from the bitmap (the content hash), and continues its item's run of placeholders.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llamatwist.engine.context import Context
from llamatwist.engine.errors import DecodeError, ModelLoadError
from llamatwist.engine.model import Model
from llamatwist.engine.video import VideoError, VideoParams, missing_tools, read_video
from llamatwist.media import MediaInput
from llamatwist.native.binding import add_log_listener, ffi, lib, native_errors, remove_log_listener

__all__ = ["MIN_AUDIO_SECONDS", "MediaChunk", "MediaSpan", "Projector", "ProjectorError", "placeholder_ids",
           "projector_memory"]

_log = logging.getLogger(__name__)
_BACKEND_RE = re.compile(r"CLIP using (\S+) backend")
_PLACEHOLDER_RANGE = 2**31 - 3  # placeholder ids are -2 .. -(2**31 - 2): -1 stays "no token"
NO_EMBD_INPUT_ARCHS = frozenset({"glm4", "glm4moe"})  # their graphs take embeddings only with M-RoPE sections
MIN_AUDIO_SECONDS = 0.1  # shorter audio is refused: a few samples crash libmtmd's preprocessing


class ProjectorError(ValueError):
    """A prompt's media cannot be used (libmtmd refused it); the message says why (a 400)."""


def placeholder_ids(digest: str, n: int, start: int = 0) -> list[int]:
    """The ids standing for a media chunk's ``n`` positions in a token list, from its media's ``start``-th."""
    h = int(digest[:15], 16)
    return [-2 - ((h + i) % _PLACEHOLDER_RANGE) for i in range(start, start + n)]


class MediaChunk:
    """One image or audio chunk, tokenized and waiting to be evaluated (owns its native copy)."""

    def __init__(self, ptr: Any, kind: str, n_tokens: int, n_pos: int) -> None:
        self._ptr = ffi.gc(ptr, lib.mtmd_input_chunk_free)
        self.kind = kind
        self.n_tokens = n_tokens  # embeddings: KV cells
        self.n_pos = n_pos  # sequence positions (fewer than n_tokens for M-RoPE images)

    @property
    def extra_cells(self) -> int:
        """KV cells beyond its positions (M-RoPE images; 0 otherwise)."""
        return self.n_tokens - self.n_pos


@dataclass(frozen=True)
class MediaSpan:
    """Where a media chunk sits in a prompt's token list."""

    start: int
    chunk: MediaChunk

    @property
    def end(self) -> int:
        return self.start + self.chunk.n_pos


def _context_params(*, n_threads: int, use_gpu: bool, device: str | None, image_min_tokens: int,
                    image_max_tokens: int, flash_attn: int, batch_max_tokens: int) -> Any:
    params = lib.mtmd_context_params_default()
    params.use_gpu = use_gpu
    if use_gpu and device is not None:  # -mmdev: a name the CLI checked against ggml's devices
        params.device = lib.ggml_backend_dev_by_name(device.encode())
    params.print_timings = False
    params.n_threads = n_threads
    params.warmup = False  # the first image pays for graph setup, as llama-server's --no-warmup
    params.flash_attn_type = flash_attn
    params.batch_max_tokens = batch_max_tokens
    if image_min_tokens > 0:
        params.image_min_tokens = image_min_tokens
    if image_max_tokens > 0:
        params.image_max_tokens = image_max_tokens
    return params


def projector_memory(path: str, *, n_threads: int, use_gpu: bool = True, device: str | None = None,
                     image_min_tokens: int = -1, image_max_tokens: int = -1, flash_attn: int = -1,
                     batch_max_tokens: int = 1024) -> dict[int, int]:
    """The memory a projector would take (weights and compute buffers), in bytes per device, keyed by the
    device's index in ggml's device list ({} where libmtmd cannot tell), without allocating it."""
    params = _context_params(n_threads=n_threads, use_gpu=use_gpu, device=device, image_min_tokens=image_min_tokens,
                             image_max_tokens=image_max_tokens, flash_attn=flash_attn,
                             batch_max_tokens=batch_max_tokens)
    params.warmup = True  # as llama-server's: its compute buffers are then counted
    cap = 16
    devs, sizes = ffi.new("ggml_backend_dev_t[]", cap), ffi.new("size_t[]", cap)
    with native_errors():
        n = lib.llamatwist_mtmd_memory_usage(path.encode(), params, devs, sizes, cap)
    index = {lib.ggml_backend_dev_get(i): i for i in range(lib.ggml_backend_dev_count())}
    out: dict[int, int] = {}
    for k in range(min(max(n, 0), cap)):
        i = index.get(devs[k])
        if i is not None:
            out[i] = out.get(i, 0) + int(sizes[k])
    return out


class Projector:
    """Owns an ``mtmd_context`` for a loaded text model."""

    def __init__(self, path: str, model: Model, *, n_threads: int, use_gpu: bool = True, device: str | None = None,
                 image_min_tokens: int = -1, image_max_tokens: int = -1, flash_attn: int = -1,
                 batch_max_tokens: int = 1024, video: VideoParams | None = None) -> None:
        if not os.path.isfile(path):
            raise ModelLoadError(f"multimodal projector file not found: {path}")
        arch = model.metadata().get("general.architecture", "")
        if arch in NO_EMBD_INPUT_ARCHS and model.n_pos_per_embd() == 1:
            # libllama aborts the process at such a model's first image (llama-server with it)
            raise ModelLoadError(f"this {arch} model cannot take image or audio input (its GGUF has no M-RoPE "
                                 f"sections; libllama's message: reconvert it), so --mmproj cannot be used with it")
        params = _context_params(n_threads=n_threads, use_gpu=use_gpu, device=device,
                                 image_min_tokens=image_min_tokens, image_max_tokens=image_max_tokens,
                                 flash_attn=flash_attn, batch_max_tokens=batch_max_tokens)
        backend: list[str] = []  # libmtmd says where the encoder runs only in its log

        def capture(level: int, line: str) -> None:
            if m := _BACKEND_RE.search(line):
                backend.append(m[1])

        with native_errors() as errors:
            add_log_listener(capture)
            try:
                ptr = lib.mtmd_init_from_file(path.encode(), model.ptr, params)
            finally:
                remove_log_listener(capture)
        if ptr == ffi.NULL:
            detail = "; ".join(errors)[-500:]
            raise ModelLoadError(f"multimodal projector {path} cannot be loaded for this model"
                                 + (f": {detail}" if detail else ""))
        self._ptr: Any = ptr
        self.path = path
        self.vision: bool = bool(lib.mtmd_support_vision(ptr))
        self.audio: bool = bool(lib.mtmd_support_audio(ptr))
        self.video: bool = bool(lib.mtmd_helper_support_video(ptr))  # vision, and libmtmd built with video
        self.video_params = video or VideoParams()  # --video-fps, --video-timestamp-interval, --video-ffmpeg-dir
        self.mrope: bool = bool(lib.mtmd_decode_use_mrope(ptr))
        self.n_embd: int = int(lib.llama_model_n_embd_inp(model.ptr))  # the width of its embeddings
        self.backend: str = backend[-1] if backend else "?"  # the encoder's ggml backend: CPU, Vulkan0, CUDA0
        _log.info("%s: the %s encoder runs on %s", os.path.basename(path),
                  "/".join(k for k, on in (("vision", self.vision), ("audio", self.audio)) if on), self.backend)
        if self.video and (problem := missing_tools(self.video_params)):
            _log.warning("%s: video prompts will be refused", problem)

    def close(self) -> None:
        if self._ptr is not None:
            lib.mtmd_free(self._ptr)
            self._ptr = None

    # -- tokenization (thread pool) ---------------------------------------------
    def tokenize(self, parts: Sequence[str | MediaInput], add_special: bool,
                 parse_special: bool) -> tuple[list[int], list[MediaSpan]]:
        """Token ids (placeholders at media positions) and where each media chunk starts."""
        assert self._ptr is not None
        keep: list[Any] = []
        bitmaps: list[Any] = []  # owned here, freed below
        try:
            items: list[str | Any] = []  # text, or a native bitmap
            for part in parts:
                if isinstance(part, str):
                    items.append(part)
                elif part.kind == "video":
                    items += self._video(part, bitmaps)
                else:
                    bitmaps.append(self._bitmap(part))
                    items.append(bitmaps[-1])
            c_parts = ffi.new("struct mtmd_input_part[]", len(items))
            for i, item in enumerate(items):
                if isinstance(item, str):
                    raw = item.encode("utf-8")
                    buf = ffi.new("char[]", raw)
                    text = ffi.new("struct mtmd_input_text *")
                    text.text, text.text_len = buf, len(raw)
                    text.add_special, text.parse_special = add_special, parse_special
                    keep += [buf, text]
                    c_parts[i].text = text
                else:
                    c_parts[i].bitmap = item
            ptrs = ffi.new("struct mtmd_input_part *[]", [c_parts + i for i in range(len(items))])
            chunks = lib.mtmd_input_chunks_init()
            try:
                rc = lib.mtmd_tokenize_from_parts(self._ptr, chunks, ptrs, len(items), add_special)
                if rc != 0:
                    raise ProjectorError("the media could not be preprocessed for this projector"
                                         if rc == 2 else f"multimodal tokenization failed ({rc})")
                return self._read_chunks(chunks)
            finally:
                lib.mtmd_input_chunks_free(chunks)
        finally:
            for bitmap in bitmaps:
                lib.mtmd_bitmap_free(bitmap)

    def _video(self, media: MediaInput, owned: list[Any]) -> list[str | Any]:
        if not self.video:
            raise ProjectorError("video input is not supported by this server's projector ("
                                 + ("this libmtmd was built without video support)" if self.vision
                                    else "it has no vision encoder)"))
        try:
            return read_video(self._ptr, media.data, self.video_params, owned)
        except VideoError as exc:
            raise ProjectorError(str(exc)) from None

    def _bitmap(self, media: MediaInput) -> Any:
        if media.kind == "image":
            if not self.vision:
                raise ProjectorError("image input is not supported by this server's projector (it has no vision "
                                     "encoder)")
            bitmap = lib.mtmd_bitmap_init(media.width, media.height, ffi.from_buffer(media.data))
        else:
            if not self.audio:
                raise ProjectorError("audio input is not supported by this server's projector (it has no audio "
                                     "encoder)")
            data = ffi.from_buffer(media.data)
            bitmap = lib.mtmd_helper_bitmap_init_from_buf(self._ptr, data, len(media.data), False,
                                                          lib.mtmd_helper_init_opt_default()).bitmap
        if bitmap == ffi.NULL:
            raise ProjectorError(f"the {media.kind} could not be decoded")
        if media.kind == "audio":
            # libmtmd's mel preprocessors abort the process (GGML_ASSERT) on a few samples: refuse such audio
            rate = lib.mtmd_get_audio_sample_rate(self._ptr)
            if lib.mtmd_bitmap_get_nx(bitmap) < rate * MIN_AUDIO_SECONDS:
                lib.mtmd_bitmap_free(bitmap)
                raise ProjectorError(f"the audio is too short: it must last at least {MIN_AUDIO_SECONDS:g} s")
        lib.mtmd_bitmap_set_id(bitmap, media.digest.encode())
        return bitmap

    def _read_chunks(self, chunks: Any) -> tuple[list[int], list[MediaSpan]]:
        tokens: list[int] = []
        spans: list[MediaSpan] = []
        n_out = ffi.new("size_t *")
        seen: dict[str, int] = {}  # placeholders given out per media digest (a long audio is several chunks)
        for i in range(lib.mtmd_input_chunks_size(chunks)):
            chunk = lib.mtmd_input_chunks_get(chunks, i)
            kind = lib.mtmd_input_chunk_get_type(chunk)
            if kind == lib.MTMD_INPUT_CHUNK_TYPE_TEXT:
                ids = lib.mtmd_input_chunk_get_tokens_text(chunk, n_out)
                tokens.extend(ids[j] for j in range(n_out[0]))
                continue
            n = int(lib.mtmd_input_chunk_get_n_pos(chunk))
            own = MediaChunk(lib.mtmd_input_chunk_copy(chunk),
                             "image" if kind == lib.MTMD_INPUT_CHUNK_TYPE_IMAGE else "audio",
                             int(lib.mtmd_input_chunk_get_n_tokens(chunk)), n)
            spans.append(MediaSpan(len(tokens), own))
            digest = ffi.string(lib.mtmd_input_chunk_get_id(chunk)).decode()  # the bitmap's id: _bitmap sets it
            start = seen.get(digest, 0)
            tokens.extend(placeholder_ids(digest, n, start))
            seen[digest] = start + n
        return tokens, spans

    # -- evaluation (decode thread) -----------------------------------------------
    def eval(self, ctx: Context, chunk: MediaChunk, pos: int, seq_id: int, keep_rows: bool = False,
             on_rows: Callable[[int, int], None] | None = None) -> npt.NDArray[np.float32] | None:
        """Encode ``chunk`` and decode its embeddings into sequence ``seq_id`` at ``pos``; with ``keep_rows``, a
        copy of those embeddings (one row of `n_embd` per KV cell), for a draft model that reads them too.
        ``on_rows(first position, n)`` follows each ``llama_decode`` of its rows (a draft head reads their
        hidden states), except rows pinned to one position (an M-RoPE image: llama-server skips those too)."""
        assert self._ptr is not None
        rc = lib.mtmd_encode_chunk(self._ptr, chunk._ptr)
        if rc != 0:
            raise DecodeError(-1, f"the {chunk.kind} could not be encoded ({rc})")
        embd = lib.mtmd_get_output_embd(self._ptr)
        rows = None
        if keep_rows:
            size = chunk.n_tokens * self.n_embd
            rows = np.frombuffer(ffi.buffer(embd, size * 4), dtype=np.float32).reshape(chunk.n_tokens, -1).copy()
        new_pos = ffi.new("llama_pos *")
        callback = ffi.NULL if on_rows is None else ffi.callback(
            "mtmd_helper_post_decode_callback", _rows_callback(on_rows), onerror=_rows_failed)
        rc = lib.mtmd_helper_decode_image_chunk(self._ptr, ctx.ptr, chunk._ptr, embd, pos, seq_id, ctx.n_batch,
                                                new_pos, callback, ffi.NULL)
        if rc != 0:
            raise DecodeError(1 if rc == 1 else rc, f"the {chunk.kind} could not be evaluated ({rc})")
        return rows


def _rows_callback(on_rows: Callable[[int, int], None]) -> Callable[[Any, Any], int]:
    """libmtmd's post-decode callback: ``on_rows(first position, n)`` for rows not pinned to one position."""

    def rows(batch: Any, _user: Any) -> int:
        n = int(batch.n_tokens)
        first, last = int(batch.pos[0]), int(batch.pos[n - 1])
        if n == 1 or first != last:
            on_rows(first, n)
        return 0

    return rows


def _rows_failed(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """A head's trouble following a media chunk: logged; the callback answers 0 and the target's decode goes on."""
    _log.error("following a media chunk's rows failed", exc_info=(exc_type, exc, tb))
