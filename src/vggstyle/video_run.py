"""The driver behind stylize_video(): checks up front, the per-frame loop over the work dir, the encoding.

Why in two phases (frames, then encoding): every finished frame is in the work dir before the
next starts, so the slow phase can be killed at any moment and resumed; the output is encoded
from the work dir at the end in seconds, into a temporary file renamed into place
(video_write), so no partial video is ever left, even by kill -9 during the frames.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .config import StyleConfig
from .device import resolve_policy
from .errors import OutputError, VggstyleError, first_line
from .frame_store import open_frame_store
from .image import as_image_list, long_side_size
from .inputs import load_inputs
from .optional import require
from .optimize import call_scope, network_for
from .video_config import FrameDone, VideoConfig, VideoSummary, default_work_dir
from .video_frame import (FrameStep, FrameStylizer, Shot, guide, neighbour_term, neighbours, prev_warped_start,
                          revisit_start, temporal_term)
from .video_io import VideoWriter, check_video_output, damage_report, open_video


class VideoRun:
    """One stylize_video() call. The constructor checks everything cheap (options, output, input,
    styles) before any network is built or any frame stylized."""

    def __init__(self, input, styles, output, config: StyleConfig, video: VideoConfig, masks=None, tags=None):
        self.video, self.tags = video, dict(tags or {})
        self.output = check_video_output(output)
        self.clip = open_video(input, start=video.start, end=video.end, max_frames=video.max_frames,
                               max_input_pixels=config.max_input_pixels, fps=video.fps)
        placeholder = Image.new("RGB", self.clip.info.size)
        self.inputs = load_inputs(placeholder, styles, config, masks)
        self.config = self.inputs.config
        self.size = long_side_size(self.clip.info.size, self.config.image_size)
        self.policy = resolve_policy(self.config.device, self.config.precision, self.config.winograd)
        self.work_dir = Path(video.work_dir) if video.work_dir else default_work_dir(self.output)
        self.first_iterations = video.first_frame_iterations or self.config.iterations
        self.sources = [_identity(s) for s in as_image_list(styles)] + \
                       [_identity(m) for m in (as_image_list(masks) if masks is not None else [])]

    def options(self) -> dict:
        """What decides how a frame looks: a change starts the work dir over (--end, --max-frames and
        the output do not: a longer --end resumes)."""
        config = {k: v for k, v in self.config.to_dict().items() if k not in ("threads",)}
        video = {k: getattr(self.video, k) for k in ("temporal_weight", "frame_iterations", "init_frame",
                                                     "long_term", "flow", "motion_boundary_weight", "passes",
                                                     "warp_tolerance")}
        return {**config, **video, "first_frame_iterations": self.first_iterations,
                "input": _identity(self.clip.info.source), "start_frame": self.clip.first,
                "fps": str(self.clip.fps), "styles_and_masks": self.sources}

    def run(self, on_frame=None, on_step=None, on_message=None) -> VideoSummary:
        with call_scope(self.config.threads, self.policy):
            network_for(self.config, self.policy).check_size(self.size[1], self.size[0])
            store, message = open_frame_store(self.work_dir, self.options())
            if message and on_message is not None:
                on_message(message)
            summary = VideoSummary(None, 0, self.clip.frame_count, self.clip.fps, self.size, 0.0, message=message,
                                   passes=self.video.passes)
            started = time.perf_counter()
            stylizer = FrameStylizer(self.inputs, self.policy, self.config.image_size)
            self._frames(store, summary, stylizer, on_frame, on_step)
            if (report := damage_report(self.clip, summary.frames)) is not None:
                summary.warnings.append(report)
            for number in range(2, self.video.passes + 1):
                if summary.stopped:
                    break
                summary.pass_number = number
                self._revisit(number, store, summary, stylizer, on_frame, on_step)
            if not summary.stopped:
                summary.output = self._encode(store, summary)
                if self.video.work_dir is None:
                    store.clear()
                    _remove_if_empty(self.work_dir)
            summary.seconds = time.perf_counter() - started
        return summary

    def _encode(self, store, summary: VideoSummary) -> Path:
        """The output from the work dir. If writing it fails, the frames stay and the message says
        how to get the video from them: the same command again only encodes."""
        try:
            path, warnings = encode(store, summary.frames, self.output, self.clip, {**self.options(), **self.tags})
        except (VggstyleError, OSError, require("av").error.FFmpegError) as exc:
            raise OutputError(f"output {self.output}: writing the video failed ({first_line(exc)}); the "
                              f"{summary.frames} finished frames are kept in {self.work_dir}: fix the cause and "
                              "run the same command again, which only encodes them") from None
        summary.warnings.extend(warnings)
        return path

    def _frames(self, store, summary: VideoSummary, stylizer: FrameStylizer, on_frame, on_step) -> None:
        """The first pass: every frame in order, each after the one before."""
        shot = Shot(max(self.video.offsets))
        records = {r["index"]: r for r in store.records()}
        keep_content = self.video.passes > 1
        for frame in self.clip.frames():
            images = stylizer.images(frame.image)
            content = np.asarray(_to_pil(images.photo))
            if frame.index == 0:
                stylizer.prime(images)
            record = records.get(frame.index) if frame.index < store.done else None
            resumed = record is not None
            if keep_content and frame.index not in store.contents:
                store.save_content(frame.index, Image.fromarray(content))
            if resumed:
                image = store.load(frame.index)
                if record["first"]:
                    shot.clear()
                summary.resumed += 1
            else:
                image, record = self._stylize(frame, images, content, shot, stylizer, summary, on_step)
                if image is None:
                    summary.stopped = True
                    return
                store.save(frame.index, image, record)
            shot.push(content, stylizer.as_optimized(image))
            summary.frames += 1
            summary.losses.append(record["losses"])
            summary.frame_seconds.append(record["seconds"])
            if record.get("cut"):
                summary.cuts.append(frame.index)
            done = FrameDone(frame.index, self.clip.frame_count, record["losses"], record["seconds"],
                             record["first"], resumed, image, 1, self.video.passes,
                             self.clip.frame_count)
            if on_frame is not None and on_frame(done) is False:
                summary.stopped = summary.frames < self.clip.frame_count or self.video.passes > 1
                return

    def _stylize(self, frame, images, content, shot: Shot, stylizer: FrameStylizer, summary, on_step):
        """Optimize one frame; returns (image or None when stopped, its record)."""
        started = time.perf_counter()
        video = self.video
        link = guide(shot, content, video.offsets, video.flow, video.motion_boundary_weight,
                     video.tolerance) if len(shot) else None
        first = link is None or link.cut
        if first:
            shot.clear()
            start, iterations, terms = still_start(self.inputs, frame, self.config.init), self.first_iterations, ()
        else:
            init = {"prev-warped": None, "content": "content", "random": "random"}[video.init_frame]
            start = prev_warped_start(link, images.content) if init is None else still_start(self.inputs, frame, init)
            iterations = video.frame_iterations
            terms = (temporal_term(video.temporal_weight, link),) if video.temporal_weight > 0 else ()

        def hook(step: int, losses: dict, render=None) -> bool:
            if on_step is None:
                return True
            return on_step(FrameStep(frame.index, self.clip.frame_count, step, iterations, losses, first,
                                     render, 1, video.passes, self.clip.frame_count)) is not False

        image, losses, done = stylizer.run(images, start, iterations, terms, hook)
        record = {"source_index": frame.source_index, "time": str(frame.time), "first": first,
                  "cut": bool(link is not None and link.cut),
                  "coverage": None if link is None else round(link.coverage, 4), "iterations": done,
                  "losses": losses, "seconds": round(time.perf_counter() - started, 3)}
        return image, record

    def _revisit(self, number: int, store, summary: VideoSummary, stylizer: FrameStylizer, on_frame, on_step) -> None:
        """Pass ``number`` (2, 3, ...): even passes go backward, odd ones forward, shot by shot.

        The frame where the previous pass ended (a shot's last frame going backward, its first going
        forward) is where this one turns: skipped. Frames already at this pass on disk (a resumed
        run) are taken as they are.
        """
        video, frames = self.video, summary.frames
        backward = number % 2 == 0
        records = {record["index"]: record for record in store.records()}
        starts = sorted({0} | {i for i in range(1, frames) if records[i]["first"]}) + [frames]
        shots = [(lo, hi - 1) for lo, hi in zip(starts, starts[1:])]
        order = [(t, lo, hi) for lo, hi in (reversed(shots) if backward else shots)
                 for t in (range(hi - 1, lo - 1, -1) if backward else range(lo + 1, hi + 1))]
        content = functools.lru_cache(maxsize=4)(lambda index: np.asarray(store.load_content(index)))
        if stylizer.styles is None:
            stylizer.prime(stylizer.images(store.load_content(0)))
        for t, lo, hi in order:
            resumed = store.pass_of(t) >= number
            if resumed:
                image, record = store.load(t), records[t]
            else:
                near, far = (t + 1, t - 1) if backward else (t - 1, t + 1)
                around = [near] + ([far] if lo <= far <= hi else [])

                def hook(step: int, losses: dict, render=None, t=t) -> bool:
                    return on_step is None or on_step(FrameStep(t, frames, step, video.frame_iterations, losses,
                                                                False, render, number, video.passes,
                                                                len(order))) is not False

                image, record = self._revisit_frame(t, around, content, store, stylizer, hook)
                if image is None:
                    summary.stopped = True
                    return
                record = {**records[t], **record}
                store.save(t, image, record, pass_number=number)
                summary.frame_seconds[t] += record["seconds"]
                summary.losses[t] = record["losses"]
            done = FrameDone(t, frames, record["losses"], record["seconds"], False, resumed, image, number,
                             video.passes, len(order))
            if on_frame is not None and on_frame(done) is False:
                summary.stopped = number < video.passes or t != order[-1][0]
                return

    def _revisit_frame(self, t: int, around: list[int], content, store, stylizer: FrameStylizer, hook):
        """Frame ``t`` in a later pass: it starts from its last output blended toward ``around[0]``
        (the neighbour the pass comes from, already revisited) and takes --frame-iterations with the
        temporal term toward every frame of ``around`` (both neighbours inside its shot)."""
        video, started = self.video, time.perf_counter()
        found = neighbours(content(t), [(content(i), stylizer.as_optimized(store.load(i))) for i in around],
                           video.flow, video.motion_boundary_weight, video.tolerance)
        start = revisit_start(stylizer.as_optimized(store.load(t)), found[0])
        terms = (neighbour_term(video.temporal_weight, found),) if video.temporal_weight > 0 else ()
        images = stylizer.images(Image.fromarray(content(t)))
        image, losses, done = stylizer.run(images, start, video.frame_iterations, terms, hook)
        return image, {"iterations": done, "losses": losses, "seconds": round(time.perf_counter() - started, 3)}


def _identity(item) -> str:
    """What a style or mask is, for the work dir's options: a path with its size and time, or a hash."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item).resolve()
        try:
            stat = path.stat()
            return f"{path} {stat.st_size} {stat.st_mtime_ns}"
        except OSError:
            return str(path)
    if isinstance(item, Image.Image):
        data = item.tobytes() + repr((item.mode, item.size)).encode()
    elif isinstance(item, torch.Tensor):
        data = item.detach().float().cpu().numpy().tobytes() + repr(tuple(item.shape)).encode()
    else:
        data = repr(item).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def still_start(inputs, frame, init: str) -> torch.Tensor:
    """A frame started as a still: --init (content, random or an image), seeded per frame."""
    config = inputs.config
    generator = torch.Generator().manual_seed((config.seed or 0) + frame.index)
    inputs = dataclasses.replace(inputs, content=frame.image, config=config.replace(init=init))
    return inputs.start(config.image_size, generator)


def encode(store, frames: int, output: Path, clip, parameters: dict) -> tuple[Path, list[str]]:
    """The finished frames 0 .. frames-1 as the output video, at the input's times (its rate, even
    a variable one), with its sound and the parameters in its metadata; and what was skipped or
    dropped on the way (damaged sound). Frames of a work dir older than recorded times are
    shown at frame number / fps."""
    times = {record["index"]: Fraction(record["time"]) for record in store.records() if "time" in record}
    writer = VideoWriter(output, clip.fps, audio=clip.audio(), parameters=parameters, time_base=clip.time_base)
    try:
        for index in range(frames):
            writer.write(store.load(index), times.get(index, Fraction(index) / clip.fps))
    except BaseException:
        writer.abort()
        raise
    return writer.close(), writer.warnings


def _to_pil(image: torch.Tensor) -> Image.Image:
    from .image import tensor_to_pil
    return tensor_to_pil(image)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
