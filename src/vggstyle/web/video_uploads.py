"""A video as a job's content: recognised by its first bytes, written to the queue's private
directory under a name the server makes, and checked before it is queued.

Why it is checked this way: a clip is refused for the same reasons a still is (413 too large,
415 not a video, 422 damaged) and before the job waits in the queue, so a client learns at
once. Every frame is decoded once here, one at a time and then dropped: the frame count is
the real one (not the header's, which a file may lie about), a stream that breaks mid-way is
refused now rather than failing in the worker, and memory stays one frame. Only the first
frame is kept (shrunk to the job's size): the page's "before" picture.

No FastAPI here either: every refusal is an UploadError, as in uploads.py. PyAV is imported
only when a video arrives.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from PIL import Image

from ..errors import VggstyleError
from .limits import VIDEO_FORMATS, Limits, UploadError

MAX_FPS = 120  # frames a second: more is no real clip, and the frames are the work


def is_video(data: bytes) -> bool:
    """Whether the bytes start like a video container (mp4/mov, mkv/webm, avi) or are an animated
    GIF; anything else goes to the still-image decoder, which says what is wrong with it."""
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free") or data[:4] == b"\x1a\x45\xdf\xa3":
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return True
    return data[:6] in (b"GIF87a", b"GIF89a") and _animated_gif(data)


def _animated_gif(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data), formats=["GIF"]) as image:
            return bool(getattr(image, "is_animated", False))
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError):
        return False  # the still decoder will say what is wrong with it


@dataclass
class VideoUpload:
    """A checked clip in the queue's directory: what a video job holds while it waits."""

    path: Path
    frames: int
    fps: Fraction
    size: tuple[int, int]  # of the frames, upright
    first_frame: Image.Image


def save_video_upload(data: bytes, label: str, limits: Limits, directory: Path) -> VideoUpload:
    """Write the clip to ``directory`` (a name made here) and check it; on a refusal it is deleted."""
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".video", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        return _check_clip(path, label, limits)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def takes_video() -> bool:
    """Whether this server can stylize a video: PyAV and OpenCV (the [video] extra) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("av", "cv2"))


def _check_clip(path: Path, label: str, limits: Limits) -> VideoUpload:
    if not takes_video():
        raise UploadError(415, f"{label}: this server takes images only (videos need PyAV and OpenCV: "
                               "pip install 'vggstyle[video]' where it runs)")
    from ..video.reader import open_video  # PyAV, imported when a video arrives

    _check_header(path, label, limits)  # before open_video decodes the first frame

    def refuse(status: int, exc: Exception) -> UploadError:
        text = str(exc).replace(f"input {path}", label).replace(str(path), label)
        return UploadError(status, text.replace("; give a video file", f"; send {VIDEO_FORMATS}"))

    try:
        clip = open_video(path, max_input_pixels=2 ** 62)  # the server's own limit below, in its words
    except VggstyleError as exc:
        raise refuse(415 if "no video stream" in str(exc) else 422, exc) from None
    width, height = clip.info.size
    if width * height > limits.max_input_pixels:
        raise UploadError(413, f"{label}: frames of {width}x{height} px are over this server's limit of "
                               f"{limits.max_input_pixels:,} pixels; shrink the video first")
    if clip.fps > MAX_FPS:
        raise UploadError(413, f"{label}: {float(clip.fps):g} frames a second; this server takes at most "
                               f"{MAX_FPS}; re-encode it at a normal frame rate")
    most = math.floor(limits.max_video_seconds * clip.fps)  # frames allowed
    _too_long(label, clip.frame_count, clip.fps, limits, most)
    first, count = None, 0
    try:
        for frame in clip.frames():
            count += 1
            _too_long(label, count, clip.fps, limits, most)
            if first is None:
                first = frame.image
    except VggstyleError as exc:
        raise refuse(422, exc) from None
    if first is None:
        raise UploadError(422, f"{label}: the video has no frames; send a video with at least one")
    return VideoUpload(path, count, clip.fps, clip.info.size, first)


def _check_header(path: Path, label: str, limits: Limits) -> None:
    """The frame size as the container declares it, checked before any frame is decoded (a
    bomb: a tiny file declaring huge frames); open_video checks the decoded size again."""
    import av
    try:
        with av.open(str(path), "r") as container:
            streams = container.streams.video
            width, height = (streams[0].codec_context.width, streams[0].codec_context.height) if streams else (0, 0)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return  # open_video says what is wrong, in its words
    if width * height > limits.max_input_pixels:
        raise UploadError(413, f"{label}: frames of {width}x{height} px are over this server's limit of "
                               f"{limits.max_input_pixels:,} pixels; shrink the video first")


def _too_long(label: str, frames: int, fps: Fraction, limits: Limits, most: int) -> None:
    if frames > max(1, most):
        raise UploadError(413, f"{label}: {float(frames / fps):.1f} s ({frames} frames at {float(fps):g} fps) "
                               f"is over this server's limit of {limits.max_video_seconds:g} s; trim it first")
