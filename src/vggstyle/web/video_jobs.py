"""A video job in the web queue: what it holds while it waits, how a worker runs it, what it reports.

Why it is built this way:
- The clip waits on disk (the queue's private directory, a name the server made), never decoded
  in memory; it is deleted when the job ends, is cancelled while waiting, or the server stops.
- The worker calls ``vggstyle.stylize_video`` (or a runner with its signature) through its
  public hooks only: on_step(FrameStep) for the iteration, the losses and the live preview,
  on_frame(FrameDone) for each finished frame. Each finished frame is also appended to a video
  kept beside the result, so a cancel, which stops after the current iteration, still ends with
  an MP4 of every frame done (the library writes no output when stopped). When the run
  completes, the library's own output is the result and that copy is dropped.
- Progress: the pass (p of P; VideoConfig.passes), the frame (k of n), the iteration within it (i of
  m), the losses; the ETA from the measured seconds per frame (frames after the first, which take
  fewer iterations; a later pass's frames take as many). What a cancel keeps is the first pass's
  frames: a later pass revisits frames in place, out of order.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..config import StyleConfig
from ..errors import VggstyleError
from ..files import png_bytes
from ..video import SpreadProgress, VideoConfig
from .jobs import Job


@dataclass(eq=False)
class VideoJob(Job):
    """A Job whose content is a clip on disk; ``step``/``total`` count the iterations of the
    current frame, ``frame`` (1-based) of ``frames`` says which."""

    input_path: Path | None = None
    video: VideoConfig = field(default_factory=VideoConfig)
    frames: int = 1
    fps: Fraction = Fraction(25)
    frame: int = 0  # the frame being optimized, 1-based; 0 before the first iteration
    frames_done: int = 0  # in the first pass
    pass_number: int = 1
    reported_passes: int = 0  # as the run reports them (0 before it does; see passes)
    pass_frames: int = 0  # frames the current later pass revisits (it skips where it turns)
    pass_done: int = 0  # of them, finished
    pass_last: int = 0  # the last frame finished in this pass, 1-based (0: none yet)
    frame_total: int = 0  # iterations of the current frame
    iterations_done: int = 0  # in the finished frames
    frame_seconds: list = field(default_factory=list)
    poster: bytes | None = None  # the last finished frame (PNG): the preview once the job has ended
    first_frame: bytes | None = None  # the content's first frame at the job's size (PNG): "before"
    first_result: bytes | None = None  # that frame in the result (PNG): "after"
    first_result_latest: bytes | None = None  # ... as the last pass left it (the first pass's is kept on a cancel)
    spread: dict | None = None  # spread over a cluster: chunk passes done, total, running, chunks, ETA

    kind = "video"
    media_type = "video/mp4"
    suffix = ".mp4"

    @property
    def total(self) -> int:
        return self.frame_total or self.config.iterations

    @property
    def first_iterations(self) -> int:
        return self.video.first_iterations(self.config)

    @property
    def passes(self) -> int:
        """The passes of the run: as it reports them, VideoConfig's until it does."""
        return self.reported_passes or self.video.passes

    @property
    def cost(self) -> float:
        """Work units (pixels x iterations) of the whole clip; frames run at one scale."""
        iterations = self.first_iterations + (self.frames - 1) * self.video.frame_iterations * self.video.passes
        return self.size[0] * self.size[1] * iterations

    @property
    def iterations(self) -> int:
        """Iterations run so far: the finished frames' and those of the frame in progress."""
        return self.iterations_done + (self.step if self._frame_in_progress else 0)

    @property
    def _frame_in_progress(self) -> bool:
        if self.pass_number == 1:
            return self.frame > self.frames_done
        return self.frame != self.pass_last and self.pass_done < self.pass_frames

    def units_done(self) -> float:
        return self.size[0] * self.size[1] * self.iterations

    def seconds_per_unit(self) -> float | None:
        """From the frames after the first (the first takes more iterations, and the setup)."""
        later = self.frame_seconds[1:]
        if not later:
            return None
        return sum(later) / len(later) / (self.size[0] * self.size[1] * self.video.frame_iterations)

    def seconds_left(self) -> float:
        """From the measured seconds per frame (frames after the first: they are the most), and
        for the frame in progress its iterations left at the speed shown so far; spread over a
        cluster, the run's own estimate from its chunks' seconds."""
        if self.spread is not None and self.spread["eta_seconds"] is not None:
            return self.spread["eta_seconds"]
        per_iteration = self.elapsed / max(1, self.iterations)
        later = self.frame_seconds[1:]
        per_frame = sum(later) / len(later) if later else per_iteration * self.video.frame_iterations
        current = (self.total - self.step) * per_iteration if self._frame_in_progress else 0.0
        revisits = max(0, self.frames - 1)  # a later pass's frames, the shots' turning frames left out
        if self.pass_number == 1:
            frames_left = max(0, self.frames - max(self.frame, self.frames_done, 1)) + \
                (self.passes - 1) * revisits
        else:
            frames_left = max(0, self.pass_frames - self.pass_done - (1 if self._frame_in_progress else 0)) + \
                (self.passes - self.pass_number) * (self.pass_frames or revisits)
        return current + frames_left * per_frame

    def release(self) -> None:
        super().release()
        if self.input_path is not None:
            self.input_path.unlink(missing_ok=True)
            self.input_path = None

    def execute(self, queue, config: StyleConfig) -> tuple[Path | None, dict]:
        """Run the clip in ``queue``'s worker (see VideoRunner); its MP4 goes to the queue's store."""
        return VideoRunner(queue, self, queue.video_runner).run(config, queue.store.directory)

    def extra_snapshot(self) -> dict:
        later = self.frame_seconds[1:] or self.frame_seconds
        return {"frame": self.frame, "frames": self.frames, "frames_done": self.frames_done,
                "pass": self.pass_number, "passes": self.passes, "pass_frames": self.pass_frames,
                "pass_done": self.pass_done, "fps": float(self.fps), "iterations_total": self.iterations,
                "seconds_per_frame": round(sum(later) / len(later), 3) if later else None, "spread": self.spread}


def default_video_runner(input, styles, output, config, *, video, masks=None, on_step, on_frame, scheduler=None):
    """A video job unless create_app is given another runner: vggstyle.stylize_video, on the server's
    threads (spread over ``scheduler``'s workers when the server has one)."""
    from ..device import set_threads
    from ..video import stylize_video  # torch, PyAV and OpenCV come with the first video job
    set_threads(config.threads)  # the server's process-wide choice, as for still jobs
    return stylize_video(input, styles, output, config, video=video, masks=masks, on_step=on_step,
                         on_frame=on_frame, scheduler=scheduler)


class FramesKept:
    """Each finished frame appended to a video beside the result: what a cancelled job keeps."""

    def __init__(self, path: Path, fps: Fraction, source: Path):
        self.path, self.fps, self.source, self.writer = path, fps, source, None
        self.count = 0

    def add(self, image) -> None:
        self.count += 1
        if self.writer is None:  # the sound too, trimmed to the frames written when it is closed
            from ..video.reader import open_video
            from ..video.writer import VideoWriter
            self.writer = VideoWriter(self.path, self.fps, audio=open_video(self.source).audio())
        self.writer.write(image)

    def close(self) -> Path | None:
        """The video of the frames added, or None if there were none."""
        return None if self.writer is None else self.writer.close()

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.abort()


class VideoRunner:
    """Runs one VideoJob in a worker: the hooks that record its progress, the result file.
    ``queue``: the JobQueue (its lock, its preview cadence, whether it is closing)."""

    def __init__(self, queue, job: VideoJob, runner=None):
        self.queue, self.job = queue, job
        self.runner = runner or default_video_runner
        self.started = time.time()

    def run(self, config: StyleConfig, directory: Path) -> tuple[Path | None, dict]:
        """Returns (the MP4, or None when cancelled before a frame was done; the parameters)."""
        job = self.job
        output = directory / f"result-{job.number:06d}.mp4"
        work = directory / f"frames-{job.number:06d}"
        kept = FramesKept(output, job.fps, job.input_path)  # the same name: only one of the two is ever completed
        video = job.video.replace(work_dir=str(work))
        extra = {"masks": job.masks} if job.masks else {}
        if self.queue.scheduler:
            extra["scheduler"] = self.queue.scheduler
        try:
            summary = self.runner(job.input_path, job.styles, output, config, video=video,
                                  on_step=self.on_step, on_frame=lambda done: self.on_frame(done, kept), **extra)
            path = self._result(summary, output, kept)
        except VggstyleError as exc:  # say "the content video", never the server's file name
            self._keep_partial(kept)
            text = str(exc).replace(f"input {job.input_path}", "the content video")
            raise type(exc)(text.replace(str(job.input_path), "the content video")) from None
        except Exception:
            self._keep_partial(kept)
            raise
        except BaseException:
            kept.drop()
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        parameters = {**config.to_dict(), "temporal_weight": job.video.temporal_weight,
                      "frame_iterations": job.video.frame_iterations, "passes": job.video.passes,
                      "frames_done": job.frames_done,
                      "frames": job.frames, "fps": str(job.fps)}
        return path, parameters

    def _keep_partial(self, kept: FramesKept) -> None:
        """A run that failed midway keeps the frames done, as a cancel does (the job is failed,
        with that MP4 as its result); nothing when the server is stopping."""
        if self.queue.closing:
            kept.drop()
            return
        try:
            self.job.partial_result = kept.close()
        except Exception:  # noqa: BLE001 - the run's own error is the one to report
            kept.drop()

    def _result(self, summary, output: Path, kept: FramesKept) -> Path | None:
        if summary.output is not None:
            kept.drop()
            with self.queue.lock:  # the library's output: every pass's work, its first frame too
                self.job.first_result = self.job.first_result_latest or self.job.first_result
            return Path(summary.output)
        if self.queue.closing:  # shutting down: nobody will download it
            kept.drop()
            return None
        return kept.close()

    def on_step(self, step) -> bool:
        """stylize_video's on_step: through the queue's one progress recorder."""
        if isinstance(step, SpreadProgress):
            return self.queue.record_step(self.job, step.done, step.total, lambda: None,
                                          lambda: self._record_spread(step))
        image = step.image if hasattr(step, "image") else (lambda: None)
        return self.queue.record_step(self.job, step.step, step.steps, image, lambda: self._record(step))

    def _record(self, step) -> None:
        """Called under the queue's lock: the frame, pass, iteration and losses of a FrameStep."""
        job = self.job
        job.frame, job.frames, job.step, job.frame_total = step.index + 1, step.frames, step.step, step.steps
        self._enter_pass(step)
        job.losses = dict(step.losses)
        job.elapsed = time.time() - self.started
        job.iterations_per_second = job.iterations / job.elapsed if job.elapsed > 0 else 0.0

    def _record_spread(self, progress: SpreadProgress) -> None:
        """Called under the queue's lock: a clip spread over a cluster reports its chunk passes."""
        self.job.spread = dataclasses.asdict(progress)
        self.job.elapsed = time.time() - self.started

    def _enter_pass(self, progress) -> None:
        """Called under the queue's lock: a new pass starts its own frame count."""
        job = self.job
        if progress.pass_number != job.pass_number:
            job.pass_number, job.pass_done, job.pass_last = progress.pass_number, 0, 0
        job.reported_passes, job.pass_frames = progress.passes, progress.pass_frames or job.frames

    def on_frame(self, done, kept: FramesKept) -> bool:
        """A finished frame. Spread over a cluster, frames come chunk by chunk and passes overlap:
        what a cancel keeps is the first frames in order, up to the first one not back yet."""
        job, queue = self.job, self.queue
        first_pass = done.pass_number == 1
        if first_pass and done.index == kept.count:
            kept.add(done.image)
        poster = png_bytes(done.image, compress_level=1)
        with queue.lock:
            in_progress = job.frame == done.index + 1 and job._frame_in_progress
            if not queue.scheduler:
                self._enter_pass(done)
            if first_pass:
                job.frames_done += 1
                job.frame_seconds.append(done.seconds)
            elif not queue.scheduler:
                job.pass_done, job.pass_last = job.pass_done + 1, done.index + 1
            job.iterations_done += job.step if in_progress else 0
            job.poster = poster
            if done.index == 0:
                job.first_result_latest = poster
                job.first_result = poster if first_pass else job.first_result
            job.elapsed = time.time() - self.started
            job.version += 1
        return True
