"""stylize(): the optimization loop of Gatys et al., and the Progress records it emits.

One *iteration* is one optimizer step, and costs exactly one forward and one backward
pass through VGG19: L-BFGS runs with max_iter=1 and no line search (the fastest
configuration per evaluation and per second, ../shared/MEASUREMENTS.md), Adam takes
one step per evaluation.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from .config import CHECKPOINT_AUTO_PIXELS, StyleConfig
from .device import ComputePolicy, resolve_policy, set_threads
from .image import as_image_list, load_image, long_side_size, pil_to_tensor, resize_long_side, tensor_to_pil
from .color import combine_luminance, gray_to_rgb, luminance, match_histogram, match_luminance
from .losses import content_loss, tv_loss
from .style import StyleObjective
from .vgg import VGG19Features
from .weights import LoadedWeights, load_weights

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


@functools.lru_cache(maxsize=2)
def _weights(source: str, path: str | None, preprocessing: str) -> LoadedWeights:
    # Cached: a server or notebook stylizing many images reads and dequantizes once.
    return load_weights(source, path, preprocessing)


def stylize(content, styles, config: StyleConfig | None = None, *, on_step: OnStep | None = None,
            **overrides) -> Image.Image:
    """Return ``content`` repainted in the style of ``styles``.

    content, styles: paths, PIL images or (1,3,H,W) RGB tensors in 0..1; styles may be one or a list.
    config: a StyleConfig; keyword overrides replace its fields (``stylize(c, s, image_size=256)``).
    ``style_masks`` (one per style, white where it applies) may be paths, as in the config, or
    images held in memory (PIL or tensors), as the web server has them.
    on_step: called with a Progress after every iteration; returning False stops early and
    returns the image as it is then.

    The returned image's ``info["vggstyle"]`` holds the parameters used (save_image stores them).
    """
    runner = _prepare(content, styles, config, overrides)
    pixels, steps_done = runner.run(on_step)
    result = tensor_to_pil(pixels / 255.0)
    parameters = runner.config.to_dict()
    if runner.masks_original and not runner.config.style_masks:
        parameters["style_masks"] = [f"<style mask {i} in memory>" for i in range(1, len(runner.masks_original) + 1)]
    result.info["vggstyle"] = {
        **parameters,
        "iterations_done": steps_done,
        "precision_used": runner.policy.precision,
        "weights_origin": runner.weights.origin,
        "scales_used": [size for size, _ in runner.schedule],
        "size": list(result.size),
    }
    return result


def measure_losses(content, styles, image=None, config: StyleConfig | None = None,
                   **overrides) -> dict[str, float]:
    """The unweighted loss terms of ``image`` (default: the config's init) at --image-size.

    For benchmarks and tests: the same targets, sizes and normalization as stylize()'s final scale.
    """
    runner = _prepare(content, styles, config, overrides)
    size = runner.config.image_size
    runner.set_scale(size)
    width, height = runner.scale_size(size)
    if image is None:
        start = runner.init_tensor(width, height)
    else:
        start = pil_to_tensor(load_image(image, runner.config.max_input_pixels, "image")
                              .resize((width, height), Image.LANCZOS))
    with torch.no_grad():
        terms = runner.unweighted_losses(start.to(runner.policy.device) * 255.0)
    return {k: float(v) for k, v in terms.items()}


def _prepare(content, styles, config, overrides) -> "_Runner":
    """Validate, resolve the hardware, load the images and the weights."""
    config = config or StyleConfig()
    overrides, mask_images = _split_masks(overrides)
    if overrides:
        config = config.replace(**overrides)
    style_list = as_image_list(styles)
    config.validate(num_styles=len(style_list), num_masks=None if mask_images is None else len(mask_images))
    policy = resolve_policy(config.device, config.precision)
    set_threads(config.threads)
    if config.seed is not None:
        torch.manual_seed(config.seed)
    content_image = load_image(content, config.max_input_pixels, "content image")
    style_images = [load_image(s, config.max_input_pixels, "style image") for s in style_list]
    init_image = None
    if config.init not in ("content", "random"):
        init_image = load_image(config.init, config.max_input_pixels, "init image")
    masks = [load_image(m, config.max_input_pixels, "style mask").convert("L")
             for m in (config.style_masks if mask_images is None else mask_images)]
    weights = _weights(config.weights_source, config.weights, config.weights_preprocessing)
    return _Runner(config, weights, policy, content_image, style_images, init_image, masks)


def _split_masks(overrides: dict) -> tuple[dict, list | None]:
    """Masks given as images stay out of the config (a plain, serializable record of the knobs).

    Returns the overrides to apply and the mask images, or None when the masks (if any)
    are paths, which the config keeps as usual.
    """
    masks = overrides.get("style_masks")
    if masks is None or isinstance(masks, (str, os.PathLike)):
        return overrides, None
    masks = list(masks)
    if all(isinstance(m, (str, os.PathLike)) for m in masks):
        return {**overrides, "style_masks": [os.fspath(m) for m in masks]}, None
    return {**overrides, "style_masks": []}, masks


LBFGS_HISTORY = 100
LBFGS_HISTORY_BYTES = 2 * 1024**3


def lbfgs_history_size(numel: int) -> int:
    """L-BFGS keeps two float32 image-sized vectors per history entry: 100 entries at 4096x3072 px
    would be 30 GB. Cap the history at about 2 GB (100 entries up to ~2.6 MP, 6 at 12.6 MP)."""
    return max(5, min(LBFGS_HISTORY, LBFGS_HISTORY_BYTES // (2 * 4 * numel)))


class _Runner:
    """Owns the network, the per-scale targets and the optimizer for one stylization."""

    def __init__(self, config: StyleConfig, weights: LoadedWeights, policy: ComputePolicy,
                 content_image: Image.Image, style_images: list[Image.Image], init_image: Image.Image | None,
                 masks: list[Image.Image] | None = None):
        self.config = config
        self.masks_original = masks or []
        self.weights = weights
        self.content_original = content_image
        self.styles_original = style_images
        self.init_original = init_image
        self.schedule = config.scale_schedule()
        self.size = None
        self._content_at = None
        self._build_net(policy)
        # Fail before any work if the final size is too small for the deepest layer.
        width, height = self.scale_size(config.image_size)
        self.net.check_size(height, width)

    def _build_net(self, policy: ComputePolicy) -> None:
        self.policy = policy
        layers = list(self.config.content_layers) + list(self.config.style_layers)
        self.net = VGG19Features(self.weights, layers, self.config.pooling, policy)

    def scale_size(self, long_side: int) -> tuple[int, int]:
        return long_side_size(self.content_original.size, long_side)

    def init_tensor(self, width: int, height: int) -> torch.Tensor:
        config = self.config
        if config.init == "random":
            seed = config.seed if config.seed is not None else torch.seed() % 2**63
            # White noise, as Gatys et al. start from; TV smooths what the style does not fill.
            return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
        source = self.content_original if config.init == "content" else self.init_original
        image = pil_to_tensor(source.resize((width, height), Image.LANCZOS))
        return gray_to_rgb(luminance(image)) if config.original_colors == "luminance" else image

    def _content_tensor(self, width: int, height: int) -> torch.Tensor:
        """The content at this size, kept for the scale: previews with --original-colors luminance
        put its colours back every few steps. Not modified in place by anyone."""
        if self._content_at is None or self._content_at[0] != (width, height):
            self._content_at = ((width, height), pil_to_tensor(self.content_original.resize((width, height),
                                                                                            Image.LANCZOS)))
        return self._content_at[1]

    def finish(self, image: torch.Tensor) -> torch.Tensor:
        """The image the user sees: with --original-colors luminance, the content's colours put back."""
        if self.config.original_colors != "luminance":
            return image.clamp(0.0, 1.0)
        content = self._content_tensor(image.shape[-1], image.shape[-2]).to(image.device)
        return combine_luminance(image, content)

    def set_scale(self, long_side: int) -> None:
        """Targets for one scale: content features and the style objective, computed once."""
        config = self.config
        self.size = long_side
        self.content_targets = self.style = None  # free the previous scale's first
        width, height = self.scale_size(long_side)
        self.net.check_size(height, width)
        self.net.checkpoint = (config.checkpoint == "on"
                               or (config.checkpoint == "auto" and width * height > CHECKPOINT_AUTO_PIXELS))
        style_side = config.style_side(long_side)
        device = self.policy.device
        content = self._content_tensor(width, height)
        styles = [pil_to_tensor(resize_long_side(original, style_side)) for original in self.styles_original]
        if config.original_colors == "histogram":
            # Gatys et al. 2016, sec. 2.1: recolour the styles to the content's colour statistics first.
            styles = [match_histogram(style, content) for style in styles]
        elif config.original_colors == "luminance":
            # Sec. 2.2: transfer on luminance only; the style's luminance matched to the content's.
            content_y = luminance(content)
            styles = [gray_to_rgb(match_luminance(luminance(style), content_y)) for style in styles]
            content = gray_to_rgb(content_y)
        with torch.no_grad():
            features = self.net(content.to(device))
            self.content_targets = {n: features[n].float() for n in config.content_layers}
            style_features = []
            for style in styles:
                self.net.check_size(style.shape[-2], style.shape[-1])
                features = self.net(style.to(device))
                style_features.append({n: features[n] for n in config.style_layers})
            del features
            masks = None
            if self.masks_original:
                masks = [pil_to_tensor(m.convert("RGB").resize((width, height), Image.BILINEAR))[:, :1].to(device)
                         for m in self.masks_original]
            self.style = StyleObjective(config.style_loss, config.style_layers, style_features,
                                        config.style_blend_weights or [1.0] * len(styles), masks,
                                        seed=config.seed or 0)
            del style_features

    def _make_optimizer(self, pixels: torch.Tensor) -> torch.optim.Optimizer:
        if self.config.optimizer == "lbfgs":
            # tolerance_* < 0: never stop early on our own; the user's iteration count rules.
            return torch.optim.LBFGS([pixels], lr=self.config.lr, max_iter=1,
                                     history_size=lbfgs_history_size(pixels.numel()),
                                     tolerance_grad=-1, tolerance_change=-1)
        return torch.optim.Adam([pixels], lr=self.config.lr)

    def unweighted_losses(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        config = self.config
        image = pixels / 255.0
        features = self.net(image)
        return {
            "content": content_loss(features, self.content_targets, config.content_layers),
            "style": self.style.loss(features),
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

    def run(self, on_step: OnStep | None) -> tuple[torch.Tensor, int]:
        total = sum(count for _, count in self.schedule)
        start = time.perf_counter()
        step = 0
        pixels = None
        for scale_index, (long_side, count) in enumerate(self.schedule, start=1):
            width, height = self.scale_size(long_side)
            if pixels is None:
                image = self.init_tensor(width, height)
            else:  # the previous scale's result, upsampled, starts this one
                image = F.interpolate(pixels.detach() / 255.0, size=(height, width), mode="bicubic",
                                      align_corners=False).clamp(0.0, 1.0).cpu()
            pixels = None  # let the previous scale's image and optimizer state go before the next
            self.set_scale(long_side)
            pixels, step, stopped = self._optimize_scale(image, count, step, total, scale_index, start, on_step)
            if stopped:
                break
        return self.finish(pixels.detach() / 255.0) * 255.0, step

    def _optimize_scale(self, image, count, step, total, scale_index, start, on_step):
        config = self.config
        # The optimized image: float32, NCHW-contiguous (LBFGS flattens it with view), 0..255 units.
        pixels = (image * 255.0).to(self.policy.device).contiguous().requires_grad_(True)
        optimizer = self._make_optimizer(pixels)
        last: dict[str, float] = {}

        def closure():
            optimizer.zero_grad(set_to_none=True)
            terms = self._losses(pixels)
            terms["total"].backward()
            last.clear()
            last.update({k: float(v.detach()) for k, v in terms.items()})
            return terms["total"]

        size = (pixels.shape[-1], pixels.shape[-2])
        decay = config.ema
        average = None  # of the iterates, when decay > 0; it is the result (and the previews)
        done = 0

        def shown() -> torch.Tensor:
            return pixels.detach() if average is None else average

        while done < count:
            backup = pixels.detach().clone() if self.policy.autocast_dtype is not None else None
            optimizer.step(closure)
            if not math.isfinite(last["total"]) or not torch.isfinite(pixels.grad).all():
                if backup is None:
                    raise FloatingPointError("the loss became NaN or infinite in float32; lower the "
                                             "--learning-rate or the loss weights")
                warnings.warn(f"non-finite loss or gradient in {self.policy.precision} at iteration {step + 1}; "
                              "continuing in float32", RuntimeWarning, stacklevel=3)
                self._build_net(self.policy.as_float32())
                self.set_scale(self.size)
                with torch.no_grad():
                    pixels.copy_(backup)
                optimizer = self._make_optimizer(pixels)
                continue
            if config.optimizer == "adam":
                with torch.no_grad():
                    pixels.clamp_(0.0, 255.0)
            if decay > 0:  # started at the first iterate, so it needs no bias correction
                with torch.no_grad():
                    average = (pixels.detach().clone() if average is None
                               else average.mul_(decay).add_(pixels.detach(), alpha=1.0 - decay))
            done += 1
            step += 1
            if on_step is not None:
                epoch = (step - 1) // config.steps_per_epoch + 1 if config.epochs is not None else None
                progress = Progress(step, total, dict(last), size, time.perf_counter() - start, epoch,
                                    self.policy.precision, scale_index, len(self.schedule),
                                    lambda: tensor_to_pil(self.finish(shown() / 255.0)))
                if on_step(progress) is False:
                    return shown(), step, True
        return shown(), step, False
