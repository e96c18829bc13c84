"""The inputs of one stylization: loaded once, then given as tensors at each scale.

``load_inputs`` decodes the content, style, mask and init images (paths, PIL images or
tensors) with the library's decoder; ``Inputs.at(long_side)`` returns what the objective
of one scale is built from: (1,3,H,W) tensors in 0..1 at that scale's size, with the
colour control applied (Gatys et al. 2016) and masks resized to the output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from PIL import Image

from .color import gray_to_rgb, luminance, match_histogram, match_luminance
from .config import StyleConfig
from .image import as_image_list, load_image, long_side_size, pil_to_tensor, resize_long_side


@dataclass(frozen=True)
class ScaleImages:
    """Tensors for one scale, on the CPU, 0..1. ``content`` is what the content term sees
    (luminance only with --original-colors luminance); ``photo`` the content as it is, for
    putting its colours back."""

    content: torch.Tensor
    photo: torch.Tensor
    styles: list[torch.Tensor]
    masks: list[torch.Tensor] | None  # (1,1,H,W), one per style


@dataclass
class Inputs:
    config: StyleConfig
    content: Image.Image
    styles: list[Image.Image]
    masks: list[Image.Image]  # grayscale, one per style, or none
    init: Image.Image | None  # --init as an image file
    masks_in_memory: bool = False  # given as images to stylize(), not as config paths

    def size(self, long_side: int) -> tuple[int, int]:
        """(width, height) of the output at a scale with this long side."""
        return long_side_size(self.content.size, long_side)

    def photo_at(self, long_side: int) -> Image.Image:
        """The content as it is, at a scale with this long side."""
        return self.content.resize(self.size(long_side), Image.LANCZOS)

    def at(self, long_side: int) -> ScaleImages:
        config = self.config
        width, height = self.size(long_side)
        photo = pil_to_tensor(self.photo_at(long_side))
        content = photo
        style_side = config.style_side(long_side)
        styles = [pil_to_tensor(resize_long_side(style, style_side)) for style in self.styles]
        if config.original_colors == "histogram":
            # Gatys et al. 2016, sec. 2.1: recolour the styles to the content's colour statistics first.
            styles = [match_histogram(style, photo) for style in styles]
        elif config.original_colors == "luminance":
            # Sec. 2.2: transfer on luminance only; the style's luminance matched to the content's.
            content_y = luminance(photo)
            styles = [gray_to_rgb(match_luminance(luminance(style), content_y)) for style in styles]
            content = gray_to_rgb(content_y)
        masks = None
        if self.masks:
            masks = [pil_to_tensor(m.convert("RGB").resize((width, height), Image.BILINEAR))[:, :1]
                     for m in self.masks]
        return ScaleImages(content, photo, styles, masks)

    def start(self, long_side: int, generator: torch.Generator) -> torch.Tensor:
        """The image the first scale starts from (--init): the content, seeded white noise (as
        Gatys et al. start from; TV smooths what the style does not fill) or an image file."""
        width, height = self.size(long_side)
        if self.config.init == "random":
            return torch.rand(1, 3, height, width, generator=generator)
        source = self.content if self.config.init == "content" else self.init
        image = pil_to_tensor(source.resize((width, height), Image.LANCZOS))
        return gray_to_rgb(luminance(image)) if self.config.original_colors == "luminance" else image

    def describe_masks(self) -> list[str]:
        """The masks as the result's parameters record them."""
        if self.masks_in_memory:
            return [f"<style mask {i} in memory>" for i in range(1, len(self.masks) + 1)]
        return list(self.config.style_masks)


def _is_path(item) -> bool:
    return isinstance(item, (str, os.PathLike))


def load_inputs(content, styles, config: StyleConfig, masks=None) -> Inputs:
    """Validate the config against the inputs and decode every image.

    masks: one per style, paths or images held in memory; None: the config's style_masks paths.
    Paths go into the config (they are plain, serializable knobs); images never do.
    """
    style_list = as_image_list(styles)
    in_memory = False
    if masks is not None:
        masks = as_image_list(masks)
        if all(_is_path(m) for m in masks):
            config = config.replace(style_masks=[os.fspath(m) for m in masks])
            masks = None
        else:
            in_memory = True
            config = config.replace(style_masks=[])
    mask_sources = config.style_masks if masks is None else masks
    config.validate(num_styles=len(style_list), num_masks=len(mask_sources))
    limit = config.max_input_pixels
    init = None
    if config.init not in ("content", "random"):
        init = load_image(config.init, limit, "init image")
    return Inputs(
        config=config,
        content=load_image(content, limit, "content image"),
        styles=[load_image(s, limit, "style image") for s in style_list],
        masks=[load_image(m, limit, "style mask").convert("L") for m in mask_sources],
        init=init,
        masks_in_memory=in_memory,
    )
