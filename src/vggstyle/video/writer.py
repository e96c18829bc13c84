"""Writing a stylized clip: .mp4, .webm, .gif or a folder of PNG frames, atomically, with the sound.

Why it is built this way (reading is reader.py; each module one job):
- Every output is first written beside its destination (``.NAME.part-XXXX``) and renamed when
  complete: a crash, Ctrl-C or kill leaves the destination untouched, never half a video.
- The frame rate is given as a Fraction and used as the stream's rate, so 24000/1001 stays exact
  in mp4 (and in GIF on average: per-frame delays in centiseconds are rounded cumulatively).
  Frames may carry their own times (``write(image, time)``, in the input's ``time_base``): a
  variable frame rate, or a damaged frame skipped in the input, is then kept as it was.
- mp4 is H.264 in yuv420p (what every player takes); 4:2:0 needs even sizes, so an odd width or
  height is padded by one pixel that repeats the last column/row (no stylized pixel is lost; the
  video is 1 px larger). webm is VP9, which takes odd sizes as they are.
- The sound is added in ``close()``, so it is trimmed to the frames actually written: packets are
  copied unchanged when the container takes the codec (mp4: aac, mp3, alac; webm: opus, vorbis),
  cut at packet boundaries (under half a packet, ~10 ms, at each end); otherwise it is decoded,
  cut to the sample and re-encoded (AAC for mp4, Opus for webm). GIFs and folders have no sound.
- Sound from the wild is damaged: a packet the decoder refuses is skipped, as ffmpeg's players
  do (the gap is silence), and counted; a sound track that cannot be read or written at all is
  dropped. Either way the video is written and ``warnings`` says what happened, in one line each:
  the frames are what took hours, never lost to their sound.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import OutputError, first_line
from ..image import check_parent_folder
from ..optional import require

OUTPUT_KINDS = {".mp4": "mp4", ".webm": "webm", ".gif": "gif", "": "folder"}
COPYABLE_AUDIO = {"mp4": {"aac", "mp3", "alac"}, "webm": {"opus", "vorbis"}}
AUDIO_ENCODERS = {"mp4": "aac", "webm": "libopus"}
VIDEO_CODECS = {
    "mp4": ("libx264", {"crf": "18", "preset": "medium"}),
    "webm": ("libvpx-vp9", {"crf": "30", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}),
}


@dataclass(frozen=True)
class AudioClip:
    """The sound of ``source`` from file time ``start`` (s), as long as the frames written."""

    source: Path
    start: Fraction


def output_kind(path) -> str:
    """'mp4', 'webm', 'gif' or 'folder' (a path without extension), else a one-line OutputError."""
    path = Path(path)
    kind = OUTPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise OutputError(f"output {path}: unknown extension '{path.suffix}'; use .mp4, .webm, .gif "
                          "or a folder name without extension (PNG frames)")
    return kind


def check_video_output(path) -> Path:
    """Fail before any work if the video (or frame folder) could not be written there."""
    path = Path(path)
    kind = output_kind(path)
    if kind == "folder" and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise OutputError(f"output {path}: exists and is not an empty folder; choose a new folder name")
    if kind != "folder" and path.is_dir():
        raise OutputError(f"output {path}: is a directory; give a file name like {path / ('out' + path.suffix)}")
    return check_parent_folder(path)


class VideoWriter:
    """Write frames one by one; ``close()`` adds the sound and renames into place.

    Use as a context manager: leaving it by an exception discards the partial file.
    """

    def __init__(self, path, fps, *, audio: AudioClip | None = None, parameters: dict | None = None,
                 time_base: Fraction | None = None):
        self.path = check_video_output(path)
        self.kind = output_kind(self.path)
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps  # of the times write() is given
        self.audio = audio if self.kind in AUDIO_ENCODERS else None
        self.parameters = parameters  # recorded in an mp4's or webm's metadata (read_parameters)
        self.frames_written = 0
        self.size: tuple[int, int] | None = None
        self.warnings: list[str] = []  # what was skipped or dropped (damaged sound), one line each
        self._sink = None

    def write(self, image, time: Fraction | None = None) -> None:
        """Append one RGB frame (PIL image or HxWx3 uint8 array); all frames need one size.
        ``time``: when it is shown, in seconds from the first frame (default: frame number / fps)."""
        array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
        size = (array.shape[1], array.shape[0])
        if self._sink is None:
            self.size = size
            self._sink = _SINKS[self.kind](self.path, self.fps, size, self.audio, self.warnings, self.time_base)
            if self.parameters is not None and isinstance(self._sink, _ContainerSink):
                self._sink.container.metadata["comment"] = json.dumps({"vggstyle": self.parameters},
                                                                      sort_keys=True, default=str)
        elif size != self.size:
            raise ValueError(f"frame {self.frames_written} is {size[0]}x{size[1]}, the video is "
                             f"{self.size[0]}x{self.size[1]}")
        self._sink.write(array, Fraction(self.frames_written) / self.fps if time is None else Fraction(time))
        self.frames_written += 1

    def close(self) -> Path:
        """Finish (sound trimmed to the frames written) and rename into place; returns the path."""
        if self._sink is None:
            raise OutputError(f"output {self.path}: no frames were written; nothing to save")
        try:
            self._sink.finish()
        except BaseException as exc:
            self._sink.discard()
            if isinstance(exc, OSError):
                raise OutputError(f"output {self.path}: cannot write ({exc}); choose another path") from None
            raise
        return self.path

    def abort(self) -> None:
        """Drop the partial output; the destination is left as it was."""
        if self._sink is not None:
            self._sink.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def read_parameters(path) -> dict | None:
    """The parameters a VideoWriter recorded in an mp4's or webm's metadata (the 'comment' tag, as
    JSON, as a PNG result carries its own in a text chunk); None if there are none or it cannot be read."""
    av = require("av")
    try:
        with av.open(str(path)) as container:
            metadata = {key.lower(): value for key, value in container.metadata.items()}
        return json.loads(metadata.get("comment", "null"))["vggstyle"]
    except (av.error.FFmpegError, OSError, ValueError, KeyError, TypeError):
        return None


def _temp_file(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.part-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _publish(tmp: Path, path: Path) -> None:
    """Usual permissions (mkstemp makes 0600), then the atomic rename."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~mask)
    if tmp.is_dir() and path.is_dir():
        path.rmdir()  # checked empty in check_video_output
    os.replace(tmp, path)


class _ContainerSink:
    """mp4 / webm through PyAV: H.264 or VP9 video, the sound copied or re-encoded at the end."""

    def __init__(self, path: Path, fps: Fraction, size: tuple[int, int], audio: AudioClip | None,
                 warnings: list[str], time_base: Fraction):
        av = require("av")
        self.path, self.fps, self.tmp, self.warnings = path, fps, _temp_file(path), warnings
        self.time_base, self.last_pts, self.end = time_base, None, Fraction(0)
        kind = output_kind(path)
        options = {"movflags": "+faststart"} if kind == "mp4" else {}
        self.container = av.open(str(self.tmp), "w", format=kind, options=options)
        codec, codec_options = VIDEO_CODECS[kind]
        self.pad = (size[0] % 2, size[1] % 2) if kind == "mp4" else (0, 0)
        self.stream = self.container.add_stream(codec, rate=fps, options=codec_options)
        self.stream.codec_context.time_base = self.stream.time_base = time_base
        self.stream.width, self.stream.height = size[0] + self.pad[0], size[1] + self.pad[1]
        self.stream.pix_fmt = "yuv420p"
        self.sound = None
        if audio:
            try:
                self.sound = _SoundTrack(self.container, kind, audio)
            except av.error.FFmpegError as exc:
                warnings.append(f"the sound of {audio.source.name} cannot be read ({first_line(exc)}); "
                                "the video is written without it")

    def write(self, array: np.ndarray, time: Fraction) -> None:
        av = require("av")
        if any(self.pad):
            array = np.pad(array, ((0, self.pad[1]), (0, self.pad[0]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        pts = round(time / self.time_base)
        pts = pts if self.last_pts is None or pts > self.last_pts else self.last_pts + 1  # strictly rising
        frame.pts, frame.time_base, self.last_pts = pts, self.time_base, pts
        self.end = pts * self.time_base + 1 / self.fps  # the last frame is shown for one frame's time
        self.container.mux(self.stream.encode(frame))

    def finish(self) -> None:
        self.container.mux(self.stream.encode(None))
        if self.sound:
            self.sound.write(self.end)
            if self.sound.skipped:
                self.warnings.append(f"{self.sound.skipped} damaged packet(s) of the sound of "
                                     f"{self.sound.clip.source.name} skipped (silence there), as ffmpeg does")
        self.container.close()
        _publish(self.tmp, self.path)

    def discard(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass
        if self.sound:
            self.sound.source.close()
        self.tmp.unlink(missing_ok=True)


class _SoundTrack:
    """The input's first audio stream, added to an output container and trimmed to a window."""

    def __init__(self, container, kind: str, clip: AudioClip):
        av = require("av")
        self.container, self.clip, self.skipped = container, clip, 0
        self.source = av.open(str(clip.source))
        self.input = self.source.streams.audio[0]
        self.copy = self.input.codec_context.name in COPYABLE_AUDIO[kind]
        if self.copy:
            self.output = container.add_stream_from_template(self.input)
        else:
            rate = 48000 if kind == "webm" else self.input.rate  # Opus runs at 48 kHz
            layout = "stereo" if self.input.channels > 1 else "mono"
            self.output = container.add_stream(AUDIO_ENCODERS[kind], rate=rate, layout=layout)

    def write(self, duration: Fraction) -> None:
        start = self.clip.start
        if self.copy:
            self._copy(start, start + duration)
        else:
            self._encode(start, start + duration)
        self.source.close()

    def _copy(self, start: Fraction, end: Fraction) -> None:
        """Packets whose middle lies in [start, end), shifted to begin at 0."""
        base = self.input.time_base
        offset = round(start / base)
        for packet in self.source.demux(self.input):
            if packet.pts is None or not packet.size:
                continue
            middle = (packet.pts + (packet.duration or 0) / 2) * base
            if middle >= end:
                break
            if middle >= start:
                packet.pts -= offset
                packet.dts = packet.pts if packet.dts is None else packet.dts - offset
                packet.stream = self.output
                self.container.mux(packet)

    def _encode(self, start: Fraction, end: Fraction) -> None:
        """Decoded samples in [start, end), re-encoded; PyAV resamples to the encoder's format.
        A packet the decoder refuses is skipped and counted (``skipped``); its time is filled with
        silence, so the sound after it stays in sync."""
        written = 0
        for frame in self._decoded():
            if frame.pts is None:
                continue
            rate, t0 = frame.sample_rate, frame.pts * frame.time_base
            if t0 >= end:
                break
            first = max(0, int(-(-(start - t0) * rate // 1)))
            stop = min(frame.samples, int((end - t0) * rate))
            if stop > first:
                due = round((t0 - start) * rate) + first  # where these samples belong in the output
                if due > written:  # a gap: a damaged packet was skipped
                    self._mux(_silence(frame, due - written), written, rate)
                    written = due
                self._mux(_slice_audio(frame, first, stop), written, rate)
                written += stop - first
        self.container.mux(self.output.encode(None))

    def _mux(self, piece, at: int, rate: int) -> None:
        piece.pts, piece.time_base = at, Fraction(1, rate)
        self.container.mux(self.output.encode(piece))

    def _decoded(self):
        av = require("av")
        for packet in self.source.demux(self.input):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:  # AC3 and MP2 say so with codes of their own: any of them
                self.skipped += 1
                continue
            yield from frames


def _silence(like, samples: int):
    """``samples`` of silence in the format, layout and rate of the audio frame ``like``."""
    av = require("av")
    array = like.to_ndarray()
    channels = 1 if like.format.is_planar else len(like.layout.channels)
    out = av.AudioFrame.from_ndarray(np.zeros((array.shape[0], samples * channels), array.dtype),
                                     format=like.format.name, layout=like.layout.name)
    out.sample_rate = like.sample_rate
    return out


def _slice_audio(frame, first: int, stop: int):
    av = require("av")
    array = frame.to_ndarray()
    channels = 1 if frame.format.is_planar else len(frame.layout.channels)
    piece = np.ascontiguousarray(array[:, first * channels:stop * channels])
    out = av.AudioFrame.from_ndarray(piece, format=frame.format.name, layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    return out


class _GifSink:
    """Pillow's GIF writer (adaptive palette per frame); delays rounded cumulatively to centiseconds."""

    def __init__(self, path: Path, fps: Fraction, size, audio, warnings, time_base):
        self.path, self.fps, self.frames, self.times = path, fps, [], []

    def write(self, array: np.ndarray, time: Fraction) -> None:
        self.frames.append(Image.fromarray(array, "RGB").quantize(256))
        self.times.append(time)

    def finish(self) -> None:
        ticks = [round(t * 100) for t in self.times] + [round((self.times[-1] + 1 / self.fps) * 100)]
        delays = [max(2, b - a) * 10 for a, b in zip(ticks, ticks[1:])]  # ms; players treat < 2 cs as 10
        tmp = _temp_file(self.path)
        try:
            self.frames[0].save(tmp, format="GIF", save_all=True, append_images=self.frames[1:],
                                duration=delays, loop=0, disposal=1)
            _publish(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def discard(self) -> None:
        self.frames.clear()


class _FolderSink:
    """PNG frames frame_000000.png ... in a hidden folder beside the target, renamed at the end."""

    def __init__(self, path: Path, fps: Fraction, size, audio, warnings, time_base):
        self.path = path
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.part-", dir=path.parent))
        self.count = 0

    def write(self, array: np.ndarray, time: Fraction) -> None:
        Image.fromarray(array, "RGB").save(self.tmp / f"frame_{self.count:06d}.png")
        self.count += 1

    def finish(self) -> None:
        _publish(self.tmp, self.path)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


_SINKS = {"mp4": _ContainerSink, "webm": _ContainerSink, "gif": _GifSink, "folder": _FolderSink}
