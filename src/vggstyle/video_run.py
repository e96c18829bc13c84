"""The driver behind stylize_video(): checks up front, the per-frame loop over the work dir, the encoding.

Why in two phases (frames, then encoding): every finished frame is in the work dir before the
next starts, so the slow phase can be killed at any moment and resumed; the output is encoded
from the work dir at the end in seconds, into a temporary file renamed into place
(video_write), so no partial video is ever left, even by kill -9 during the frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .config import StyleConfig
from .device import resolve_policy
from .frame_store import open_frame_store
from .image import as_image_list, long_side_size
from .inputs import load_inputs
from .optimize import _call_scope, network_for
from .video import FrameDone, VideoConfig, VideoSummary, default_work_dir
from .video_frame import FrameStep, FrameStylizer, Shot, guide, prev_warped_start, temporal_term
from .video_io import VideoWriter, check_video_output, open_video


class VideoRun:
    """One stylize_video() call. The constructor checks everything cheap (options, output, input,
    styles) before any network is built or any frame stylized."""

    def __init__(self, input, styles, output, config: StyleConfig, video: VideoConfig, masks=None):
        self.video = video
        self.output = check_video_output(output)
        self.clip = open_video(input, start=video.start, end=video.end, max_frames=video.max_frames,
                               max_input_pixels=config.max_input_pixels, fps=video.fps)
        placeholder = Image.new("RGB", self.clip.info.size)
        self.inputs = load_inputs(placeholder, styles, config, masks)
        self.config = self.inputs.config
        self.size = long_side_size(self.clip.info.size, self.config.image_size)
        self.policy = resolve_policy(self.config.device, self.config.precision)
        self.work_dir = Path(video.work_dir) if video.work_dir else default_work_dir(self.output)
        self.first_iterations = video.first_frame_iterations or self.config.iterations
        self.sources = [_identity(s) for s in as_image_list(styles)] + \
                       [_identity(m) for m in (as_image_list(masks) if masks is not None else [])]

    def options(self) -> dict:
        """What decides how a frame looks: a change starts the work dir over (--end, --max-frames and
        the output do not: a longer --end resumes)."""
        config = {k: v for k, v in self.config.to_dict().items() if k not in ("threads",)}
        video = {k: getattr(self.video, k) for k in ("temporal_weight", "frame_iterations", "init_frame",
                                                     "long_term", "flow")}
        return {**config, **video, "first_frame_iterations": self.first_iterations,
                "input": _identity(self.clip.info.source), "start_frame": self.clip.first,
                "fps": str(self.clip.fps), "styles_and_masks": self.sources}

    def run(self, on_frame=None, on_step=None, on_message=None) -> VideoSummary:
        with _call_scope(self.config.threads, self.policy):
            network_for(self.config, self.policy).check_size(self.size[1], self.size[0])
            store, message = open_frame_store(self.work_dir, self.options())
            if message and on_message is not None:
                on_message(message)
            summary = VideoSummary(None, 0, self.clip.frame_count, self.clip.fps, self.size, 0.0, message=message)
            started = time.perf_counter()
            self._frames(store, summary, on_frame, on_step)
            if not summary.stopped:
                summary.output = encode(store, summary.frames, self.output, self.clip)
                if self.video.work_dir is None:
                    store.clear()
                    _remove_if_empty(self.work_dir)
            summary.seconds = time.perf_counter() - started
        return summary

    def _frames(self, store, summary: VideoSummary, on_frame, on_step) -> None:
        stylizer = FrameStylizer(self.inputs, self.policy, self.config.image_size)
        shot = Shot(max(self.video.offsets))
        records = {r["index"]: r for r in store.records()}
        for frame in self.clip.frames():
            images = stylizer.images(frame.image)
            content = np.asarray(_to_pil(images.photo))
            record = records.get(frame.index) if frame.index < store.done else None
            resumed = record is not None
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
                             record["first"], resumed, image)
            if on_frame is not None and on_frame(done) is False:
                summary.stopped = summary.frames < self.clip.frame_count
                return

    def _stylize(self, frame, images, content, shot: Shot, stylizer: FrameStylizer, summary, on_step):
        """Optimize one frame; returns (image or None when stopped, its record)."""
        started = time.perf_counter()
        video = self.video
        link = guide(shot, content, video.offsets, video.flow, video.motion_boundary_weight) if len(shot) else None
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
                                     render)) is not False

        image, losses, done = stylizer.run(images, start, iterations, terms, hook)
        record = {"source_index": frame.source_index, "first": first, "cut": bool(link is not None and link.cut),
                  "coverage": None if link is None else round(link.coverage, 4), "iterations": done,
                  "losses": losses, "seconds": round(time.perf_counter() - started, 3)}
        return image, record



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


def encode(store, frames: int, output: Path, clip) -> Path:
    """The finished frames 0 .. frames-1 as the output video, with the clip's rate and sound."""
    writer = VideoWriter(output, clip.fps, audio=clip.audio())
    try:
        for index in range(frames):
            writer.write(store.load(index))
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _to_pil(image: torch.Tensor) -> Image.Image:
    from .image import tensor_to_pil
    return tensor_to_pil(image)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
