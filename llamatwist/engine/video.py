# -*- test-case-name: tests.test_multimodal_video -*-
"""Video through libmtmd's helper: ffprobe and ffmpeg (subprocesses libmtmd starts, found in PATH or in
``--video-ffmpeg-dir``) turn a video file into frames at ``--video-fps`` and, every
``--video-timestamp-interval`` ms, a timestamp text ("[0m5.00s]"), after a "Video:" text, as llama-server's
prompts have them.

`read_video` runs where a prompt's media are tokenized (the thread pool), never on the reactor or the decode
thread: ffmpeg decodes the whole video before the prompt's chunks exist. Each frame is an image bitmap whose id
is the hash of its pixels, as an image's (`media_digest`): the prefix cache then reuses the same video's frames
in the next turn and never matches another video's.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

from llamatwist.media import MAX_IMAGE_PIXELS, media_digest
from llamatwist.native.binding import ffi, lib

__all__ = ["MAX_VIDEO_BYTES", "VideoError", "VideoParams", "missing_tools", "read_video"]

# the decoded frames of one video, all held until the prompt is tokenized (1080p at 4 fps: about 40 s)
MAX_VIDEO_BYTES = 1 << 30


class VideoError(ValueError):
    """The video cannot be used; the message says why (a 400)."""


@dataclass(frozen=True)
class VideoParams:
    """llama-server's video flags (common_params.video_*), with its defaults."""

    fps: float = 4.0  # --video-fps: frames taken per second (<= 0: the video's own rate)
    timestamp_interval_ms: int = 5000  # --video-timestamp-interval: a timestamp text this often (<= 0: none)
    ffmpeg_dir: str | None = None  # --video-ffmpeg-dir: where ffmpeg and ffprobe are (None: PATH)


def missing_tools(params: VideoParams) -> str | None:
    """Why libmtmd could not start ffprobe/ffmpeg (its own failure names neither), or None when both are there."""
    if params.ffmpeg_dir:
        missing = [name for name in ("ffprobe", "ffmpeg")
                   if not os.access(os.path.join(params.ffmpeg_dir, name), os.X_OK)]
        where = f"in --video-ffmpeg-dir {params.ffmpeg_dir}"
    else:
        missing = [name for name in ("ffprobe", "ffmpeg") if shutil.which(name) is None]
        where = "in PATH (install ffmpeg, or point --video-ffmpeg-dir at its directory)"
    if not missing:
        return None
    return f"video input needs ffprobe and ffmpeg: {' and '.join(missing)} not found {where}"


def read_video(mctx: Any, data: bytes, params: VideoParams, owned: list[Any]) -> list[str | Any]:
    """A video file's prompt parts, in order: texts and frames (native bitmaps). Each bitmap is appended to
    ``owned`` as soon as it exists: the caller frees them, also when this raises."""
    if problem := missing_tools(params):
        raise VideoError(problem)
    c_params = lib.mtmd_helper_video_init_params_default()
    c_params.fps_target = params.fps
    c_params.timestamp_interval_ms = params.timestamp_interval_ms
    ffmpeg_dir = ffi.new("char[]", params.ffmpeg_dir.encode()) if params.ffmpeg_dir else ffi.NULL
    c_params.ffmpeg_bin_dir = ffmpeg_dir
    video = lib.mtmd_helper_video_init_from_buf(mctx, ffi.from_buffer(data), len(data), c_params)
    if video == ffi.NULL:
        raise VideoError("the video could not be decoded: ffprobe found no video stream in it (corrupt, truncated "
                         "or not a video)")
    parts: list[str | Any] = []
    try:
        info = lib.mtmd_helper_video_get_info(video)
        if info.width * info.height > MAX_IMAGE_PIXELS:
            raise VideoError(f"the video is too large: {info.width}x{info.height} pixels a frame (at most "
                             f"{MAX_IMAGE_PIXELS} pixels)")
        out_bitmap = ffi.new("mtmd_bitmap **")
        out_text = ffi.new("char **")
        n_frames = total = 0
        while (rc := lib.mtmd_helper_video_read_next(video, out_bitmap, out_text)) == 0:
            if out_text[0] != ffi.NULL:
                parts.append(ffi.string(out_text[0]).decode("utf-8", "replace"))
                lib.free(out_text[0])
                continue
            bitmap = out_bitmap[0]
            owned.append(bitmap)
            n_bytes = lib.mtmd_bitmap_get_n_bytes(bitmap)
            total += n_bytes
            if total > MAX_VIDEO_BYTES:
                raise VideoError(f"the video is too long: its frames at {info.fps:g} fps take more than "
                                 f"{MAX_VIDEO_BYTES >> 20} MiB decoded (a lower --video-fps takes fewer)")
            pixels = memoryview(ffi.buffer(lib.mtmd_bitmap_get_data(bitmap), n_bytes))
            digest = media_digest("image", lib.mtmd_bitmap_get_nx(bitmap), lib.mtmd_bitmap_get_ny(bitmap), pixels)
            lib.mtmd_bitmap_set_id(bitmap, digest.encode())
            parts.append(bitmap)
            n_frames += 1
    finally:
        lib.mtmd_helper_video_free(video)
    # -1 is the end; -2 (or no frame before the end) is ffmpeg failing on what ffprobe accepted
    if rc != -1 or n_frames == 0:
        raise VideoError("the video could not be decoded: ffmpeg gave no frame (corrupt or truncated)")
    return parts
