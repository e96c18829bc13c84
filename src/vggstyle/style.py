"""StyleObjective: the style targets of one scale and the loss against them.

Three statistics (``--style-loss``), one interface:

* gram: relative squared error of Gram matrices (losses.py), Gatys et al.
* wasserstein: W2 between Gaussian fits of the features (stats.py).
* sliced-wasserstein: sorted random 1-D projections (stats.py, Heitz et al. 2021);
  fresh directions every evaluation, as in the paper, drawn from a seeded generator.

Several styles without masks are *blended* into one target: the blend-weighted mean
of the Grams (as neural-style does), or for the distribution statistics a mixture,
sampled as positions from each style in proportion to its weight.

With masks (``--style-mask``, one per style, white where that style applies) each
style keeps its own target and is compared with the output's features inside its
region only: a guided Gram (features weighted by the mask at that layer's
resolution, Gatys et al. 2017, sec. 4) or, for the distribution statistics, the
positions where the mask is over one half. Each region's loss is weighted by the
share of the image it covers, so one full-image mask equals the unmasked loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import STYLE_LOSSES  # noqa: F401 - re-exported: the statistics this module implements
from .losses import blend_grams, gram_matrix, layer_weighted_mean, relative_squared_error
from .stats import (flatten_positions, sliced_wasserstein_loss, sliced_wasserstein_target, wasserstein2_loss,
                    wasserstein2_target)

# Positions kept per layer of the sliced-Wasserstein target: an unbiased sample that keeps the
# per-evaluation sort of the target cheap at large sizes.
SW_MAX_POSITIONS = 65536


def masked_gram(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gram of the features weighted by a (1,1,H,W) mask in 0..1, averaged over the mask's area.

    Works on the (N, HW, C) view, as gram_matrix does, so channels_last features are not copied.
    """
    n, c, h, w = features.shape
    positions = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
    weights = mask.reshape(1, h * w, 1).to(features.dtype)
    gram = torch.bmm((positions * weights).transpose(1, 2), positions)
    return gram.to(torch.promote_types(gram.dtype, torch.float32)) / mask.sum().clamp_min(1e-6)


def mask_at(mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """A (1,1,H,W) mask resized (area average) to the features' resolution."""
    return F.interpolate(mask, size=features.shape[-2:], mode="area")


def _positions(features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(N,C,M) feature vectors, inside the mask (>= 0.5) when one is given."""
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    if mask is None:
        return flat
    weights = mask_at(mask, features).reshape(-1)
    keep = weights >= 0.5
    if not keep.any():  # a region thinner than this layer's cells: take its strongest cell
        keep = weights == weights.max()
    return flat[:, :, keep]


class StyleObjective:
    def __init__(self, kind: str, layer_weights: dict[str, float], style_features: list[dict[str, torch.Tensor]],
                 blend: list[float], masks: list[torch.Tensor] | None = None, seed: int = 0):
        self.kind = kind
        self.layer_weights = {n: w for n, w in layer_weights.items() if w > 0} or dict(layer_weights)
        self.masks = masks
        device = next(iter(style_features[0].values())).device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        total = float(sum(blend))
        self.blend = [w / total for w in blend]
        if masks is None:
            self.targets = [{name: self._target_for(style_features, name) for name in self.layer_weights}]
            self.areas = [1.0]
        else:
            self.targets = [{name: self._target_for([feats], name, single=True) for name in self.layer_weights}
                            for feats in style_features]
            self.areas = [float(m.mean()) for m in masks]

    # ---------------------------------------------------------------- targets
    def _target_for(self, style_features, name, single=False):
        if self.kind == "gram":
            grams = [{name: gram_matrix(f[name])} for f in style_features]
            return blend_grams(grams, [1.0] if single else self.blend)[name]
        samples = self._mixture(style_features, name, single)
        if self.kind == "wasserstein":
            return wasserstein2_target(samples)
        return flatten_positions(samples, SW_MAX_POSITIONS, self.generator)

    def _mixture(self, style_features, name, single=False) -> torch.Tensor:
        """(1,C,M) positions of all styles, each style's share of M in proportion to its blend weight."""
        flats = [flatten_positions(f[name].float()) for f in style_features]
        if single or len(flats) == 1:
            return flats[0]
        total = sum(f.shape[2] for f in flats)
        parts = []
        for flat, weight in zip(flats, self.blend):
            count = round(weight * total)
            if count == 0:
                continue
            index = torch.randint(flat.shape[2], (count,), generator=self.generator, device=flat.device)
            parts.append(flat[:, :, index])
        return torch.cat(parts, dim=2)

    # ------------------------------------------------------------------- loss
    def _layer_loss(self, features: torch.Tensor, target, mask: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "gram":
            gram = gram_matrix(features) if mask is None else masked_gram(features, mask_at(mask, features))
            return relative_squared_error(gram, target)
        positions = _positions(features, mask)
        if self.kind == "wasserstein":
            return wasserstein2_loss(positions, target)
        projections, target_sorted = sliced_wasserstein_target(target, generator=self.generator)
        return sliced_wasserstein_loss(positions, target_sorted, projections)

    def loss(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Layer-weighted mean of the per-layer losses; with masks, summed over regions by area."""
        loss = 0.0
        for index, targets in enumerate(self.targets):
            mask = None if self.masks is None else self.masks[index]
            terms = {name: self._layer_loss(features[name], targets[name], mask).float()
                     for name in self.layer_weights}
            loss = loss + self.areas[index] * layer_weighted_mean(terms, self.layer_weights)
        return loss
