"""The web app against hostile or unlucky clients (issue #10's bugs 1-12), with a fake runner where
the real network adds nothing: each test failed before its fix."""

import io
import json
import logging
import socket
import threading
import functools
import time

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web app needs the [web] extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("multipart", reason="the web app needs python-multipart (the [web] extra)")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import CONTENT, STYLE, FakeRunner, png_of, post_job, wait_for_job  # noqa: E402
from vggstyle.web.server import LOOPBACK_NAMES, background_server, create_app  # noqa: E402
from vggstyle.web.uploads import Limits  # noqa: E402

try:  # the client starlette prefers; httpx has the same API
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx


wait_for = functools.partial(wait_for_job, timeout=20.0)


@pytest.fixture
def app_client():
    """app_client(runner, **limits) -> TestClient of a fresh app, shut down after the test."""
    made = []

    def make(runner=None, **limits):
        client = TestClient(create_app(Limits(**limits), runner=runner or FakeRunner()),
                            raise_server_exceptions=False)
        client.__enter__()
        made.append(client)
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)


# ------------------------------------------------------------------ 1: every size bounded
@pytest.mark.parametrize("image_size, style_scale, message", [
    (96, 1e6, "style_scale must be a finite number above 0 and at most 100, got 1000000.0"),
    (128, 40, "style_scale 40 makes the style images 5120 px on the long side, over this server's limit of 2048"),
])
def test_style_scale_is_bounded_before_any_resize(app_client, image_size, style_scale, message):
    runner = FakeRunner()
    client = app_client(runner)
    response = post_job(client, image_size=image_size, style_scale=style_scale)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert runner.calls == [] and client.app.state.jobs._jobs == {}


# ------------------------------------------------------------------ 2: no decoding without room
def bilevel_png(side: int) -> bytes:
    return png_of(Image.new("1", (side, side), 1))  # a few KB for many megapixels


def test_full_queue_refuses_before_decoding_and_decodes_one_job_at_a_time(monkeypatch):
    from PIL import ImageFile

    active, peak, decoded = [0], [0], []
    real_load = ImageFile.ImageFile.load

    def counting_load(image):  # Pillow's decoding step, wherever the server calls it from
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        decoded.append(image.size)
        try:
            time.sleep(0.05)
            return real_load(image)
        finally:
            active[0] -= 1

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    runner = FakeRunner()
    runner.gate.clear()  # the first job holds the worker until released
    with background_server(create_app(Limits(max_queue=4), runner=runner)) as url:
        def at_once(n, **params):
            outcomes = []

            def submit():
                with httpx.Client(base_url=url, timeout=30) as client:
                    outcomes.append(post_job(client, **params).status_code)

            threads = [threading.Thread(target=submit) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return sorted(outcomes)

        assert at_once(5) == [202] * 5  # one running, four waiting: the queue is full
        assert peak[0] == 1, "one image is decoded at a time, whatever arrives concurrently"
        decoded.clear()
        big = bilevel_png(3000)  # 9 Mpx, 1-bit: small on the wire, large decoded
        assert at_once(6, content=big) == [503] * 6
        assert decoded == [], "refused before any image was decoded"
        runner.gate.set()


# ------------------------------------------------------------------ 4: a mask per style, up to the limit
def test_as_many_masks_as_styles_up_to_the_style_limit(app_client):
    runner = FakeRunner()
    client = app_client(runner, max_styles=5)
    mask = png_of(Image.new("L", (64, 48), 255))
    response = post_job(client, styles=[STYLE] * 5, masks=[mask] * 5)
    assert response.status_code == 202, response.text
    wait_for(client, response.json()["id"], lambda j: j["state"] == "done")
    assert len(runner.calls[0].masks) == 5


# ------------------------------------------------------------------ 6: IPv6 loopback
def test_host_names_with_ports_and_ipv6_brackets():
    from vggstyle.web.server import host_name

    assert host_name("[::1]:8000") == "::1" and host_name("127.0.0.1:80") == "127.0.0.1"
    assert host_name("localhost") == "localhost" and host_name("evil.example:8000") == "evil.example"
    assert host_name("[::1") is None


def _ipv6_loopback() -> bool:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_a_real_server_on_ipv6_loopback_answers():
    with background_server(create_app(allowed_hosts=LOOPBACK_NAMES, runner=FakeRunner()), host="::1") as url:
        assert url.startswith("http://[::1]:")
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/api/status").status_code == 200
            refused = client.get("/api/status", headers={"Host": "evil.example"})
            assert refused.status_code == 400 and "Host header" in refused.json()["detail"]


# ------------------------------------------------------------------ 8: seed range
def test_huge_seed_is_refused_at_submit(app_client):
    response = post_job(app_client(), seed="9" * 40)
    assert response.status_code == 422 and "seed must be a whole number from 0 to" in response.json()["detail"]


# ------------------------------------------------------------------ 9: one line for an abandoned upload
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_an_abandoned_upload_is_one_log_line():
    records = _Records()
    with background_server(create_app(runner=FakeRunner())) as url:
        # After uvicorn has configured its loggers (which drops handlers added before).
        loggers = [logging.getLogger(name) for name in ("vggstyle.web", "uvicorn", "uvicorn.error")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.addHandler(records)
            lg.setLevel(logging.INFO)
        try:
            host, port = url[len("http://"):].rsplit(":", 1)
            with socket.create_connection((host, int(port))) as sock:
                head = (f"POST /api/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 100000\r\n"
                        "Content-Type: multipart/form-data; boundary=b\r\n\r\n")
                sock.sendall(head.encode() + b'--b\r\nContent-Disposition: form-data; name="content"; '
                             b'filename="c.png"\r\n\r\n' + CONTENT[:500])
                time.sleep(0.3)
            time.sleep(0.5)
        finally:
            for lg, level in zip(loggers, levels):
                lg.removeHandler(records)
                lg.setLevel(level)
    assert not [r.getMessage() for r in records.records if r.exc_info], "no traceback"
    assert [r.getMessage() for r in records.records if r.name == "vggstyle.web"] == \
        ["an upload was abandoned by its client before it was complete"]


# ------------------------------------------------------------------ 10: every refusal is JSON
def test_a_body_cut_before_its_closing_boundary_is_a_malformed_upload(app_client):
    client = app_client()
    body = (b'--b\r\nContent-Disposition: form-data; name="content"; filename="c.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + CONTENT)  # no closing --b--
    response = client.post("/api/jobs", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 400 and response.json()["detail"].startswith("malformed upload")
    garbage = client.post("/api/jobs", content=b"\x00" * 50, headers={"Content-Type": "multipart/form-data"})
    assert garbage.status_code == 400 and garbage.json()["detail"].startswith("malformed upload")


def test_host_refusal_and_internal_errors_are_json(monkeypatch):
    app = create_app(allowed_hosts=["127.0.0.1"], runner=FakeRunner())
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as client:
        rebound = client.get("/api/status", headers={"Host": "evil.example:8000"})
        assert rebound.status_code == 400 and rebound.headers["content-type"] == "application/json"
        assert "Host header" in rebound.json()["detail"]
        monkeypatch.setattr(app.state.jobs, "stats", lambda: 1 / 0)
        broken = client.get("/api/status")
        assert broken.status_code == 500 and broken.json() == {"detail": "internal error; see the server log"}


def test_every_documented_refusal_is_in_the_schema(app_client):
    schema = app_client().get("/openapi.json").json()
    assert schema["openapi"] == "3.0.3", "Swagger UI 4 renders 3.0, not 3.1"
    post = schema["paths"]["/api/jobs"]["post"]["responses"]
    assert {"400", "403", "408", "413", "415", "422", "503"} <= set(post)
    assert {"404", "409"} <= set(schema["paths"]["/api/jobs/{job_id}/result"]["get"]["responses"])


# ------------------------------------------------------------------ 11: cancelling is idempotent
def test_a_repeated_delete_keeps_the_cancelled_jobs_result(app_client):
    runner = FakeRunner(delay=0.01)
    client = app_client(runner)
    job = post_job(client, num_iterations=3000).json()
    wait_for(client, job["id"], lambda j: j["step"] >= 2)
    for _ in range(3):
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 200
    done = wait_for(client, job["id"], lambda j: j["state"] == "cancelled")
    for _ in range(2):
        again = client.delete(f"/api/jobs/{job['id']}")
        assert again.status_code == 200 and again.json()["state"] == "cancelled" and again.json()["has_result"]
    assert client.get(f"/api/jobs/{job['id']}/result").status_code == 200
    assert done["has_result"]
    busy = post_job(client, num_iterations=3000).json()
    refused = client.delete(f"/api/jobs/{busy['id']}/result")
    assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]
    client.delete(f"/api/jobs/{busy['id']}")


# ------------------------------------------------------------------ 12: the resolved device
def test_parameters_report_the_resolved_device(app_client):
    client = app_client(FakeRunner())
    job = post_job(client).json()
    done = wait_for(client, job["id"], lambda j: j["state"] == "done")
    assert done["device"] == "cpu" and done["parameters"]["device"] == "cpu"
    assert done["parameters"]["iterations_done"] == 3, "what the run reported, once it has ended"
    result = Image.open(io.BytesIO(client.get(f"/api/jobs/{job['id']}/result").content))
    assert json.loads(result.info["vggstyle"])["device"] == "cpu"


def test_jobs_the_server_stops_say_so_and_keep_no_result():
    """Shutting down cancels the running and the waiting jobs with a reason the page shows (and offers a
    re-run for), not as if the user had cancelled them."""
    import threading

    from PIL import Image

    from vggstyle.config import StyleConfig
    from vggstyle.web.jobs import STOPPED_BY_SHUTDOWN, JobQueue

    started = threading.Event()

    def waiting(content, styles, config, *, on_step, masks=None):
        started.set()
        while on_step(_FakeProgress()) is not False:
            started.wait(0.01)
        return Image.new("RGB", (16, 16))

    queue = JobQueue(["cpu"], runner=waiting)
    image = Image.new("RGB", (32, 32))
    running = queue.submit(StyleConfig(image_size=32), image, [image], (32, 32))
    waiting_job = queue.submit(StyleConfig(image_size=32), image, [image], (32, 32))
    assert started.wait(10)
    assert queue.close(10)
    for job in (running, waiting_job):
        state = queue.describe(job)
        assert state["state"] == "cancelled" and state["error"] == STOPPED_BY_SHUTDOWN, state
        assert not state["has_result"], state


class _FakeProgress:
    step, total, losses, size, elapsed, iterations_per_second = 1, 100, {"total": 1.0}, (16, 16), 0.1, 10.0
    scale, num_scales = 1, 1

    def image(self):
        from PIL import Image
        return Image.new("RGB", (16, 16))
