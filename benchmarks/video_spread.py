"""A clip spread over workers (issue #21): its seams, its flicker and style against one machine, the
wall time with 1, 2 and 4 local Dask workers, a worker killed mid-chunk.

    python benchmarks/video_spread.py --frames 24 --image-size 128 --chunk-frames 6

Every run stylizes the same first --frames of the clip with the same options and seed, one thread
per worker (and one thread for the one-machine run). The workers are a LocalCluster of processes
on 127.0.0.1 (no dashboard). Columns:
- warping error / input's (Lai et al. 2018, Farneback flow on the input, as benchmarks/video.py):
  the whole clip; the pairs in a window around each seam (the pairs from two frames before a
  chunk's first frame to one after it); the rest;
- style and content distance (benchmarks/video.py's), mean over the frames;
- wall seconds, and the sum of the tasks' seconds on the workers.
The N-machine line is a model from the measured tasks: the serial part (this run's wall time with
one worker minus its tasks) plus the longer of (all tasks / N) and the critical path (each pass's
longest chunk, since pass p of a chunk waits for pass p-1 of its neighbours).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import threading
import time
from pathlib import Path

from PIL import Image

from _harness import ROOT
from video import clip_arguments, distances, input_frames


def pair_errors(outputs, frames) -> list[float]:
    from vggstyle.video.flow import warping_error
    return [warping_error(outputs[t:t + 2], reference=frames[t:t + 2], method="farneback").value
            for t in range(len(outputs) - 1)]


def ping_pong(clip: Path, frames: int, path: Path) -> Path:
    """The clip forward, then backward, and so on, to ``frames`` frames (lossless FFV1): a clip long
    enough for the default 48-frame chunks from a short one, with no cut (the motion reverses)."""
    import av
    from vggstyle.video.reader import open_video
    video = open_video(clip)
    source = [f.image for f in video.frames()]
    order = list(range(len(source))) + list(range(len(source) - 2, 0, -1))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=video.fps)
        stream.width, stream.height, stream.pix_fmt = source[0].size[0], source[0].size[1], "yuv420p"
        for t in range(frames):
            for packet in stream.encode(av.VideoFrame.from_image(source[order[t % len(order)]])):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def chunks_of(frames: int, chunk_frames: int, starts: list[int]):
    from vggstyle.video.split import plan_chunks
    return plan_chunks(starts, frames, chunk_frames, 0)


def run(args, name: str, scheduler=None, overlap: int | None = None, on_step=None):
    from vggstyle.video import stylize_video
    out = args.workdir / name
    shutil.rmtree(out, ignore_errors=True)
    options = dict(image_size=args.image_size, seed=0, threads=1, precision=args.precision,
                   first_frame_iterations=args.first_iterations, end=f"f{args.frames}")
    if scheduler is not None:
        options.update(scheduler=scheduler, chunk_frames=args.chunk_frames,
                       chunk_overlap=args.overlap if overlap is None else overlap)
    started = time.perf_counter()
    summary = stylize_video(args.input, args.style, out, on_step=on_step, **options)
    wall = time.perf_counter() - started
    outputs = [Image.open(p).convert("RGB") for p in sorted(out.glob("*.png"))]
    print(f"  {name}: {wall:.1f} s", flush=True)
    return summary, outputs, wall


def cluster(workers: int):
    from distributed import Client, LocalCluster
    local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None, silence_logs=40)
    return local, Client(local, set_as_default=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    clip_arguments(parser, 24, 128)
    parser.add_argument("--chunk-frames", type=int, default=6)
    parser.add_argument("--overlap", type=int, help="the chunk overlap of the timing rows (default: vggstyle's, "
                                                    "a third of --chunk-frames)")
    parser.add_argument("--overlaps", help="overlaps compared on quality (2 workers; default: 0 and --overlap)")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--workdir", type=Path, default=ROOT / "out" / "video_spread")
    parser.add_argument("--ping-pong", action="store_true",
                        help="play the clip forward and back to --frames (for default-size chunks from a short clip)")
    parser.add_argument("--skip-kill", action="store_true", help="leave out the run with a worker killed")
    args = parser.parse_args()
    from vggstyle.video.config import VideoConfig
    args.overlap = VideoConfig(chunk_frames=args.chunk_frames, chunk_overlap=args.overlap).overlap
    args.overlaps = args.overlaps or f"0,{args.overlap}"
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.ping_pong:
        args.input = ping_pong(args.input, args.frames, args.workdir / "ping_pong.mkv")
    from vggstyle.video.flow import warping_error

    print(f"load average before: {os.getloadavg()}", flush=True)
    frames = input_frames(args.input, args.frames, args.image_size)
    base = warping_error(frames, method="farneback").value
    one, one_outputs, one_wall = run(args, "one-machine")
    chunks = chunks_of(len(frames), args.chunk_frames, [0, *one.cuts])
    seams = [c.first for c in chunks if c.first != c.shot[0]]
    window = {t for s in seams for t in range(max(0, s - 2), s + 1)}  # pair t = (t, t+1)
    rows = []

    def quality(label, outputs, wall, tasks):
        errors = pair_errors(outputs, frames)
        whole = warping_error(outputs, reference=frames, method="farneback").value / base
        at_seams = statistics.mean(errors[t] for t in window) / base if window else float("nan")
        rest = statistics.mean(e for t, e in enumerate(errors) if t not in window) / base
        style_d, content_d = distances(frames, outputs, args.style)
        rows.append((label, whole, at_seams, rest, style_d, content_d, wall, tasks))

    quality("one machine, 1 thread", one_outputs, one_wall, sum(one.frame_seconds))
    timing = {}
    for workers in sorted({int(w) for w in args.workers.split(",")} | {2}):
        local, client = cluster(workers)
        try:
            overlaps = [int(o) for o in args.overlaps.split(",")] if workers == 2 else [args.overlap]
            for overlap in overlaps:
                summary, outputs, wall = run(args, f"spread-{workers}w-o{overlap}", local.scheduler_address, overlap)
                tasks = sum(s for _, _, s in summary.tasks)
                if overlap == args.overlap:
                    timing[workers] = (wall, tasks, summary.tasks)
                if workers == 2:  # the same frames with any number of workers (each pass reads its neighbours as of the pass before)
                    quality(f"spread, {workers} workers, overlap {overlap}", outputs, wall, tasks)
            if workers == 2 and not args.skip_kill:
                rows.append(kill_row(args, local, client))
        finally:
            client.close()
            local.close()
    print(f"load average after: {os.getloadavg()}", flush=True)
    report(args, frames, chunks, rows, timing, one_wall)


def report(args, frames, chunks, rows, timing, one_wall) -> None:
    """The two tables and the N-machine model."""
    seams = [c.first for c in chunks if c.first != c.shot[0]]
    meet = [c.first for c in chunks if c.first != c.shot[0] and not c.follows]
    print(f"\n{len(frames)} frames of {args.input.name} at {frames[0].size[0]}x{frames[0].size[1]}, chunks of "
          f"{args.chunk_frames} (seams at {seams}; leaders meet the chunk before at {meet}), "
          f"{args.first_iterations} iterations a first frame, "
          f"{args.precision}")
    print("| run | warping error / input's | at the seams | the rest | style distance | content distance "
          "| wall s | tasks s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        if len(row) == 2:
            print(f"| {row[0]} | {row[1]} |  |  |  |  |  |  |")
            continue
        label, whole, at_seams, rest, style_d, content_d, wall, tasks = row
        print(f"| {label} | {whole:.2f} | {at_seams:.2f} | {rest:.2f} | {style_d:.3g} | {content_d:.3g} "
              f"| {wall:.0f} | {tasks:.0f} |")
    print("\n| workers | wall s | speed-up over 1 worker | over one machine |")
    print("| --- | --- | --- | --- |")
    for workers, (wall, _, _) in sorted(timing.items()):
        print(f"| {workers} | {wall:.0f} | {timing[min(timing)][0] / wall:.2f}x | {one_wall / wall:.2f}x |")
    if 1 not in timing:  # the serial part is one worker's wall time less its tasks
        print("\nmodel: needs the run with 1 worker (--workers 1,...)")
        return
    wall1, tasks1, per_task = timing[1]
    serial = wall1 - tasks1
    seconds = {(c, p): s for c, p, s in per_task}
    first_wave = max(seconds.get((c.number - 1, 1), 0.0) + seconds[c.number, 1] if c.follows else seconds[c.number, 1]
                     for c in chunks)  # a follower starts when the chunk before is done
    critical = first_wave + sum(max(s for _, p, s in per_task if p == number) for number in {p for _, p, _ in per_task}
                                if number > 1)
    print(f"\nmodel: serial {serial:.0f} s, tasks {tasks1:.0f} s, critical path {critical:.0f} s: " + ", ".join(
        f"{n} machines ~{serial + max(tasks1 / n, critical):.0f} s" for n in (2, 4, 8, 16)))


def kill_row(args, local, client) -> tuple[str, str]:
    """A worker SIGKILLed while it runs a chunk: the clip completes, one record per frame and pass."""
    import json
    pids = client.run(os.getpid)
    killed = []

    def kill_once(progress):
        if not killed and progress.running:
            busy = client.run(lambda dask_worker: len(dask_worker.state.executing))
            victim = next((address for address, count in busy.items() if count), None)
            if victim is not None:
                os.kill(pids[victim], signal.SIGKILL)
                killed.append(victim)
        return True

    work = args.workdir / "kill-work"
    shutil.rmtree(work, ignore_errors=True)
    from vggstyle.video import stylize_video
    started = time.perf_counter()
    summary = stylize_video(args.input, args.style, args.workdir / "kill.mp4", image_size=args.image_size, seed=0,
                            threads=1, precision=args.precision, first_frame_iterations=args.first_iterations,
                            end=f"f{args.frames}", scheduler=local.scheduler_address, chunk_frames=args.chunk_frames,
                            chunk_overlap=args.overlap, work_dir=str(work), on_step=kill_once)
    wall = time.perf_counter() - started
    written = [(r["index"], r["pass"]) for r in map(json.loads, (work / "frames.jsonl").read_text().splitlines())
               if r.get("crossfade") is None]
    redone = len(written) - len(set(written))
    text = (f"{'completed' if summary.output else 'NOT completed'} in {wall:.0f} s after killing "
            f"{len(killed)} worker(s) mid-chunk; frame passes written twice: {redone}")
    print(f"  kill: {text}", flush=True)
    threading.Event().wait(1)
    return ("a worker killed mid-chunk (2 workers)", text)


if __name__ == "__main__":
    main()
