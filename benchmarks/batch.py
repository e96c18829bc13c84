"""Batch throughput (not a test): the same 8 pairs on this machine and on a local Dask cluster.

Modes, each in a fresh process: this machine sequentially (one job at a time, torch on all
physical cores); Dask with 2 workers x 1 thread; Dask with 1 worker x 2 threads (the cluster
is started here on 127.0.0.1, `dask scheduler` + `dask worker`, and stopped by PID after each
mode). Prints jobs per minute, where a job's time goes (setup = image decode + weights + network
build, optimize, PNG encode), Dask's own overhead per task (a no-op task with a job's payload,
round trip), and an on-paper estimate for 10,000 pairs at 512 px on N nodes from the measured
per-iteration time at 512 px.

    .venv/bin/python benchmarks/batch.py                    # 8 pairs, 256 px, 50 iterations
    .venv/bin/python benchmarks/batch.py --iterations 300   # the default iteration count (slow)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ENV = {**os.environ,
       "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}
LOOPBACK = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]


def make_inputs(folder: Path) -> tuple[list[Path], list[Path]]:
    """4 contents (two photos and their mirror images, 512 px) x 2 styles = 8 pairs."""
    contents, styles = [], []
    for name in ("tubingen", "golden_gate"):
        image = Image.open(EXAMPLES / "content" / f"{name}.jpg").convert("RGB")
        image.thumbnail((512, 512))
        for variant, picture in ((name, image), (f"{name}_mirrored", ImageOps.mirror(image))):
            contents.append(folder / f"{variant}.jpg")
            picture.save(contents[-1], quality=92)
    for name in ("starry_night", "shipwreck"):
        image = Image.open(EXAMPLES / "style" / f"{name}.jpg").convert("RGB")
        image.thumbnail((512, 512))
        styles.append(folder / f"{name}.jpg")
        image.save(styles[-1], quality=92)
    return contents, styles


def start_cluster(folder: Path, workers: int, threads: int) -> tuple[str, list[subprocess.Popen]]:
    scheduler_file = folder / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    log = open(folder / "cluster.log", "ab")
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--port", "0", *LOOPBACK,
                               "--scheduler-file", str(scheduler_file)], env=ENV, stdout=log, stderr=log)]
    while not scheduler_file.exists():
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nworkers", str(workers),
                                   "--nthreads", str(threads), *LOOPBACK, "--local-directory", str(folder / "w")],
                                  env=ENV, stdout=log, stderr=log))
    from distributed import Client
    with Client(address, set_as_default=False) as client:
        client.wait_for_workers(workers, timeout=300)
    return address, procs


def stop_cluster(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):  # workers first, then the scheduler; by PID
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def run_mode(spec: dict) -> dict:
    """One batch in a fresh process (torch imported there, as a user's run would)."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=ENV, capture_output=True,
                          text=True, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(f"{spec['name']}: child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(spec: dict) -> None:
    import vggstyle
    from vggstyle.batch import jobs_from_paths

    config = vggstyle.StyleConfig(image_size=spec["size"], num_iterations=spec["iterations"], device="cpu")
    jobs = jobs_from_paths(spec["contents"], spec["styles"])
    start = time.perf_counter()
    results = vggstyle.stylize_batch(jobs, spec["outdir"], config, scheduler=spec.get("scheduler"), force=True)
    wall = time.perf_counter() - start
    report = {"wall": wall, "jobs": [{"status": r.status, "worker": r.worker, **r.timings} for r in results]}
    if spec.get("scheduler"):
        report["noop"] = noop_round_trip(spec["scheduler"], jobs[0])
    print(json.dumps(report))


def _echo(content: bytes, style: bytes) -> bytes:
    return content + style


def noop_round_trip(address: str, job, repeats: int = 20) -> float:
    """Median seconds to submit a no-op task carrying one job's input bytes and get them back."""
    from distributed import Client
    payload = (job.content.read_bytes(), job.style.read_bytes())
    times = []
    with Client(address, set_as_default=False) as client:
        for i in range(repeats):
            start = time.perf_counter()
            client.submit(_echo, *payload, key=f"noop-{i}").result()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def probe_512(iterations: int = 10) -> dict:
    """Seconds per iteration and setup of a 512 px job on a warm process (weights already loaded)."""
    import vggstyle

    content, style = EXAMPLES / "content" / "tubingen.jpg", EXAMPLES / "style" / "starry_night.jpg"
    vggstyle.stylize(content, style, image_size=512, num_iterations=1, device="cpu")  # loads the weights
    times, elapsed = [], []
    start = time.perf_counter()
    vggstyle.stylize(content, style, image_size=512, num_iterations=iterations, device="cpu",
                     on_step=lambda p: (times.append(time.perf_counter()), elapsed.append(p.elapsed)))
    steps = [b - a for a, b in zip(times, times[1:])]
    per_iteration = statistics.median(steps[2:] or steps)
    return {"per_iteration": per_iteration, "setup": times[0] - start - elapsed[0]}  # elapsed: loop time only


def summarize(name: str, report: dict, parallel: int) -> dict:
    jobs = [j for j in report["jobs"] if j["status"] == "done"]
    mean = {k: statistics.mean(j.get(k, 0.0) for j in jobs) for k in ("setup", "optimize", "encode", "total")}
    setups = sorted(j.get("setup", 0.0) for j in jobs)
    overhead = report.get("noop")
    return {"name": name, "wall": report["wall"], "done": len(jobs), "per_min": 60 * len(jobs) / report["wall"],
            **mean, "first_setup": setups[-1], "later_setup": statistics.median(setups[:-parallel] or setups),
            "overhead": overhead}


def print_table(rows: list[dict], size: int, iterations: int) -> None:
    print(f"\n8 pairs at {size} px, {iterations} iterations each, CPU (bf16 where the CPU has it)\n")
    print("| mode | wall s | jobs/min | per job: setup / optimize / encode s | setup: first job / later s "
          "| Dask overhead per task |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        overhead = f"{1000 * r['overhead']:.0f} ms" if r["overhead"] is not None else "-"
        print(f"| {r['name']} | {r['wall']:.1f} | {r['per_min']:.2f} | {r['setup']:.2f} / {r['optimize']:.1f} / "
              f"{r['encode']:.3f} | {r['first_setup']:.1f} / {r['later_setup']:.2f} | {overhead} |")


def print_estimate(seconds_per_iteration: float, setup_512: float, overhead: float, iterations: int = 300) -> None:
    """10,000 pairs at 512 px, `iterations` each, on N nodes that each run one job at a time."""
    job = iterations * seconds_per_iteration
    print(f"\nOn paper: 10,000 pairs at 512 px, {iterations} iterations. Measured here at 512 px (CPU): "
          f"{seconds_per_iteration:.2f} s/iteration, so {job:.0f} s of optimization per job; setup of a "
          f"warm worker {setup_512:.2f} s; Dask {1000 * overhead:.0f} ms per task.\n")
    print("| nodes (like this one: 2 cores) | hours for 10,000 jobs | optimize | setup | Dask |")
    print("| --- | --- | --- | --- | --- |")
    per_job = job + setup_512 + overhead
    for nodes in (1, 10, 100, 1000):
        hours = 10_000 * per_job / nodes / 3600
        print(f"| {nodes} | {hours:.1f} | {job / per_job:.1%} | {setup_512 / per_job:.1%} "
              f"| {overhead / per_job:.2%} |")
    print("\nFor GPU nodes put their seconds per iteration at 512 px (benchmarks/gpu.sh) in place of the CPU's: "
          "hours = 10,000 x (300 x s/iteration + setup + overhead) / nodes.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        return print(json.dumps(probe_512())) if spec.get("probe") else child(spec)
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vggstyle-batch-bench-") as tmp:
        folder = Path(tmp)
        contents, styles = make_inputs(folder)
        base = {"contents": [str(p) for p in contents], "styles": [str(p) for p in styles],
                "size": args.image_size, "iterations": args.iterations}
        local = run_mode({**base, "name": "local", "outdir": str(folder / "local")})
        rows = [summarize("this machine, sequential", local, 1)]
        for workers, threads in ((2, 1), (1, 2)):
            address, procs = start_cluster(folder, workers, threads)
            try:
                report = run_mode({**base, "name": "dask", "outdir": str(folder / f"dask{workers}"),
                                   "scheduler": address})
            finally:
                stop_cluster(procs)
            rows.append(summarize(f"Dask {workers} worker(s) x {threads} thread(s)", report, workers))
        print_table(rows, args.image_size, args.iterations)
        probe = run_mode({"name": "512 px probe", "probe": True})
        overhead = statistics.mean(r["overhead"] for r in rows if r["overhead"] is not None)
        print_estimate(probe["per_iteration"], probe["setup"], overhead)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
