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
server is stopped with SIGTERM while a job runs and event streams are open. Then (issue #20) a
second server with the default queue (16) and upload limit (30 MB) and --upload-seconds 10 gets
20 uploads of a 19 MB content at once (noise: as large on the wire as decoded) while 3 slow-loris
clients send a byte every 2 s. Targets: no job lost, no 500, peak RSS over idle at most one job's
+ 300 MB in both mixes, the slow bodies answered 408, shutdown within 5 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import Counter

from _server import EXAMPLES, httpx, rss_mb, run_job, start_server, free_port, tiny_png  # beside this file

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
