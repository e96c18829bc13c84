"""One pass of one chunk of a clip, where the work is done: a Dask worker, or a thread per device here.

Everything a chunk needs travels in its ChunkWork as plain data (PNG bytes, numbers, the configs),
so a worker needs only vggstyle installed, no shared filesystem and no access to the client's
paths. The network and the style features are built once per worker process and kept for the
chunks that follow (``_stylizers``: the style features are primed from the clip's frame 0, as on
one machine, so every chunk matches the styles to the same frame). The frames are stylized by
the same functions as on one machine (passes.stylize_frame, passes.revisit), on an in-memory
store of the frames this pass reads; the results go back as bytes and the client writes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from PIL import Image

from ..config import StyleConfig
from ..device import resolve_policy
from ..engine import call_scope
from ..files import png_bytes, rgb_from_bytes
from ..inputs import load_inputs
from .config import VideoConfig, VideoSummary
from .frame import FrameStylizer, Shot
from .passes import Pass, revisit, stylize_frame
from .reader import InputFrame

KEPT_STYLIZERS = 2  # per worker process: the clips in flight on a worker rarely differ in more


@dataclass
class ChunkWork:
    """One chunk's pass, as sent to a worker."""

    config: StyleConfig
    video: VideoConfig
    first_iterations: int
    styles: list[bytes]
    masks: list[bytes] | None
    frame_zero: bytes  # frame 0's content at the working size: the style features are matched to it
    total_frames: int
    pass_number: int
    frames: list[int]  # pass 1: the frames in order; later passes: the order of chunk_order
    contents: dict[int, bytes]  # content frames at the working size, of ``frames`` and the frames they read
    history: list[int] = field(default_factory=list)  # pass 1 of a follower: the frames before, oldest first
    anchor: int | None = None  # pass 1 of an anchored leader: the frame its first frame starts from
    order: list[tuple[int, int, int]] = field(default_factory=list)  # later passes: (frame, shot first, last)
    outputs: dict[int, bytes] = field(default_factory=dict)  # the outputs they start from and read (and history's)
    passes_on_disk: dict[int, int] = field(default_factory=dict)  # later passes: each output's pass
    records: dict[int, dict] = field(default_factory=dict)  # later passes: each frame's record so far
    times: dict[int, tuple[int, str]] = field(default_factory=dict)  # pass 1: (source index, time) per frame

    def stylizer_key(self, device: str) -> str:
        """What decides the network and the style features: a worker reuses them when it matches."""
        digest = hashlib.sha256(json.dumps(self.config.replace(threads=None).to_dict(), sort_keys=True,
                                           default=str).encode())
        for data in [*self.styles, *(self.masks or []), self.frame_zero]:
            digest.update(hashlib.sha256(data).digest())
        return f"{device} {digest.hexdigest()}"


class ChunkStore:
    """The frames one chunk's pass reads and writes, in memory (the client's work dir has them all)."""

    def __init__(self, contents: dict[int, Image.Image], outputs: dict[int, Image.Image], passes: dict[int, int]):
        self.contents, self.outputs, self.passes = contents, outputs, passes
        self.saved: dict[int, dict] = {}

    def pass_of(self, index: int) -> int:
        return self.passes.get(index, 0)

    def load(self, index: int) -> Image.Image:
        return self.outputs[index]

    def load_content(self, index: int) -> Image.Image:
        return self.contents[index]

    def save(self, index: int, image: Image.Image, record: dict | None = None, pass_number: int = 1) -> None:
        self.outputs[index], self.passes[index] = image, pass_number
        self.saved[index] = dict(record or {})


_stylizers: OrderedDict = OrderedDict()
_stylizers_lock = threading.Lock()


def stylizer_for(work: ChunkWork, policy) -> FrameStylizer:
    """The worker's FrameStylizer for this clip's options and styles, primed from frame 0."""
    key = work.stylizer_key(str(policy.device))
    with _stylizers_lock:  # held while building: two threads of one device build it once
        if key in _stylizers:
            _stylizers.move_to_end(key)
            return _stylizers[key]
        frame_zero = rgb_from_bytes(work.frame_zero)
        styles = [rgb_from_bytes(data) for data in work.styles]
        masks = [rgb_from_bytes(data).convert("L") for data in work.masks] if work.masks else None
        stylizer = FrameStylizer(load_inputs(frame_zero, styles, work.config, masks), policy, work.config.image_size)
        stylizer.prime(stylizer.images(frame_zero))
        _stylizers[key] = stylizer
        while len(_stylizers) > KEPT_STYLIZERS:
            _stylizers.popitem(last=False)
    return stylizer


def run_chunk(work: ChunkWork, stop=None, scope: bool = True) -> dict:
    """Stylize the chunk's frames for its pass; returns {status: done | stopped, frames: {index:
    PNG bytes}, records: {index: record}, seconds}. ``stop.is_set()`` is checked after every
    iteration; ``scope``: set threads for this call (False where the caller already did, as the
    threads of one process do)."""
    policy = resolve_policy(work.config.device, work.config.precision, work.config.winograd)
    started = time.perf_counter()
    with call_scope(work.config.threads, policy) if scope else contextlib.nullcontext():
        store, stopped = _run(work, policy, stop)
    return {"status": "stopped" if stopped else "done",
            "frames": {} if stopped else {t: png_bytes(store.outputs[t], compress_level=1) for t in store.saved},
            "records": {} if stopped else store.saved, "seconds": time.perf_counter() - started}


def _run(work: ChunkWork, policy, stop) -> tuple[ChunkStore, bool]:
    stylizer = stylizer_for(work, policy)
    contents = {t: rgb_from_bytes(data) for t, data in work.contents.items()}
    outputs = {t: rgb_from_bytes(data) for t, data in work.outputs.items()}
    store = ChunkStore(contents, outputs, dict(work.passes_on_disk))
    summary = VideoSummary(None, work.total_frames, work.total_frames, Fraction(1), (0, 0), 0.0,
                           losses=[{}] * work.total_frames, frame_seconds=[0.0] * work.total_frames,
                           passes=work.video.passes, pass_number=work.pass_number)
    on_step = None if stop is None else (lambda progress: not stop.is_set())
    run = Pass(work.video, None, stylizer.inputs, work.first_iterations, store, summary, stylizer, None, on_step)
    if work.pass_number == 1:
        stopped = _first_pass(run, work, contents)
    else:
        records = {t: dict(record) for t, record in work.records.items()}
        stopped = revisit(run, work.pass_number, work.order, records) is False
    return store, stopped


def _first_pass(run: Pass, work: ChunkWork, contents: dict) -> bool:
    """The chunk's frames in order (a leader's first as a still, or from its anchor; a follower's
    after the chunk before); True when stopped."""
    shot = Shot(max(run.video.offsets))
    for t in work.history:  # a follower starts where the chunk before ended, as one machine would
        shot.push(np.asarray(contents[t]), run.stylizer.as_optimized(run.store.load(t)))
    anchor = None if work.anchor is None else (np.asarray(contents[work.anchor]),
                                                  run.stylizer.as_optimized(run.store.load(work.anchor)))
    for t in work.frames:
        images = run.stylizer.images(contents[t])
        content = np.asarray(contents[t])
        source_index, shown = work.times.get(t, (t, "0"))
        frame = InputFrame(t, source_index, contents[t], Fraction(shown))
        image, record = stylize_frame(run, frame, images, content, shot, anchor if t == work.frames[0] else None)
        if image is None:
            return True
        run.store.save(t, image, record)
        shot.push(content, run.stylizer.as_optimized(image))
    return False


def remote_chunk(work: ChunkWork) -> dict:
    """The Dask task: one chunk's pass on the worker's threads, cancelled when the client cancels."""
    from ..remote import worker_context

    with worker_context() as (address, threads, stop):
        reply = run_chunk(dataclasses.replace(work, config=work.config.replace(threads=threads)), stop)
    reply["worker"] = address
    return reply
