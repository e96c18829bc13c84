"""The loss terms, as pure tensor functions.

Normalization (a departure from the papers' raw sums, so that one set of default
weights works at every image size and for every image pair):

* Gram matrix: G = F F^T / (H W), the mean over positions of the channel outer
  product. Dividing by the number of positions makes it independent of image size;
  it is Gatys et al.'s G / M_l.
* Style loss per layer: ||G - A||^2 / ||A||^2, the squared error relative to the
  target Gram A. Up to a constant per layer this is Gatys et al.'s E_l
  (1 / (4 N^2 M^2) sum (G - A)^2); the constant 1/||A||^2 is a per-layer weight
  that gives every layer an equal say whatever its activation scale (raw E_l of
  relu1_1 and relu4_1 differ by orders of magnitude with Caffe weights).
* Content loss per layer: ||F - P||^2 / ||P||^2, likewise Gatys's content loss
  scaled by a constant.
* Total variation: the mean squared difference between neighbouring pixels of the
  0..1 image. For natural images (power spectrum ~ 1/f^2) this per-pixel quantity
  stays roughly constant across sizes, so no size factor is needed.
* Range: the mean squared distance of each pixel value from 0..1, per pixel like the
  total variation, so its weight does not depend on the size either.

Each per-layer term is multiplied by its layer weight and divided by the sum of the
layer weights, so adding layers does not change the overall strength.
"""

from __future__ import annotations

import torch


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,C), averaged over positions; computed in float32.

    The matmul runs in the features' dtype (bf16 under autocast: AMX/tensor cores, and
    fp32 Grams measured no better) and the result is promoted to float32 for the loss.
    """
    n, c, h, w = features.shape
    return weighted_gram(features) / (h * w)


def weighted_gram(features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,C): the sum over positions of weight x f f^T (weights: a constant
    (1,1,H,W) map such as a region's mask; None: all ones), promoted to float32.

    The matrices are views in the features' own memory layout, so that the gradient comes
    back in it too: the next layer's gradient is added to it, and an add across layouts
    (channels_last against NCHW) reads one of them transposed.
    """
    n, c, h, w = features.shape
    rows_are_channels = features.is_contiguous()
    if rows_are_channels:  # NCHW (the Winograd path): (N, C, HW) is a view
        matrix, weights_shape = features.reshape(n, c, h * w), (1, 1, h * w)
    else:  # channels_last (NHWC): (N, HW, C) is a view
        matrix, weights_shape = features.permute(0, 2, 3, 1).reshape(n, h * w, c), (1, h * w, 1)
    if weights is not None:
        if weights.requires_grad:
            raise ValueError("Gram weights are constants (a mask); their gradient is not computed")
        weights = weights.reshape(weights_shape).to(features.dtype)
    gram = _Gram.apply(matrix, weights, rows_are_channels)
    return gram.to(torch.promote_types(gram.dtype, torch.float32))


class _Gram(torch.autograd.Function):
    """G = (X w) X^T (rows are channels) or (X w)^T X (rows are positions; w weighs the positions,
    all ones when None), with a one-matmul backward, dX = ((dG + dG^T) X) w or (X (dG + dG^T)) w.

    Plain autograd sees X twice in bmm(X^T, X) and adds two image-sized gradients, one of
    them in transposed layout: at relu1_1 and 512 px that add alone cost ~30 ms per
    iteration on the CPU, more than the Gram itself.
    """

    @staticmethod
    def forward(ctx, matrix, weights, rows_are_channels: bool):
        ctx.save_for_backward(matrix, weights)
        ctx.rows_are_channels = rows_are_channels
        weighted = matrix if weights is None else matrix * weights
        if rows_are_channels:
            return torch.bmm(weighted, matrix.transpose(1, 2))
        return torch.bmm(weighted.transpose(1, 2), matrix)

    @staticmethod
    def backward(ctx, grad):
        matrix, weights = ctx.saved_tensors
        grad = grad.to(matrix.dtype)
        symmetric = grad + grad.transpose(1, 2)
        grad_matrix = torch.bmm(symmetric, matrix) if ctx.rows_are_channels else torch.bmm(matrix, symmetric)
        return (grad_matrix if weights is None else grad_matrix.mul_(weights)), None, None


def relative_squared_error(value: torch.Tensor, target: torch.Tensor,
                            reference: torch.Tensor | float | None = None) -> torch.Tensor:
    """||value - target||^2 / reference, in float32; the reference defaults to ||target||^2
    (1e-8 keeps an all-zero target finite)."""
    value = value.float()
    target = target.float()
    if reference is None:
        reference = target.square().sum() + 1e-8
    return (value - target).square().sum() / reference


# The content loss's reference is at least this share of the style features' energy (below).
CONTENT_REFERENCE_FLOOR = 0.1


def content_reference(target: torch.Tensor, style_features: list[torch.Tensor]) -> torch.Tensor:
    """The denominator of one layer's content loss: ||P||^2, but at least CONTENT_REFERENCE_FLOOR
    of what the style images' features at that layer hold per element.

    Why a floor: a featureless content image (flat gray, a black video frame) has almost no
    deep activations; relu4_2's mean square is ~100x below a photograph's (docs/measurements.md),
    so the plain relative error made the content term ~100x stronger and held the result at
    the photo. Natural photographs sit well above the floor (tubingen: 0.47 of starry night's
    mean square, golden gate 0.93), so for them the loss is unchanged.
    """
    target = target.float()
    energy = float(sum(f.float().square().mean() for f in style_features) / max(1, len(style_features)))
    return torch.clamp_min(target.square().sum(), CONTENT_REFERENCE_FLOOR * energy * target.numel() + 1e-8)


def content_loss(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                 layer_weights: dict[str, float], references: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    references = references or {}
    return layer_weighted_mean({name: relative_squared_error(features[name], targets[name], references.get(name))
                                for name in layer_weights}, layer_weights)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of horizontal and vertical neighbours (image in 0..1)."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.square().mean() + dy.square().mean()


def range_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean over pixels and channels of the squared distance from 0..1 (zero inside it)."""
    return ((image - 1.0).clamp(min=0.0).square() + (-image).clamp(min=0.0).square()).mean()


def blend_grams(grams: list[dict[str, torch.Tensor]], blend: list[float]) -> dict[str, torch.Tensor]:
    """One target Gram per layer: the blend-weighted mean of the style images' Grams (as neural-style does)."""
    total = float(sum(blend))
    return {name: sum(w / total * g[name] for w, g in zip(blend, grams)) for name in grams[0]}


def layer_weighted_mean(terms: dict[str, torch.Tensor], layer_weights: dict[str, float]) -> torch.Tensor:
    """Per-layer terms weighted by their layer weights over the weights' sum (content and style alike)."""
    total = sum(layer_weights.values())
    if total == 0:
        return next(iter(terms.values())) * 0.0
    return sum(layer_weights[name] / total * term for name, term in terms.items())
