"""`vggstyle video` and the web app on media from the wild (issue #19), a corpus made here with PyAV
(tests/odd_media.py): each file either stylizes, with the frames, times, size and sound it should
have, or is one clear line and exit 2 (the web: 415/422, never 500) with nothing left behind."""

from __future__ import annotations

from fractions import Fraction

import pytest

av = pytest.importorskip("av", reason="video needs PyAV (the [video] extra)")
pytest.importorskip("cv2", reason="video needs OpenCV (the [video] extra)")

import odd_media as media  # noqa: E402
from conftest import EXAMPLES  # noqa: E402
from vggstyle.cli import main  # noqa: E402

STYLE = EXAMPLES / "style" / "starry_night.jpg"
FAST = ["--image-size", "32", "--num-iterations", "1", "--frame-iterations", "1", "--passes", "1",
        "--threads", "1", "--precision", "fp32", "-q"]
CONTAINERS = {"avi": "mpeg4", "mkv": "libx264", "mp4": "libx264"}
AUDIO = ("ac3", "mp2", "aac", "pcm_s16le")
SECONDS = Fraction(media.FRAMES, media.FPS)


def stylize(path, tmp_path, capsys) -> tuple[int, list[str], object]:
    """Run the CLI on ``path``; (exit code, stderr lines, the output's path)."""
    output = tmp_path / "out.mp4"
    code = main(["video", str(path), str(STYLE), "-o", str(output), *FAST])
    return code, capsys.readouterr().err.strip().splitlines(), output


def assert_nothing_left(tmp_path, *inputs) -> None:
    left = sorted(p.name for p in tmp_path.iterdir() if p not in inputs)
    assert left == [], f"left behind: {left}"


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("audio", AUDIO)
def test_a_damaged_sound_packet_is_skipped_and_said_the_video_is_written(tmp_path, capsys, container, audio):
    """Before: the sound was decoded at the very end, after every frame was stylized, and one packet
    the decoder refused was a traceback and no video, again on every rerun."""
    source = media.clip(tmp_path / f"clip.{container}", video_codec=CONTAINERS[container], audio_codec=audio)
    damaged = media.damage_packet(source, tmp_path / f"damaged.{container}", "audio")
    code, lines, output = stylize(damaged, tmp_path, capsys)
    assert code == 0, lines
    seen = media.read_back(output)
    assert seen["frames"] == media.FRAMES and seen["times"] == media.read_back(source)["times"]
    assert len(seen["sound"]) == 1 and abs(seen["sound"][0] - SECONDS) < 0.1, seen["sound"]
    assert len(lines) <= 1 and all(line.startswith("vggstyle video: warning: ") and
                                   "damaged packet(s) of the sound" in line for line in lines), lines
    if audio == "ac3":  # its decoder refuses the noise (AAC is copied into mp4 as it is, MP2 and PCM play it)
        assert len(lines) == 1, lines


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("audio", AUDIO)
def test_a_file_cut_in_its_last_packet_stylizes_what_it_has(tmp_path, capsys, container, audio):
    source = media.clip(tmp_path / f"clip.{container}", video_codec=CONTAINERS[container], audio_codec=audio,
                        faststart=True)
    cut = media.cut_in_last_packet(source, tmp_path / f"cut.{container}", "audio")
    code, lines, output = stylize(cut, tmp_path, capsys)
    assert code == 0, lines
    seen = media.read_back(output)
    assert media.FRAMES - 2 <= seen["frames"] <= media.FRAMES
    assert seen["times"] == media.read_back(source)["times"][:seen["frames"]]
    assert len(seen["sound"]) == 1 and seen["sound"][0] > 0.5 * SECONDS


def test_an_mp4_cut_before_its_index_is_one_line(tmp_path, capsys):
    """A recording that stopped before the mp4's index (moov) was written cannot be read at all."""
    source = media.clip(tmp_path / "clip.mp4")
    cut = media.cut_in_last_packet(source, tmp_path / "cut.mp4", "video")
    code, lines, output = stylize(cut, tmp_path, capsys)
    assert code == 2 and len(lines) == 1 and "not a video FFmpeg can read" in lines[0], lines
    assert_nothing_left(tmp_path, source, cut)


def test_a_damaged_video_packet_is_skipped_and_the_frame_before_held(tmp_path, capsys):
    """Before: 'the stream breaks at frame 4', exit 2, after the first frames were stylized. (An
    MPEG-4 Part 2 decoder conceals such damage instead: every frame is there, test_odd_but_sound.)"""
    source = media.clip(tmp_path / "clip.mp4", audio_codec="aac")
    damaged = media.damage_packet(source, tmp_path / "damaged.mp4", "video", keep=4)
    code, lines, output = stylize(damaged, tmp_path, capsys)
    assert code == 0, lines
    seen = media.read_back(output)
    assert seen["frames"] < media.FRAMES, "the damaged frame is not in the output"
    times = media.read_back(source)["times"]
    assert seen["times"][0] == 0 and seen["times"][-1] == times[-1] and set(seen["times"]) < set(times), \
        "the frames after it keep their times: the one before it is shown longer"
    assert abs(seen["sound"][0] - SECONDS) < 0.1
    assert len(lines) == 1 and "damaged video packet(s) skipped" in lines[0], lines


def test_a_variable_frame_rate_keeps_its_times(tmp_path, capsys):
    """Before: written at the average rate, every frame equally long."""
    times = [Fraction(t, 100) for t in (0, 10, 15, 40, 45, 50, 90, 100)]
    source = media.clip(tmp_path / "vfr.mp4", times=times)
    code, lines, output = stylize(source, tmp_path, capsys)
    assert code == 0, lines
    seen = media.read_back(output)
    assert seen["times"] == times
    assert abs(seen["sound"][0] - (times[-1] + Fraction(1, media.FPS))) < 0.1


@pytest.mark.parametrize("case, make, frames, size", [
    ("rotation metadata", lambda p: media.clip(p / "phone.mp4", rotation=-90), media.FRAMES, (24, 32)),
    ("odd size 721x405", lambda p: media.clip(p / "odd.mkv", size=(721, 405), count=3, pix_fmt="yuv444p"),
     3, (32, 18)),
    ("MPEG-4 Part 2 with a damaged packet (concealed)",
     lambda p: media.damage_packet(media.clip(p / "clip.avi", video_codec="mpeg4"), p / "damaged.avi", "video", keep=4),
     media.FRAMES, (32, 24)),
    ("10-bit 4:2:2", lambda p: media.clip(p / "ten.mp4", pix_fmt="yuv422p10le"), media.FRAMES, (32, 24)),
    ("4:4:4", lambda p: media.clip(p / "full.mkv", pix_fmt="yuv444p"), media.FRAMES, (32, 24)),
    ("one frame", lambda p: media.clip(p / "one.mp4", count=1), 1, (32, 24)),
    ("two audio streams", lambda p: media.clip(p / "two.mkv", audio_codec="ac3", audio_streams=2),
     media.FRAMES, (32, 24)),
    ("a subtitle stream", lambda p: media.clip(p / "sub.mkv", subtitle=True), media.FRAMES, (32, 24)),
])
def test_odd_but_sound_files_stylize(tmp_path, capsys, case, make, frames, size):
    source = make(tmp_path)
    code, lines, output = stylize(source, tmp_path, capsys)
    assert code == 0 and lines == [], (case, lines)
    seen = media.read_back(output)
    # mp4 is 4:2:0: an odd side is padded by one pixel (32x18 stays, 24x32 stays)
    assert (seen["frames"], seen["size"]) == (frames, size), case
    assert seen["times"] == media.read_back(source)["times"], case
    assert len(seen["sound"]) == 1 and abs(seen["sound"][0] - Fraction(frames, media.FPS)) < 0.1, case


@pytest.mark.parametrize("case, make, message", [
    ("audio only", lambda p: media.audio_only(p / "song.m4a"), "no video stream (only audio); give a video file"),
    ("zero bytes", lambda p: (p / "empty.mp4").write_bytes(b"") and None or p / "empty.mp4",
     "the file is empty (0 bytes); give a video file"),
    ("text named .mp4", lambda p: (p / "notes.mp4").write_text("not a video") and None or p / "notes.mp4",
     "not a video FFmpeg can read"),
])
def test_files_that_are_not_videos_are_one_line_and_leave_nothing(tmp_path, capsys, case, make, message):
    source = make(tmp_path)
    code, lines, output = stylize(source, tmp_path, capsys)
    assert code == 2 and len(lines) == 1 and message in lines[0], (case, lines)
    assert lines[0].startswith("vggstyle video: error: input ")
    assert_nothing_left(tmp_path, source)


# ------------------------------------------------------------------ the web app, the same corpus
pytest.importorskip("fastapi", reason="the web app needs the [web] extra")


def corpus(folder) -> dict:
    """name -> (the file, the status POST /api/jobs must answer)."""
    files = {}
    for container, codec in CONTAINERS.items():
        for audio in AUDIO:
            source = media.clip(folder / f"{audio}.{container}", video_codec=codec, audio_codec=audio)
            files[f"damaged {audio} sound in {container}"] = (
                media.damage_packet(source, folder / f"damaged-{audio}.{container}", "audio"), 202)
    source = media.clip(folder / "v.mp4", faststart=True)
    files["damaged video packet"] = (media.damage_packet(source, folder / "damaged-video.mp4", "video", keep=4), 202)
    files["cut in its last packet"] = (media.cut_in_last_packet(source, folder / "cut.mp4", "video"), 202)
    files["variable frame rate"] = (media.clip(folder / "vfr.mp4", times=[Fraction(t, 10) for t in
                                                                          (0, 1, 3, 4, 7, 8, 9, 12)]), 202)
    files["rotation"] = (media.clip(folder / "phone.mp4", rotation=90), 202)
    files["10-bit 4:2:2"] = (media.clip(folder / "ten.mp4", pix_fmt="yuv422p10le"), 202)
    files["subtitles"] = (media.clip(folder / "sub.mkv", subtitle=True), 202)
    files["one frame"] = (media.clip(folder / "one.mp4", count=1), 202)
    files["audio only"] = (media.audio_only(folder / "song.m4a"), 415)
    unreadable = media.clip(folder / "index.mp4")
    files["mp4 cut before its index"] = (media.cut_in_last_packet(unreadable, folder / "noindex.mp4", "video"), 422)
    (folder / "empty.mp4").write_bytes(b"")
    files["zero bytes"] = (folder / "empty.mp4", 422)
    return files


def test_the_web_app_takes_or_refuses_each_file_of_the_corpus_never_500(make_client, tmp_path):
    from conftest import STYLE as STYLE_PNG  # a small PNG

    def runner(input, styles, output, config, *, video, masks=None, on_step, on_frame):
        raise AssertionError("only the uploads are under test")

    client = make_client(video_runner=runner, max_queue=64)
    for case, (path, status) in corpus(tmp_path).items():
        response = client.post("/api/jobs", data={"image_size": "32"}, files=[
            ("content", (path.name, path.read_bytes(), "video/mp4")), ("style", ("s.png", STYLE_PNG, "image/png"))])
        assert response.status_code == status, (case, response.text)
        if status != 202:
            assert "\n" not in response.json()["detail"] and "Traceback" not in response.json()["detail"], case
