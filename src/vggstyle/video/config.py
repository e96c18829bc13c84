"""What a video run is told and what it tells: VideoConfig (the knobs only a video has), FrameDone
(after each frame), VideoSummary (at the end) and where the finished frames go. Below both the
facade (video.stylize_video) and the driver (video.run), which share these types."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from PIL import Image

from ..config import MAX_ITERATIONS, MAX_WEIGHT, Range, StyleConfig, check_bounds
from ..errors import ConfigError


INIT_FRAMES = ("prev-warped", "content", "random")
FLOW_CHOICES = ("dis-fast", "dis-medium", "farneback")  # flow.FLOW_METHODS, without importing OpenCV here


MAX_PASSES = 64
MAX_LONG_TERM = 16  # earlier frames compared with


def _opt(default, help: str, **extra):
    """A field with its help (and choices, metavar, bounds: the Range a number may take)."""
    meta = {"help": help, **extra}
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


# A shot's first frame is a still at one scale (the video's size): the still default before the
# half-size start, so that a clip's look did not change with it.
FIRST_FRAME_ITERATIONS = 300
# A spread run's anchored leader (split.py): its first frame starts from its shot's first still,
# warped, so it needs far fewer (60 measured: half the difference where chunks meet, docs/video.md;
# never more than a first frame is given). It is anchored only where that one flow is consistent
# over at least ANCHOR_COVERAGE of the frame.
ANCHORED_ITERATIONS = 60
ANCHOR_COVERAGE = 0.5


def anchored_iterations(first_iterations: int) -> int:
    """An anchored first frame's iterations, given a first frame's (the frame and the ETA use it)."""
    return min(ANCHORED_ITERATIONS, first_iterations)


@dataclass
class VideoConfig:
    """The knobs only a video has; StyleConfig holds the rest (the same as for a still)."""

    temporal_weight: float = _opt(
        3000.0, "weight of the temporal term: how strongly each frame keeps the previous output, warped "
              "along the flow, where the flow is consistent; 0: off", bounds=Range(0.0, MAX_WEIGHT))
    first_frame_iterations: int | None = _opt(
        None, "iterations of the first frame and of the first frame after each shot cut "
              f"(default: --num-iterations if given, else {FIRST_FRAME_ITERATIONS})", bounds=Range(1, MAX_ITERATIONS))
    motion_boundary_weight: float = _opt(
        1.0, "weight of the temporal term at motion boundaries of the flow, 0..1; 0: the paper's (free them); "
             "on noisy flow most of them are still background, which then re-stylizes every frame",
        bounds=Range(0.0, 1.0))
    warp_tolerance: float = _opt(
        0.15, "where the previous content frame, warped along the flow, differs from this one by more than this "
              "(mean RGB difference, 0..1), the flow lost track (a walker's limbs): those pixels start from the "
              "content and are free of the temporal term; 1: off", bounds=Range(0.0, 1.0, low_open=True))
    frame_iterations: int = _opt(10, "iterations of every other frame in each pass (they start from the previous "
                                     "output)", bounds=Range(1, MAX_ITERATIONS))
    passes: int = _opt(3, "passes over the clip: 1 = forward only (each frame follows the one before); 2 = then "
                          "backward, each frame pulled toward both neighbours; 3 = forward again (the default: "
                          "far steadier than one pass with the same iterations in all); more alternate",
                          bounds=Range(1, MAX_PASSES))
    init_frame: str = _opt("prev-warped", "how a frame after the first starts: prev-warped (the previous output "
                           "warped along the flow), content, or random", choices=INIT_FRAMES)
    long_term: list = _opt([], "long-term consistency: compare with these earlier frames, closest first, e.g. "
                           "1,2,4 (each pixel counts for the closest frame it is consistent with)",
                           metavar="LIST", bounds=Range(1, 10_000))
    flow: str = _opt("dis-medium", "optical flow method (OpenCV)", choices=FLOW_CHOICES)
    start: str | None = _opt(None, "first frame: seconds (2.5), minutes:seconds (1:02.5) or frame (f120)",
                             metavar="TIME")
    end: str | None = _opt(None, "end (exclusive), as --start", metavar="TIME")
    max_frames: int | None = _opt(None, "refuse inputs with more selected frames than this", metavar="N",
                                  bounds=Range(1, 10**9))
    work_dir: str | None = _opt(None, "folder of finished frames, for resuming (default: OUTPUT.frames beside "
                                "the output, removed when the video is written)", metavar="DIR")
    fps: float | None = _opt(None, "frame rate of a folder of frames or a pattern (default 25)", metavar="X",
                             bounds=Range(0.0, 1000.0, low_open=True))
    chunk_frames: int = _opt(48, "spread over workers (a scheduler or several devices): a shot longer than this is "
                                 "cut into chunks of about this many frames, one task each", bounds=Range(2, 100_000))
    chunk_overlap: int | None = _opt(None, "spread over workers: frames before its own that a leading chunk also "
                                           "stylizes in the first pass, cross-faded with the chunk before (default: a "
                                           "third of --chunk-frames; 0: none)", bounds=Range(0, 1000))

    def __post_init__(self) -> None:
        if isinstance(self.long_term, str):
            try:
                self.long_term = [int(x) for x in self.long_term.replace(" ", "").split(",") if x]
            except ValueError:
                raise ConfigError(f"--long-term '{self.long_term}': give frame offsets like 1,2,4") from None
        self.long_term = list(self.long_term or [])

    @property
    def offsets(self) -> tuple[int, ...]:
        """The earlier frames the temporal term compares with (1 = the previous one)."""
        return tuple(self.long_term) or (1,)

    @property
    def overlap(self) -> int:
        """--chunk-overlap, else a third of --chunk-frames: the longer the fade where two chunks' first
        passes meet, the smaller each frame's step (at 48-frame chunks 16 measured best of 4, 8, 12, 16;
        at 16, 4 better than 8: docs/video.md), but the warm-up is work only the cross-fade uses."""
        return self.chunk_frames // 3 if self.chunk_overlap is None else self.chunk_overlap

    @property
    def tolerance(self) -> float | None:
        """--warp-tolerance for flow.link: None when it is off (1: no difference is over it)."""
        return None if self.warp_tolerance >= 1 else float(self.warp_tolerance)

    def first_iterations(self, config: StyleConfig) -> int:
        """A shot's first frame: --first-frame-iterations, else --num-iterations (or --epochs) when
        given, else FIRST_FRAME_ITERATIONS (not the still's default, which has a half-size start)."""
        if self.first_frame_iterations is not None:
            return self.first_frame_iterations
        return config.iterations_or(FIRST_FRAME_ITERATIONS)

    def replace(self, **changes) -> "VideoConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "VideoConfig":
        """Raise ConfigError with one line naming the bad option; return self."""
        for f in video_fields():
            value, allowed = getattr(self, f.name), f.metadata.get("bounds")
            if allowed is None or value is None:
                continue
            check_bounds(f"--{f.name.replace('_', '-')}", value, f.type.startswith(("int", "list")), allowed,
                         MAX_LONG_TERM)
        if self.init_frame not in INIT_FRAMES:
            raise ConfigError(f"unknown --init-frame '{self.init_frame}': choose one of {', '.join(INIT_FRAMES)}")
        if self.flow not in FLOW_CHOICES:
            raise ConfigError(f"unknown --flow '{self.flow}': choose one of {', '.join(FLOW_CHOICES)}")
        if self.long_term != sorted(set(self.long_term)):
            raise ConfigError(f"--long-term must be frame offsets >= 1, rising, closest first (e.g. 1,2,4), "
                              f"got {','.join(map(str, self.long_term))}")
        return self


def video_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(VideoConfig))


@dataclass
class FrameDone:
    """After each finished frame (stylized now, or taken from the work dir when resuming)."""

    index: int
    frames: int
    losses: dict[str, float]
    seconds: float
    first: bool  # started a shot (the clip's first frame, or after a cut)
    resumed: bool  # taken from the work dir, not stylized in this run
    image: Image.Image
    pass_number: int = 1  # which pass over the clip (1-based) finished it
    passes: int = 1
    pass_frames: int | None = None  # frames this pass optimizes (a later pass skips where it turns)


@dataclass
class SpreadProgress:
    """A clip spread over workers, about four times a second while it waits on them (for on_step):
    chunk passes finished of ``total``, tasks sent and not back yet, the chunks, the seconds left (None: not known
    before the first task ends)."""

    done: int
    total: int
    running: int
    chunks: int
    eta_seconds: float | None


@dataclass
class VideoSummary:
    """What stylize_video did. ``losses``: the weighted terms of each frame's last iteration;
    ``cuts``: the frames (0-based) where a new shot started; ``seconds``: this run's wall time."""

    output: Path | None  # None when stopped early: no output was written
    frames: int  # frames finished (the work dir holds them)
    total_frames: int
    fps: Fraction
    size: tuple[int, int]
    seconds: float
    losses: list[dict] = field(default_factory=list)
    frame_seconds: list[float] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)
    resumed: int = 0
    message: str | None = None  # from the work dir: resuming, or options changed
    stopped: bool = False
    passes: int = 1
    pass_number: int = 1  # the pass running when it ended (``passes`` when complete)
    warnings: list[str] = field(default_factory=list)  # damaged media skipped or dropped, one line each
    tasks: list[tuple[int, int, float]] = field(default_factory=list)  # spread: (chunk, pass, worker seconds) each


def split_overrides(overrides: dict) -> tuple[dict, dict]:
    """Keyword overrides -> (StyleConfig fields, VideoConfig fields); anything else is an error."""
    video_names = {f.name for f in video_fields()}
    style_names = {f.name for f in dataclasses.fields(StyleConfig)}
    unknown = sorted(set(overrides) - video_names - style_names)
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    return ({k: v for k, v in overrides.items() if k in style_names},
            {k: v for k, v in overrides.items() if k in video_names})


def default_work_dir(output) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".frames")
