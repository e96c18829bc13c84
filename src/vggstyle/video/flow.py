"""Optical flow, backward warping, the consistency weight of Ruder et al. (2016), warping error, shot cuts.

Why it is built this way:
- OpenCV's DIS (fast, dense, CPU) and Farneback cover the speed/quality range without native
  binaries of our own; the benchmark measures flicker with a different method than the one used
  to optimize, so a method is a name (``FLOW_METHODS``).
- One direction convention everywhere: ``optical_flow(a, b)`` is defined on the pixels of ``a``
  and points into ``b``: a(x) ~ b(x + flow(x)). ``warp(b, flow)`` then samples b at x + flow(x) and
  gives b as seen in a's frame (backward warping; no holes). So to bring the previous stylized
  frame t-1 into frame t, use ``flow = optical_flow(frame_t, frame_prev)`` and
  ``warp(stylized_prev, flow)``; its weight is ``consistency(flow, optical_flow(frame_prev, frame_t))``.
- Frames are brightness-normalized (grey, mean and contrast fixed) before the flow is estimated,
  so a fade (a global gain) reads as "no motion", not as a cut.
- Everything is numpy in, numpy out (float32); the driver converts to torch once per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..optional import require

FLOW_METHODS = ("dis-fast", "dis-medium", "farneback")
CUT_THRESHOLD = 0.5  # share of consistent pixels below which two frames are a shot cut (see is_cut)
FLAT_CONTRAST = 2.0  # grey standard deviation (0..255) under which a frame is flat (black, a title card)


def optical_flow(source, target, method: str = "dis-medium") -> np.ndarray:
    """Dense flow (H, W, 2) float32 in pixels, (dx, dy), on the pixels of ``source`` pointing into
    ``target``: source(x) ~ target(x + flow(x)). Frames: RGB or grey arrays (uint8 or float in 0..1)
    or PIL images, of one size."""
    cv2 = require("cv2")
    a, b = _flow_input(source), _flow_input(target)
    if a.shape != b.shape:
        raise ValueError(f"frames of different sizes: {a.shape[::-1]} and {b.shape[::-1]}")
    if method in ("dis-fast", "dis-medium"):
        preset = cv2.DISOPTICAL_FLOW_PRESET_FAST if method == "dis-fast" else cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
        flow = cv2.DISOpticalFlow_create(preset).calc(a, b, None)
    elif method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=5, winsize=15, iterations=3,
                                            poly_n=5, poly_sigma=1.2, flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
    else:
        from ..errors import ConfigError
        raise ConfigError(f"--flow '{method}': unknown method; use one of {', '.join(FLOW_METHODS)}")
    return np.ascontiguousarray(flow, dtype=np.float32)


def _flow_input(frame) -> np.ndarray:
    """Grey uint8 with the mean and contrast fixed, so global brightness changes are not motion."""
    grey = _grey(frame)
    spread = grey.std()
    if spread < FLAT_CONTRAST:
        return np.full(grey.shape, 128, np.uint8)
    return np.clip((grey - grey.mean()) * (48.0 / spread) + 128.0, 0, 255).astype(np.uint8)


def _grey(frame) -> np.ndarray:
    """Grey float32 in 0..255 from RGB/grey uint8 (or PIL) or float in 0..1."""
    array = np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame)
    array = array.astype(np.float32) * (1.0 if array.dtype == np.uint8 else 255.0)
    if array.ndim == 3:
        array = array[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return array


def is_flat(frame) -> bool:
    """True for a frame with (almost) no contrast: black, white, a single colour."""
    return float(_grey(frame).std()) < FLAT_CONTRAST


def warp(image, flow: np.ndarray, border: str = "replicate") -> np.ndarray:
    """Backward warp: out(x) = image(x + flow(x)), bilinear. ``image`` is (H, W) or (H, W, C) with
    C <= 4 (uint8 or float32); ``flow`` is (H, W, 2) on the output's pixels.

    ``border``: where x + flow(x) leaves the image, 'replicate' takes the nearest edge pixel,
    'zeros' gives 0, 'reflect' mirrors. Those pixels get weight 0 in ``consistency`` anyway.
    """
    cv2 = require("cv2")
    modes = {"replicate": cv2.BORDER_REPLICATE, "zeros": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT101}
    if border not in modes:
        raise ValueError(f"border '{border}': use one of {', '.join(modes)}")
    array = np.asarray(image)
    map_x, map_y = _sample_points(flow)
    return cv2.remap(array, map_x, map_y, cv2.INTER_LINEAR, borderMode=modes[border], borderValue=0)


def _sample_points(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = flow.shape[:2]
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    return grid_x + flow[..., 0], grid_y + flow[..., 1]


def consistency(flow: np.ndarray, flow_reverse: np.ndarray, boundary_weight: float = 0.0) -> np.ndarray:
    """Ruder et al. (2016) weight c(x) on the pixels where ``flow`` is defined: (H, W) float32 of 0/1.

    ``flow`` is the paper's backward flow w^ (frame t -> t-1, the one ``warp`` uses to bring t-1
    into t); ``flow_reverse`` its forward flow w (t-1 -> t). w~(x) = w(x + w^(x)) is the forward
    flow brought into frame t. c = 0 where
      - the two disagree (disocclusion): |w~ + w^|^2 > 0.01 (|w~|^2 + |w^|^2) + 0.5,
      - at motion boundaries: |grad u^|^2 + |grad v^|^2 > 0.01 |w^|^2 + 0.002,
      - where x + w^(x) leaves the frame (nothing to warp from); 1 elsewhere.
    ``boundary_weight`` replaces the 0 at motion boundaries (see ``link``).
    """
    disoccluded, boundary, outside = consistency_parts(flow, flow_reverse)
    return _weights(disoccluded | outside, boundary, boundary_weight)


def _weights(uncovered: np.ndarray, boundary: np.ndarray, boundary_weight: float) -> np.ndarray:
    """0 where nothing can be warped from, ``boundary_weight`` at motion boundaries, 1 elsewhere."""
    return np.where(uncovered, 0.0, np.where(boundary, boundary_weight, 1.0)).astype(np.float32)


def consistency_parts(flow: np.ndarray, flow_reverse: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three reasons for c(x) = 0 as boolean maps: disoccluded, motion boundary, outside.

    Outside means more than half a pixel beyond the edge: within it the bilinear sample of the
    replicated edge is exact, and on a still camera the flow's noise (hundredths of a pixel) would
    otherwise free the whole frame border (1.8 % of a 160x120 frame of vtest_5s.mp4) every frame.
    """
    height, width = flow.shape[:2]
    carried = warp(flow_reverse, flow, border="replicate")  # w~
    sum_sq = np.sum((carried + flow) ** 2, axis=2)
    disoccluded = sum_sq > 0.01 * (np.sum(carried ** 2, axis=2) + np.sum(flow ** 2, axis=2)) + 0.5
    du_dy, du_dx = np.gradient(flow[..., 0])
    dv_dy, dv_dx = np.gradient(flow[..., 1])
    boundary = du_dx ** 2 + du_dy ** 2 + dv_dx ** 2 + dv_dy ** 2 > 0.01 * np.sum(flow ** 2, axis=2) + 0.002
    map_x, map_y = _sample_points(flow)
    outside = (map_x < -0.5) | (map_x > width - 0.5) | (map_y < -0.5) | (map_y > height - 0.5)
    return disoccluded, boundary, outside


def long_term_weights(weights: list[np.ndarray]) -> list[np.ndarray]:
    """Ruder et al.'s long-term weights: c_long(j) = max(c(j) - sum of c(k) for closer k, 0).

    ``weights`` are the consistency weights of frame t against t-j for j in the chosen offsets,
    closest first; each pixel then counts only for the closest frame it is consistent with.
    """
    out, covered = [], np.zeros_like(weights[0]) if weights else None
    for weight in weights:
        out.append(np.maximum(weight - covered, 0.0).astype(np.float32))
        covered = covered + weight
    return out


@dataclass(frozen=True)
class Link:
    """How frame t relates to the previous frame: ``flow`` (t -> t-1, for ``warp``), its weight
    ``mask`` (``consistency``), ``coverage`` = the share of pixels that pass the forward-backward
    and frame-edge checks (see ``is_cut``), ``cut`` = a new shot starts at t."""

    flow: np.ndarray
    mask: np.ndarray
    coverage: float
    cut: bool
    uncovered: np.ndarray  # True where nothing can be warped from (disoccluded, outside)
    lost: np.ndarray  # True where the flow is consistent but does not carry the content (see link)


def link(previous, current, method: str = "dis-medium", threshold: float = CUT_THRESHOLD,
         boundary_weight: float = 0.0, tolerance: float | None = None) -> Link:
    """Flow both ways between two content frames, the consistency mask, and the cut test.

    ``boundary_weight``: the mask's value at motion boundaries; 0 is the paper's (and the warping
    error's). The video driver keeps them (1 by default, ``--motion-boundary-weight``): on DIS flow
    most "boundary" pixels are flow noise on still background, and freeing them let them be
    re-stylized every frame (measured in docs/video.md).

    ``tolerance`` (the driver's --warp-tolerance; None: off, the paper's and the warping error's):
    where the previous content frame warped along the flow differs from this one by more than it
    (mean RGB difference, 0..1), the flow has lost track although both directions agree: a
    walker's limbs, which DIS at these sizes moves with the background. Those pixels are ``lost``,
    weight 0: the temporal term would otherwise hold the background there and erase the person.
    The previous frame's levels are matched to this one's first (a fade is not a lost track), and
    a flat frame on either side has nothing to compare.
    """
    backward = optical_flow(current, previous, method)
    forward = optical_flow(previous, current, method)
    disoccluded, boundary, outside = consistency_parts(backward, forward)
    uncovered = disoccluded | outside
    coverage = float(1.0 - uncovered.mean())
    lost = np.zeros_like(uncovered)
    if tolerance is not None and not (is_flat(previous) or is_flat(current)):
        now = _rgb01(current)
        carried = _levels_like(warp(_rgb01(previous, now.shape), backward), now)
        lost = (np.abs(now - carried).mean(axis=2) > tolerance) & ~uncovered
    return Link(backward, _weights(uncovered | lost, boundary, boundary_weight), coverage,
                is_cut(coverage, previous, current, threshold), uncovered, lost)


def _levels_like(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``image`` with each channel's mean and spread set to ``reference``'s: a global gain (a fade,
    the exposure) taken out before two frames are compared."""
    axes = (0, 1)
    spread = image.std(axis=axes)
    gain = np.where(spread > 1e-3, reference.std(axis=axes) / np.maximum(spread, 1e-3), 1.0)
    return (image - image.mean(axis=axes)) * gain + reference.mean(axis=axes)


def is_cut(coverage: float, previous=None, current=None, threshold: float = CUT_THRESHOLD) -> bool:
    """A shot cut: fewer than ``threshold`` of the pixels of the new frame have a consistent flow.

    ``coverage`` counts the forward-backward check and the frame edge only: motion boundaries are
    left out because noisy flow (Farneback on a static, compressed background) marks scattered
    "boundaries" that say nothing about a cut. Measured: a synthetic cut between two textures
    gives 0.16 (dis-medium), 0.23 (dis-fast), 0.32 (farneback); every pair of vtest_5s.mp4 (no cut,
    people walking) stays at 0.95 or more with all three. 0.5 sits in the wide gap, nearer the cut
    side, so a fast pan (10 % of the width per frame still covers 0.9) is not taken for a cut.
    Flat frames (black, a single-colour title card) decide it themselves, whatever the flow says
    (it has nothing to hold on to in them): a frame with contrast after a flat one starts a shot
    (a clip opening on black, a fade-in, a scene after a title card), so it is stylized from its
    own content as a still would be; before, the flat frame's stylized texture was warped into it
    and held there by the temporal term for the whole shot. A flat frame itself is never a cut:
    a fade to black stays in its shot.
    """
    if previous is not None and current is not None:
        if is_flat(current):
            return False
        if is_flat(previous):
            return True
    return coverage < threshold


@dataclass(frozen=True)
class WarpingError:
    """Lai et al. (2018) warping error: ``value`` = mean over ``pairs`` frame pairs; pairs across a
    shot cut (``cuts`` of them) are left out."""

    value: float
    pairs: int
    cuts: int


def warping_error(frames: Iterable, reference: Iterable | None = None, method: str = "farneback",
                  threshold: float = CUT_THRESHOLD) -> WarpingError:
    """Mean over consecutive pairs of the consistency-masked mean squared RGB difference (0..1,
    averaged over pixels and the three channels) between frame t and frame t+1 warped back to t.

    The flow and mask come from ``reference`` (the input clip, resized to the frames' size) when
    given, else from ``frames`` themselves (the input's own error, the ratio's denominator).
    """
    frames = iter(frames)
    reference = iter(reference) if reference is not None else None
    total, pairs, cuts, previous, previous_ref = 0.0, 0, 0, None, None
    for frame in frames:
        current = _rgb01(frame)
        current_ref = _rgb01(next(reference), current.shape) if reference is not None else current
        if previous is not None:
            step = link(current_ref, previous_ref, method, threshold)  # flow t -> t+1, mask on frame t
            if step.cut:
                cuts += 1
            else:
                error = (previous - warp(current, step.flow)) ** 2
                total += float((error * step.mask[..., None]).sum() / max(step.mask.sum() * 3, 1.0))
                pairs += 1
        previous, previous_ref = current, current_ref
    return WarpingError(total / pairs if pairs else 0.0, pairs, cuts)


def _rgb01(frame, shape=None) -> np.ndarray:
    """Float32 RGB in 0..1, resized (area) to ``shape`` when given."""
    cv2 = require("cv2")
    array = np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame)
    array = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    if shape is not None and array.shape[:2] != shape[:2]:
        array = cv2.resize(array, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return array
