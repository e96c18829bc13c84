"""Optical flow, warping, Ruder et al.'s consistency weight, warping error and shot cuts on synthetic motion."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import EXAMPLES
from vggstyle.video import flow as F

SHIFT = (3, 2)  # pixels per frame: content moves left by 3 and up by 2
H, W = 72, 96


def _texture(seed: int, shape=(160, 200), blur=2.0) -> np.ndarray:
    import cv2
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((*shape, 3)).astype(np.float32), (0, 0), blur)
    return ((noise - noise.min()) / (noise.max() - noise.min()) * 255).astype(np.uint8)


TEXTURE = _texture(0)


def _frame(t: int, texture=TEXTURE) -> np.ndarray:
    """Frame t is a window on the texture moved by t * SHIFT: frame_t(x) = frame_{t-1}(x + SHIFT)."""
    x, y = 10 + t * SHIFT[0], 10 + t * SHIFT[1]
    return np.ascontiguousarray(texture[y:y + H, x:x + W])


@pytest.mark.parametrize("method,tolerance", [("dis-medium", 0.5), ("dis-fast", 0.5), ("farneback", 0.5)])
def test_flow_finds_the_shift(method, tolerance):
    backward = F.optical_flow(_frame(1), _frame(0), method)  # t -> t-1: +SHIFT
    forward = F.optical_flow(_frame(0), _frame(1), method)   # t-1 -> t: -SHIFT
    inner = (slice(8, -8), slice(8, -8))
    assert backward.shape == (H, W, 2) and backward.dtype == np.float32
    assert np.abs(backward[inner] - SHIFT).max() < tolerance
    assert np.abs(forward[inner] + SHIFT).max() < tolerance


def test_mask_marks_the_uncovered_strip_and_warp_reproduces_the_frame():
    step = F.link(_frame(0), _frame(1), "dis-medium")
    # frame 1 pixels whose match lies right of / below frame 0: the last 3 columns and 2 rows.
    assert step.mask[:, -SHIFT[0]:].max() == 0 and step.mask[-SHIFT[1]:, :].max() == 0
    assert step.mask[:-SHIFT[1], :-SHIFT[0]].mean() > 0.97
    assert not step.cut and step.coverage > 0.9
    # Warping frame t-1 into t with the t -> t-1 flow reproduces frame t inside the mask.
    warped = F.warp(_frame(0).astype(np.float32) / 255, step.flow)
    error = np.abs(warped - _frame(1).astype(np.float32) / 255)[step.mask > 0]
    assert error.mean() < 0.01
    unwarped = np.abs(_frame(0).astype(np.float32) / 255 - _frame(1).astype(np.float32) / 255)
    assert unwarped[step.mask > 0].mean() > 5 * error.mean()


def test_warp_follows_the_flow_exactly_and_border_is_explicit():
    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    flow = np.zeros((4, 5, 2), np.float32)
    flow[..., 0] = 1.0  # sample one pixel to the right
    assert np.array_equal(F.warp(image, flow, border="zeros")[:, :4], image[:, 1:])
    assert np.all(F.warp(image, flow, border="zeros")[:, 4] == 0)
    assert np.array_equal(F.warp(image, flow, border="replicate")[:, 4], image[:, 4])
    half = F.warp(image, flow * 0.5, border="replicate")
    assert np.allclose(half[:, :4], (image[:, :4] + image[:, 1:]) / 2)
    with pytest.raises(ValueError, match="border 'wrap'"):
        F.warp(image, flow, border="wrap")


def test_consistency_follows_the_papers_inequalities():
    """Hand-made flows: agreement, a disocclusion, a motion boundary, a pixel leaving the frame."""
    backward = np.zeros((6, 8, 2), np.float32)
    forward = np.zeros((6, 8, 2), np.float32)
    assert F.consistency(backward, forward).min() == 1  # no motion: all consistent
    backward[..., 0] = 2.0
    forward[..., 0] = -2.0
    mask = F.consistency(backward, forward)
    assert mask[:, :6].min() == 1 and mask[:, 6:].max() == 0  # x + 2 > 7 leaves the frame
    forward[2, 3:5, 0] = 2.0  # where frame 1's pixels (2, 2..3) land, the forward flow disagrees
    mask = F.consistency(backward, forward)
    assert mask[2, 1:3].max() == 0 and mask[0, 1:3].min() == 1
    backward = np.zeros((6, 8, 2), np.float32)
    backward[:, 4:, 1] = 0.5  # a step in v: a motion boundary at columns 3..4 (central differences)
    forward = -backward
    mask = F.consistency(backward, forward)
    assert mask[:, 3:5].max() == 0 and mask[:, :3].min() == 1 and mask[:-1, 5:].min() == 1
    assert F.consistency(backward, forward, boundary_weight=0.25)[:, 3:5].max() == 0.25  # the video's knob


def test_flow_noise_at_the_frame_edge_is_not_leaving_the_frame():
    """A still camera: the flow's noise points a hundredth of a pixel outside. Within half a pixel the
    replicated edge is an exact bilinear sample, so the border keeps its weight; beyond it, it does not."""
    backward = np.zeros((6, 8, 2), np.float32)
    backward[:, 0, 0], backward[:, -1, 0] = -0.02, 0.02
    assert F.consistency(backward, -backward).min() == 1
    backward[:, 0, 0] = -0.6
    mask = F.consistency(backward, -backward)
    assert mask[:, 0].max() == 0 and mask[:, -1].min() == 1


def test_long_term_weights_count_each_pixel_once():
    near = np.array([1, 0, 0, 1], np.float32)
    mid = np.array([1, 1, 0, 0], np.float32)
    far = np.array([1, 1, 1, 0], np.float32)
    assert [w.tolist() for w in F.long_term_weights([near, mid, far])] == [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]]


def test_a_cut_between_two_shots_is_detected_but_motion_is_not():
    other = _frame(0, _texture(1, blur=3.0))
    for method in F.FLOW_METHODS:
        assert F.link(_frame(3), other, method).cut, method
        assert not F.link(_frame(2), _frame(3), method).cut, method


def test_a_fade_from_black_starts_its_shot_at_the_first_frame_with_contrast():
    frames = [(_frame(0).astype(np.float32) * gain).astype(np.uint8) for gain in (0, 0.03, 0.2, 0.4, 0.7, 1.0)]
    steps = [F.link(a, b, "dis-medium") for a, b in zip(frames, frames[1:])]
    assert F.is_flat(frames[0]) and F.is_flat(frames[1]) and not F.is_flat(frames[2])
    # black -> black: one shot; black -> the first frame with contrast: a shot starts; then one shot
    assert [step.cut for step in steps] == [False, True, False, False, False]
    assert min(step.coverage for step in steps[2:]) > 0.9  # brightness-normalized: a gain is not motion


def test_a_fade_to_black_stays_in_its_shot():
    frames = [(_frame(0).astype(np.float32) * gain).astype(np.uint8) for gain in (1.0, 0.4, 0.03, 0)]
    assert not any(F.link(a, b, "dis-medium").cut for a, b in zip(frames, frames[1:]))


def test_warping_error_is_zero_for_the_input_and_counts_cuts():
    clip = [_frame(t) for t in range(4)]
    assert F.warping_error(clip, method="dis-fast").value < 1e-3
    noisy = [np.clip(f + np.random.default_rng(t).normal(0, 20, f.shape), 0, 255).astype(np.uint8)
             for t, f in enumerate(clip)]
    flicker = F.warping_error(noisy, reference=clip, method="dis-fast")
    assert flicker.pairs == 3 and flicker.value > 20 * F.warping_error(clip, method="dis-fast").value
    with_cut = clip + [_frame(0, _texture(1, blur=3.0))]
    result = F.warping_error(with_cut, method="dis-fast")
    assert (result.pairs, result.cuts) == (3, 1)


def test_unknown_method_is_one_line():
    from vggstyle.errors import ConfigError
    with pytest.raises(ConfigError, match=r"^--flow 'deepflow': unknown method; "
                                          r"use one of dis-fast, dis-medium, farneback$"):
        F.optical_flow(_frame(0), _frame(1), "deepflow")


def test_no_cut_in_the_real_clip():
    """People walking past a fixed camera (examples/video/walkway.mp4): no pair is taken for a cut."""
    from vggstyle.video.reader import open_video
    frames = [np.asarray(f.image) for f in open_video(EXAMPLES / "video" / "walkway.mp4").frames()]
    coverage = [F.link(a, b, "dis-fast").coverage for a, b in zip(frames, frames[1:])]
    assert len(frames) == 20 and min(coverage) > 0.9 > F.CUT_THRESHOLD
