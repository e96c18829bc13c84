"""Video in and out: exact frame rates, sound kept and trimmed, rotation, odd sizes, every bad input."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES
from odd_media import sound_only, write_clip
from vggstyle.errors import ConfigError, ImageError, OutputError
from vggstyle.video.reader import damage_report, open_video, parse_position
from vggstyle.video.writer import VideoWriter, check_video_output

NTSC = Fraction(30000, 1001)


def _frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """Frame i: grey level 8 i, with a red 4x4 marker in the top-left corner."""
    frames = []
    for i in range(count):
        array = np.full((height, width, 3), (8 * i) % 256, np.uint8)
        array[:4, :4] = (255, 0, 0)
        frames.append(array)
    return frames


def make_clip(path, frames, fps=NTSC, **kw):
    return write_clip(path, frames, fps, **kw)


def _read_back(path):
    """(frame count, average rate, audio seconds or None) of a written file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate, count = stream.average_rate, sum(1 for _ in container.decode(stream))
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return count, rate, None
        seconds = sum(f.samples for f in container.decode(audio=0)) / container.streams.audio[0].rate
    return count, rate, seconds


def _copy(video, output):
    with VideoWriter(output, video.fps, audio=video.audio()) as writer:
        for frame in video.frames():
            writer.write(frame.image)
    return output


def test_real_clip_is_20_frames_at_exactly_10_fps():
    video = open_video(EXAMPLES / "video" / "walkway.mp4")
    summary = (video.fps, video.frame_count, video.info.size, video.info.has_audio)
    assert summary == (Fraction(10), 20, (384, 288), False)
    frames = list(video.frames())
    assert [f.index for f in frames] == list(range(20))
    assert [f.time for f in frames] == [Fraction(i, 10) for i in range(20)]
    assert frames[-1].image.size == (384, 288) and frames[-1].image.mode == "RGB"


@pytest.mark.parametrize("suffix,codec", [(".mp4", "aac"), (".webm", "opus")])
def test_round_trip_keeps_frames_rate_and_sound(tmp_path, suffix, codec):
    source = open_video(make_clip(tmp_path / "in.mp4", _frames(30), tone=True))
    assert source.info.audio_codec == "aac" and source.fps == NTSC
    count, rate, seconds = _read_back(_copy(source, tmp_path / f"out{suffix}"))
    assert (count, rate) == (30, NTSC)
    assert abs(seconds - 30 / NTSC) < 1 / NTSC
    with av.open(str(tmp_path / f"out{suffix}")) as container:
        assert container.streams.audio[0].codec_context.name == codec


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_start_and_end_trim_frames_and_sound(tmp_path, suffix):
    source = make_clip(tmp_path / "in.mp4", _frames(40), tone=True)
    video = open_video(source, start="0.5", end="f25")  # 0.5 s -> frame 15 (ceil(0.5 * 29.97))
    assert (video.first, video.stop, video.frame_count) == (15, 25, 10)
    first = next(video.frames())
    assert (first.index, first.source_index) == (0, 15)
    assert np.asarray(first.image)[20, 20, 1] == pytest.approx(8 * 15, abs=3)
    count, rate, seconds = _read_back(_copy(video, tmp_path / f"cut{suffix}"))
    assert (count, rate) == (10, NTSC)
    assert abs(seconds - 10 / NTSC) < 1 / NTSC


def test_sound_in_another_codec_is_reencoded_for_mp4(tmp_path):
    source = open_video(make_clip(tmp_path / "in.mkv", _frames(20), tone=True, audio_codec="libopus"))
    assert source.info.audio_codec == "opus"
    out = _copy(source, tmp_path / "out.mp4")
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
    assert abs(_read_back(out)[2] - 20 / NTSC) < 1 / NTSC


def test_rotation_metadata_is_applied(tmp_path):
    """A phone's portrait clip: coded 64x32, display matrix -90 (a quarter turn clockwise)."""
    video = open_video(make_clip(tmp_path / "rot.mp4", _frames(3, 64, 32), rotation=-90))
    assert (video.info.rotation, video.info.size) == (270, (32, 64))
    array = np.asarray(next(video.frames()).image)
    assert array.shape == (64, 32, 3)
    assert array[1, -2, 0] > 200 and array[1, 1, 0] < 100  # the top-left marker is now top-right


def test_odd_sizes(tmp_path):
    video = open_video(make_clip(tmp_path / "odd.webm", _frames(3, 63, 31)))
    assert video.info.size == (63, 31)
    padded = open_video(_copy(video, tmp_path / "odd.mp4"))  # H.264 4:2:0: padded by one pixel
    assert padded.info.size == (64, 32) and padded.frame_count == 3
    edge = np.asarray(next(padded.frames()).image).astype(int)
    assert np.abs(edge[:, -1] - edge[:, -2]).max() < 12  # the extra column repeats the last one
    for name in ("odd2.webm", "odd.gif", "odd_frames"):
        assert open_video(_copy(video, tmp_path / name)).info.size == (63, 31)


def test_gif_and_folder_outputs_and_inputs(tmp_path):
    video = open_video(make_clip(tmp_path / "in.mp4", _frames(6), fps=Fraction(10)))
    gif = open_video(_copy(video, tmp_path / "out.gif"))
    assert (gif.frame_count, gif.fps) == (6, Fraction(10))
    folder = open_video(_copy(video, tmp_path / "frames"), fps="10")
    assert (folder.info.kind, folder.frame_count, folder.fps) == ("folder", 6, Fraction(10))
    pattern = open_video(tmp_path / "frames" / "frame_%06d.png", start="f2")
    assert (pattern.info.kind, pattern.frame_count, pattern.fps) == ("pattern", 4, Fraction(25))
    values = [np.asarray(f.image)[20, 20, 1] for f in pattern.frames()]
    assert values == pytest.approx([16, 24, 32, 40], abs=3)


def test_folder_is_sorted_naturally(tmp_path):
    for number in (10, 2, 1):
        Image.fromarray(np.full((20, 20, 3), number, np.uint8)).save(tmp_path / f"f{number}.png")
    values = [np.asarray(f.image)[0, 0, 0] for f in open_video(tmp_path).frames()]
    assert values == [1, 2, 10]


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(target, 10) as writer:
            writer.write(_frames(1)[0])
            raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text,seconds,frame", [("2.5", Fraction(5, 2), None), ("2.5s", Fraction(5, 2), None),
                                                ("1:02.5", Fraction(125, 2), None), ("f120", None, 120),
                                                (3, Fraction(3), None)])
def test_position_syntax(text, seconds, frame):
    position = parse_position(text)
    assert (position.seconds, position.frame) == (seconds, frame)


# ---- bad input: one line each ------------------------------------------------------------------

def test_not_a_video(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video at all\n" * 20)
    with pytest.raises(ImageError, match=r"^input .*notes.mp4: not a video FFmpeg can read .*; use mp4, mov, mkv"):
        open_video(tmp_path / "notes.mp4")


def test_a_still_image_is_not_a_video(tmp_path):
    Image.fromarray(_frames(1)[0]).save(tmp_path / "still.png")
    with pytest.raises(ImageError, match=r"^input .*still.png: a still image, not a video; stylize it with"):
        open_video(tmp_path / "still.png")



def test_no_video_stream(tmp_path):
    path = sound_only(tmp_path / "sound.wav")
    with pytest.raises(ImageError, match=r"^input .*sound.wav: no video stream \(only audio\); give a video file$"):
        open_video(path)


def test_zero_frames(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match=r"^input .*empty: no image files in the folder \(zero frames\)"):
        open_video(tmp_path / "empty")
    whole = make_clip(tmp_path / "whole.mkv", _frames(5), fps=Fraction(10)).read_bytes()
    path = tmp_path / "header_only.mkv"
    path.write_bytes(whole[:whole.find(bytes.fromhex("1F43B675"))])  # cut before the first Cluster
    with pytest.raises(ImageError, match=r"^input .*header_only.mkv: the file ends before its first frame "
                                         r"\(zero frames\); give a video with at least one frame$"):
        open_video(path)


def test_start_past_the_end_and_bad_times(tmp_path):
    path = make_clip(tmp_path / "in.mp4", _frames(10), fps=Fraction(10))
    with pytest.raises(ConfigError, match=r"^--start 2s is past the end of .*in.mp4 \(10 frames, 1.00 s\); "
                                          r"choose an earlier start$"):
        open_video(path, start="2")
    with pytest.raises(ConfigError, match=r"^--end f3 is not after --start f5"):
        open_video(path, start="f5", end="f3")
    with pytest.raises(ConfigError, match=r"^--end 'soon': not a time or frame; use seconds \(2.5\)"):
        open_video(path, end="soon")


def test_frames_over_max_pixels_and_over_max_frames(tmp_path):
    path = make_clip(tmp_path / "in.mp4", _frames(10), fps=Fraction(10))
    with pytest.raises(ImageError, match=r"^input .*: frames of 64x48 px are over the limit of 1,000 pixels; "
                                         r".*--max-input-pixels$"):
        open_video(path, max_input_pixels=1000)
    with pytest.raises(ImageError, match=r"^input .*: 10 frames selected, over --max-frames 5; .*--start/--end"):
        open_video(path, max_frames=5)
    assert open_video(path, start="f5", max_frames=5).frame_count == 5


def test_a_stream_cut_short_is_read_up_to_the_cut_and_said(tmp_path):
    """Issue #19's choice: what a damaged or truncated file still has is stylized (ffmpeg's players
    play it too), and the run says what was skipped, in one line, at the end."""
    noise = [np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(60)]
    path = make_clip(tmp_path / "in.mp4", noise, fps=Fraction(10), options={"movflags": "faststart"})
    data = path.read_bytes()  # the index first, then the frames: cutting the file cuts frames
    path.write_bytes(data[:len(data) * 2 // 3])
    video = open_video(path)
    got = [frame.index for frame in video.frames()]
    assert 0 < len(got) < 60 and got == list(range(len(got)))
    report = damage_report(video, len(got))
    assert report.startswith("input in.mp4: ") and ("cut short" in report or "damaged video packet" in report)
    assert damage_report(open_video(make_clip(tmp_path / "whole.mp4", noise[:3])), 3) is None


def test_sequence_that_breaks_mid_way_says_where(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((20, 20, 3), i, np.uint8)).save(tmp_path / f"frame_{i:02d}.png")
    (tmp_path / "frame_02.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    video = open_video(tmp_path / "frame_%02d.png")
    got = []
    with pytest.raises(ImageError, match=r"^input .*: the sequence breaks at frame 2 \(frame .*frame_02.png: "):
        for frame in video.frames():
            got.append(frame.index)
    assert got == [0, 1]


def test_unknown_or_unwritable_output(tmp_path):
    with pytest.raises(OutputError, match=r"^output .*out.avi: unknown extension '.avi'; use .mp4, .webm, .gif "
                                          r"or a folder name"):
        check_video_output(tmp_path / "out.avi")
    with pytest.raises(OutputError, match=r"^output .*: folder .*missing does not exist; create it first$"):
        check_video_output(tmp_path / "missing" / "out.mp4")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(b"")
    with pytest.raises(OutputError, match=r"^output .*full: exists and is not an empty folder"):
        check_video_output(tmp_path / "full")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.access(locked, os.W_OK):  # root writes anyway; /proc refuses even root
        locked = "/proc"
    with pytest.raises(OutputError, match=r"^output .*out.mp4: folder .* is not writable .*; choose another path$"):
        check_video_output(f"{locked}/out.mp4")


def test_missing_video_packages_are_one_line():
    from vggstyle.optional import require
    with pytest.raises(ConfigError, match=r"^this needs no_such_module, which is not installed; "
                                          r"run: pip install 'vggstyle\[video\]'$"):
        require("no_such_module")
