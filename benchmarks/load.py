"""Load benchmark for `vggstyle serve` (not a test): many jobs at once from a client on loopback.

Starts the server as a child process on a free loopback port, then for each round submits
--jobs jobs at the same instant (one thread each), follows every accepted job to its end and
fetches its result. Prints a table: accepted / refused / completed / failed / lost, and the
server's resident memory (RSS) when idle, its peak and after each round, so that growth from
round to round would show. A job is *lost* when it was accepted but never ended, vanished, or
ended without a result. Exit status 1 if any job was lost or answered unexpectedly.

    .venv/bin/python benchmarks/load.py                 # 20 jobs, queue of 8, 2 rounds, 32 px
    .venv/bin/python benchmarks/load.py --jobs 40 --max-queue 40 --image-size 64
    .venv/bin/python benchmarks/load.py --hostile       # issue #10's hostile mix, see hostile()

The hostile mix (server: --max-queue 3 --max-upload-mb 2): one job alone first (its peak RSS over
idle is "one running job's memory"), then 20 normal jobs at once of which a few drop their event
stream and poll instead, 8 concurrent 36-Mpx uploads (1-bit PNGs of ~15 KB) while the queue is
full, and a few uploads cut off half-way. Then every accepted job is followed to its end, and the
server is stopped with SIGTERM while a job runs and event streams are open. Target: no job lost,
peak RSS over idle at most one job's + 300 MB, shutdown within 5 s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
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


def start_server(port: int, args) -> subprocess.Popen:
    command = [sys.executable, "-m", "vggstyle", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--max-queue", str(args.max_queue), "--max-upload-mb", str(args.max_upload_mb),
               "--log-level", "warning"]
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


def run_round(base: str, args, files: list) -> tuple[Counter, float]:
    data = {"image_size": str(args.image_size), "num_iterations": str(args.iterations)}
    outcomes = [{} for _ in range(args.jobs)]
    barrier = threading.Barrier(args.jobs)
    deadline = time.monotonic() + args.timeout
    start = time.perf_counter()
    threads = [threading.Thread(target=run_job, args=(base, files, data, barrier, o, deadline, args.poll))
               for o in outcomes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    counts = Counter()
    runs = sorted(o["run_seconds"] for o in outcomes if o.get("end") == "done")
    counts["median job run (s)"] = f"{runs[len(runs) // 2]:.2f}" if runs else "-"
    for o in outcomes:
        if o.get("submit") == 202:
            counts["accepted"] += 1
            end = o.get("end")
            counts["completed" if end == "done" else "failed" if end == "failed" else "lost"] += 1
        elif o.get("submit") == 503:
            counts["refused (503)"] += 1
        else:
            counts["unexpected"] += 1
            print(f"unexpected answer: {o}", file=sys.stderr)
    return counts, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="jobs submitted at once, per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, to see whether memory grows")
    parser.add_argument("--max-queue", type=int, default=8, help="the server's --max-queue")
    parser.add_argument("--image-size", type=int, default=32, help="image_size of each job")
    parser.add_argument("--iterations", type=int, default=5, help="num_iterations of each job")
    parser.add_argument("--poll", type=float, default=0.0,
                        help="follow jobs by asking for their state every POLL seconds (0: the event stream)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a round may take before jobs count as lost")
    parser.add_argument("--max-upload-mb", type=float, default=30.0, help="the server's --max-upload-mb")
    parser.add_argument("--hostile", action="store_true",
                        help="the hostile mix instead of rounds (defaults then: --max-queue 3 --max-upload-mb 2 "
                             "--image-size 128 --iterations 20)")
    args = parser.parse_args(argv)
    if args.hostile:
        from _hostile import hostile  # noqa: E402 - beside this file
        for name, value in (("max_queue", 3), ("max_upload_mb", 2.0), ("image_size", 128), ("iterations", 20)):
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
        return hostile(args)

    files = [("content", ("content.png", tiny_png(EXAMPLES / "content" / "tubingen.jpg", 48), "image/png")),
             ("style", ("style.png", tiny_png(EXAMPLES / "style" / "starry_night.jpg", 48), "image/png"))]
    port = free_port()
    server = start_server(port, args)
    base = f"http://127.0.0.1:{port}"
    rows = [("server RSS at start (MB)", f"{rss_mb(server.pid):.0f}")]
    lost = 0
    try:
        for round_number in range(1, args.rounds + 1):
            counts, seconds = run_round(base, args, files)
            lost += counts["lost"] + counts["unexpected"]
            rows += [(f"round {round_number}: submitted at once", args.jobs)]
            rows += [(f"round {round_number}: {key}", counts[key])
                     for key in ("accepted", "refused (503)", "completed", "failed", "lost", "unexpected",
                                 "median job run (s)")]
            rows += [(f"round {round_number}: wall time (s)", f"{seconds:.1f}"),
                     (f"round {round_number}: server RSS after (MB)", f"{rss_mb(server.pid):.0f}")]
        rows.append(("server peak RSS (MB)", f"{rss_mb(server.pid, 'VmHWM'):.0f}"))
        status = httpx.get(f"{base}/api/status").json()
        rows.append(("results kept by the server", status["kept_results"]))
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()

    print(f"vggstyle serve under load: {args.jobs} jobs at once x {args.rounds} rounds, --max-queue "
          f"{args.max_queue}, {args.image_size} px, {args.iterations} iterations, followed by "
          f"{f'polling every {args.poll:g} s' if args.poll else 'event stream'}, {os.cpu_count()} CPUs")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>8}")
    print("every job completed or was cleanly refused" if lost == 0 else f"{lost} job(s) LOST or answered unexpectedly")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
