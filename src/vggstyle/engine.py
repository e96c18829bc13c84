"""The engine both drivers run on (the still's, optimize.stylize, and the video's, video.run and
video.passes): the network cache, the style targets, the objective of one scale, the step loop
with its float32 fallback, EMA and clamp, rendering the image as the user sees it, and the call
scope that leaves the process as it found it. Public, so that no driver reaches into another's
private names."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from .color import combine_luminance
from .config import CHECKPOINT_AUTO_PIXELS, StyleConfig
from .device import ComputePolicy, set_threads
from .heap import tune_heap
from .image import tensor_to_pil
from .inputs import ScaleImages
from .loop import NonFiniteLoss, make_optimizer, optimize
from .objective import ContentTerm, Objective, RangeTerm, StyleTerm, TVTerm
from .style import make_statistic
from .vgg import VGG19Features
from .weights import LoadedWeights, load_weights


@dataclass(frozen=True)
class Finish:
    """The image the user sees from the one optimized: clamped, and with --original-colors
    luminance the content's colours put back. Holds the content photo at this scale only."""

    luminance_of: torch.Tensor | None = None  # the content photo, when its colours go back

    @classmethod
    def for_images(cls, config: StyleConfig, images: ScaleImages) -> "Finish":
        return cls(images.photo if config.original_colors == "luminance" else None)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = image.detach()
        if self.luminance_of is None:
            return image.clamp(0.0, 1.0)
        return combine_luminance(image, self.luminance_of.to(image.device))


def render_image(image: torch.Tensor, finish: Finish) -> Image.Image:
    """The optimizer's image as the user sees it (``finish``: colour and range), as a PIL image."""
    return tensor_to_pil(finish(image))


# ------------------------------------------------------------------------------ network and objective
@functools.lru_cache(maxsize=2)
def loaded_weights(source: str, path: str | None, preprocessing: str) -> LoadedWeights:
    # Cached: a server or notebook stylizing many images reads and dequantizes once.
    return load_weights(source, path, preprocessing)


@functools.lru_cache(maxsize=4)
def network(source: str, path: str | None, preprocessing: str, layers: tuple[str, ...], pooling: str,
            policy: ComputePolicy) -> VGG19Features:
    """The frozen network for these layers, built once per process and shared (its forward has
    no state: a server's worker threads, a batch's jobs and a video's frames reuse it)."""
    return VGG19Features(loaded_weights(source, path, preprocessing), layers, pooling, policy)


def network_for(config: StyleConfig, policy: ComputePolicy) -> VGG19Features:
    layers = tuple(dict.fromkeys([*config.content_layers, *config.style_layers]))
    return network(config.weights_source, config.weights, config.weights_preprocessing, layers, config.pooling,
                   policy)


def style_features(net: VGG19Features, images: ScaleImages) -> list[dict[str, torch.Tensor]]:
    """VGG's features of each style image (every layer the network returns): the style targets are
    built from them, and the content term's reference floor. Computed once per scale, or once per
    video: a caller that keeps them passes them to build_objective."""
    with torch.no_grad():
        features = []
        for style in images.styles:
            net.check_size(style.shape[-2], style.shape[-1])
            features.append(net(style.to(net.policy.device)))
        return features


def build_objective(net: VGG19Features, config: StyleConfig, images: ScaleImages, extra_terms=(),
                    styles: list[dict[str, torch.Tensor]] | None = None) -> Objective:
    """The Objective of one scale: content, style, TV and range terms (targets computed here, once) and
    any extra terms, in that order. styles: style_features(net, images), when already computed."""
    device = net.policy.device
    _, _, height, width = images.content.shape
    net.check_size(height, width)
    styles = style_features(net, images) if styles is None else styles
    with torch.no_grad():
        features = net(images.content.to(device))
        content = ContentTerm(config.content_weight_or(), {n: features[n] for n in config.content_layers},
                              config.content_layers, [{n: f[n] for n in config.content_layers} for f in styles])
        del features
        generator = torch.Generator().manual_seed(config.seed or 0)  # on the CPU: the same draws on any device
        masks = None if images.masks is None else [m.to(device) for m in images.masks]
        style = StyleTerm(config.style_weight, make_statistic(config.style_loss, generator), config.style_layers,
                          styles, config.style_blend_weights or [1.0] * len(images.styles), masks)
    checkpoint = config.checkpoint == "on" or (config.checkpoint == "auto"
                                               and width * height > CHECKPOINT_AUTO_PIXELS)
    in_range = [RangeTerm(config.range_weight)] if config.range_weight > 0 else []
    return Objective(net, [content, style, TVTerm(config.tv_weight), *in_range, *extra_terms], checkpoint=checkpoint)


# ------------------------------------------------------------------------------ the step loop
class IterateAverage:
    """The EMA of the iterates (--ema-decay): started at the first iterate, so it needs no bias
    correction. With decay 0 it is the last iterate itself."""

    def __init__(self, decay: float):
        self.decay = decay
        self.value: torch.Tensor | None = None

    def update(self, image: torch.Tensor) -> None:
        if self.decay > 0:
            with torch.no_grad():
                self.value = (image.detach().clone() if self.value is None
                              else self.value.mul_(self.decay).add_(image.detach(), alpha=1.0 - self.decay))

    def current(self, image: torch.Tensor) -> torch.Tensor:
        return image.detach() if self.value is None else self.value


@dataclass
class Steps:
    """What run_steps did: the image to show (the EMA when on), steps taken, whether on_step stopped
    it, the precision it ended in and the last losses."""

    image: torch.Tensor
    done: int
    stopped: bool
    policy: ComputePolicy
    losses: dict


def run_steps(start: torch.Tensor, steps: int, config: StyleConfig, policy: ComputePolicy,
              make_objective: Callable[[ComputePolicy], Objective],
              on_step: Callable[[int, torch.Tensor, dict], bool] | None = None, step_offset: int = 0) -> Steps:
    """The loop with what every driver (a still's scale, a video's frame) adds to it: Adam's clamp to
    0..1 (L-BFGS is left unclamped: clamping breaks its curvature pairs), the EMA of the iterates, and
    the float32 fallback: a non-finite loss in reduced precision asks make_objective for a float32
    objective and goes on from the last good image. On the CPU, glibc's heap keeps this scale's
    activations unless it is checkpointed (heap.py; process-wide, not undone).

    on_step(step, shown image, losses) after each step (step counted within this call); False stops.
    step_offset: steps done before this call, for the warning's iteration number.
    """
    image = start.to(policy.device).contiguous().requires_grad_(True)
    average = IterateAverage(config.ema)
    state = {"done": 0, "stopped": False, "losses": {}}

    def hook(step: int, current: torch.Tensor, losses: dict) -> bool:
        if config.optimizer == "adam":
            with torch.no_grad():
                current.clamp_(0.0, 1.0)
        average.update(current)
        state["losses"] = losses
        if on_step is not None and on_step(state["done"] + step, average.current(current), losses) is False:
            state["stopped"] = True
        return not state["stopped"]

    while state["done"] < steps and not state["stopped"]:
        optimizer = make_optimizer(config.optimizer, image, config.lr)
        try:
            objective = make_objective(policy)
            if policy.device.type == "cpu":
                tune_heap(large_blocks=not objective.checkpoint)
            state["done"] += optimize(image, objective, steps - state["done"], optimizer, hook)
        except NonFiniteLoss as exc:
            if policy.autocast_dtype is None:
                raise
            warnings.warn(f"non-finite loss or gradient in {policy.precision} at iteration "
                          f"{step_offset + state['done'] + exc.step}; continuing in float32", RuntimeWarning,
                          stacklevel=3)
            policy = policy.as_float32()
            state["done"] += exc.step - 1
    return Steps(average.current(image), state["done"], state["stopped"], policy, state["losses"])


@contextlib.contextmanager
def call_scope(threads: int | None, policy: ComputePolicy):
    """Threads and cuDNN autotuning for this call only: a library call leaves the process as it found it."""
    previous_threads = torch.get_num_threads()
    previous_benchmark = torch.backends.cudnn.benchmark
    if threads:
        set_threads(threads)
    if policy.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size per scale: let cuDNN pick the fastest kernels
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
        if torch.get_num_threads() != previous_threads:
            torch.set_num_threads(previous_threads)
