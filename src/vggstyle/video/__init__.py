"""stylize_video(): a clip stylized frame by frame without flicker (Ruder, Dosovitskiy and Brox 2016).

Data flows one way: the input (reader.open_video) -> each frame's content target at the working
size -> its guide from the earlier frames of the shot (frame.guide: optical flow on the
content frames, warped earlier outputs, consistency weights) -> the objective of the still images
plus the temporal term -> the frame store (resumable work dir) -> the video writer.

* The network, its weights and the style features are computed once per video; each frame's
  content target from its own frame.
* A frame after the first of its shot starts from the previous output warped along the flow
  (--init-frame prev-warped) and takes --frame-iterations; the first frame of the clip and of every
  shot after a cut (flow coverage under flow.CUT_THRESHOLD) start as a still: --first-frame-iterations
  and no temporal term dragging the last shot in.
* Then later passes (--passes, 3 by default: back, then forward again): each frame of a shot, in
  the pass's direction, starts from itself blended with the neighbour the pass comes from (already
  revisited) warped into it, and takes --frame-iterations more with the temporal term toward both
  neighbours (Ruder et al. sec. 3.3's multi-pass idea). What the first pass drifted into, frame
  after frame, is pulled back from both sides; measured in docs/video.md.
* Every finished frame goes to the work dir atomically; the same call again resumes after the last
  finished frame (other options: starts over, and says so). The output is written to a temporary
  file and renamed at the end; a stop or an error leaves no output, the finished frames stay.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import StyleConfig
from ..errors import ConfigError
from .config import (FLOW_CHOICES, INIT_FRAMES, FrameDone, SpreadProgress, VideoConfig,  # noqa: F401
                     VideoSummary, default_work_dir, split_overrides, video_fields)


def stylize_video(input, styles, output, config: StyleConfig | None = None, *, video: VideoConfig | None = None,
                  masks=None, on_frame: Callable[[FrameDone], "bool | None"] | None = None,
                  on_step: Callable | None = None, on_message: Callable[[str], None] | None = None,
                  tags: dict | None = None, scheduler: str | None = None, devices=None,
                  resources: dict | None = None, retries: int = 2, **overrides) -> VideoSummary:
    """Stylize the clip ``input`` in the style of ``styles`` and write it to ``output``.

    input: a video file (mp4, mov, mkv, avi, webm, gif), a folder of frames or a printf pattern.
    output: .mp4, .webm, .gif, or a folder name (PNG frames). The frame rate and the sound are kept.
    config: the still-image StyleConfig (the frames are stylized at its --image-size); video: a
    VideoConfig; keyword overrides set fields of either (``temporal_weight=..., image_size=256``).
    on_frame(FrameDone) after each frame of each pass (its ``pass_number``; a later pass revisits
    the frames in place), on_step(FrameStep) after each iteration: returning False stops; the
    finished frames stay in the work dir, no output is written, and the same call again resumes.
    on_message(text): the work dir's news ('resuming after N finished frames',
    'options changed (...); starting over'), also kept in the summary's ``message``.
    An mp4 or webm output records the parameters in its metadata (video.writer.read_parameters), with
    ``tags`` (JSON-able) added to them, as a PNG result carries its own. Damaged media skipped on
    the way (a sound packet the decoder refuses) is in the summary's ``warnings``.

    Spread over workers (docs/video.md): ``scheduler`` (a Dask scheduler, tcp://HOST:PORT) or
    several ``devices`` ("cuda:0", "cuda:1"; one thread each here) cut the clip into shots and
    chunks (``chunk_frames``, ``chunk_overlap``), one task per chunk and pass; with a scheduler,
    ``devices`` is at most one (the workers' device), ``resources`` (e.g. {"GPU": 1}) says which
    workers may run a task and ``retries`` how often a task that raised runs again. on_step then
    receives a SpreadProgress about four times a second (returning False stops) and on_frame each
    frame as its chunk's pass comes back.
    """
    style_changes, video_changes = split_overrides(overrides)
    config = (config or StyleConfig()).replace(**style_changes) if style_changes else (config or StyleConfig())
    video = ((video or VideoConfig()).replace(**video_changes) if video_changes else (video or VideoConfig()))
    devices = check_devices(devices, scheduler)
    if devices and (scheduler or len(devices) == 1):
        config = config.replace(device=devices[0])
    spread = bool(scheduler) or len(devices) > 1

    from .run import VideoRun  # torch, PyAV and OpenCV are imported here

    run = VideoRun(input, styles, output, config, video.validate(), masks, tags, spread=spread)
    if not spread:
        return run.run(on_frame, on_step, on_message)
    from .spread import runner_for

    runner = runner_for(scheduler, devices, config.threads, resources, retries)
    try:
        return run.run(on_frame, on_step, on_message, runner=runner)
    finally:
        runner.close()


def check_devices(devices, scheduler: str | None) -> list[str]:
    """The devices of a call, each checked; with a scheduler at most one (every worker's)."""
    devices = [devices] if isinstance(devices, str) else list(devices or [])
    for device in devices:
        StyleConfig(device=device).validate()
    if scheduler and len(devices) > 1:
        raise ConfigError("with a scheduler, give at most one device (the device every worker uses)")
    if scheduler:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ConfigError("a scheduler needs Dask's distributed package: pip install 'vggstyle[cluster]'") from None
    return devices

