"""The driver behind stylize_video(): checks up front, the per-frame loop over the work dir, the encoding.

Why in two phases (frames, then encoding): every finished frame is in the work dir before the
next starts, so the slow phase can be killed at any moment and resumed; the output is encoded
from the work dir at the end in seconds, into a temporary file renamed into place
(writer.py), so no partial video is ever left, even by kill -9 during the frames.
"""

from __future__ import annotations

import hashlib
import os
import time
from fractions import Fraction
from pathlib import Path

import torch
from PIL import Image

from ..config import VIDEO_CONTENT_WEIGHT, StyleConfig
from ..device import resolve_policy
from ..engine import call_scope, network_for
from ..errors import OutputError, VggstyleError, first_line
from ..image import as_image_list, long_side_size
from ..inputs import load_inputs
from ..optional import require
from .config import VideoConfig, VideoSummary, default_work_dir
from .frame import FrameStylizer
from .passes import Pass, first_pass, later_pass
from .spread import check_spreadable, source_bytes, spread_passes
from .reader import damage_report, open_video
from .store import open_frame_store
from .writer import VideoWriter, check_video_output


class VideoRun:
    """One stylize_video() call. The constructor checks everything cheap (options, output, input,
    styles) before any network is built or any frame stylized."""

    def __init__(self, input, styles, output, config: StyleConfig, video: VideoConfig, masks=None, tags=None,
                 spread: bool = False):
        self.video, self.tags, self.spread = video, dict(tags or {}), spread
        self.output = check_video_output(output)
        self.clip = open_video(input, start=video.start, end=video.end, max_frames=video.max_frames,
                               max_input_pixels=config.max_input_pixels, fps=video.fps)
        placeholder = Image.new("RGB", self.clip.info.size)
        config = config.replace(content_weight=config.content_weight_or(VIDEO_CONTENT_WEIGHT))  # the frames' own
        self.inputs = load_inputs(placeholder, styles, config, masks)
        self.config = self.inputs.config
        self.size = long_side_size(self.clip.info.size, self.config.image_size)
        self.policy = resolve_policy(self.config.device, self.config.precision, self.config.winograd)
        self.work_dir = Path(video.work_dir) if video.work_dir else default_work_dir(self.output)
        self.first_iterations = video.first_iterations(self.config)
        self.sources = [_identity(s) for s in as_image_list(styles)] + \
                       [_identity(m) for m in (as_image_list(masks) if masks is not None else [])]
        self.styles, self.masks = styles, masks
        if spread:
            check_spreadable(self.config)

    def options(self) -> dict:
        """What decides how a frame looks: a change starts the work dir over (--end, --max-frames and
        the output do not: a longer --end resumes)."""
        config = {k: v for k, v in self.config.to_dict().items() if k not in ("threads",)}
        video = {k: getattr(self.video, k) for k in ("temporal_weight", "frame_iterations", "init_frame",
                                                     "long_term", "flow", "motion_boundary_weight", "passes",
                                                     "warp_tolerance")}
        if self.spread:  # how the clip is cut changes its seams
            video.update(chunk_frames=self.video.chunk_frames, chunk_overlap=self.video.overlap)
        return {**config, **video, "first_frame_iterations": self.first_iterations,
                "input": _identity(self.clip.info.source), "start_frame": self.clip.first,
                "fps": str(self.clip.fps), "styles_and_masks": self.sources}

    def run(self, on_frame=None, on_step=None, on_message=None, runner=None) -> VideoSummary:
        """Every pass, then the encoding; ``runner`` (spread.LocalChunks or DaskChunks): the passes
        spread over its workers chunk by chunk."""
        with call_scope(self.config.threads, self.policy):
            network_for(self.config, self.policy).check_size(self.size[1], self.size[0])
            store, message = open_frame_store(self.work_dir, self.options())
            if message and on_message is not None:
                on_message(message)
            summary = VideoSummary(None, 0, self.clip.frame_count, self.clip.fps, self.size, 0.0, message=message,
                                   passes=self.video.passes)
            started = time.perf_counter()
            stylizer = None if runner else FrameStylizer(self.inputs, self.policy, self.config.image_size)
            passes = Pass(self.video, self.clip, self.inputs, self.first_iterations, store, summary, stylizer,
                          on_frame, on_step)
            if runner is not None:
                spread_passes(passes, runner, *source_bytes(self.styles, self.masks, self.config))
            else:
                self._passes(passes)
            if (report := damage_report(self.clip, summary.frames)) is not None:
                summary.warnings.append(report)
            if not summary.stopped:
                summary.output = self._encode(store, summary)
                if self.video.work_dir is None:
                    store.clear()
                    _remove_if_empty(self.work_dir)
            summary.seconds = time.perf_counter() - started
        return summary

    def _passes(self, passes: Pass) -> None:
        """One machine: the first pass, then each later one, frame by frame."""
        first_pass(passes)
        for number in range(2, self.video.passes + 1):
            if passes.summary.stopped:
                break
            passes.summary.pass_number = number
            later_pass(passes, number)

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


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
