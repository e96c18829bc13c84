"""Odd media made with PyAV, as users have them (issue #19): damaged sound and video packets, files
cut short, variable frame rates, rotation, odd sizes and pixel formats, several audio streams, a
subtitle stream, audio only, nothing at all. Helpers for the tests, not a test module."""

from __future__ import annotations

import random
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

FPS = 12
FRAMES = 8
SAMPLE_RATES = {"mp2": 44100}  # MP2 has no 48 kHz in every muxer; the rest: 48 kHz


def frames(count: int = FRAMES, size=(64, 48)) -> list[np.ndarray]:
    """A colour texture drifting a few pixels a frame (the flow can follow it)."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    return [np.stack([(xx * 4 + 3 * i) % 256, (yy * 5 + i) % 256, ((xx + yy) * 2 + 7 * i) % 256],
                     -1).astype(np.uint8) for i in range(count)]


def clip(path: Path, *, video_codec: str = "libx264", audio_codec: str | None = "aac", count: int = FRAMES,
         size=(64, 48), pix_fmt: str = "yuv420p", audio_streams: int = 1, subtitle: bool = False,
         times: list[Fraction] | None = None, rotation: int | None = None, faststart: bool = False) -> Path:
    """A clip at FPS (or at ``times``, in seconds: a variable rate) with a tone per audio stream."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        video = container.add_stream(video_codec, rate=FPS)
        video.width, video.height = size
        video.pix_fmt = pix_fmt
        base = Fraction(1, 1000) if times else Fraction(1, FPS)
        video.codec_context.time_base = base
        if rotation is not None:
            video.set_display_rotation(rotation)
        audios = [container.add_stream(audio_codec, rate=SAMPLE_RATES.get(audio_codec, 48000), layout="stereo")
                  for _ in range(audio_streams if audio_codec else 0)]
        subtitles = container.add_stream("ass") if subtitle else None
        for i, array in enumerate(frames(count, size)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = (round(times[i] / base) if times else i), base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        seconds = (times[-1] + Fraction(1, FPS)) if times else Fraction(count, FPS)
        for number, audio in enumerate(audios):
            _tone(container, audio, seconds, 440 * (number + 1))
        if subtitles is not None:
            packet = av.Packet(b"0,0,Default,,0,0,0,,Hello")
            packet.stream, packet.pts, packet.dts, packet.duration = subtitles, 0, 0, 500
            packet.time_base = Fraction(1, 1000)
            container.mux(packet)
    return path


def _tone(container, stream, seconds: Fraction, pitch: float) -> None:
    rate = stream.rate
    total = int(rate * seconds)
    chunk = stream.frame_size or 1024
    for start in range(0, total, chunk):
        t = (start + np.arange(chunk)) / rate
        wave = (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _packets(path: Path, kind: str) -> list[tuple[int, int]]:
    """(file offset, size) of each packet of the first stream of ``kind``."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [(p.pos, p.size) for p in container.demux(stream) if p.size and p.pos is not None and p.pos >= 0]


def damage_packet(source: Path, target: Path, kind: str, keep: int = 5) -> Path:
    """A copy of ``source`` with the middle packet of its ``kind`` stream overwritten, after its
    first ``keep`` bytes, by noise (seeded): what a bad sector or a broken download leaves."""
    shutil.copy(source, target)
    packets = _packets(source, kind)
    offset, size = packets[len(packets) // 2]
    noise = random.Random(0)
    with open(target, "r+b") as f:
        f.seek(offset + keep)
        f.write(bytes(noise.randrange(256) for _ in range(max(0, size - keep))))
    return target


def cut_in_last_packet(source: Path, target: Path, kind: str = "audio") -> Path:
    """A copy of ``source`` that ends halfway through the last packet of its ``kind`` stream: an
    interrupted copy or recording."""
    shutil.copy(source, target)
    offset, size = max(_packets(source, kind))
    with open(target, "r+b") as f:
        f.truncate(offset + size // 2)
    return target


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000, layout="stereo")
        _tone(container, stream, Fraction(1, 2), 440)
    return path


def read_back(path: Path) -> dict:
    """What a player sees: frame count, times and size of the video, each audio stream's seconds
    (a damaged packet, copied as it was, is played past as players do)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(frame.pts * frame.time_base, (frame.width, frame.height)) for frame in _played(container, stream)]
        rate = stream.average_rate
    sound = []
    for number in range(len(av.open(str(path)).streams.audio)):
        with av.open(str(path)) as container:
            stream = container.streams.audio[number]
            sound.append(sum(f.samples for f in _played(container, stream)) / stream.rate)
    return {"frames": len(decoded), "times": [t for t, _ in decoded], "size": decoded[0][1] if decoded else None,
            "rate": rate, "sound": sound}


def _played(container, stream):
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.FFmpegError:
            continue


def write_clip(path, frames, fps, *, tone: bool = False, audio_codec: str = "aac", rotation=None,
              options=None):
    """A clip written with PyAV; ``tone``: a 440 Hz track as long as the frames."""
    codec = "libvpx-vp9" if str(path).endswith(".webm") else "libx264"
    with av.open(str(path), "w", options=options or {}) as container:
        video = container.add_stream(codec, rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        if rotation is not None:
            video.set_display_rotation(rotation)
        audio = container.add_stream(audio_codec, rate=48000, layout="mono") if tone else None
        for array in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(video.encode(None))
        if audio is not None:
            samples = int(48000 * len(frames) / fps)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
            for start in range(0, samples, 960):
                chunk = av.AudioFrame.from_ndarray(wave[None, start:start + 960], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, start
                container.mux(audio.encode(chunk))
            container.mux(audio.encode(None))
    return path


def sound_only(path):
    """A WAV file: a container with an audio stream and no video stream (0.1 s of silence)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def texture(seed: int, width: int = 96, height: int = 64) -> np.ndarray:
    """A smooth random colour texture (blurred noise, upsampled), uint8 HxWx3: flow can follow it."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8))
    return np.asarray(small.resize((width, height), Image.BICUBIC))


def panning(seed: int, count: int, shift: int = 2, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """``count`` crops of one texture, moving ``shift`` px left per frame (the camera pans right)."""
    canvas = texture(seed, width + shift * count, height)
    return [np.ascontiguousarray(canvas[:, i * shift:i * shift + width]) for i in range(count)]


def clip_bytes(tmp_path, frames: int = 6, size=(64, 48), fps=10, name="clip.mp4", tone=False) -> bytes:
    """An H.264 clip of a smooth colour texture panning 2 px a frame (optical flow can follow it);
    with ``tone``, an AAC sine as long as the frames."""
    width, height = size
    path = tmp_path / name
    noise = np.random.default_rng(0).integers(0, 256, (height // 8, (width + 2 * frames) // 8 + 1, 3), np.uint8)
    canvas = np.asarray(Image.fromarray(noise).resize((width + 2 * frames + 8, height), Image.BICUBIC))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=48000, layout="mono") if tone else None
        for i in range(frames):
            array = np.ascontiguousarray(canvas[:, 2 * i:2 * i + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))
        if audio is not None:
            wave = (0.3 * np.sin(np.arange(48000 * frames // fps) / 10)).astype(np.float32)
            for start in range(0, len(wave), 1024):
                chunk = av.AudioFrame.from_ndarray(wave[None, start:start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, start
                container.mux(audio.encode(chunk))
            container.mux(audio.encode(None))
    return path.read_bytes()
