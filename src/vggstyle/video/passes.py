"""The passes of a video run over its frames, on the state one run shares (Pass): the first pass in
order, each frame after the one before (a shot's first frame as a still), and the later passes back
and forth, each frame pulled toward both neighbours. Split from run.py, which checks, resumes,
schedules the passes and encodes."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..inputs import Inputs
from .config import ANCHOR_COVERAGE, FrameDone, VideoConfig, VideoSummary, anchored_iterations
from .frame import (FrameStep, FrameStylizer, Shot, guide, neighbour_term, neighbours, prev_warped_start,
                          revisit_start, temporal_term)
from .reader import VideoInput
from .split import pass_order, shots
from .store import FrameStore


@dataclass
class Pass:
    """What every pass of one run works with: the options, the clip and inputs, the work dir, the
    summary it fills in, the stylizer (network and style targets, built once) and the hooks."""

    video: VideoConfig
    clip: VideoInput | None  # None on a worker: a chunk's frames come as bytes (chunk.py)
    inputs: Inputs
    first_iterations: int
    store: FrameStore
    summary: VideoSummary
    stylizer: FrameStylizer
    on_frame: Callable | None
    on_step: Callable | None


def first_pass(run: Pass) -> None:
    """The first pass: every frame in order, each after the one before."""
    shot = Shot(max(run.video.offsets))
    records = {r["index"]: r for r in run.store.records()}
    keep_content = run.video.passes > 1
    for frame in run.clip.frames():
        images = run.stylizer.images(frame.image)
        content = np.asarray(_to_pil(images.photo))
        if frame.index == 0:
            run.stylizer.prime(images)
        record = records.get(frame.index) if frame.index < run.store.done else None
        resumed = record is not None
        if keep_content and frame.index not in run.store.contents:
            run.store.save_content(frame.index, Image.fromarray(content))
        if resumed:
            image = run.store.load(frame.index)
            if record["first"]:
                shot.clear()
            run.summary.resumed += 1
        else:
            image, record = stylize_frame(run, frame, images, content, shot)
            if image is None:
                run.summary.stopped = True
                return
            run.store.save(frame.index, image, record)
        shot.push(content, run.stylizer.as_optimized(image))
        run.summary.frames += 1
        run.summary.losses.append(record["losses"])
        run.summary.frame_seconds.append(record["seconds"])
        if record.get("cut"):
            run.summary.cuts.append(frame.index)
        done = FrameDone(frame.index, run.clip.frame_count, record["losses"], record["seconds"],
                         record["first"], resumed, image, 1, run.video.passes,
                         run.clip.frame_count)
        if run.on_frame is not None and run.on_frame(done) is False:
            run.summary.stopped = run.summary.frames < run.clip.frame_count or run.video.passes > 1
            return

def stylize_frame(run: Pass, frame, images, content, shot: Shot, anchor: tuple[np.ndarray, np.ndarray] | None = None):
    """Optimize one frame of the first pass after the frames of ``shot``; returns (image or None
    when stopped, its record). ``anchor`` ((content, output) of an earlier frame of the shot): a
    first frame starts from that output warped to it, where one flow carries it (split.py)."""
    started = time.perf_counter()
    video = run.video
    link = guide(shot, content, video.offsets, video.flow, video.motion_boundary_weight,
                 video.tolerance) if len(shot) else None
    first = link is None or link.cut
    anchored = anchored_guide(video, content, anchor) if first and anchor is not None else None
    if anchored is not None:
        shot.clear()
        start = prev_warped_start(anchored, images.content)
        iterations, terms = anchored_iterations(run.first_iterations), ()
    elif first:
        shot.clear()
        start, iterations, terms = still_start(run.inputs, frame, run.inputs.config.init), run.first_iterations, ()
    else:
        init = {"prev-warped": None, "content": "content", "random": "random"}[video.init_frame]
        start = prev_warped_start(link, images.content) if init is None else still_start(run.inputs, frame, init)
        iterations = video.frame_iterations
        terms = (temporal_term(video.temporal_weight, link),) if video.temporal_weight > 0 else ()

    def hook(step: int, losses: dict, render=None) -> bool:
        if run.on_step is None:
            return True
        return run.on_step(FrameStep(frame.index, run.summary.total_frames, step, iterations, losses, first,
                                     render, 1, video.passes, run.summary.total_frames)) is not False

    image, losses, done = run.stylizer.run(images, start, iterations, terms, hook)
    record = {"source_index": frame.source_index, "time": str(frame.time), "first": first,
              **({"anchored": round(anchored.coverage, 4)} if anchored is not None else {}),
              "cut": bool(link is not None and link.cut),
              "coverage": None if link is None else round(link.coverage, 4), "iterations": done,
              "losses": losses, "seconds": round(time.perf_counter() - started, 3)}
    return image, record

def anchored_guide(video: VideoConfig, content: np.ndarray, anchor: tuple[np.ndarray, np.ndarray]):
    """The guide from ``anchor`` to this frame, or None where one flow cannot carry it (a cut, or
    consistent over less than ANCHOR_COVERAGE of the frame)."""
    earlier = Shot(1)
    earlier.push(*anchor)
    found = guide(earlier, content, (1,), video.flow, video.motion_boundary_weight, video.tolerance)
    return None if found.cut or found.coverage < ANCHOR_COVERAGE else found


def later_pass(run: Pass, number: int) -> None:
    """Pass ``number`` (2, 3, ...) over every shot (split.pass_order: even passes backward, odd
    ones forward, each turning where the pass before ended)."""
    frames = run.summary.frames
    records = {record["index"]: record for record in run.store.records()}
    order = pass_order(shots([i for i in range(1, frames) if records[i]["first"]], frames), number)
    if run.stylizer.styles is None:
        run.stylizer.prime(run.stylizer.images(run.store.load_content(0)))
    if revisit(run, number, order, records) is False:
        run.summary.stopped = True


def revisit(run: Pass, number: int, order: list[tuple[int, int, int]], records: dict):
    """Revisit the frames of ``order`` ((frame, shot first, shot last) each) in pass ``number``:
    each frame pulled toward its neighbours in its shot, the one the pass comes from first.
    Frames already at this pass in the store (a resumed run) are taken as they are. Returns False
    when stopped (a hook said so), None otherwise."""
    video, frames, pass_frames = run.video, run.summary.frames, len(order)
    backward = number % 2 == 0
    content = functools.lru_cache(maxsize=4)(lambda index: np.asarray(run.store.load_content(index)))
    for t, lo, hi in order:
        resumed = run.store.pass_of(t) >= number
        if resumed:
            image, record = run.store.load(t), records[t]
        else:
            near, far = (t + 1, t - 1) if backward else (t - 1, t + 1)
            around = [near] + ([far] if lo <= far <= hi else [])

            def hook(step: int, losses: dict, render=None, t=t) -> bool:
                progress = FrameStep(t, frames, step, video.frame_iterations, losses, False, render, number,
                                     video.passes, pass_frames)
                return run.on_step is None or run.on_step(progress) is not False

            image, record = _revisit_frame(run, t, around, content, hook)
            if image is None:
                return False
            record = {**records[t], **record}
            run.store.save(t, image, record, pass_number=number)
            run.summary.frame_seconds[t] += record["seconds"]
            run.summary.losses[t] = record["losses"]
        done = FrameDone(t, frames, record["losses"], record["seconds"], False, resumed, image, number,
                         video.passes, pass_frames)
        if run.on_frame is not None and run.on_frame(done) is False:
            return False if (number < video.passes or t != order[-1][0]) else None
    return None

def _revisit_frame(run: Pass, t: int, around: list[int], content, hook):
    """Frame ``t`` in a later pass: it starts from its last output blended toward ``around[0]``
    (the neighbour the pass comes from, already revisited) and takes --frame-iterations with the
    temporal term toward every frame of ``around`` (both neighbours inside its shot)."""
    video, started = run.video, time.perf_counter()
    found = neighbours(content(t), [(content(i), run.stylizer.as_optimized(run.store.load(i))) for i in around],
                       video.flow, video.motion_boundary_weight, video.tolerance)
    start = revisit_start(run.stylizer.as_optimized(run.store.load(t)), found[0])
    terms = (neighbour_term(video.temporal_weight, found),) if video.temporal_weight > 0 else ()
    images = run.stylizer.images(Image.fromarray(content(t)))
    image, losses, done = run.stylizer.run(images, start, video.frame_iterations, terms, hook)
    return image, {"iterations": done, "losses": losses, "seconds": round(time.perf_counter() - started, 3)}


def still_start(inputs, frame, init: str) -> torch.Tensor:
    """A frame started as a still: --init (content, random or an image), seeded per frame."""
    config = inputs.config
    generator = torch.Generator().manual_seed((config.seed or 0) + frame.index)
    inputs = dataclasses.replace(inputs, content=frame.image, config=config.replace(init=init))
    return inputs.start(config.image_size, generator)


def _to_pil(image: torch.Tensor) -> Image.Image:
    from ..image import tensor_to_pil
    return tensor_to_pil(image)
