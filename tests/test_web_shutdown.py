"""`vggstyle serve` as a real process on 127.0.0.1: SIGTERM with a job running and a page watching
it, and Ctrl-C on an idle server, both end quickly and cleanly (issue #10, bugs 5 and 9)."""

import json
import signal
import socket
import threading
import time

import pytest

from conftest import EXAMPLES, results_dirs, stop

pytest.importorskip("fastapi", reason="the web app needs the [web] extra")
pytest.importorskip("uvicorn", reason="the web app needs uvicorn (the [web] extra)")
try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx


def small_job_files():
    from PIL import Image
    import io

    def png(path):
        image = Image.open(EXAMPLES / path).convert("RGB")
        image.thumbnail((64, 64))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    return [("content", ("c.png", png("content/tubingen.jpg"), "image/png")),
            ("style", ("s.png", png("style/starry_night.jpg"), "image/png"))]


@pytest.mark.slow
def test_sigterm_with_a_running_job_and_open_streams_exits_0_within_5_s(tmp_path, serve):
    process, url = serve()
    assert len(results_dirs(tmp_path)) == 1
    files = small_job_files()
    with httpx.Client(base_url=url, timeout=30) as client:
        # Iterations of a few tenths of a second: the job is still running when the stream sees the stop.
        data = {"image_size": "384", "num_iterations": "5000"}
        running = client.post("/api/jobs", files=files, data=data).json()
        waiting = client.post("/api/jobs", files=files, data=data).json()
        deadline = time.monotonic() + 120
        while client.get(f"/api/jobs/{running['id']}").json()["step"] < 1:  # the network is loaded, it runs
            assert time.monotonic() < deadline
            time.sleep(0.1)
    streams = []

    def watch(job_id):  # a page following the job: its stream must end, not hold the shutdown
        with httpx.stream("GET", f"{url}/api/jobs/{job_id}/events", timeout=30) as response:
            events, name = [], "message"
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    events.append((name, json.loads(line[5:])))
                    name = "message"
            streams.append(events)

    watchers = [threading.Thread(target=watch, args=(j["id"],)) for j in (running, waiting)]
    for w in watchers:
        w.start()
    time.sleep(0.5)
    seconds, stderr = stop(process, signal.SIGTERM)
    for w in watchers:
        w.join(10)
    assert process.returncode == 0, stderr
    assert seconds < 5, f"took {seconds:.1f} s"
    assert "Traceback" not in stderr and "terminate called" not in stderr, stderr
    assert results_dirs(tmp_path) == [], "the results directory is removed"
    assert len(streams) == 2, "both event streams ended"
    for events in streams:  # and each ended on its job's last state, which the page shows (issue #20, 6)
        name, last = events[-1]
        assert "shutting down" in last["error"], events[-1]
        assert last["state"] == "cancelled" or name == "stopping", events[-1]


@pytest.mark.slow
def test_sigterm_with_a_half_sent_upload_answers_it_and_exits_at_once(tmp_path, serve):
    """Before: the upload was waited for until uvicorn cut it (4.4 s), logging CancelledError."""
    process, url = serve()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b"
                 b"\r\nContent-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1")
    time.sleep(0.5)
    seconds, stderr = stop(process, signal.SIGTERM)
    answer = sock.recv(4096)
    sock.close()
    assert process.returncode == 0 and seconds < 2.5, (seconds, stderr)
    assert answer.startswith(b"HTTP/1.1 503") and b"shutting down" in answer, answer
    assert "Traceback" not in stderr and "CancelledError" not in stderr and " 500" not in stderr, stderr


def test_ctrl_c_on_an_idle_server_exits_130_without_a_traceback(tmp_path, serve):
    process, _ = serve()
    seconds, stderr = stop(process, signal.SIGINT)
    assert process.returncode == 130, stderr
    assert seconds < 5 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert results_dirs(tmp_path) == []
