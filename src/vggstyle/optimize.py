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

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from .config import StyleConfig
from .device import ComputePolicy, resolve_policy
from .errors import ConfigError
from .image import load_image, pil_to_tensor, tensor_to_pil
from .inputs import Inputs, ScaleImages, load_inputs
from .objective import Objective
from .engine import Finish, build_objective, call_scope, loaded_weights, network_for, render_image, run_steps


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


# ------------------------------------------------------------------------------ the drivers
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
        "content_weight": config.content_weight_or(),  # the weight used: its default is an image's
        "style_masks": inputs.describe_masks(),
        "iterations_done": run.steps,
        "seed_used": run.seed,
        "device_used": str(policy.device),
        "precision_used": run.policy.precision,
        "kernels_used": run.kernels,  # of the last scale: onednn, winograd, winograd-bf16, 'winograd at N of M layers'
        "weights_origin": loaded_weights(config.weights_source, config.weights, config.weights_preprocessing).origin,
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
