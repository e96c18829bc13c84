"""Video in and out with PyAV: frames as upright RGB images, the exact frame rate, the sound kept.

Why it is built this way:
- PyAV wheels carry FFmpeg, so no system ffmpeg is needed and no subprocess output is parsed.
- Frame rates are ``Fraction``s end to end (24000/1001 stays 24000/1001); frames are addressed
  by their number, and a time is turned into a frame number once, with exact arithmetic.
- Everything that can be checked before the expensive work is checked in ``open_video`` and
  ``check_video_output`` (not a video, no video stream, zero frames, too many pixels or frames,
  --start past the end, unknown extension, unwritable folder), each as one line.
- Decoding is a generator: a stream that breaks mid-way raises an ImageError naming the frame,
  after the frames before it were already handed out (and stored by the caller).
- Writing goes to a temporary file (or folder) beside the output, renamed when complete, so a
  crash never leaves a half-written video. The sound is added at ``close()``, trimmed to the
  frames actually written, copied packet by packet when the container takes its codec.

Time syntax for --start/--end (``parse_position``): ``2.5`` or ``2.5s`` = seconds, ``1:02.5`` =
minutes:seconds, ``f120`` = frame number 120 (0-based). --end is exclusive: ``--start f10 --end f20``
selects frames 10..19; ``--start 1 --end 2`` the frames whose time t satisfies 1 <= t < 2 s.
Variable-frame-rate inputs are read frame by frame and written at their average rate.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image

from ..errors import ConfigError, ImageError, first_line
from ..optional import require
from .writer import AudioClip

DEFAULT_SEQUENCE_FPS = Fraction(25)  # FFmpeg's image2 default: a folder of frames has no rate of its own
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
STILL_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe")
_PRINTF = re.compile(r"%(0?)(\d*)d")


@dataclass(frozen=True)
class Position:
    """A point in a clip: ``seconds`` or ``frame`` (exactly one is set)."""

    seconds: Fraction | None = None
    frame: int | None = None

    def to_frame(self, fps: Fraction) -> int:
        """The first frame at or after this point (frame i is shown at i / fps)."""
        if self.frame is not None:
            return self.frame
        return int(-(-self.seconds * fps // 1))  # ceil, exact

    def __str__(self) -> str:
        return f"f{self.frame}" if self.frame is not None else f"{float(self.seconds):g}s"


def parse_position(value, option: str = "--start") -> Position | None:
    """``2.5``, ``2.5s``, ``1:02.5`` (seconds) or ``f120`` (frame number); numbers are seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, Position):
        return value
    if isinstance(value, (int, float, Fraction)) and not isinstance(value, bool):
        seconds = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
        return _checked(Position(seconds=seconds), option, value)
    text = str(value).strip().lower()
    try:
        if text.startswith("f"):
            return _checked(Position(frame=int(text[1:])), option, value)
        parts = text.removesuffix("s").split(":")
        if 1 <= len(parts) <= 3:
            seconds = sum(Fraction(p) * 60 ** k for k, p in enumerate(reversed(parts)))
            return _checked(Position(seconds=seconds), option, value)
    except (ValueError, ZeroDivisionError):
        pass
    raise ConfigError(f"{option} '{value}': not a time or frame; use seconds (2.5), minutes:seconds (1:02.5) "
                      "or a frame number (f120)")


def _checked(position: Position, option: str, value) -> Position:
    if (position.frame if position.frame is not None else position.seconds) < 0:
        raise ConfigError(f"{option} '{value}': must not be negative")
    return position


@dataclass(frozen=True)
class VideoInfo:
    """What a source holds. ``size`` is upright (rotation applied); ``rotation`` is the
    counterclockwise turn in degrees that makes decoded frames upright (0, 90, 180, 270)."""

    source: Path
    kind: str                      # "file", "folder" or "pattern"
    fps: Fraction
    frame_count: int
    size: tuple[int, int]
    rotation: int = 0
    audio_codec: str | None = None
    start_time: Fraction = Fraction(0)   # file time of the first video frame (aligns the sound)
    paths: tuple[Path, ...] = field(default=(), repr=False)  # the frames of a folder or pattern
    time_base: Fraction | None = None    # of the video stream's timestamps (None: 1/fps, a sequence)

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def duration(self) -> Fraction:
        return self.frame_count / self.fps


class InputFrame(NamedTuple):
    """One decoded frame: ``index`` counts from the first selected frame (0, 1, ...);
    ``source_index`` is its number in the whole input; ``time`` when it is shown, in seconds from
    the first selected frame (the input's own timestamps: a variable frame rate is kept)."""

    index: int
    source_index: int
    image: Image.Image
    time: Fraction = Fraction(0)


@dataclass(frozen=True)
class VideoInput:
    """An opened, checked input and the frames selected from it (``first`` .. ``stop - 1``)."""

    info: VideoInfo
    first: int
    stop: int
    max_pixels: int
    damaged: list = field(default_factory=list, compare=False)  # video packets skipped by the last frames()

    @property
    def frame_count(self) -> int:
        return self.stop - self.first

    @property
    def fps(self) -> Fraction:
        return self.info.fps

    @property
    def time_base(self) -> Fraction:
        """Of the frames' timestamps, for the writer: the input stream's, so that they stay exact."""
        return self.info.time_base or 1 / self.info.fps

    def frames(self) -> Iterator[InputFrame]:
        """Decode the selected frames in order, as upright RGB PIL images. A video packet the
        decoder refuses (damaged) is skipped and listed in ``damaged``: the frame before it is
        shown for longer, as ffmpeg's players do, and the frames after it keep their times."""
        if self.info.kind == "file":
            yield from _file_frames(self)
        else:
            yield from _sequence_frames(self)

    def audio(self) -> AudioClip | None:
        """The sound that goes with the selected frames, for ``VideoWriter(audio=...)``."""
        if not self.info.has_audio:
            return None
        return AudioClip(self.info.source, self.info.start_time + self.first / self.info.fps)


def open_video(source, *, start=None, end=None, max_frames: int | None = None,
               max_input_pixels: int = 100_000_000, fps=None) -> VideoInput:
    """Open a video file, a folder of frames or a printf pattern, and check everything up front.

    ``start``/``end``: see ``parse_position``. ``max_frames``: more selected frames than this is an
    error (not a silent cut). ``fps``: the rate of a folder or pattern (default 25); ignored for files.
    """
    first_at, stop_at = parse_position(start, "--start"), parse_position(end, "--end")
    info = probe_video(source, fps=fps, max_input_pixels=max_input_pixels)
    first = first_at.to_frame(info.fps) if first_at else 0
    stop = min(stop_at.to_frame(info.fps), info.frame_count) if stop_at else info.frame_count
    if first >= info.frame_count:
        raise ConfigError(f"--start {first_at} is past the end of {info.source} ({info.frame_count} frames, "
                          f"{float(info.duration):.2f} s); choose an earlier start")
    if stop <= first:
        raise ConfigError(f"--end {stop_at} is not after --start {first_at or 0}; choose a later end")
    if max_frames is not None and stop - first > max_frames:
        raise ImageError(f"input {info.source}: {stop - first} frames selected, over --max-frames {max_frames}; "
                         "select fewer with --start/--end or raise --max-frames")
    return VideoInput(info, first, stop, max_input_pixels)


def probe_video(source, *, fps=None, max_input_pixels: int = 100_000_000) -> VideoInfo:
    """Describe ``source`` without decoding more than its first frame."""
    path = Path(source)
    if "%" in path.name and _PRINTF.search(path.name):
        info = _sequence_info(path, _pattern_paths(path), "pattern", fps)
    elif path.is_dir():
        info = _sequence_info(path, _folder_paths(path), "folder", fps)
    elif not path.exists():
        raise ImageError(f"input {path}: file not found")
    elif path.stat().st_size == 0:
        raise ImageError(f"input {path}: the file is empty (0 bytes); give a video file")
    else:
        info = _file_info(path)
    width, height = info.size
    if width * height > max_input_pixels:
        raise ImageError(f"input {path}: frames of {width}x{height} px are over the limit of "
                         f"{max_input_pixels:,} pixels; shrink the video first or raise --max-input-pixels")
    return info


# ---- video files -------------------------------------------------------------------------------

def _open_container(path: Path):
    av = require("av")
    try:
        return av.open(str(path), "r")
    except PermissionError:
        raise ImageError(f"input {path}: permission denied") from None
    except av.error.EOFError:  # a header and nothing after it: no frame to find the stream's format from
        raise ImageError(f"input {path}: the file ends before its first frame (zero frames); "
                         "give a video with at least one frame") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise ImageError(f"input {path}: not a video FFmpeg can read ({first_line(exc)}); "
                         "use mp4, mov, mkv, avi, webm or gif") from None


def _file_info(path: Path) -> VideoInfo:
    av = require("av")
    with _open_container(path) as container:
        if container.format.name in STILL_FORMATS:
            raise ImageError(f"input {path}: a still image, not a video; stylize it with `vggstyle CONTENT STYLE` "
                             "or give a folder of frames")
        if not container.streams.video:
            raise ImageError(f"input {path}: no video stream ({_stream_kinds(container)}); give a video file")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise ImageError(f"input {path}: the video stream has no frame rate; re-encode it with one")
        try:
            first = next(container.decode(stream), None)
            count = (stream.frames or _count_packets(path)) if first is not None else 0
        except av.error.FFmpegError as exc:
            raise ImageError(f"input {path}: cannot decode the first frame ({first_line(exc)}); "
                             "the file is damaged") from None
        if first is None:
            raise ImageError(f"input {path}: the video stream has no frames; give a video with at least one")
        # The display matrix turns the coded picture counterclockwise by frame.rotation degrees
        # (a phone's portrait clip: -90, a quarter turn clockwise); FFmpeg's players apply it too.
        rotation = int(round(first.rotation or 0)) % 360 // 90 * 90
        size = (first.width, first.height) if rotation in (0, 180) else (first.height, first.width)
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        start = Fraction(first.pts or 0) * first.time_base if first.time_base else Fraction(0)
        return VideoInfo(path, "file", Fraction(rate), count, size, rotation, audio, start,
                         time_base=Fraction(stream.time_base) if stream.time_base else None)


def _count_packets(path: Path) -> int:
    """Frames in a container that does not say (mkv, webm): its video packets, read without decoding."""
    with _open_container(path) as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


def _stream_kinds(container) -> str:
    kinds = sorted({s.type for s in container.streams})
    return "only " + ", ".join(kinds) if kinds else "no streams at all"


def _file_frames(video: VideoInput) -> Iterator[InputFrame]:
    info, number, origin, previous = video.info, -1, None, None
    video.damaged.clear()
    for frame in _decoded(info.source, video.damaged):
        number += 1
        if number >= video.stop:
            return
        shown = frame.pts * frame.time_base if frame.pts is not None and frame.time_base else None
        if shown is None or (previous is not None and shown <= previous):  # no timestamp, or out of order
            shown = (previous if previous is not None else 0) + 1 / info.fps
        previous = shown
        if number >= video.first:
            origin = shown if origin is None else origin
            yield InputFrame(number - video.first, number, _upright(frame, info.rotation), shown - origin)


CUT_SHORT = -1  # in VideoInput.damaged: the container could not be read past that point


def _decoded(path: Path, damaged: list):
    """The video stream's frames, packet by packet: a packet the decoder refuses is skipped and its
    number appended to ``damaged``; a container that cannot be read further (a truncated file)
    ends the stream there (CUT_SHORT). No frame threading: it swallows a broken packet's error."""
    av = require("av")
    with _open_container(path) as container:
        stream = container.streams.video[0]
        packets = container.demux(stream)
        for number in itertools.count():
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError:
                damaged.append(CUT_SHORT)
                return
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                damaged.append(number)
                continue
            yield from frames


def damage_report(video: VideoInput, frames: int) -> str | None:
    """One line on what frames() skipped, for the end of a run; None if nothing was."""
    skipped = [n for n in video.damaged if n != CUT_SHORT]
    parts = []
    if skipped:
        parts.append(f"{len(skipped)} damaged video packet(s) skipped (the frame before each is shown longer, "
                     "as ffmpeg's players do)")
    if CUT_SHORT in video.damaged:
        parts.append(f"the file is cut short: it could be read up to frame {frames}")
    return f"input {video.info.source.name}: " + "; ".join(parts) if parts else None


def _upright(frame, rotation: int) -> Image.Image:
    """RGB PIL image, turned counterclockwise by ``rotation`` degrees (display matrix applied)."""
    array = frame.to_ndarray(format="rgb24")
    if rotation:
        array = np.ascontiguousarray(np.rot90(array, k=rotation // 90))
    return Image.fromarray(array, "RGB")


# ---- folders and printf patterns ---------------------------------------------------------------

def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _folder_paths(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()
                   and not p.name.startswith(".")), key=_natural_key)


def _pattern_paths(pattern: Path) -> list[Path]:
    """Files matching ``frame_%04d.png`` in numeric order (``%d`` takes any number of digits)."""
    folder = pattern.parent if str(pattern.parent) else Path(".")
    parts = _PRINTF.split(pattern.name)
    regex, digits = re.escape(parts[0]), parts[2]
    regex += r"(\d{%s})" % digits if parts[1] == "0" and digits else r"(\d+)"
    regex = re.compile(regex + re.escape("".join(parts[3:])) + "$")
    if not folder.is_dir():
        return []
    matches = [(int(m.group(1)), p) for p in folder.iterdir() if (m := regex.match(p.name))]
    return [p for _, p in sorted(matches)]


def _sequence_info(source: Path, paths: list[Path], kind: str, fps) -> VideoInfo:
    if not paths:
        what = "no files match the pattern" if kind == "pattern" else "no image files in the folder"
        raise ImageError(f"input {source}: {what} (zero frames); give frames like frame_0001.png")
    rate = Fraction(str(fps)) if fps is not None else DEFAULT_SEQUENCE_FPS
    if rate <= 0:
        raise ConfigError(f"--fps {fps}: must be positive")
    try:
        with Image.open(paths[0]) as first:
            size = first.size
    except (OSError, ValueError) as exc:
        raise ImageError(f"input {source}: frame 0 ({paths[0].name}) is not an image ({first_line(exc)})") from None
    return VideoInfo(source, kind, rate, len(paths), size, paths=tuple(paths))


def _sequence_frames(video: VideoInput) -> Iterator[InputFrame]:
    from ..image import load_image
    info = video.info
    for number in range(video.first, video.stop):
        path = info.paths[number]
        try:
            image = load_image(path, max_pixels=video.max_pixels, what="frame")
        except ImageError as exc:
            raise ImageError(f"input {info.source}: the sequence breaks at frame {number} ({exc}); "
                             f"{number - video.first} frames before it were read") from None
        if image.size != info.size:
            raise ImageError(f"input {info.source}: frame {number} ({path.name}) is {image.size[0]}x{image.size[1]} "
                             f"but frame 0 is {info.size[0]}x{info.size[1]}; all frames need one size")
        yield InputFrame(number - video.first, number, image, Fraction(number - video.first) / info.fps)


__all__ = ["InputFrame", "Position", "VideoInfo", "VideoInput",
           "damage_report", "open_video", "parse_position", "probe_video"]
