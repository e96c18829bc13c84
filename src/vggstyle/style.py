"""Style statistics: how the output's features are compared with the style images' features.

Three statistics (``--style-loss``), one interface: ``target(features, blend)`` builds the
target of one layer once, ``loss(features, target, mask)`` compares against it.

* gram: relative squared error of Gram matrices (losses.py), Gatys et al.
* wasserstein: W2 between Gaussian fits of the features (stats.py).
* sliced-wasserstein: sorted random 1-D projections (stats.py, Heitz et al. 2021);
  fresh directions every evaluation, as in the paper, drawn from a seeded generator.

Several styles without masks are *blended* into one target: the blend-weighted mean
of the Grams (as neural-style does), or for the distribution statistics a mixture,
sampled as positions from each style in proportion to its weight.

With masks (one per style, white where that style applies) each style keeps its own
target and is compared with the output's features inside its region only: a guided
Gram (features weighted by the mask at that layer's resolution, Gatys et al. 2017,
sec. 4) or, for the distribution statistics, the positions where the mask is over one
half. StyleTerm (objective.py) weights each region's loss by the share of the image it
covers, so one full-image mask equals the unmasked loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import blend_grams, gram_matrix, relative_squared_error, weighted_gram
from .stats import (flatten_positions, sliced_wasserstein_loss, sliced_wasserstein_target, wasserstein2_loss,
                    wasserstein2_target)

# Positions kept per layer of the sliced-Wasserstein target: an unbiased sample that keeps the
# per-evaluation sort of the target cheap at large sizes.
SW_MAX_POSITIONS = 65536


def masked_gram(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gram of the features weighted by a (1,1,H,W) mask in 0..1, averaged over the mask's area."""
    return weighted_gram(features, mask) / mask.sum().clamp_min(1e-6)


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


class GramStatistic:
    """Gatys et al.: second moments of the features, compared as a relative squared error."""

    def target(self, features: list[torch.Tensor], blend: list[float]) -> torch.Tensor:
        return blend_grams([{"g": gram_matrix(f)} for f in features], blend)["g"]

    def loss(self, features: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        gram = gram_matrix(features) if mask is None else masked_gram(features, mask_at(mask, features))
        return relative_squared_error(gram, target)


class _DistributionStatistic:
    """Shared by the statistics that compare distributions of positions: a mixture of the styles
    as their target, drawn from a seeded CPU generator, so a seed repeats on every device."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def mixture(self, features: list[torch.Tensor], blend: list[float]) -> torch.Tensor:
        """(1,C,M) positions of all styles, each style's share of M in proportion to its blend weight."""
        flats = [flatten_positions(f.float()) for f in features]
        if len(flats) == 1:
            return flats[0]
        total_positions = sum(f.shape[2] for f in flats)
        total_weight = float(sum(blend))
        parts = []
        for flat, weight in zip(flats, blend):
            count = round(weight / total_weight * total_positions)
            if count:
                index = torch.randint(flat.shape[2], (count,), generator=self.generator)
                parts.append(flat[:, :, index.to(flat.device)])
        return torch.cat(parts, dim=2)


class Wasserstein2Statistic(_DistributionStatistic):
    """W2 between Gaussian fits (mean and covariance) of the output's and the style's features."""

    def target(self, features, blend):
        return wasserstein2_target(self.mixture(features, blend))

    def loss(self, features, target, mask):
        return wasserstein2_loss(_positions(features, mask), target)


class SlicedWassersteinStatistic(_DistributionStatistic):
    """Heitz et al. 2021: the 1-D transport cost along random directions, fresh every evaluation."""

    def target(self, features, blend):
        return flatten_positions(self.mixture(features, blend), SW_MAX_POSITIONS, self.generator)

    def loss(self, features, target, mask):
        projections, target_sorted = sliced_wasserstein_target(target, generator=self.generator)
        return sliced_wasserstein_loss(_positions(features, mask), target_sorted, projections)


def make_statistic(kind: str, generator: torch.Generator):
    """The statistic named by --style-loss (one of config.STYLE_LOSSES)."""
    if kind == "gram":
        return GramStatistic()
    if kind == "wasserstein":
        return Wasserstein2Statistic(generator)
    if kind == "sliced-wasserstein":
        return SlicedWassersteinStatistic(generator)
    raise ValueError(f"unknown style statistic '{kind}'")
