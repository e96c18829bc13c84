"""The HTTP API of `vggstyle serve`, through FastAPI's TestClient: real jobs on tiny images."""

import io
import json
import math
import functools
import os
import stat
import sys
import time

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web app needs the [web] extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("multipart", reason="the web app needs python-multipart (the [web] extra)")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import wait_for_job  # noqa: E402
from vggstyle import StyleConfig  # noqa: E402
from vggstyle.cli.serve import main  # noqa: E402
from vggstyle.web.server import create_app  # noqa: E402
from vggstyle.web.uploads import Limits  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
LONG = "3000"  # iterations of a job meant to be cancelled, never finished


def png(path, side, fmt="PNG") -> bytes:
    image = Image.open(os.path.join(EXAMPLES, path)).convert("RGB")
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def content():
    return png("content/tubingen.jpg", 48)  # 48x36


@pytest.fixture(scope="module")
def style():
    return png("style/starry_night.jpg", 40)


@pytest.fixture(scope="module")
def style2():
    return png("style/shipwreck.jpg", 40)


def files(content, *styles, content_name="c.png"):
    out = [("content", (content_name, content, "image/png"))]
    out += [("style", (f"s{i}.png", s, "image/png")) for i, s in enumerate(styles)]
    return out


def submit(client, content, styles, expect=202, **params):
    response = client.post("/api/jobs", files=files(content, *styles),
                           data={k: str(v) for k, v in {"image_size": 32, "num_iterations": 3, **params}.items()})
    assert response.status_code == expect, response.text
    return response.json()


wait = functools.partial(wait_for_job, timeout=60.0)


def events(client, job_id):
    with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]


def read_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


# ------------------------------------------------------------------------ a job, start to end
def test_full_job_progress_preview_and_result(make_client, content, style):
    client = make_client(preview_every=2)
    job = submit(client, content, [style], image_size=48, num_iterations=8, content_weight=2, seed=1)
    assert job["state"] in ("queued", "running") and len(job["id"]) >= 20
    assert job["total"] == 8 and job["size"] == [48, 36]
    assert job["parameters"]["content_weight"] == 2.0

    seen = events(client, job["id"])
    assert seen[-1]["state"] == "done"
    running = [e for e in seen if e["state"] == "running" and e["step"] > 0]
    steps = [e["step"] for e in running]
    assert steps and steps == sorted(steps) and seen[-1]["step"] == 8  # snapshots: not every step
    for event in running:
        assert set(event["losses"]) == {"content", "style", "tv", "range", "total"}
        assert all(math.isfinite(v) for v in event["losses"].values())
        assert event["size"] == event["working_size"] == [48, 36] and event["total"] == 8
        assert event["iterations_per_second"] > 0
        # From the speed after the first iteration (which also pays for the network and targets).
        assert event["eta_seconds"] is None if event["step"] == 1 else event["eta_seconds"] >= 0
        assert event["queue_position"] is None
    assert seen[-1]["losses"]["total"] < running[0]["losses"]["total"], "the loss falls"
    assert seen[-1]["preview_version"] >= 3  # step 1, then every 2nd: 2, 4, 6

    final = client.get(f"/api/jobs/{job['id']}").json()
    assert final["state"] == "done" and final["eta_seconds"] == 0 and final["has_result"]
    response = client.get(f"/api/jobs/{job['id']}/result")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert "attachment" in response.headers["content-disposition"]
    result = read_png(response.content)
    assert result.size == (48, 36) and result.mode == "RGB"
    parameters = json.loads(result.info["vggstyle"])
    assert parameters["iterations_done"] == 8 and parameters["image_size"] == 48
    assert parameters["content_weight"] == 2.0 and parameters["seed"] == 1
    # After the end, the preview is the result itself.
    assert client.get(f"/api/jobs/{job['id']}/preview").content == response.content


def test_preview_while_running_and_two_styles_blended(make_client, content, style, style2):
    client = make_client(preview_every=1)
    job = submit(client, content, [style, style2], num_iterations=LONG, style_blend_weights="3,7")
    assert job["parameters"]["style_blend_weights"] == [3.0, 7.0]
    job = wait(client, job["id"], lambda j: j["preview_version"] >= 2)
    first = client.get(f"/api/jobs/{job['id']}/preview")
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    assert read_png(first.content).size == (32, 24)
    wait(client, job["id"], lambda j: j["preview_version"] >= job["preview_version"] + 2)
    second = client.get(f"/api/jobs/{job['id']}/preview").content
    assert second != first.content, "the preview follows the optimization"
    assert client.get(f"/api/jobs/{job['id']}/result").status_code == 409  # not yet
    client.delete(f"/api/jobs/{job['id']}")


def mask_png(size, left_white: bool) -> bytes:
    width, height = size
    image = Image.new("L", size, 0 if left_white else 255)
    image.paste(255 if left_white else 0, (0, 0, width // 2, height))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_style_masks_are_uploaded_one_per_style(make_client, content, style, style2):
    seen = {}

    def recording(content_image, styles, config, *, on_step, masks=None):
        from vggstyle.web.jobs import default_runner
        seen["masks"] = masks
        return default_runner(content_image, styles, config, on_step=on_step, masks=masks)

    client = make_client(runner=recording)
    masks = [("style_mask", ("left.png", mask_png((96, 72), True), "image/png")),
             ("style_mask", ("right.png", mask_png((96, 72), False), "image/png"))]
    response = client.post("/api/jobs", files=files(content, style, style2) + masks,
                           data={"image_size": "32", "num_iterations": "3"})
    assert response.status_code == 202, response.text
    job = wait(client, response.json()["id"], lambda j: j["state"] in ("done", "failed"))
    assert job["state"] == "done", job
    # Stretched to the job's size, gray, in the order sent: left white first.
    first, second = seen["masks"]
    assert first.mode == second.mode == "L" and first.size == second.size == (32, 24)
    assert first.getpixel((2, 12)) == 255 and first.getpixel((29, 12)) == 0
    assert second.getpixel((2, 12)) == 0 and second.getpixel((29, 12)) == 255
    result = json.loads(read_png(client.get(f"/api/jobs/{job['id']}/result").content).info["vggstyle"])
    assert result["style_masks"] == ["<style mask 1 in memory>", "<style mask 2 in memory>"]
    assert client.app.state.jobs._jobs[job["id"]].masks is None, "dropped once the job has run"


@pytest.mark.parametrize("case, status, message", [
    ("one_for_two", 422, "1 style mask(s) for 2 style image(s)"),
    ("as_text", 422, "style_mask must be a file"),
    ("not_image", 415, "style mask 1 'm.png': not an image"),
])
def test_bad_style_masks_are_refused(make_client, content, style, style2, case, status, message):
    client = make_client()
    mask = ("style_mask", ("m.png", mask_png((48, 36), True), "image/png"))
    if case == "one_for_two":
        response = client.post("/api/jobs", files=files(content, style, style2) + [mask])
    elif case == "as_text":
        response = client.post("/api/jobs", files=files(content, style), data={"style_mask": "left.png"})
    else:
        response = client.post("/api/jobs", files=files(content, style) + [("style_mask", ("m.png", b"%PDF", "image/png"))])
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert client.app.state.jobs._jobs == {}


# ------------------------------------------------------------------------ cancel and queue
def test_cancel_running_job_keeps_partial_result(make_client, content, style):
    client = make_client()
    job = submit(client, content, [style], num_iterations=LONG)
    wait(client, job["id"], lambda j: j["step"] >= 2)
    response = client.delete(f"/api/jobs/{job['id']}")
    assert response.status_code == 200 and response.json()["cancel_requested"]
    done = wait(client, job["id"], lambda j: j["state"] != "running", timeout=10)
    assert done["state"] == "cancelled" and 2 <= done["step"] < int(LONG)
    result = read_png(client.get(f"/api/jobs/{job['id']}/result").content)
    assert json.loads(result.info["vggstyle"])["iterations_done"] == done["step"]
    # Discarding is explicit: the result and its file go.
    assert client.delete(f"/api/jobs/{job['id']}/result").json() == {"detail": "discarded"}
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    assert list(client.app.state.jobs.directory.iterdir()) == []


def test_queue_runs_in_order_with_positions_eta_and_cancel(make_client, content, style):
    client = make_client(max_queue=4)
    warm = events(client, submit(client, content, [style], num_iterations=2)["id"])
    assert warm[-1]["state"] == "done"  # the speed measured on it gives the waiting jobs an ETA

    long_job = submit(client, content, [style], num_iterations=LONG)
    wait(client, long_job["id"], lambda j: j["state"] == "running")
    queued = [submit(client, content, [style], num_iterations=n) for n in (2, 2, 3)]
    states = [client.get(f"/api/jobs/{j['id']}").json() for j in queued]
    assert [s["state"] for s in states] == ["queued"] * 3
    assert [s["queue_position"] for s in states] == [1, 2, 3]
    assert all(s["eta_seconds"] is not None and s["eta_seconds"] > 0 for s in states)
    # Ordered at any one moment: read all three under the queue's lock (the running job's own estimate
    # moves between separate requests as it measures itself, which made this test flaky).
    jobs = client.app.state.jobs
    with jobs.lock:
        etas = [jobs.describe(jobs.get(j["id"]))["eta_seconds"] for j in queued]
    assert all(e is not None and e > 0 for e in etas) and etas[0] < etas[1] < etas[2]

    cancelled = client.delete(f"/api/jobs/{queued[1]['id']}").json()
    assert cancelled["state"] == "cancelled" and not cancelled["has_result"]
    assert client.get(f"/api/jobs/{queued[2]['id']}").json()["queue_position"] == 2
    client.delete(f"/api/jobs/{long_job['id']}")

    first = wait(client, queued[0]["id"], lambda j: j["state"] == "done")
    last = wait(client, queued[2]["id"], lambda j: j["state"] == "done")
    assert first["finished"] <= last["started"], "one worker, jobs in the order they came"
    assert client.get(f"/api/jobs/{queued[1]['id']}").json()["step"] == 0, "a cancelled waiting job never ran"
    assert client.get("/api/status").json()["queued"] == 0


def test_full_queue_answers_503(make_client, content, style):
    client = make_client(max_queue=1)
    running = submit(client, content, [style], num_iterations=LONG)
    wait(client, running["id"], lambda j: j["state"] == "running")
    waiting = submit(client, content, [style])
    response = client.post("/api/jobs", files=files(content, style), data={"image_size": "32"})
    assert response.status_code == 503
    assert "queue is full" in response.json()["detail"] and int(response.headers["retry-after"]) > 0
    client.delete(f"/api/jobs/{waiting['id']}")
    client.delete(f"/api/jobs/{running['id']}")
    wait(client, running["id"], lambda j: j["state"] == "cancelled", timeout=10)
    submit(client, content, [style])  # room again


def test_failing_job_is_marked_failed_and_the_worker_goes_on(make_client, content, style):
    import vggstyle

    calls = []

    def runner(content, styles, config, *, on_step):
        calls.append(config.num_iterations)
        if config.num_iterations == 5:
            raise RuntimeError("boom")
        if config.num_iterations == 6:
            raise vggstyle.ImageError("style image: something the user can fix")
        return vggstyle.stylize(content, styles, config, on_step=on_step)

    client = make_client(runner=runner)
    bad = submit(client, content, [style], num_iterations=5)
    user = submit(client, content, [style], num_iterations=6)
    good = submit(client, content, [style], num_iterations=2)
    assert events(client, good["id"])[-1]["state"] == "done"
    bad = client.get(f"/api/jobs/{bad['id']}").json()
    assert bad["state"] == "failed" and bad["error"].startswith("internal error (RuntimeError: boom)")
    user = client.get(f"/api/jobs/{user['id']}").json()
    assert user["state"] == "failed" and user["error"] == "style image: something the user can fix"
    response = client.get(f"/api/jobs/{bad['id']}/result")
    assert response.status_code == 409 and "boom" in response.json()["detail"]
    assert calls == [5, 6, 2]


def test_results_kept_bounded_in_a_private_directory(make_client, content, style):
    client = make_client(keep_results=1)
    directory = client.app.state.jobs.directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    first = submit(client, content, [style], num_iterations=1)
    assert events(client, first["id"])[-1]["state"] == "done"
    assert [p.name for p in directory.iterdir()] == ["result-000001.png"]
    second = submit(client, content, [style], num_iterations=1)
    assert events(client, second["id"])[-1]["state"] == "done"
    assert client.get(f"/api/jobs/{first['id']}").status_code == 404, "only the newest result is kept"
    assert [p.name for p in directory.iterdir()] == ["result-000002.png"]

    with TestClient(create_app(Limits(keep_minutes=0.0005))) as expiring:  # kept 30 ms
        directory = expiring.app.state.jobs.directory
        job = submit(expiring, content, [style], num_iterations=1)
        assert events(expiring, job["id"])[-1]["state"] == "done"
        time.sleep(0.1)
        assert expiring.get(f"/api/jobs/{job['id']}").status_code == 404
        assert list(directory.iterdir()) == []
        done = submit(expiring, content, [style], num_iterations=1)
        assert events(expiring, done["id"])[-1]["state"] == "done"
        assert directory.exists()
    assert not directory.exists(), "shutting down removes the results"


def test_unknown_job_ids(make_client):
    client = make_client()
    for method, path in [("GET", ""), ("GET", "/preview"), ("GET", "/result"), ("GET", "/events"), ("DELETE", "")]:
        response = client.request(method, f"/api/jobs/not-a-job{path}")
        assert response.status_code == 404, (method, path)
        assert "no such job" in response.json()["detail"]


# ------------------------------------------------------------------------ refusals
def truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def too_small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 40), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case, status, message", [
    ("not_image", 415, "not an image"),
    ("empty", 422, "is empty"),
    ("truncated_png", 422, "truncated"),
    ("truncated_jpeg", 422, "truncated"),
    ("too_small", 422, "too small"),
    ("too_many_pixels", 413, "over this server's limit of 1,000 pixels"),
    ("too_many_bytes", 413, "over this server's limit of 0.01 MB"),
    ("bad_style", 415, "style image 1 's0.png': not an image"),
])
def test_bad_uploads_are_refused_before_the_worker(make_client, content, style, case, status, message):
    limits = {"too_many_pixels": {"max_input_pixels": 1000}, "too_many_bytes": {"max_upload_mb": 0.01}}.get(case, {})
    client = make_client(**limits)
    jpeg = png("content/tubingen.jpg", 48, "JPEG")
    bad = {"not_image": b"%PDF-1.4 not an image at all", "empty": b"", "truncated_png": truncated(content),
           "truncated_jpeg": truncated(jpeg), "too_small": too_small_png(), "too_many_pixels": content,
           "too_many_bytes": content + os.urandom(20_000), "bad_style": content}[case]
    parts = files(content, b"GIF89a garbage") if case == "bad_style" else files(bad, style, content_name="c.png")
    response = client.post("/api/jobs", files=parts, data={"image_size": "32"})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert "\n" not in response.json()["detail"]
    assert client.app.state.jobs._jobs == {}, "nothing reached the queue"


@pytest.mark.parametrize("params, message", [
    ({"content_weight": "abc"}, "content_weight must be a number, got 'abc'"),
    ({"num_iterations": "1.5"}, "num_iterations must be a whole number"),
    # The config's messages in the form's words (num_iterations, not --num-iterations).
    ({"num_iterations": "0"}, "num_iterations must be a whole number from 1 to 1,000,000, got 0"),
    ({"content_weight": "0", "style_weight": "0"}, "content_weight and style_weight are both 0: nothing to optimize"),
    ({"style_blend_weights": "1,2"}, "style_blend_weights has 2 values for 1 style image(s)"),
    ({"optimizer": "sgd"}, "unknown optimizer 'sgd': choose one of lbfgs, adam"),
    # Numbers whose derived values overflowed (issue #20, 3): one line, never a 500.
    ({"image_size": "1" + "0" * 400}, "image_size must be a whole number from 16 to 16,384, got 10000"),
    ({"image_size": "99999999999999999999"}, "image_size must be a whole number from 16 to 16,384"),
    ({"scales": "1e400"}, "scales must be whole numbers from 16 to 16,384, got inf"),
    ({"scales": "nan"}, "scales must be whole numbers from 16 to 16,384, got nan"),
    ({"scales": "16,32", "coarse_iterations_factor": "1e200"},
     "coarse_iterations_factor must be a finite number from 0.01 to 100, got 1e+200"),
    ({"min_scale": "16", "scale_steps": "10000000"}, "scale_steps must be a whole number from 1 to 32"),
    ({"epochs": "1000", "steps_per_epoch": "100000"}, "100,000,000 iterations, more than 1,000,000"),
    ({"style_layers": "relu4_11"}, "relu4_1"),  # did you mean
    ({"image_sise": "64"}, "unknown field 'image_sise'; did you mean image_size?"),
    ({"device": "cuda"}, "device is set by the server"),
    ({"threads": "64"}, "threads is set by the server"),
    ({"weights": "/etc/passwd"}, "weights names files on the server"),
    ({"weights_source": "torchvision"}, "weights_source is set by the server"),
    ({"max_input_pixels": "1e12"}, "max_input_pixels is set by the server"),
    ({"checkpoint": "off"}, "checkpoint is set by the server"),
    ({"init": "/etc/passwd"}, "init must be one of content, random here"),
    ({"style_masks": "/etc/passwd"}, "send the masks as files in the field 'style_mask'"),
    ({"image_size": "4096"}, "image_size 4096 is over this server's limit of 2048 px"),
    ({"num_iterations": "100000"}, "100000 iterations is over this server's limit of 5000"),
    ({"image_size": "16", "style_scale": "0.5"}, "too small for layer relu5_1"),
])
def test_bad_parameters_are_422_with_the_config_message(make_client, content, style, params, message):
    client = make_client()
    response = client.post("/api/jobs", files=files(content, style), data=params)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert "--" not in response.json()["detail"], "no command-line flags in the web's messages"
    assert client.app.state.jobs._jobs == {}


def test_malformed_requests(make_client, content, style):
    client = make_client(max_styles=2)
    post = client.post
    assert post("/api/jobs", json={"content": "x"}).status_code == 415
    no_content = post("/api/jobs", files=[("style", ("s.png", style, "image/png"))])
    assert no_content.status_code == 422 and "content" in no_content.json()["detail"]
    no_style = post("/api/jobs", files=files(content))
    assert no_style.status_code == 422 and "style" in no_style.json()["detail"]
    two_contents = post("/api/jobs", files=files(content, style) + [("content", ("d.png", content, "image/png"))])
    assert two_contents.status_code == 422 and "exactly one content" in two_contents.json()["detail"]
    many = post("/api/jobs", files=files(content, style, style, style))
    assert many.status_code == 422 and "3 style images; this server takes at most 2" in many.json()["detail"]
    too_many_files = post("/api/jobs", files=files(content, *[style] * 5))
    assert too_many_files.status_code == 422 and "too many files" in too_many_files.json()["detail"]
    as_text = post("/api/jobs", files=files(content, style) + [("image_size", ("x.txt", b"64", "text/plain"))])
    assert as_text.status_code == 422 and "form field, not a file" in as_text.json()["detail"]
    cross = post("/api/jobs", files=files(content, style), headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    assert client.delete("/api/jobs/x", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.app.state.jobs._jobs == {}


def test_loopback_server_answers_only_loopback_names(content, style):
    app = create_app(allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/api/status").status_code == 200
        rebound = client.post("/api/jobs", files=files(content, style), headers={"Host": "evil.example:8000"})
        assert rebound.status_code == 400
        assert app.state.jobs._jobs == {}


def test_body_without_length_is_cut_at_the_limit(make_client, content):
    client = make_client(max_upload_mb=0.01)
    boundary = "vggstyleboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="c.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()

    def chunks():  # a streamed body: no Content-Length, just chunks
        yield head
        for _ in range(40):
            yield os.urandom(1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/api/jobs", content=chunks(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and "0.01 MB" in response.json()["detail"]


# ------------------------------------------------------------------------ the page and its form
def test_form_values_are_converted_by_the_option_kind():
    from vggstyle.web.uploads import config_from_form

    limits = Limits()
    config = config_from_form({"content_weight": "2.5", "num_iterations": "7", "seed": " 3 ", "learning_rate": "",
                               "style_layers": "relu1_1,relu2_1:0.5", "style_blend_weights": "3,7",
                               "optimizer": "adam"}, 2, limits)
    assert config.content_weight == 2.5 and config.num_iterations == 7 and config.seed == 3
    assert config.learning_rate is None, "an empty field means the default"
    assert config.style_layers == {"relu1_1": 1.0, "relu2_1": 0.5}
    assert config.style_blend_weights == [3.0, 7.0] and config.optimizer == "adam"
    assert config.max_input_pixels == limits.max_input_pixels
    assert config_from_form({"single_scale": "true"}, 1, limits).single_scale is True
    assert config_from_form({"single_scale": "off"}, 1, limits).single_scale is False
    with pytest.raises(Exception, match="single_scale must be true or false"):
        config_from_form({"single_scale": "maybe"}, 1, limits)


def test_options_are_built_from_style_config(make_client):
    client = make_client(max_image_size=600)
    options = client.get("/api/options").json()
    names = [f["name"] for f in options["fields"]]
    assert names == ["content_weight", "style_weight", "tv_weight", "range_weight", "image_size", "style_scale",
                     "style_blend_weights", "init", "optimizer", "learning_rate", "ema_decay", "num_iterations",
                     "epochs", "steps_per_epoch", "seed", "style_loss", "original_colors", "single_scale",
                     "coarse_to_fine_above", "min_scale", "scale_steps", "scales", "half_size_share",
                     "coarse_iterations_factor",
                     "content_layers", "style_layers", "pooling",
                     "temporal_weight", "frame_iterations"]  # then the video ones (a video content only)
    assert {"content_weight", "style_weight", "image_size", "num_iterations", "style_layers"} <= set(names)
    defaults = StyleConfig()
    by_name = {f["name"]: f for f in options["fields"]}
    assert by_name["style_weight"]["default"] == defaults.style_weight
    assert by_name["num_iterations"]["default"] == defaults.iterations
    assert by_name["style_layers"]["default"] == defaults.to_dict()["style_layers"]
    assert by_name["optimizer"]["choices"] == ["lbfgs", "adam"]
    assert by_name["init"]["choices"] == ["content", "random"]
    assert {"fast", "balanced", "best"} <= set(options["presets"])
    assert options["presets"]["best"]["image_size"] == 600, "presets stay within the server's limits"
    assert options["limits"]["max_image_size"] == 600


def test_page_static_files_and_openapi(make_client):
    client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="content-file"' in page.text and 'id="style-files"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/static/../server.py").status_code == 404
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["image_size"]["type"] == "integer"
    assert body["properties"]["content"]["format"] == "binary"
    assert "device" not in body["properties"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers
    # Swagger UI served from the package, not a CDN: the docs page works offline.
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    assert client.get("/api/status").headers["x-content-type-options"] == "nosniff"


def test_serve_with_a_scheduler_needs_distributed_and_says_so(capsys, monkeypatch):
    """`vggstyle serve --scheduler` (issue #21) without Dask's package: one line and exit 2 at once."""
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the [cluster] extra were not installed
    monkeypatch.setattr("vggstyle.cli.serve.serve_until_signal", lambda *a: pytest.fail("it served"))
    with pytest.raises(SystemExit) as info:
        main(["--scheduler", "tcp://127.0.0.1:8786", "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err[-1] == ("vggstyle serve: error: --scheduler needs Dask's distributed "
                                                "package: pip install 'vggstyle[cluster]'")
    assert err[0].startswith("usage: vggstyle serve")  # argparse's usage, then that one line


def test_serve_command_line(capsys):
    import socket

    from vggstyle.cli import main as cli_main

    with pytest.raises(SystemExit) as info:
        cli_main(["serve", "--port", "70000"])
    assert info.value.code == 2 and "--port must be 0..65535" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--max-queue", "0"])
    assert info.value.code == 2 and "--max-queue must be a whole number from 1 to 10,000" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--device", "gpu"])
    assert info.value.code == 2 and "unknown --device 'gpu'" in capsys.readouterr().err
    import sys

    real = sys.modules.get("fastapi")
    sys.modules["fastapi"] = None  # as if the [web] extra were not installed
    try:
        assert main(["--port", "0"]) == 2
    finally:
        sys.modules["fastapi"] = real
    assert "needs the web extra" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
