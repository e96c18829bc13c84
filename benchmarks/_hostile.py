"""The hostile mix of benchmarks/load.py (issues #10 and #20): see load.py's docstring for what it does."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

from PIL import Image

from _server import EXAMPLES, free_port, httpx, rss_mb, run_job, start_server, tiny_png

BIG_SIDE = 6000  # 36 Mpx, under the server's default 40 Mpx limit
NOISE_SIDE = 2520  # an RGB PNG of noise this size is 19 MB: incompressible, as large on the wire as decoded
LARGE_UPLOADS = 20
SLOW_BODIES = 3
UPLOAD_SECONDS = 10  # the second server's --upload-seconds: how long a slow body may take


def bilevel_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (side, side), 1).save(buffer, "PNG")
    return buffer.getvalue()


def at_once(count: int, target, *args) -> list[dict]:
    """Run target(*args, barrier, outcome) in `count` threads that start together; their outcomes."""
    outcomes = [{} for _ in range(count)]
    barrier = threading.Barrier(count)
    threads = [threading.Thread(target=target, args=(*args, barrier, o)) for o in outcomes]
    for t in threads:
        t.start()
    return outcomes, threads


def big_upload(base: str, files: list, barrier, outcome: dict) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        barrier.wait()
        outcome["submit"] = client.post("/api/jobs", files=files, data={"image_size": "128"}).status_code


def half_upload(base: str) -> None:
    """Headers and part of a body, then the connection closes: the client gave up."""
    host, port = base[len("http://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 500000\r\n"
                     "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
                     + b'--b\r\nContent-Disposition: form-data; name="content"; filename="c.png"\r\n\r\n'
                     + os.urandom(20_000))
        time.sleep(0.2)


def noise_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def large_upload(base: str, files: list, data: dict, deadline: float, barrier, outcome: dict) -> None:
    """One 19 MB upload, sent with the others at once, followed to its end if accepted."""
    run_job(base, files, data, barrier, outcome, deadline, 0.5)


def slow_body(base: str, outcome: dict) -> None:
    """Headers and a little of the body, then one byte every 2 s: a slow-loris client."""
    host, port = base[len("http://"):].rsplit(":", 1)
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=UPLOAD_SECONDS * 3) as sock:
        sock.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 500000\r\n"
                     "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
                     + b'--b\r\nContent-Disposition: form-data; name="content"; filename="c.png"\r\n\r\n')
        sock.settimeout(2)
        while time.monotonic() - start < UPLOAD_SECONDS * 3:
            try:
                answer = sock.recv(4096)
                outcome["status"] = int(answer.split()[1]) if answer else "closed"
                break
            except socket.timeout:
                try:
                    sock.sendall(b"x")
                except OSError:
                    outcome["status"] = "closed"
                    break
    outcome["seconds"] = time.monotonic() - start


def large_uploads(args, files: list) -> list[tuple[str, object]]:
    """Issue #20's mix on a server with its default queue (16) and upload limit (30 MB): 20 uploads
    of a 19 MB content at once and 3 slow bodies. Rows for the table."""
    port = free_port()
    server = start_server(port, argparse_defaults(args), "--upload-seconds", str(UPLOAD_SECONDS))
    base = f"http://127.0.0.1:{port}"
    try:
        idle = rss_mb(server.pid)
        one = one_job_alone(base, args, files)
        one_job = rss_mb(server.pid, "VmHWM") - idle
        big = [("content", ("noise.png", noise_png(NOISE_SIDE), "image/png")), files[1]]
        data = {"image_size": str(args.image_size), "num_iterations": str(args.iterations)}
        deadline = time.monotonic() + args.timeout
        slow = [{} for _ in range(SLOW_BODIES)]
        slow_threads = [threading.Thread(target=slow_body, args=(base, o)) for o in slow]
        for t in slow_threads:
            t.start()
        outcomes, threads = at_once(LARGE_UPLOADS, large_upload, base, big, data, deadline)
        for t in threads + slow_threads:
            t.join()
        peak = rss_mb(server.pid, "VmHWM") - idle
        status = httpx.get(f"{base}/api/status").json()
    finally:
        server.terminate()
        server.wait(30)
    answers = Counter(o.get("submit") for o in outcomes)
    ends = Counter(o.get("end") for o in outcomes if o.get("submit") == 202)
    lost = sum(n for end, n in ends.items() if end not in ("done", "failed"))
    return [("large: one job alone: peak RSS over idle (MB)", f"{one_job:.0f}"),
            ("large: one job alone", one.get("end")),
            (f"large: {LARGE_UPLOADS} x {len(big[0][1][1]) / 1e6:.0f} MB at once: accepted", answers[202]),
            ("large: refused 503 (before being read)", answers[503]),
            ("large: answered 500 or otherwise", LARGE_UPLOADS - answers[202] - answers[503]),
            ("large: accepted and finished", ends["done"]),
            ("large: accepted and lost", lost),
            (f"large: {SLOW_BODIES} slow bodies answered", ", ".join(sorted({str(o.get('status')) for o in slow}))),
            ("large: slow bodies answered after (s)", f"{max(o.get('seconds', 0) for o in slow):.1f}"),
            ("large: uploads still held afterwards", status["uploading"]),
            ("large: peak RSS over idle (MB)", f"{peak:.0f}"),
            ("large: target: one job + 300 MB", f"{one_job + 300:.0f}")], \
        (peak <= one_job + 300 and lost == 0 and answers[202] + answers[503] == LARGE_UPLOADS
         and all(o.get("status") == 408 for o in slow) and status["uploading"] == 0)


def argparse_defaults(args):
    """The server's own defaults for queue and upload size (the hostile mix's first server shrinks them)."""
    return type(args)(**{**vars(args), "max_queue": 16, "max_upload_mb": 30.0})


def one_job_alone(base: str, args, files: list) -> dict:
    outcome = {}
    run_job(base, files, {"image_size": str(args.image_size), "num_iterations": str(args.iterations)},
            threading.Barrier(1), outcome, time.monotonic() + args.timeout, 0.0)
    return outcome


def the_mix(base: str, args, files: list) -> tuple[Counter, list]:
    """20 normal jobs at once (every 5th drops its stream), then 8 big uploads and 3 half ones."""
    data = {"image_size": str(args.image_size), "num_iterations": str(args.iterations)}
    deadline = time.monotonic() + args.timeout
    normal = [{} for _ in range(args.jobs)]
    barrier = threading.Barrier(args.jobs)
    threads = [threading.Thread(target=run_job, args=(base, files, data, barrier, o, deadline, 0.0, i % 5 == 0))
               for i, o in enumerate(normal)]
    for t in threads:
        t.start()
    while sum(1 for o in normal if "submit" in o) < args.jobs:  # every normal job answered: queue full
        time.sleep(0.05)
    big_files = [("content", ("big.png", bilevel_png(BIG_SIDE), "image/png")), files[1]]
    big, big_threads = at_once(8, big_upload, base, big_files)
    for _ in range(3):
        half_upload(base)
    for t in threads + big_threads:
        t.join()
    counts = Counter()
    for o in normal:
        ended = o.get("end")
        counts["accepted" if o.get("submit") == 202 else f"refused ({o.get('submit')})"] += 1
        if o.get("submit") == 202:
            counts["finished" if ended == "done" else "failed" if ended == "failed" else "lost"] += 1
    counts.update(f"36-Mpx upload answered {o.get('submit')}" for o in big)
    return counts, normal


def shutdown_with_streams_open(server: subprocess.Popen, base: str, files: list) -> tuple[float, int]:
    """A long job running and three pages watching it; SIGTERM; seconds until the process is gone."""
    with httpx.Client(base_url=base, timeout=30) as client:
        job = client.post("/api/jobs", files=files, data={"image_size": "128", "num_iterations": "5000"}).json()
        while client.get(f"/api/jobs/{job['id']}").json()["step"] < 1:
            time.sleep(0.1)

    def watch():
        try:
            with httpx.stream("GET", f"{base}/api/jobs/{job['id']}/events", timeout=60) as response:
                for _ in response.iter_lines():
                    pass
        except httpx.HTTPError:
            pass

    watchers = [threading.Thread(target=watch, daemon=True) for _ in range(3)]
    for w in watchers:
        w.start()
    time.sleep(0.5)
    start = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    return time.monotonic() - start, server.returncode


def hostile(args) -> int:
    files = [("content", ("content.png", tiny_png(EXAMPLES / "content" / "tubingen.jpg", args.image_size),
                          "image/png")),
             ("style", ("style.png", tiny_png(EXAMPLES / "style" / "starry_night.jpg", args.image_size),
                        "image/png"))]
    port = free_port()
    server = start_server(port, args)
    base = f"http://127.0.0.1:{port}"
    try:
        idle = rss_mb(server.pid)
        alone = one_job_alone(base, args, files)
        one_job = rss_mb(server.pid, "VmHWM") - idle
        counts, _ = the_mix(base, args, files)
        peak = rss_mb(server.pid, "VmHWM") - idle
        seconds, code = shutdown_with_streams_open(server, base, files)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    rows = [("server RSS idle (MB)", f"{idle:.0f}"), ("one job alone: peak RSS over idle (MB)", f"{one_job:.0f}"),
            ("one job alone", alone.get("end")),
            *[(f"normal jobs: {k}", counts[k]) for k in ("accepted", "refused (503)", "finished", "failed", "lost")],
            *[(k, v) for k, v in sorted(counts.items()) if k.startswith("36")],
            ("half-sent uploads", 3),
            ("mix: peak RSS over idle (MB)", f"{peak:.0f}"),
            ("target: one job + 300 MB", f"{one_job + 300:.0f}"),
            ("shutdown with a job running and 3 streams open (s)", f"{seconds:.2f}"),
            ("exit status after SIGTERM", code)]
    large_rows, large_ok = large_uploads(args, files)
    rows += large_rows
    print(f"vggstyle serve, hostile mix: {args.jobs} jobs at once, --max-queue {args.max_queue}, --max-upload-mb "
          f"{args.max_upload_mb:g}, {args.image_size} px, {args.iterations} iterations, {os.cpu_count()} CPUs")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value!s:>8}")
    ok = counts["lost"] == 0 and peak <= one_job + 300 and seconds < 5 and code == 0 and large_ok
    print("every accepted job finished, memory and shutdown within target" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit("run benchmarks/load.py --hostile")
