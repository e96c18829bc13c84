"""stylize(): the optimization loop of Gatys et al., and the Progress records it emits.

One *iteration* is one optimizer step, and costs exactly one forward and one backward
pass through VGG19: L-BFGS runs with max_iter=1 and no line search (the fastest
configuration per evaluation and per second, ../shared/MEASUREMENTS.md), Adam takes
one step per evaluation.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .config import StyleConfig
from .device import ComputePolicy, resolve_policy, set_threads
from .image import load_image, pil_to_tensor, resize_long_side, tensor_to_pil
from .losses import blend_grams, content_loss, gram_matrix, style_loss, tv_loss
from .vgg import VGG19Features
from .weights import LoadedWeights, load_weights

LOSS_KEYS = ("content", "style", "tv", "total")


@dataclass
class Progress:
    """What the loop reports after each iteration; consumers render it (bar, preview, web)."""

    step: int  # iterations done so far, 1..total
    total: int
    losses: dict[str, float]  # weighted terms as they enter the total: content, style, tv, total
    size: tuple[int, int]  # (width, height) being optimized
    elapsed: float  # seconds since the loop started (setup excluded)
    epoch: int | None  # 1-based, when the config counts in epochs
    precision: str
    _pixels: torch.Tensor = field(repr=False, default=None)

    @property
    def iterations_per_second(self) -> float:
        return self.step / self.elapsed if self.elapsed > 0 else 0.0

    def image(self) -> Image.Image:
        """The current image (a copy): cheap enough to call every few steps for a preview."""
        return tensor_to_pil(self._pixels.detach() / 255.0)


OnStep = Callable[[Progress], "bool | None"]


@functools.lru_cache(maxsize=2)
def _weights(source: str, path: str | None, preprocessing: str) -> LoadedWeights:
    # Cached: a server or notebook stylizing many images reads and dequantizes once.
    return load_weights(source, path, preprocessing)


def _as_list(styles) -> list:
    if isinstance(styles, (str, Path, Image.Image, torch.Tensor)):
        return [styles]
    return list(styles)


def stylize(content, styles, config: StyleConfig | None = None, *, on_step: OnStep | None = None,
            **overrides) -> Image.Image:
    """Return ``content`` repainted in the style of ``styles``.

    content, styles: paths, PIL images or (1,3,H,W) RGB tensors in 0..1; styles may be one or a list.
    config: a StyleConfig; keyword overrides replace its fields (``stylize(c, s, image_size=256)``).
    on_step: called with a Progress after every iteration; returning False stops early and
    returns the image as it is then.

    The returned image's ``info["vggstyle"]`` holds the parameters used (save_image stores them).
    """
    runner, init_image = _prepare(content, styles, config, overrides)
    pixels, steps_done = runner.run(init_image, on_step)

    result = tensor_to_pil(pixels / 255.0)
    result.info["vggstyle"] = {
        **runner.config.to_dict(),
        "iterations_done": steps_done,
        "precision_used": runner.policy.precision,
        "weights_origin": runner.weights.origin,
        "size": list(runner.content_image.size),
    }
    return result


def measure_losses(content, styles, image=None, config: StyleConfig | None = None,
                   **overrides) -> dict[str, float]:
    """The unweighted loss terms of ``image`` (default: the config's init) against content and styles.

    For benchmarks and tests: the same targets, sizes and normalization as stylize().
    """
    runner, init_image = _prepare(content, styles, config, overrides)
    if image is not None:
        width, height = runner.content_image.size
        start = load_image(image, runner.config.max_input_pixels, "image")
        init_image = pil_to_tensor(start.resize((width, height), Image.LANCZOS))
    with torch.no_grad():
        terms = runner.unweighted_losses(init_image.to(runner.policy.device) * 255.0)
    return {k: float(v) for k, v in terms.items()}


def _prepare(content, styles, config, overrides) -> tuple["_Runner", torch.Tensor]:
    """Validate, resolve the hardware, load and resize the images, build network and targets."""
    config = config or StyleConfig()
    if overrides:
        config = config.replace(**overrides)
    style_list = _as_list(styles)
    config.validate(num_styles=len(style_list))
    policy = resolve_policy(config.device, config.precision)
    set_threads(config.threads)
    if config.seed is not None:
        torch.manual_seed(config.seed)
    content_image = resize_long_side(load_image(content, config.max_input_pixels, "content image"),
                                     config.image_size)
    style_side = max(16, round(config.image_size * config.style_scale))
    style_images = [resize_long_side(load_image(s, config.max_input_pixels, "style image"), style_side)
                    for s in style_list]
    init_image = _init_image(config, content_image)
    weights = _weights(config.weights_source, config.weights, config.weights_preprocessing)
    return _Runner(config, weights, policy, content_image, style_images), init_image


def _init_image(config: StyleConfig, content_image: Image.Image) -> torch.Tensor:
    width, height = content_image.size
    if config.init == "content":
        return pil_to_tensor(content_image)
    if config.init == "random":
        generator = torch.Generator().manual_seed(config.seed if config.seed is not None else
                                                  torch.seed() % 2**63)
        # White noise, as Gatys et al. start from; TV smooths what the style does not fill.
        return torch.rand(1, 3, height, width, generator=generator)
    start = load_image(config.init, config.max_input_pixels, "init image")
    return pil_to_tensor(start.resize((width, height), Image.LANCZOS))


class _Runner:
    """Owns the network, the targets and the optimizer for one stylization."""

    def __init__(self, config: StyleConfig, weights: LoadedWeights, policy: ComputePolicy,
                 content_image: Image.Image, style_images: list[Image.Image]):
        self.config = config
        self.weights = weights
        self.content_image = content_image
        self.style_images = style_images
        self._build(policy)

    def _build(self, policy: ComputePolicy) -> None:
        """Network and targets for a precision; called again on a fallback to float32."""
        self.policy = policy
        config = self.config
        layers = list(config.content_layers) + list(config.style_layers)
        self.net = VGG19Features(self.weights, layers, config.pooling, policy)
        width, height = self.content_image.size
        self.net.check_size(height, width)
        device = policy.device
        with torch.no_grad():
            content = self.net(pil_to_tensor(self.content_image).to(device))
            self.content_targets = {n: content[n].float() for n in config.content_layers}
            grams = []
            for style in self.style_images:
                self.net.check_size(style.size[1], style.size[0])
                feats = self.net(pil_to_tensor(style).to(device))
                grams.append({n: gram_matrix(feats[n]) for n in config.style_layers})
            blend = config.style_blend_weights or [1.0] * len(self.style_images)
            self.target_grams = blend_grams(grams, blend)
            del content, feats, grams

    def _make_optimizer(self, pixels: torch.Tensor) -> torch.optim.Optimizer:
        if self.config.optimizer == "lbfgs":
            # tolerance_* < 0: never stop early on our own; the user's iteration count rules.
            return torch.optim.LBFGS([pixels], lr=self.config.lr, max_iter=1, history_size=100,
                                     tolerance_grad=-1, tolerance_change=-1)
        return torch.optim.Adam([pixels], lr=self.config.lr)

    def unweighted_losses(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        config = self.config
        image = pixels / 255.0
        features = self.net(image)
        return {
            "content": content_loss(features, self.content_targets, config.content_layers),
            "style": style_loss(features, self.target_grams, config.style_layers),
            "tv": tv_loss(image),
        }

    def _losses(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        config = self.config
        terms = self.unweighted_losses(pixels)
        terms = {"content": config.content_weight * terms["content"],
                 "style": config.style_weight * terms["style"],
                 "tv": config.tv_weight * terms["tv"]}
        terms["total"] = terms["content"] + terms["style"] + terms["tv"]
        return terms

    def run(self, init: torch.Tensor, on_step: OnStep | None) -> tuple[torch.Tensor, int]:
        config = self.config
        total = config.iterations
        # The optimized image: float32, NCHW-contiguous (LBFGS flattens it with view), 0..255 units.
        pixels = (init * 255.0).to(self.policy.device).contiguous().requires_grad_(True)
        optimizer = self._make_optimizer(pixels)
        last: dict[str, float] = {}

        def closure():
            optimizer.zero_grad(set_to_none=True)
            terms = self._losses(pixels)
            terms["total"].backward()
            last.clear()
            last.update({k: float(v.detach()) for k, v in terms.items()})
            return terms["total"]

        width, height = self.content_image.size
        start = time.perf_counter()
        step = 0
        while step < total:
            backup = pixels.detach().clone() if self.policy.autocast_dtype is not None else None
            optimizer.step(closure)
            if not math.isfinite(last["total"]) or not torch.isfinite(pixels.grad).all():
                if backup is None:
                    raise FloatingPointError("the loss became NaN or infinite in float32; lower the "
                                             "--learning-rate or the loss weights")
                warnings.warn(f"non-finite loss or gradient in {self.policy.precision} at iteration {step + 1}; "
                              "continuing in float32", RuntimeWarning, stacklevel=2)
                self._build(self.policy.as_float32())
                with torch.no_grad():
                    pixels.copy_(backup)
                optimizer = self._make_optimizer(pixels)
                continue
            if config.optimizer == "adam":
                with torch.no_grad():
                    pixels.clamp_(0.0, 255.0)
            step += 1
            if on_step is not None:
                epoch = (step - 1) // config.steps_per_epoch + 1 if config.epochs is not None else None
                progress = Progress(step, total, dict(last), (width, height), time.perf_counter() - start,
                                    epoch, self.policy.precision, pixels)
                if on_step(progress) is False:
                    break
        return pixels.detach().clamp(0.0, 255.0), step

