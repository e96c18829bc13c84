"""A video as the web app's content: checked before it is queued, progress per frame and iteration,
a live preview, an MP4 result, a cancel that keeps the frames done. Tiny clips made here with PyAV;
a fake runner (stylize_video's signature and hooks) where the network would add nothing, and one
real job end to end."""

from __future__ import annotations

import io
import json
import functools
import time
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web app needs the [web] extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("multipart", reason="the web app needs python-multipart (the [web] extra)")
av = pytest.importorskip("av", reason="video needs PyAV")

from conftest import EXAMPLES, FakeSpreadRunner, FakeVideoRunner, httpx, results_dirs, stop, wait_for_job  # noqa: E402
from odd_media import clip_bytes  # noqa: E402
from vggstyle.video import FrameDone, VideoConfig  # noqa: E402
from vggstyle.video.reader import open_video  # noqa: E402
from vggstyle.cli.serve import build_parser  # noqa: E402
from vggstyle.web.video_jobs import default_video_runner  # noqa: E402

FPS = 10


def style_png() -> bytes:
    image = Image.open(EXAMPLES / "style" / "starry_night.jpg").convert("RGB")
    image.thumbnail((40, 40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def read_video(data: bytes, tmp_path) -> tuple[int, Fraction, tuple[int, int]]:
    path = tmp_path / "result.mp4"
    path.write_bytes(data)
    clip = open_video(path)
    return sum(1 for _ in clip.frames()), clip.fps, clip.info.size


def post(client, content: bytes, name="clip.mp4", expect=202, **params):
    data = {k: str(v) for k, v in {"image_size": 48, "num_iterations": 4, **params}.items()}
    response = client.post("/api/jobs", data=data, files=[("content", (name, content, "video/mp4")),
                                                           ("style", ("s.png", style_png(), "image/png"))])
    assert response.status_code == expect, response.text
    return response.json()


def events(client, job_id):
    with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        return [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]


wait = functools.partial(wait_for_job, timeout=30.0)


def leftovers(client) -> list[str]:
    """Uploads and work folders still in the queue's private directory."""
    return sorted(p.name for p in client.app.state.jobs.directory.iterdir() if not p.name.startswith("result-"))


# ------------------------------------------------------------------ a job, start to end (fake runner)
def test_video_job_reports_frames_iterations_preview_and_gives_an_mp4(make_client, tmp_path):
    runner = FakeVideoRunner(steps=4, hold_at=2)
    client = make_client(video_runner=runner, preview_every=2)
    job = post(client, clip_bytes(tmp_path), frame_iterations=4, temporal_weight=50)
    assert job["kind"] == "video" and job["frames"] == 6 and job["fps"] == FPS and job["size"] == [48, 36]

    assert runner.held.wait(30)  # before frame 3's first iteration: frames 1 and 2 are done
    now = client.get(f"/api/jobs/{job['id']}").json()
    assert (now["frame"], now["frames"], now["frames_done"], now["step"], now["total"]) == (2, 6, 2, 4, 4)
    assert now["iterations_total"] == 8 and now["eta_seconds"] is not None and now["eta_seconds"] >= 0
    preview = client.get(f"/api/jobs/{job['id']}/preview")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(preview.content)).size == (48, 36)
    first = client.get(f"/api/jobs/{job['id']}/content")
    assert first.status_code == 200 and Image.open(io.BytesIO(first.content)).size == (48, 36)
    runner.release.set()

    seen = events(client, job["id"])
    assert seen[-1]["state"] == "done" and seen[-1]["frames_done"] == 6 and seen[-1]["has_result"]
    frames_seen = [e["frame"] for e in seen if e["state"] == "running" and e["frame"]]
    assert frames_seen and frames_seen == sorted(frames_seen) and seen[-1]["frame"] == 6
    assert seen[-1]["preview_version"] >= 12, "step 1 and 4 of each of 6 frames... at least 2 a frame"
    assert runner.calls[0]["video"].frame_iterations == 4 and runner.calls[0]["video"].temporal_weight == 50
    assert runner.calls[0]["config"].image_size == 48

    result = client.get(f"/api/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    assert result.headers["content-disposition"].endswith('.mp4"')
    assert read_video(result.content, tmp_path) == (6, Fraction(FPS), (48, 36))
    assert client.get(f"/api/jobs/{job['id']}/preview").status_code == 200, "the last frame, once done"
    # Before and after, the same frame: the content's first frame and the result's (here: inverted).
    before = np.asarray(Image.open(io.BytesIO(first.content)).convert("RGB"), dtype=float)
    after = client.get(f"/api/jobs/{job['id']}/result/first-frame")
    assert after.status_code == 200 and after.headers["content-type"] == "image/png"
    after = np.asarray(Image.open(io.BytesIO(after.content)).convert("RGB"), dtype=float)
    assert np.abs(255 - before - after).mean() < 2
    assert leftovers(client) == [], "the upload and the work folder are deleted with the run"


def test_a_later_pass_is_reported_and_a_cancel_in_it_keeps_the_first_passs_frames(make_client, tmp_path):
    runner = FakeVideoRunner(steps=3, hold_at=2, passes=2, hold_in_pass=2)  # pass 2 goes 4, 3, 2, ...
    client = make_client(video_runner=runner)
    job = post(client, clip_bytes(tmp_path, tone=True))
    assert runner.held.wait(30)
    now = client.get(f"/api/jobs/{job['id']}").json()
    assert (now["pass"], now["passes"], now["pass_frames"], now["pass_done"], now["frames_done"]) == (2, 2, 5, 2, 6)
    assert now["iterations_total"] == 6 * 3 + 2 * 3
    assert client.delete(f"/api/jobs/{job['id']}").json()["cancel_requested"]
    runner.release.set()
    final = wait(client, job["id"], lambda j: j["state"] not in ("queued", "running"))
    assert final["state"] == "cancelled" and final["has_result"] and final["pass"] == 2
    result = client.get(f"/api/jobs/{job['id']}/result")
    assert read_video(result.content, tmp_path) == (6, Fraction(FPS), (48, 36))  # each frame once
    assert leftovers(client) == []


def test_a_video_job_spread_over_a_cluster_reports_chunk_passes_and_a_cancel_keeps_frames_in_order(
        make_client, tmp_path):
    """Issue #21: with a scheduler, a video job is spread over it; the job says how many chunk passes
    are done, its ETA is the run's own; frames arrive chunk by chunk (frames 4-6 before 1-3), and
    what a cancel keeps are the first frames in order."""
    runner = FakeSpreadRunner(hold_after=2)
    client = make_client(video_runner=runner, scheduler="tcp://127.0.0.1:8786")
    job = post(client, clip_bytes(tmp_path))
    assert runner.held.wait(30)
    now = client.get(f"/api/jobs/{job['id']}").json()
    assert runner.calls[0]["scheduler"] == "tcp://127.0.0.1:8786"
    assert now["spread"] == {"done": 1, "total": 4, "running": 2, "chunks": 2, "eta_seconds": 1.5}
    assert now["eta_seconds"] == 1.5 and now["frames_done"] == 6
    runner.release.set()
    final = wait(client, job["id"], lambda j: j["state"] not in ("queued", "running"))
    assert final["state"] == "done" and final["frames_done"] == 6 and final["spread"]["done"] == 3  # the fake reports before each
    result = client.get(f"/api/jobs/{job['id']}/result")
    assert read_video(result.content, tmp_path) == (6, Fraction(FPS), (48, 36))

    runner = FakeSpreadRunner(hold_after=1)  # chunk 2's frames (4-6) are back, chunk 1's are not
    client = make_client(video_runner=runner, scheduler="tcp://127.0.0.1:8786")
    job = post(client, clip_bytes(tmp_path))
    assert runner.held.wait(30)
    assert client.delete(f"/api/jobs/{job['id']}").json()["cancel_requested"]
    runner.release.set()
    final = wait(client, job["id"], lambda j: j["state"] not in ("queued", "running"))
    assert final["state"] == "cancelled" and not final["has_result"]  # no first frames in order yet
    assert leftovers(client) == []


def test_cancel_mid_clip_keeps_the_frames_done(make_client, tmp_path):
    runner = FakeVideoRunner(steps=3, hold_at=3)
    client = make_client(video_runner=runner)
    job = post(client, clip_bytes(tmp_path, tone=True))
    assert runner.held.wait(30)
    assert client.delete(f"/api/jobs/{job['id']}").json()["cancel_requested"]
    runner.release.set()
    final = wait(client, job["id"], lambda j: j["state"] not in ("queued", "running"))
    assert final["state"] == "cancelled" and final["has_result"] and final["frames_done"] == 3
    result = client.get(f"/api/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    assert read_video(result.content, tmp_path) == (3, Fraction(FPS), (48, 36))
    with av.open(io.BytesIO(result.content)) as kept:
        [sound] = kept.streams.audio
        seconds = float(sound.duration * sound.time_base)
    assert abs(seconds - 0.3) < 0.05, f"the sound of the 3 frames kept: {seconds} s"
    assert leftovers(client) == []
    # The still API is unchanged beside it: a still job's snapshot says so.
    assert client.delete(f"/api/jobs/{job['id']}/result").status_code == 200


def test_cancel_before_the_first_frame_is_done_has_no_result(make_client, tmp_path):
    runner = FakeVideoRunner(steps=3, hold_at=0)
    client = make_client(video_runner=runner)
    job = post(client, clip_bytes(tmp_path, frames=2))
    assert runner.held.wait(30)
    client.delete(f"/api/jobs/{job['id']}")
    runner.release.set()
    final = wait(client, job["id"], lambda j: j["state"] == "cancelled")
    assert not final["has_result"] and client.get(f"/api/jobs/{job['id']}/result").status_code == 404
    assert leftovers(client) == []


def test_stopping_the_server_mid_clip_keeps_nothing(make_client, tmp_path):
    runner = FakeVideoRunner(steps=3, hold_at=2)
    client = make_client(video_runner=runner)
    job = post(client, clip_bytes(tmp_path))
    assert runner.held.wait(30)
    client.app.state.jobs.stop()  # what SIGTERM does first
    runner.release.set()
    final = wait(client, job["id"], lambda j: j["state"] == "cancelled")
    assert not final["has_result"], "nobody will download it: the frames are not encoded"
    assert leftovers(client) == []


def test_a_run_that_fails_says_why_without_server_paths(make_client, tmp_path):
    from vggstyle.errors import ImageError

    def broken(input, styles, output, config, **hooks):
        raise ImageError(f"input {input}: the stream breaks at frame 3 (Invalid data); 2 frames before it were read")
    client = make_client(video_runner=broken)
    job = post(client, clip_bytes(tmp_path, frames=2))
    final = wait(client, job["id"], lambda j: j["state"] == "failed")
    assert final["error"].startswith("the content video: the stream breaks at frame 3")
    assert str(client.app.state.jobs.directory) not in final["error"] and leftovers(client) == []


def test_a_run_that_fails_midway_keeps_the_frames_done(make_client, tmp_path):
    """Issue #19: a cancel kept the frames done, a failure (here: the encoding, at the end) kept none."""
    from vggstyle.errors import OutputError

    def fails_at_the_end(input, styles, output, config, *, video, masks=None, on_step, on_frame):
        clip = open_video(input)
        for frame in clip.frames():
            image = frame.image.resize((48, 36))
            on_frame(FrameDone(frame.index, clip.frame_count, {"total": 1.0}, 0.01, frame.index == 0, False,
                               image, 1, 1, clip.frame_count))
        raise OutputError(f"output {output}: writing the video failed (Invalid data)")

    client = make_client(video_runner=fails_at_the_end)
    job = post(client, clip_bytes(tmp_path, frames=4, tone=True))
    final = wait(client, job["id"], lambda j: j["state"] == "failed")
    assert "writing the video failed" in final["error"] and final["has_result"]
    result = client.get(f"/api/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    assert read_video(result.content, tmp_path) == (4, Fraction(FPS), (48, 36))
    assert leftovers(client) == []


@pytest.mark.slow
def test_sigterm_with_a_video_job_running_exits_0_and_removes_the_clip(tmp_path, serve):
    import signal

    process, url = serve()
    with httpx.Client(base_url=url, timeout=30) as client:
        data = {"image_size": "48", "num_iterations": "5000"}
        files = [("content", ("c.mp4", clip_bytes(tmp_path, frames=3), "video/mp4")),
                 ("style", ("s.png", style_png(), "image/png"))]
        job = client.post("/api/jobs", files=files, data=data).json()
        assert job["kind"] == "video", job
        deadline = time.monotonic() + 120
        while client.get(f"/api/jobs/{job['id']}").json()["step"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    seconds, stderr = stop(process, signal.SIGTERM)
    assert process.returncode == 0 and seconds < 5, (seconds, stderr)
    assert "Traceback" not in stderr and "terminate called" not in stderr, stderr
    assert results_dirs(tmp_path) == [], "the clip and the results directory are removed"


# ------------------------------------------------------------------ refusals, before the queue
def test_too_long_a_video_is_refused_413_before_queueing(make_client, tmp_path):
    runner = FakeVideoRunner()
    client = make_client(video_runner=runner, max_video_seconds=0.5)
    response = post(client, clip_bytes(tmp_path, frames=6), expect=413)  # 0.6 s
    assert "0.6 s" in response["detail"] and "limit of 0.5 s" in response["detail"]
    assert "clip.mp4" in response["detail"] and "/tmp" not in response["detail"]
    assert client.get("/api/status").json()["queued"] == 0 and not runner.calls
    assert leftovers(client) == [], "the refused upload is deleted"
    post(client, clip_bytes(tmp_path, frames=5))  # 0.5 s is within the limit
    fast = post(client, clip_bytes(tmp_path, frames=3, fps=240, name="fast.mp4"), expect=413)["detail"]
    assert "240 frames a second" in fast and "at most 120" in fast


def test_frames_over_the_pixel_limit_are_refused_413_before_decoding(make_client, tmp_path, monkeypatch):
    client = make_client(video_runner=FakeVideoRunner(), max_input_pixels=64 * 48 - 1)
    monkeypatch.setattr("vggstyle.video.reader.open_video", lambda *a, **k: pytest.fail("decoded"))
    assert "64x48 px" in post(client, clip_bytes(tmp_path, frames=2), expect=413)["detail"]
    assert leftovers(client) == []


def test_not_a_video_and_damaged_videos_are_refused(make_client, tmp_path):
    client = make_client(video_runner=FakeVideoRunner())
    text = post(client, b"this is not a video, whatever its name says\n" * 20, expect=415)["detail"]
    assert "clip.mp4" in text and "video" in text
    whole = clip_bytes(tmp_path)
    damaged = post(client, whole[: len(whole) // 2], expect=422)["detail"]  # no index: cut before it
    assert "clip.mp4" in damaged and "/tmp" not in damaged
    header_only = post(client, whole[:40], expect=422)["detail"]
    assert "clip.mp4" in header_only
    assert client.get("/api/status").json()["queued"] == 0 and leftovers(client) == []


def test_bad_video_options_are_422(make_client, tmp_path):
    client = make_client(video_runner=FakeVideoRunner(), max_iterations=50)
    assert "frame_iterations" in post(client, clip_bytes(tmp_path, 2), frame_iterations=0, expect=422)["detail"]
    assert "limit of 50" in post(client, clip_bytes(tmp_path, 2), frame_iterations=51, expect=422)["detail"]
    assert "temporal_weight" in post(client, clip_bytes(tmp_path, 2), temporal_weight="x", expect=422)["detail"]


def test_a_full_queue_answers_503_before_the_video_is_decoded(make_client, tmp_path, monkeypatch):
    runner = FakeVideoRunner(steps=2, hold_at=0)
    client = make_client(video_runner=runner, max_queue=1)
    clip = clip_bytes(tmp_path, frames=2)
    running = post(client, clip)
    assert runner.held.wait(30)
    post(client, clip)  # waits: the queue is full now

    def must_not_run(*args, **kwargs):
        raise AssertionError("the upload was decoded although the queue is full")
    monkeypatch.setattr("vggstyle.web.routes.save_video_upload", must_not_run)
    response = client.post("/api/jobs", data={"image_size": "48"},
                           files=[("content", ("c.mp4", clip, "video/mp4")), ("style", ("s.png", style_png()))])
    assert response.status_code == 503 and "queue is full" in response.json()["detail"]
    assert response.headers["retry-after"]
    runner.release.set()
    wait(client, running["id"], lambda j: j["state"] == "done")


# ------------------------------------------------------------------ the page's and the docs' view
def test_options_openapi_and_serve_document_video(make_client):
    client = make_client()
    options = client.get("/api/options").json()
    fields = {f["name"]: f for f in options["fields"]}
    assert fields["frame_iterations"]["default"] == VideoConfig().frame_iterations == 10
    assert fields["frame_iterations"]["group"] == "video"
    assert fields["temporal_weight"]["kind"] == "float" and not fields["temporal_weight"]["main"]
    assert options["limits"]["max_video_seconds"] == 10
    schema = client.get("/openapi.json").json()
    result = schema["paths"]["/api/jobs/{job_id}/result"]["get"]["responses"]["200"]["content"]
    assert set(result) == {"image/png", "video/mp4"}
    upload = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "video" in upload["properties"]["content"]["description"]
    assert "frame_iterations" in upload["properties"]
    assert build_parser().parse_args(["--max-video-seconds", "4"]).max_video_seconds == 4.0
    # A still that is no image says a video would do too.
    response = client.post("/api/jobs", files=[("content", ("c.png", b"not an image" * 10)),
                                               ("style", ("s.png", style_png()))])
    assert response.status_code == 415 and "video" in response.json()["detail"]


# ------------------------------------------------------------------ one real job
def one_thread(input, styles, output, config, **hooks):
    """The server's runner with one thread (on a shared 2-core machine two threads thrash), in fp32."""
    return default_video_runner(input, styles, output, config.replace(threads=1, precision="fp32"), **hooks)


def test_real_video_job_end_to_end(make_client, tmp_path):
    client = make_client(video_runner=one_thread, preview_every=1)
    job = post(client, clip_bytes(tmp_path, frames=3), num_iterations=3, frame_iterations=2, seed=0)
    seen = events(client, job["id"])
    final = seen[-1]
    assert final["state"] == "done", final["error"]
    steps = {(e["frame"], e["step"]) for e in seen if e["state"] == "running" and e["step"]}
    assert {f for f, _ in steps} <= {1, 2, 3} and max(s for _, s in steps) <= 3
    # the first pass (3 + 2 + 2), then the pass back revisits frames 2 and 1, the pass forward again
    # frames 2 and 3 (2 iterations each)
    assert final["frames_done"] == 3 and final["iterations_total"] == 3 + 2 + 2 + 2 * 2 + 2 * 2
    assert (final["pass"], final["passes"], final["pass_frames"], final["pass_done"]) == (3, 3, 2, 2)
    assert set(final["losses"]) >= {"content", "style", "total"}
    assert final["parameters"]["frame_iterations"] == 2 and final["parameters"]["frames_done"] == 3
    result = client.get(f"/api/jobs/{job['id']}/result")
    assert result.headers["content-type"] == "video/mp4"
    assert read_video(result.content, tmp_path) == (3, Fraction(FPS), (48, 36))
    assert leftovers(client) == []

    # Cancelled in the second frame (its iterations are many): the real run stops after the current
    # iteration and the first frame is the result.
    job = post(client, clip_bytes(tmp_path, frames=3), num_iterations=2, frame_iterations=2000, seed=0)
    wait(client, job["id"], lambda j: j["frame"] == 2 and j["step"] >= 1)
    client.delete(f"/api/jobs/{job['id']}")
    final = wait(client, job["id"], lambda j: j["state"] == "cancelled")
    assert final["frames_done"] == 1 and final["step"] < 2000
    result = client.get(f"/api/jobs/{job['id']}/result")
    assert read_video(result.content, tmp_path) == (1, Fraction(FPS), (48, 36))
    assert leftovers(client) == []


@pytest.mark.slow
def test_a_real_video_job_spread_over_a_dask_cluster(make_client, cluster, tmp_path):
    """`vggstyle serve --scheduler`: the job's chunk passes run on the cluster's workers (issue #21)."""
    client = make_client(video_runner=one_thread, scheduler=cluster.address)
    job = post(client, clip_bytes(tmp_path, frames=3), num_iterations=3, frame_iterations=2, seed=0)
    seen = events(client, job["id"])
    final = seen[-1]
    assert final["state"] == "done", final["error"]
    assert final["spread"]["total"] == 3 and final["frames_done"] == 3  # one chunk, three passes
    assert any(e["spread"] and e["spread"]["done"] < 3 for e in seen if e["state"] == "running")
    result = client.get(f"/api/jobs/{job['id']}/result")
    assert read_video(result.content, tmp_path) == (3, Fraction(FPS), (48, 36))
    assert leftovers(client) == []
