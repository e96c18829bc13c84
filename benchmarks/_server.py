"""What benchmarks/load.py and its hostile mix (_hostile.py) share: a `vggstyle serve` child process
on a free loopback port, its memory, and a client that submits one job and follows it to its end."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

try:  # the client starlette now prefers; httpx has the same API
    import httpx2 as httpx
except ImportError:
    import httpx
from PIL import Image

FINISHED = ("done", "failed", "cancelled")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def tiny_png(path: Path, side: int) -> bytes:
    image = Image.open(path).convert("RGB")
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process from /proc (Linux): VmRSS now, VmHWM its peak so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(port: int, args, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "vggstyle", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--max-queue", str(args.max_queue), "--max-upload-mb", str(args.max_upload_mb),
               "--log-level", "warning", *extra]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server did not start: {server.stderr.read().strip()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    sys.exit("the server did not answer within 60 s")


def run_job(base: str, files: list, data: dict, barrier: threading.Barrier, outcome: dict, deadline: float,
            poll: float, drop_stream: bool = False) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        barrier.wait()  # all submissions leave together
        try:
            response = client.post("/api/jobs", files=files, data=data)
        except httpx.HTTPError as exc:
            outcome["submit"] = f"error {type(exc).__name__}"
            return
        outcome["submit"] = response.status_code
        if response.status_code != 202:
            outcome["detail"] = response.json().get("detail", "")
            return
        job_id = response.json()["id"]
        if drop_stream:  # a page that goes away: open the event stream, read a little, hang up
            with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
                next(stream.iter_lines(), None)
            poll = poll or 0.5
        job = follow(client, job_id, poll, deadline)
        if job is None:
            outcome["end"] = "timed out or vanished"
            return
        outcome["end"] = job["state"]
        outcome["run_seconds"] = job["finished"] - job["started"] if job["started"] else 0.0
        if job["state"] == "done":
            result = client.get(f"/api/jobs/{job_id}/result")
            ok = result.status_code == 200 and Image.open(io.BytesIO(result.content)).format == "PNG"
            outcome["end"] = "done" if ok else "done without result"


def follow(client: httpx.Client, job_id: str, poll: float, deadline: float) -> dict | None:
    """The job's final state, from its event stream (poll=0) or by asking every ``poll`` seconds."""
    if not poll:
        try:
            with client.stream("GET", f"/api/jobs/{job_id}/events",
                               timeout=max(1.0, deadline - time.monotonic())) as stream:
                last = None
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        last = json.loads(line[5:])
                return last if last and last["state"] in FINISHED else None
        except httpx.HTTPError:
            return None
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{job_id}")
        if state.status_code != 200:
            return None
        job = state.json()
        if job["state"] in FINISHED:
            return job
        time.sleep(poll)
    return None
