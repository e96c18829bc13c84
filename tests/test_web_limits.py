"""The web app against hostile clients, round two (issue #20): no request can stop the worker,
snapshots stay cheap, a full queue refuses uploads before reading them, half-sent bodies time out,
and the multipart bodies real clients send are read. Each test failed before its fix."""

import json
import socket
import time

import pytest

pytest.importorskip("fastapi", reason="the web app needs the [web] extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("multipart", reason="the web app needs python-multipart (the [web] extra)")

from conftest import CONTENT, STYLE, FakeRunner, post_job, wait_for_job  # noqa: E402
from vggstyle.config import StyleConfig  # noqa: E402
from vggstyle.web.jobs import Estimator  # noqa: E402
from vggstyle.web.server import background_server, create_app  # noqa: E402
from vggstyle.web.uploads import Limits  # noqa: E402

try:  # the client starlette prefers; httpx has the same API
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

BOUNDARY = b"vggstyleTestBoundary"


def multipart(fields=None, *, preamble=b"", epilogue=b"", boundary=BOUNDARY) -> bytes:
    """A job's body as some clients write it: files content and style, then the form fields."""
    fields = {"image_size": "32", "num_iterations": "2", **(fields or {})}
    out = preamble
    for name, data in (("content", CONTENT), ("style", STYLE)):
        out += (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name.encode() +
                b'"; filename="' + name.encode() + b'.png"\r\nContent-Type: image/png\r\n\r\n' + data + b"\r\n")
    for name, value in fields.items():
        out += (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' +
                value.encode() + b"\r\n")
    return out + b"--" + boundary + b"--\r\n" + epilogue


def raw_request(url: str, body_start: bytes, length: int) -> socket.socket:
    """A POST /api/jobs whose headers promise ``length`` bytes, of which only ``body_start`` is sent."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=" +
                 BOUNDARY + b"\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n" + body_start)
    return sock


def status_of(sock: socket.socket) -> tuple[int, dict]:
    """The response's status and JSON body (the socket's timeout bounds the wait)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


# ------------------------------------------------------------------ 1: nothing a job does stops the worker
def test_a_failure_in_the_workers_bookkeeping_does_not_stop_the_queue(make_client, monkeypatch):
    """Before: Estimator.learn's OverflowError (coarse_iterations_factor=1e200) was raised outside the
    worker's try block, the thread died and every later job waited forever."""
    def overflowing(self, job):
        raise OverflowError("(34, 'Numerical result out of range')")

    monkeypatch.setattr(Estimator, "learn", overflowing)
    client = make_client(runner=FakeRunner())
    ids = [post_job(client).json()["id"] for _ in range(3)]
    for job_id in ids:
        job = wait_for_job(client, job_id, lambda j: j["state"] in ("done", "failed"), timeout=20)
        assert job["state"] == "done" and job["has_result"]
    assert client.get("/api/status").json()["queued"] == 0


def test_snapshots_do_not_recompute_the_scale_schedule(make_client, monkeypatch):
    """Before: every snapshot and ETA recomputed scale_schedule under the queue's lock (with
    scale_steps=10000000 that stalled /api/status for seconds)."""
    calls = []
    real = StyleConfig.scale_schedule
    monkeypatch.setattr(StyleConfig, "scale_schedule", lambda self: calls.append(1) or real(self))
    runner = FakeRunner()
    runner.gate.clear()
    client = make_client(runner=runner)
    first, second = (post_job(client, scales="16,24", min_scale=16).json() for _ in range(2))
    calls.clear()
    for _ in range(50):
        client.get(f"/api/jobs/{first['id']}")
        client.get(f"/api/jobs/{second['id']}")
        client.get("/api/status")
    runner.gate.set()
    assert len(calls) <= 2, f"scale_schedule computed {len(calls)} times for 100 snapshots"


def test_the_eta_comes_from_the_speed_after_the_first_iteration(make_client):
    """Before: the time before the first iteration (network, style targets, a first-run kernel
    calibration) was extrapolated over every iteration: 100 s of setup and 0.1 s per iteration
    gave an ETA of hours for 300 iterations instead of half a minute."""
    class SlowStart(FakeRunner):
        def __call__(self, content, styles, config, *, on_step, masks=None):
            for step in range(1, config.iterations + 1):
                self.gate.wait()
                progress = type("P", (), dict(step=step, total=config.iterations, size=content.size,
                                              losses={"content": 1.0, "style": 1.0, "tv": 1.0, "total": 3.0},
                                              elapsed=100.0 + 0.1 * step, iterations_per_second=1.0, scale=1,
                                              num_scales=1, image=lambda self: content))()
                if step == 10:
                    self.gate.clear()  # hold here while the test reads the ETA
                on_step(progress)
            return content.copy()

    runner = SlowStart()
    client = make_client(runner=runner)
    job = post_job(client, num_iterations=300).json()
    state = wait_for_job(client, job["id"], lambda j: j["step"] == 10, timeout=20)
    runner.gate.set()
    assert state["eta_seconds"] == pytest.approx(0.1 * 290, rel=0.05)


# ------------------------------------------------------------------ 4: uploads refused before they are read
def test_uploads_being_read_hold_their_place_in_the_queue():
    """With the queue's room taken by uploads still arriving, another client is refused at once,
    before its body is read. Before: the room was checked against waiting jobs only, so any number
    of bodies were read at once (20 concurrent 19 MB uploads: +600 MB) and refused only afterwards."""
    runner = FakeRunner()
    runner.gate.clear()
    with background_server(create_app(Limits(max_queue=2), runner=runner)) as url:
        body = multipart()
        held = [raw_request(url, body[:1000], len(body)) for _ in range(3)]  # one for the idle worker
        time.sleep(0.5)
        late = raw_request(url, body[:1000], len(body))
        started = time.monotonic()
        code, answer = status_of(late)
        assert code == 503 and "queue is full" in answer["detail"]
        assert time.monotonic() - started < 2, "refused without waiting for the body"
        for sock in held:  # the held uploads complete and are queued
            sock.sendall(body[1000:])
        assert [status_of(sock)[0] for sock in held] == [202, 202, 202]
        for sock in [*held, late]:
            sock.close()
        runner.gate.set()


def test_half_sent_uploads_time_out_and_give_their_place_back():
    """Before: a body that stopped arriving (or arrived a byte every few seconds) was waited for
    forever, holding a connection and, now, a place in the queue."""
    with background_server(create_app(Limits(upload_seconds=2), runner=FakeRunner())) as url:
        body = multipart()
        stalled = raw_request(url, body[:500], len(body))
        started = time.monotonic()
        code, answer = status_of(stalled)
        assert code == 408 and "too slow" in answer["detail"]
        assert time.monotonic() - started < 1.5, "a pause of a quarter of upload_seconds ends it"

        trickle = raw_request(url, body[:500], len(body))
        started, code = time.monotonic(), None
        trickle.settimeout(0.3)
        for byte in body[500:]:
            try:
                trickle.sendall(bytes([byte]))
            except OSError:  # the server answered and closed
                break
            try:
                code = int(trickle.recv(4096).split()[1])
                break
            except socket.timeout:
                continue
        assert code == 408 and 1.5 < time.monotonic() - started < 4
        for sock in (stalled, trickle):
            sock.close()
        assert httpx.get(url + "/api/status").json()["uploading"] == 0
        with httpx.Client(base_url=url) as client:
            assert post_job(client).status_code == 202


# ------------------------------------------------------------------ 8: the multipart bodies clients send
@pytest.mark.parametrize("case", ["epilogue", "preamble", "content type in capitals"])
def test_multipart_bodies_as_the_rfc_allows_them(make_client, case):
    client = make_client(runner=FakeRunner())
    content_type = "multipart/form-data; boundary=" + BOUNDARY.decode()
    body = {"epilogue": lambda: multipart(epilogue=b"x" * 1000),
            "preamble": lambda: multipart(preamble=b"This is a preamble: clients may ignore it.\r\n"),
            "content type in capitals": multipart}[case]()
    if case == "content type in capitals":
        content_type = "Multipart/Form-Data; boundary=" + BOUNDARY.decode()
    response = client.post("/api/jobs", content=body, headers={"content-type": content_type})
    assert response.status_code == 202, response.text
    cut = client.post("/api/jobs", content=body[:-60 - (1000 if case == "epilogue" else 0)],
                      headers={"content-type": content_type})
    assert cut.status_code == 400 and "ends before its closing boundary" in cut.json()["detail"]
