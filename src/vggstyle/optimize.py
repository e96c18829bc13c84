"""stylize(): the drivers around the plain loop (loop.py), and the Progress records they emit.

Data flows one way: inputs (inputs.py) -> the objective of each scale (objective.py, built
from VGG's features of the content and style images) -> the loop -> the image. The drivers:

* coarse-to-fine: one objective and one optimizer per scale, each scale starting from the
  previous result upsampled (Gatys et al. 2017);
* the float32 fallback: a loss that stops being finite in reduced precision rebuilds the
  objective in float32 and goes on from the last good image;
* hooks on every step: the EMA of the iterates, Adam's clamp to 0..1, Progress records.

No process-wide state changes: the seed feeds a private torch.Generator; threads and cuDNN
flags are set for the call only and restored after it.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from .color import combine_luminance
from .config import CHECKPOINT_AUTO_PIXELS, StyleConfig
from .device import ComputePolicy, resolve_policy, set_threads
from .errors import ConfigError
from .image import load_image, pil_to_tensor, tensor_to_pil
from .inputs import Inputs, ScaleImages, load_inputs
from .loop import NonFiniteLoss, make_optimizer, optimize
from .objective import ContentTerm, Objective, StyleTerm, TVTerm
from .style import make_statistic
from .vgg import VGG19Features
from .weights import LoadedWeights, load_weights


@dataclass
class Progress:
    """What the drivers report after each iteration; consumers render it (bar, preview, web).

    It holds the figures and a render function over the image being optimized plus the colour
    post-processing: keeping a Progress keeps one image alive, not the network or the targets.
    """

    step: int  # iterations done so far, 1..total
    total: int
    losses: dict[str, float]  # weighted terms as they enter the total: content, style, tv, ..., total
    size: tuple[int, int]  # (width, height) being optimized
    elapsed: float  # seconds since the run started: target computation included, image loading not
    epoch: int | None  # 1-based, when the config counts in epochs
    precision: str
    scale: int = 1  # 1-based index of the coarse-to-fine scale being optimized
    num_scales: int = 1
    _render: Callable[[], Image.Image] = field(repr=False, default=None)

    @property
    def iterations_per_second(self) -> float:
        return self.step / self.elapsed if self.elapsed > 0 else 0.0

    def image(self) -> Image.Image:
        """The current image (a copy): cheap enough to call every few steps for a preview."""
        return self._render()


OnStep = Callable[[Progress], "bool | None"]


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
def _weights(source: str, path: str | None, preprocessing: str) -> LoadedWeights:
    # Cached: a server or notebook stylizing many images reads and dequantizes once.
    return load_weights(source, path, preprocessing)


@functools.lru_cache(maxsize=4)
def network(source: str, path: str | None, preprocessing: str, layers: tuple[str, ...], pooling: str,
            policy: ComputePolicy) -> VGG19Features:
    """The frozen network for these layers, built once per process and shared (its forward has
    no state: a server's worker threads, a batch's jobs and a video's frames reuse it)."""
    return VGG19Features(_weights(source, path, preprocessing), layers, pooling, policy)


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
    """The Objective of one scale: content, style and TV terms (targets computed here, once) and
    any extra terms, in that order. styles: style_features(net, images), when already computed."""
    device = net.policy.device
    _, _, height, width = images.content.shape
    net.check_size(height, width)
    styles = style_features(net, images) if styles is None else styles
    with torch.no_grad():
        features = net(images.content.to(device))
        content = ContentTerm(config.content_weight, {n: features[n] for n in config.content_layers},
                              config.content_layers, [{n: f[n] for n in config.content_layers} for f in styles])
        del features
        generator = torch.Generator().manual_seed(config.seed or 0)  # on the CPU: the same draws on any device
        masks = None if images.masks is None else [m.to(device) for m in images.masks]
        style = StyleTerm(config.style_weight, make_statistic(config.style_loss, generator), config.style_layers,
                          styles, config.style_blend_weights or [1.0] * len(images.styles), masks)
    checkpoint = config.checkpoint == "on" or (config.checkpoint == "auto"
                                               and width * height > CHECKPOINT_AUTO_PIXELS)
    return Objective(net, [content, style, TVTerm(config.tv_weight), *extra_terms], checkpoint=checkpoint)


# ------------------------------------------------------------------------------ the drivers
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
    objective and goes on from the last good image.

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
            state["done"] += optimize(image, make_objective(policy), steps - state["done"], optimizer, hook)
        except NonFiniteLoss as exc:
            if policy.autocast_dtype is None:
                raise
            warnings.warn(f"non-finite loss or gradient in {policy.precision} at iteration "
                          f"{step_offset + state['done'] + exc.step}; continuing in float32", RuntimeWarning,
                          stacklevel=3)
            policy = policy.as_float32()
            state["done"] += exc.step - 1
    return Steps(average.current(image), state["done"], state["stopped"], policy, state["losses"])


class _Run:
    """One stylization: the coarse-to-fine schedule over run_steps, and the Progress records.
    State that outlives a scale: the step count, the clock, the precision."""

    def __init__(self, inputs: Inputs, policy: ComputePolicy, extra_terms=(), on_step: OnStep | None = None):
        self.inputs, self.config = inputs, inputs.config
        self.policy = policy
        self.extra_terms = tuple(extra_terms)
        self.on_step = on_step
        self.schedule = self.config.scale_schedule()
        self.total = sum(count for _, count in self.schedule)
        self.seed = self.config.seed if self.config.seed is not None else torch.Generator().seed()
        self.steps = 0
        self.started = time.perf_counter()
        self.kernels = "onednn"  # the convolution kernels of the scale being optimized (VGG19Features.kernels_at)

    def run(self) -> torch.Tensor:
        """The finished image, (1,3,H,W) in 0..1 on the CPU."""
        image, finish = None, Finish()
        for index, (side, count) in enumerate(self.schedule, start=1):
            images = self.inputs.at(side)
            if image is None:
                start = self.inputs.start(side, torch.Generator().manual_seed(self.seed))
            else:  # the previous scale's result, upsampled, starts this one
                start = F.interpolate(image, size=images.content.shape[-2:], mode="bicubic",
                                      align_corners=False).clamp(0.0, 1.0)
            image = None  # the previous scale's image and optimizer go before the next is built
            finish = Finish.for_images(self.config, images)
            result = run_steps(start, count, self.config, self.policy, functools.partial(self._objective, images),
                               functools.partial(self._after_step, finish=finish, scale=index), self.steps)
            image = result.image
            if result.stopped:
                break
        return finish(image).cpu()

    def _objective(self, images: ScaleImages, policy: ComputePolicy) -> Objective:
        self.policy = policy  # the precision the run is in now (float32 after a fallback)
        net = network_for(self.config, policy)
        self.kernels = net.kernels_at(*images.content.shape[-2:])
        return build_objective(net, self.config, images, self.extra_terms)

    def _after_step(self, step: int, shown: torch.Tensor, losses: dict, *, finish: Finish, scale: int) -> bool:
        self.steps += 1
        if self.on_step is None:
            return True
        epoch = (self.steps - 1) // self.config.steps_per_epoch + 1 if self.config.epochs is not None else None
        progress = Progress(self.steps, self.total, losses, (shown.shape[-1], shown.shape[-2]),
                            time.perf_counter() - self.started, epoch, self.policy.precision, scale,
                            len(self.schedule), functools.partial(render_image, shown, finish))
        return self.on_step(progress) is not False


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


def _configure(config: StyleConfig | None, overrides: dict) -> StyleConfig:
    masks = overrides.get("style_masks")
    if masks is not None and not isinstance(masks, str) and any(not isinstance(m, (str, bytes)) and
                                                                 not hasattr(m, "__fspath__") for m in masks):
        raise ConfigError("style_masks takes paths; pass masks held in memory as stylize(..., masks=[...])")
    config = config or StyleConfig()
    return config.replace(**overrides) if overrides else config


def stylize(content, styles, config: StyleConfig | None = None, *, masks=None, on_step: OnStep | None = None,
            terms=(), **overrides) -> Image.Image:
    """Return ``content`` repainted in the style of ``styles``.

    content, styles: paths, PIL images or (1,3,H,W) RGB tensors in 0..1; styles may be one or a list.
    config: a StyleConfig; keyword overrides replace its fields (``stylize(c, s, image_size=256)``).
    masks: one per style, white where it applies: paths or images held in memory (PIL, tensors).
    on_step: called with a Progress after every iteration; returning False stops early and
    returns the image as it is then.
    terms: extra loss terms (objective.Term) added to every scale's objective, e.g. your own.

    The returned image's ``info["vggstyle"]`` holds the parameters used (save_image stores them).
    """
    inputs = load_inputs(content, styles, _configure(config, overrides), masks)
    config = inputs.config
    policy = resolve_policy(config.device, config.precision, config.winograd)
    with call_scope(config.threads, policy):
        width, height = inputs.size(config.image_size)
        network_for(config, policy).check_size(height, width)  # fail before any work
        run = _Run(inputs, policy, terms, on_step)
        result = tensor_to_pil(run.run())
    result.info["vggstyle"] = {
        **config.to_dict(),
        "style_masks": inputs.describe_masks(),
        "iterations_done": run.steps,
        "seed_used": run.seed,
        "device_used": str(policy.device),
        "precision_used": run.policy.precision,
        "kernels_used": run.kernels,  # of the last scale: onednn, winograd or 'winograd at N of M layers'
        "weights_origin": _weights(config.weights_source, config.weights, config.weights_preprocessing).origin,
        "scales_used": [size for size, _ in run.schedule],
        "size": list(result.size),
    }
    return result


def measure_losses(content, styles, image=None, config: StyleConfig | None = None, *, masks=None,
                   **overrides) -> dict[str, float]:
    """The unweighted loss terms of ``image`` (default: the config's init) at --image-size.

    For benchmarks and tests: the same targets, sizes and normalization as stylize()'s final scale.
    """
    inputs = load_inputs(content, styles, _configure(config, overrides), masks)
    config = inputs.config
    policy = resolve_policy(config.device, config.precision, config.winograd)
    side = config.image_size
    if image is None:
        seed = config.seed if config.seed is not None else 0
        start = inputs.start(side, torch.Generator().manual_seed(seed))
    else:
        start = pil_to_tensor(load_image(image, config.max_input_pixels, "image").resize(inputs.size(side),
                                                                                         Image.LANCZOS))
    with call_scope(config.threads, policy), torch.no_grad():
        objective = build_objective(network_for(config, policy), config, inputs.at(side))
        terms = objective.unweighted(start.to(policy.device))
    return {name: float(value) for name, value in terms.items()}
