"""One frame of a video: its temporal guide (flow, warped earlier outputs, weights) and its optimization.

Why it is split from run.py and passes.py: they walk the clip (decode, resume, passes, write); this module holds
what one frame needs, so each is small. What is shared by all frames of a video (the network,
the style features, the decoded style images) is built once in FrameStylizer; each frame adds its
own content target and, after the first frame of a shot, the temporal term.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..color import gray_to_rgb, luminance
from ..engine import Finish, build_objective, network_for, render_image, run_steps, style_features
from ..image import tensor_to_pil
from ..inputs import Inputs, ScaleImages
from ..objective import Objective
from ..optional import require
from .flow import link, long_term_weights, warp
from .temporal import TemporalTerm


def to_array(image: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) in 0..1 -> HxWx3 float32 in 0..1 (what flow.warp takes)."""
    return np.ascontiguousarray(image[0].permute(1, 2, 0).float().cpu().numpy())


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """HxWxC (or HxW) float32 -> (1,C,H,W)."""
    array = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)


@dataclass(frozen=True)
class Earlier:
    """A finished frame of the current shot: its content at the working size (for the flow, uint8)
    and its output as the optimizer saw it (float32 0..1; luminance only with --original-colors luminance)."""

    content: np.ndarray
    output: np.ndarray


class Shot:
    """The last few finished frames of the current shot, newest first; emptied at a cut."""

    def __init__(self, depth: int):
        self.frames: deque[Earlier] = deque(maxlen=depth)

    def push(self, content: np.ndarray, output: np.ndarray) -> None:
        self.frames.appendleft(Earlier(content, output))

    def clear(self) -> None:
        self.frames.clear()

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class Guide:
    """How frame t follows its shot: ``cut`` (a new shot starts), ``coverage`` of the link to t-1,
    the earlier outputs warped into t (closest first) with their weights."""

    cut: bool
    coverage: float
    warped: list[np.ndarray]
    weights: list[np.ndarray]
    previous: np.ndarray | None = None  # the output of t-1 warped into t (the start)
    uncovered: np.ndarray | None = None  # True where t-1 has nothing to give (disoccluded, outside)
    lost: np.ndarray | None = None  # True where the flow lost track of the content (flow.link)


def guide(shot: Shot, content: np.ndarray, offsets: tuple[int, ...], method: str,
          boundary_weight: float = 1.0, tolerance: float | None = None) -> Guide:
    """Flow from this frame to each earlier frame of ``offsets`` (1 = the previous one) still in the shot.

    The flow is computed on the content frames (clean, not stylized), both ways, for the mask.
    With more than one offset the weights are Ruder et al.'s long-term ones. ``boundary_weight``:
    the weight at motion boundaries (VideoConfig.motion_boundary_weight; 0 is the paper's);
    ``tolerance``: VideoConfig.warp_tolerance (flow.link).
    """
    options = {"boundary_weight": boundary_weight, "tolerance": tolerance}
    links = {1: link(shot.frames[0].content, content, method, **options)}
    if links[1].cut:
        return Guide(True, links[1].coverage, [], [])
    for offset in offsets:
        if offset not in links and offset <= len(shot):
            links[offset] = link(shot.frames[offset - 1].content, content, method, **options)
    warped = {o: warp(shot.frames[o - 1].output, link_.flow) for o, link_ in links.items()}
    used = [o for o in offsets if o in links]
    masks = [links[o].mask for o in used]
    weights = long_term_weights(masks) if len(masks) > 1 else masks
    return Guide(False, links[1].coverage, [warped[o] for o in used], weights, warped[1], links[1].uncovered,
                 links[1].lost)


INPAINT_RADIUS = 5  # px around a hole that cv2.inpaint (Telea) draws from


def prev_warped_start(guide: Guide, content: torch.Tensor) -> torch.Tensor:
    """The previous output warped into this frame; where nothing could be warped from (disoccluded,
    outside the frame), the warped output's own surroundings painted in (OpenCV's Telea
    inpainting); where the flow lost track of the content (``guide.lost``), the content frame.

    Why painted: a backward warp fills a disocclusion with whatever the flow points at, often the
    person who just walked away (trails; Ruder et al. sec. 3.1 start there from the warp), and raw
    photo pixels there were re-stylized from scratch every frame, the largest source of flicker
    left (measured in docs/video.md). Why the content where the flow lost track: what is there (a
    walker's arm) is not in the warped output at all, and has to be drawn.
    """
    cv2 = require("cv2")
    start = np.clip(guide.previous, 0.0, 1.0)
    if guide.uncovered.any():
        holes = guide.uncovered.astype(np.uint8)
        painted = cv2.inpaint((start * 255 + 0.5).astype(np.uint8), holes, INPAINT_RADIUS, cv2.INPAINT_TELEA)
        start = np.where(guide.uncovered[..., None], painted.astype(np.float32) / 255.0, start)
    start = to_tensor(start)
    if guide.lost is not None and guide.lost.any():
        lost = to_tensor(guide.lost.astype(np.float32))
        start = (1 - lost) * start + lost * content
    return start


@dataclass(frozen=True)
class Neighbour:
    """A finished frame next to the one being revisited in a later pass: its output warped into
    this frame and the consistency weight of that warp."""

    warped: np.ndarray
    weight: np.ndarray


def neighbours(content: np.ndarray, around: list[tuple[np.ndarray, np.ndarray]], method: str,
               boundary_weight: float = 1.0, tolerance: float | None = None) -> list[Neighbour]:
    """For a later pass: each (content, output) of ``around`` (the frame the pass comes from first)
    warped into this frame along the flow between the content frames, with its weight."""
    found = []
    for other_content, other_output in around:
        step = link(other_content, content, method, boundary_weight=boundary_weight, tolerance=tolerance)
        found.append(Neighbour(warp(other_output, step.flow), step.mask))
    return found


def revisit_start(own: np.ndarray, near: Neighbour, share: float = 0.5) -> torch.Tensor:
    """A later pass starts a frame from its last output, moved ``share`` of the way toward the
    neighbour the pass comes from (warped) where that warp is consistent (Ruder et al. sec. 3.3)."""
    mix = share * near.weight[..., None]
    return to_tensor((1.0 - mix) * own + mix * near.warped)


def neighbour_term(weight: float, found: list[Neighbour]) -> TemporalTerm:
    """The temporal term of a later pass: toward every neighbour at once, each with its weight."""
    return TemporalTerm(weight, [to_tensor(n.warped) for n in found], [to_tensor(n.weight) for n in found])


@dataclass
class FrameStep:
    """After each iteration of a frame: the frame (0-based among the selected), the iteration in it."""

    index: int
    frames: int
    step: int
    steps: int
    losses: dict[str, float]
    first: bool  # the frame starts a shot: full iterations, no temporal term
    _render: Callable[[], Image.Image] | None = field(default=None, repr=False)
    pass_number: int = 1  # which pass over the clip (1-based)
    passes: int = 1
    pass_frames: int | None = None  # frames this pass optimizes (a later pass skips where it turns)

    def image(self) -> Image.Image | None:
        """The frame as it is now (what it would be if stopped here): for a live preview."""
        return None if self._render is None else self._render()


class FrameStylizer:
    """What the frames of one video share: the network, the style features (computed once, with the
    first frame stylized: with --original-colors the styles are recoloured to that frame), the inputs.

    ``inputs``: load_inputs() with any content (each frame replaces it); side: the working long side.
    """

    def __init__(self, inputs: Inputs, policy, side: int):
        self.inputs, self.config, self.policy, self.side = inputs, inputs.config, policy, side
        self.net = network_for(self.config, policy)
        self.styles = None  # from the first frame stylized: --original-colors matches the styles to it
        self.first_images: ScaleImages | None = None

    def prime(self, images: ScaleImages) -> None:
        """Compute the style features from ``images`` (the clip's first frame) unless done already:
        a resumed run whose first frames are all on disk still matches the styles to frame 0."""
        if self.styles is None:
            self.first_images = images
            self.styles = style_features(self.net, images)

    def images(self, frame: Image.Image) -> ScaleImages:
        """The frame as the content at the working size (and the styles, already resized)."""
        return dataclasses.replace(self.inputs, content=frame).at(self.side)

    def as_optimized(self, image: Image.Image) -> np.ndarray:
        """A finished frame as the optimizer saw it: with --original-colors luminance its luminance."""
        array = np.asarray(image.convert("RGB"), np.float32) / 255.0
        if self.config.original_colors == "luminance":
            return to_array(gray_to_rgb(luminance(to_tensor(array))))
        return array

    def run(self, images: ScaleImages, start: torch.Tensor, iterations: int, terms=(),
            on_step: Callable[[int, dict, Callable], bool] | None = None) -> tuple[Image.Image | None, dict, int]:
        """Optimize one frame; returns (finished image or None when stopped, last losses, iterations).
        on_step(iteration, losses, render): render() is the frame as it is now, as a PIL image."""
        self.prime(images)
        finish = Finish.for_images(self.config, images)
        terms = tuple(terms)

        def hook(step, shown, losses):
            return on_step is None or on_step(step, losses, functools.partial(render_image, shown, finish)) is not False

        result = run_steps(start, iterations, self.config, self.policy,
                           functools.partial(self._objective, images, terms), hook)
        if result.stopped:
            return None, result.losses, result.done
        return tensor_to_pil(finish(result.image).cpu()), result.losses, result.done

    def _objective(self, images: ScaleImages, terms: tuple, policy) -> Objective:
        if policy is not self.policy:  # run_steps fell back to float32: network and style features again
            self.policy = policy
            self.net = network_for(self.config, policy)
            self.styles = style_features(self.net, self.first_images)
        extra = [t.to(policy.device) for t in terms]
        return build_objective(self.net, self.config, images, extra, styles=self.styles)


def temporal_term(weight: float, guide: Guide) -> TemporalTerm:
    return TemporalTerm(weight, [to_tensor(w) for w in guide.warped], [to_tensor(c) for c in guide.weights])

