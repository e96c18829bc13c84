"""The passes of one clip spread over many workers: a Dask cluster, or one thread per device here.

Data flows one way: the clip is decoded here and each frame's content at the working size goes to
the work dir; the shot cuts are found here with the same flow test as on one machine (and kept in
the work dir: a rerun does not compute them again); split.plan_chunks cuts the shots into chunks;
then each chunk's pass is a task (chunk.run_chunk), sent as soon as split.ready says it may start,
and every result is written to the work dir as it arrives, so a rerun continues from there. The
serial part here is the decoding, the cut test (two flows a frame), the writing and the encoding;
everything else runs on the workers.

A worker lost mid-task: Dask reschedules the task on another worker, and only that chunk's pass
is redone. Ctrl-C (a hook returning False): the running tasks are cancelled, each stops after its
current iteration, and what is finished stays in the work dir.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import queue
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError, VggstyleError, first_line
from ..files import png_bytes, rgb_from_bytes
from ..image import as_image_list, tensor_to_pil
from .chunk import ChunkWork, remote_chunk, run_chunk
from .config import FrameDone, SpreadProgress, anchored_iterations
from .flow import link
from .passes import Pass
from .split import Chunk, boundary_frames, chunk_order, crossfade, edge_frames, history, plan_chunks, ready
from .store import load_plan, save_plan

POLL_SECONDS = 0.25  # how often the hooks hear from a run waiting on its workers


@dataclass
class Prepared:
    """The clip as the workers need it: contents at the working size (in the work dir), each
    frame's (source index, time), the frames that start a shot."""

    frames: int
    times: dict[int, tuple[int, str]]
    starts: list[int]


def prepare(run: Pass) -> Prepared:
    """Decode the clip once: each content frame at the working size into the work dir (unless
    there), its time, and the shot cuts (from the work dir's plan when a run before found them)."""
    store, video, inputs = run.store, run.video, run.inputs
    plan = load_plan(store)
    times, starts, previous = {}, [], None
    for frame in run.clip.frames():
        times[frame.index] = (frame.source_index, str(frame.time))
        if frame.index in store.contents and plan is not None:
            continue
        image = dataclasses.replace(inputs, content=frame.image).photo_at(inputs.config.image_size)
        if frame.index not in store.contents:
            store.save_content(frame.index, image)
        if plan is None:
            content = np.asarray(image)
            if previous is not None and link(previous, content, video.flow, boundary_weight=video.motion_boundary_weight,
                                             tolerance=video.tolerance).cut:
                starts.append(frame.index)
            previous = content
    frames = len(times)
    if plan is not None and plan.get("frames") == frames:
        starts = plan["starts"]
    elif plan is not None:  # the clip decoded to another length (a longer --end): test the cuts again
        save_plan(store, None)
        return prepare(run)
    save_plan(store, {"frames": frames, "starts": starts})
    return Prepared(frames, times, starts)


class LocalChunks:
    """This machine: one chunk at a time per device, on threads of this process (torch's threads
    are the process's: several CPU "devices" share the cores, as batch's local runner does)."""

    def __init__(self, devices, threads: int | None = None):
        import torch

        from ..device import physical_cores, set_threads

        self.devices = list(devices)
        self.slots = len(self.devices)
        self.threads_before = torch.get_num_threads()  # given back by close(): a library call leaves no trace
        cpus = sum(device == "cpu" for device in self.devices)
        set_threads(threads or (max(1, physical_cores() // cpus) if cpus > 1 else None))
        self.free: queue.Queue = queue.Queue()
        for device in self.devices:
            self.free.put(device)
        self.stop = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(self.slots, thread_name_prefix="vggstyle-chunk")

    def submit(self, work: ChunkWork, name: str):
        return self.pool.submit(self._run, work)

    def _run(self, work: ChunkWork) -> dict:
        device = self.free.get()
        try:
            reply = run_chunk(dataclasses.replace(work, config=work.config.replace(device=device)), self.stop,
                              scope=False)
        finally:
            self.free.put(device)
        reply["worker"] = device
        return reply

    def cancel(self, futures) -> None:
        self.stop.set()
        concurrent.futures.wait(futures)

    def close(self) -> None:
        import torch

        self.pool.shutdown(wait=True)
        torch.set_num_threads(self.threads_before)


class DaskChunks:
    """A Dask cluster: one task per chunk's pass; a task that raises is retried (``retries``), one
    whose worker dies is rescheduled by the scheduler."""

    def __init__(self, address: str, resources: dict | None = None, retries: int = 2):
        from ..remote import connect

        self.client = connect(address)
        self.resources, self.retries = resources or None, retries
        self.slots = max(1, sum(self.client.nthreads().values()))

    def submit(self, work: ChunkWork, name: str):
        with warnings.catch_warnings():  # frames travel in the task, as batch's inputs do: expected, not large
            warnings.filterwarnings("ignore", message=".*[Ll]arge object.*")
            warnings.filterwarnings("ignore", message=".*[Ss]ending large graph.*")
            return self.client.submit(remote_chunk, work, key=f"vggstyle-video-{name}-{uuid.uuid4().hex[:8]}",
                                      retries=self.retries, resources=self.resources, pure=False)

    def cancel(self, futures) -> None:
        self.client.cancel(list(futures), force=True)

    def close(self) -> None:
        self.client.close()


def finished_passes(store, records: dict, chunks: list[Chunk], passes: int) -> set[tuple[int, int]]:
    """The chunk passes a work dir holds whole: pass 1 with its own frames and the cross-fade of its
    warm-up written (else it runs again), pass p with every frame of its order at p."""
    done = set()
    for chunk in chunks:
        faded = all(records.get(t, {}).get("crossfade") == chunk.number or store.pass_of(t) >= 2
                    for t in range(chunk.first - chunk.warmup, chunk.first))
        if faded and all(store.pass_of(t) >= 1 for t in chunk.owned):
            done.add((chunk.number, 1))
    for number in range(2, passes + 1):
        done |= {(c.number, number) for c in chunks if (c.number, number - 1) in done
                 and all(store.pass_of(t) >= number for t, _, _ in chunk_order(c, number))}
    return done


def runner_for(scheduler: str | None, devices: list[str], threads: int | None, resources: dict | None = None,
               retries: int = 2):
    """Where the chunks run: a Dask cluster when there is a scheduler, else one thread per device."""
    if scheduler:
        return DaskChunks(scheduler, resources, retries)
    return LocalChunks(devices, threads)


class Spread:
    """The client's side of one spread run: what is done, what may start, writing what comes back."""

    def __init__(self, run: Pass, prepared: Prepared, chunks: list[Chunk], runner, styles, masks):
        self.run, self.prepared, self.chunks, self.runner = run, prepared, chunks, runner
        self.styles, self.masks = styles, masks
        # the masks travel as bytes: their paths mean nothing on a worker
        self.config = run.inputs.config.replace(style_masks=[]) if masks else run.inputs.config
        self.edges = boundary_frames(chunks)
        self.passes = run.video.passes
        # the frames each pass optimizes (for the hooks): pass 1 all, a later one all but where it turns
        self.pass_frames = {p: prepared.frames if p == 1 else sum(len(chunk_order(c, p)) for c in chunks)
                            for p in range(1, self.passes + 1)}
        self.held: dict[int, dict] = {}  # a chunk's warm-up frames, until the chunk before is written
        self.seconds: list[tuple[int, float]] = []  # (iterations, worker seconds) of each finished task
        self.frame_zero = run.store.content_bytes(0)
        self._resume()

    def _resume(self) -> None:
        store, records = self.run.store, self.run.store.records_by_index()
        self.done: set[tuple[int, int]] = finished_passes(store, records, self.chunks, self.passes)
        # chunks whose own frames of pass 1 are in the work dir (a leader's, maybe before its cross-fade)
        self.saved_first: set[int] = {number for number, p in self.done if p == 1}
        summary = self.run.summary
        summary.frames = len(store.finished)
        summary.resumed = summary.frames
        summary.losses = [records.get(t, {}).get("losses", {}) for t in range(self.prepared.frames)]
        summary.frame_seconds = [records.get(t, {}).get("seconds", 0.0) for t in range(self.prepared.frames)]

    def todo(self) -> list[tuple[int, int]]:
        return [(c.number, p) for p in range(1, self.passes + 1) for c in self.chunks if (c.number, p) not in self.done]

    # ------------------------------------------------------------------ what a task gets
    def work(self, chunk: Chunk, number: int) -> ChunkWork:
        run, store = self.run, self.run.store
        base = dict(config=self.config, video=run.video, first_iterations=run.first_iterations,
                    styles=self.styles, masks=self.masks, frame_zero=self.frame_zero,
                    total_frames=self.prepared.frames, pass_number=number)
        if number == 1:
            frames, before = list(chunk.first_pass_frames), history(chunk, max(run.video.offsets))
            read = before + ([chunk.anchor] if chunk.anchor is not None else [])
            return ChunkWork(**base, frames=frames, history=before, anchor=chunk.anchor,
                             contents={t: store.content_bytes(t) for t in read + frames},
                             outputs={t: store.frame_bytes(t) for t in read},
                             times={t: self.prepared.times[t] for t in frames})
        order = chunk_order(chunk, number)
        outside = edge_frames(self.chunks, chunk)
        read = sorted({*chunk.owned, *outside})
        outputs = {t: store.frame_bytes(t, number - 1 if t in outside else None) for t in read}
        records = store.records_by_index()
        return ChunkWork(**base, frames=[t for t, _, _ in order], contents={t: store.content_bytes(t) for t in read},
                         order=order, outputs=outputs,
                         passes_on_disk={t: min(store.pass_of(t), number - 1) if t in outside else store.pass_of(t)
                                         for t in read},
                         records={t: records[t] for t in chunk.owned})

    def iterations(self, chunk: Chunk, number: int) -> int:
        """The iterations a chunk's pass takes (for the ETA)."""
        video = self.run.video
        if number == 1:
            first = self.run.first_iterations
            first = anchored_iterations(first) if chunk.anchor is not None else first
            still = 0 if chunk.follows else first - video.frame_iterations
            return still + len(chunk.first_pass_frames) * video.frame_iterations
        return len(chunk_order(chunk, number)) * video.frame_iterations

    # ------------------------------------------------------------------ what comes back
    def write(self, chunk: Chunk, number: int, reply: dict) -> None:
        self.seconds.append((self.iterations(chunk, number), reply["seconds"]))
        self.run.summary.tasks.append((chunk.number, number, round(reply["seconds"], 3)))
        frames = {int(t): rgb_from_bytes(data) for t, data in reply["frames"].items()}
        records = {int(t): record for t, record in reply["records"].items()}
        if number == 1:
            self._write_first(chunk, frames, records, reply.get("worker", ""))
        else:
            self._write_later(chunk, number, frames, records, reply.get("worker", ""))

    def _write_first(self, chunk: Chunk, frames: dict, records: dict, worker: str) -> None:
        store, summary = self.run.store, self.run.summary
        for t in chunk.owned:
            store.save(t, frames[t], {**records[t], "chunk": chunk.number, "worker": worker})
            summary.losses[t], summary.frame_seconds[t] = records[t]["losses"], records[t]["seconds"]
            self._frame_done(t, records[t], frames[t], 1)
        summary.frames = len(store.finished)
        self.saved_first.add(chunk.number)
        self.held[chunk.number] = {t: (frames[t], records[t]) for t in range(chunk.first - chunk.warmup, chunk.first)}
        for candidate in (chunk.number, chunk.number + 1):
            self._fade(candidate)

    def _fade(self, number: int) -> None:
        """Cross-fade chunk ``number``'s warm-up into the chunk before once both are written."""
        if number not in self.held or (number - 1 not in self.saved_first and self.held[number]):
            return
        chunk, store, summary = self.chunks[number], self.run.store, self.run.summary
        records = store.records_by_index() if self.held[number] else {}
        for position, (t, (later, record)) in enumerate(sorted(self.held.pop(number).items())):
            blended = Image.blend(store.load(t), later, crossfade(position, chunk.warmup))
            seconds = records[t]["seconds"] + record["seconds"]
            store.save(t, blended, {**records[t], "crossfade": number, "seconds": seconds})
            summary.frame_seconds[t] = seconds
        self.done.add((number, 1))

    def _write_later(self, chunk: Chunk, number: int, frames: dict, records: dict, worker: str) -> None:
        store, summary = self.run.store, self.run.summary
        for t, _, _ in chunk_order(chunk, number):
            if t not in frames:  # at this pass already (a resumed run): the task left it as it was
                continue
            record = {k: v for k, v in records[t].items() if k != "crossfade"}  # said by the pass-1 record only
            store.save(t, frames[t], {**record, "worker": worker}, pass_number=number, keep_older=t in self.edges)
            summary.frame_seconds[t] += records[t]["seconds"]
            summary.losses[t] = records[t]["losses"]
            self._frame_done(t, records[t], frames[t], number)
        self.done.add((chunk.number, number))

    def _frame_done(self, t: int, record: dict, image, number: int) -> None:
        if self.run.on_frame is None:
            return
        first = number == 1 and bool(record.get("first"))
        done = FrameDone(t, self.prepared.frames, record["losses"], record["seconds"], first, False, image, number,
                         self.passes, self.pass_frames[number])
        if self.run.on_frame(done) is False:
            self.run.summary.stopped = True

    def progress(self, running: int) -> SpreadProgress:
        total = len(self.chunks) * self.passes
        left = [(self.chunks[k], p) for k, p in self.todo()]
        iterations = sum(i for i, _ in self.seconds)
        per_iteration = sum(s for _, s in self.seconds) / iterations if iterations else None
        eta = (None if per_iteration is None else
               per_iteration * sum(self.iterations(c, p) for c, p in left) / max(1, min(self.runner.slots, len(left))))
        return SpreadProgress(total - len(left), total, running, len(self.chunks), eta)


def check_spreadable(config) -> None:
    """What cannot be sent to a worker, said before anything starts."""
    if config.init not in ("content", "random"):
        raise ConfigError(f"--init {config.init}: an image file cannot start the frames on other workers; "
                          "use content or random when spreading a clip")


def source_bytes(styles, masks, config) -> tuple[list[bytes], list[bytes] | None]:
    """The styles and masks as the workers get them: a file's own bytes, an image held in memory as PNG."""
    items = as_image_list(masks) if masks is not None else list(config.style_masks)
    return [_source(s) for s in as_image_list(styles)], ([_source(m) for m in items] if items else None)


def _source(item) -> bytes:
    if isinstance(item, (str, os.PathLike)):
        return Path(item).expanduser().read_bytes()
    return png_bytes(item if isinstance(item, Image.Image) else tensor_to_pil(item), compress_level=1)


def spread_passes(run: Pass, runner, styles: list[bytes], masks: list[bytes] | None) -> None:
    """Every pass of the clip, chunk by chunk on ``runner``'s workers; fills ``run.summary``."""
    prepared = prepare(run)
    summary = run.summary
    summary.total_frames = prepared.frames
    chunks = plan_chunks(prepared.starts, prepared.frames, run.video.chunk_frames, run.video.overlap)
    summary.cuts = [s for s in prepared.starts if s > 0]
    spread = Spread(run, prepared, chunks, runner, styles, masks)
    running: dict = {}  # future -> (chunk, pass)
    try:
        while not summary.stopped:
            for number, pass_number in spread.todo():
                chunk = chunks[number]
                busy = (number, pass_number) in running.values() or (pass_number == 1 and number in spread.saved_first)
                if not busy and ready(spread.done, chunks, chunk, pass_number, spread.saved_first):
                    if pass_number > 1 and not chunk_order(chunk, pass_number):
                        spread.done.add((number, pass_number))  # nothing to revisit (a turning frame alone)
                        continue
                    future = runner.submit(spread.work(chunk, pass_number), f"{number}-p{pass_number}")
                    running[future] = (number, pass_number)
            if not running:
                break
            finished = [f for f in running if f.done()]
            if not finished:
                if run.on_step is not None and run.on_step(spread.progress(len(running))) is False:
                    summary.stopped = True
                    break
                time.sleep(POLL_SECONDS)
                continue
            for future in finished:
                number, pass_number = running.pop(future)
                reply = _reply(future, number, pass_number, run.store.folder)
                if reply["status"] != "done":
                    summary.stopped = True
                    break
                spread.write(chunks[number], pass_number, reply)
    finally:
        if running:
            runner.cancel(list(running))
    left = spread.todo()
    summary.pass_number = min((p for _, p in left), default=run.video.passes)
    summary.stopped = summary.stopped or bool(left)
    if not summary.stopped and run.on_step is not None:
        run.on_step(spread.progress(0))  # all done: the hooks hear it (what they answer changes nothing now)


def _reply(future, number: int, pass_number: int, work_dir) -> dict:
    """A finished task's reply; its failure (retries spent, a worker killed too often) as one line."""
    try:
        return future.result()
    except VggstyleError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a worker raised, said in one line
        hint = ""
        if "deserializ" in str(exc).lower():  # only a cluster deserializes
            from ..remote import ENVIRONMENT_HINT as hint
        raise VggstyleError(f"chunk {number + 1}, pass {pass_number} failed on its worker ({first_line(exc)}){hint}; "
                            f"the finished frames are kept in {work_dir}: run the same command again to "
                            "continue") from None
