"""The Objective: a weighted sum of small loss terms, built once per scale.

Each term holds its targets as tensors fixed at construction and maps the image being
optimized (and VGG's features of it) to one unweighted scalar. The Objective runs the
network once, asks every term, and returns the weighted terms by name with their total.
Adding a term (the video's temporal term, a user's own) is one class and one entry in
the list the Objective is built from; nothing in the loop knows which terms exist.

Images are (1,3,H,W) RGB in 0..1 everywhere in the pipeline; the network converts to its
weights' convention (Caffe's BGR 0..255, or torchvision's) inside its forward.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .losses import content_loss, content_reference, layer_weighted_mean, range_loss, tv_loss


class Term(Protocol):
    """One loss term. ``layers``: the VGG layers it reads (empty: it reads the pixels only)."""

    name: str
    weight: float
    layers: tuple[str, ...]

    def __call__(self, image: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor: ...


class ContentTerm:
    """Gatys et al.'s content loss: relative squared feature error at the content layers.

    style_features: the style images' features at the content layers, whose energy floors the
    reference of each layer (losses.content_reference); none: the plain ||P||^2.
    """

    name = "content"

    def __init__(self, weight: float, targets: dict[str, torch.Tensor], layer_weights: dict[str, float],
                 style_features: list[dict[str, torch.Tensor]] = ()):
        self.weight = weight
        self.targets = {n: t.float() for n, t in targets.items()}
        self.layer_weights = dict(layer_weights)
        self.layers = tuple(layer_weights)
        self.references = {n: content_reference(self.targets[n], [f[n] for f in style_features])
                           for n in self.layers} if style_features else None

    def __call__(self, image, features):
        return content_loss(features, self.targets, self.layer_weights, self.references)


class StyleTerm:
    """The style loss: a statistic (style.py) per layer, layer-weighted, and with masks summed over
    regions by area. Without masks all styles are blended into one target; with masks each
    style keeps its own target for its region."""

    name = "style"

    def __init__(self, weight: float, statistic, layer_weights: dict[str, float],
                 style_features: list[dict[str, torch.Tensor]], blend: list[float],
                 masks: list[torch.Tensor] | None = None):
        self.weight = weight
        self.statistic = statistic
        self.layer_weights = {n: w for n, w in layer_weights.items() if w > 0} or dict(layer_weights)
        self.layers = tuple(self.layer_weights)
        if masks is None:
            self.regions = [(None, 1.0, self._targets(style_features, blend))]
        else:
            self.regions = [(mask, float(mask.mean()), self._targets([features], [1.0]))
                            for mask, features in zip(masks, style_features)]

    def _targets(self, style_features, blend) -> dict:
        return {name: self.statistic.target([f[name] for f in style_features], blend) for name in self.layers}

    def __call__(self, image, features):
        loss = 0.0
        for mask, area, targets in self.regions:
            terms = {name: self.statistic.loss(features[name], targets[name], mask).float() for name in self.layers}
            loss = loss + area * layer_weighted_mean(terms, self.layer_weights)
        return loss


class TVTerm:
    """Total variation of the image: smooths the high-frequency noise the style terms leave."""

    name = "tv"
    layers = ()

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self, image, features):
        return tv_loss(image)


class RangeTerm:
    """Keeps the pixels near 0..1 while L-BFGS optimizes them unclamped (clamping between its
    steps breaks its curvature pairs). Without it the pixels the style pushes past black or white
    stay there, and the clamp that makes the image a picture cuts them off: on three pairs at 128
    and 256 px (float32, 100 iterations) the saved image's style distance was 16-84% above the one
    the optimizer reached; with it 0-1% (benchmarks/range_term.py, docs/quality.md)."""

    name = "range"
    layers = ()

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self, image, features):
        return range_loss(image.float())


class Objective:
    """``objective(image)`` -> {term name: weighted term, ..., "total": their sum}.

    net: a VGG19Features (or anything mapping an image to {layer: features}); it runs once per
    call, and only when some term reads features. checkpoint: recompute each VGG block in the
    backward pass (saves memory at print sizes).
    """

    def __init__(self, net, terms: list, checkpoint: bool = False):
        names = [t.name for t in terms]
        if len(set(names)) != len(names) or "total" in names:
            raise ValueError(f"term names must be unique and not 'total', got {names}")
        self.net = net
        self.terms = list(terms)
        self.checkpoint = checkpoint

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for term in self.terms for name in term.layers))

    def unweighted(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.net(image, checkpoint=self.checkpoint) if self.layers else {}
        return {term.name: term(image, features) for term in self.terms}

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        values = self.unweighted(image)
        weighted = {term.name: term.weight * values[term.name] for term in self.terms}
        weighted["total"] = sum(weighted.values())
        return weighted
