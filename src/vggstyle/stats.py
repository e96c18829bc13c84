"""Alternative style statistics: Gaussian Wasserstein-2 and sliced Wasserstein, as pure tensor functions.

The Gram matrix (losses.py) compares second moments only. These compare the
distribution of the C-dimensional feature vectors over positions:

* Wasserstein-2 between Gaussian fits (mean and covariance of the features):
  W2^2 = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S2^{1/2} S1 S2^{1/2})^{1/2}).
  Captures mean and covariance, as the Gram does, but in a true distance between
  distributions (Vacher et al. 2020; Mroueh 2019).
* Sliced Wasserstein (Heitz et al., CVPR 2021): the exact 1-D optimal-transport cost
  between the sorted projections of the feature vectors on random directions. It
  matches the whole distribution, not only its first two moments.

Normalization (the same idea as the Gram loss's ||G - A||^2 / ||A||^2, so one set of
weights works for every layer and image size):

* Statistics are population ones, over the H W positions (1/(HW)), like the Gram,
  so they do not depend on the image size.
* W2: divided by tr(S2) + ||mu2||^2 = E||x||^2 of the target features, the trace of
  the target Gram matrix. Both have units of squared activations, so the ratio is
  dimensionless and comparable across layers.
* Sliced Wasserstein: the mean squared difference of sorted projections, divided by
  the mean square of the target's projections (for unit directions it is about
  E||x||^2 / C); again a relative squared error.
* Over a batch: the mean of the per-image relative values.

Precision: statistics in float32 at least (bfloat16 features are promoted; float64
stays float64, which the tests use); the C x C matrix square roots in float64.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .losses import gram_matrix


def _flat(features: torch.Tensor) -> torch.Tensor:
    """(N,C,*positions) -> (N,C,M) in float32 or wider."""
    if features.dim() < 3:
        raise ValueError(f"features must be (N,C,H,W) or (N,C,M), got shape {tuple(features.shape)}")
    dtype = torch.promote_types(features.dtype, torch.float32)
    return features.flatten(2).to(dtype)


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,C,H,W) -> mean (N,C) and covariance (N,C,C) over positions (population, 1/(HW)).

    Differentiable; float32 for bfloat16/float16 features. The covariance is the Gram
    E[x x^T] minus mu mu^T, through gram_matrix's one-matmul backward: the centred
    product's autograd made an image-sized copy and added two image-sized gradients
    (at 512 px a third of a W2 iteration). Float32 keeps the subtraction exact enough.
    """
    flat = _flat(features)
    mean = flat.mean(dim=2)
    # (N,C,M,1): gram_matrix takes a view of it in either layout ((N,M,C) for channels_last, (N,C,M) for NCHW).
    return mean, gram_matrix(flat.unsqueeze(-1)) - mean[:, :, None] * mean[:, None, :]


def _sym_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric PSD square root; eigenvalues clamped at 0 (rounding makes tiny ones negative)."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.clamp_min(0.0).sqrt()) @ vectors.transpose(-1, -2)


class W2Target(NamedTuple):
    """What ``wasserstein2_loss`` needs of the target, computed once (``wasserstein2_target``)."""

    mean: torch.Tensor       # (N,C), the target features' mean
    cov_sqrt: torch.Tensor   # (N,C,C) float64, S2^{1/2}
    trace: torch.Tensor      # (N,) float64, tr(S2)
    scale: torch.Tensor      # (N,) float64, tr(S2) + ||mu2||^2: the normalizer
    shift: torch.Tensor      # (N,) float64, absolute: added to the cross term's eigenvalues inside the roots
    offset: torch.Tensor     # (N,) float64, the shift's bias at S1 = S2, subtracted so identical inputs give 0


def wasserstein2_target(features: torch.Tensor, relative_eps: float = 1e-3) -> W2Target:
    """The target side of the W2 loss: mean, S2^{1/2} (one eigendecomposition), traces, normalizer.

    ``relative_eps`` smooths the square roots of the cross term: sqrt(lambda + shift) with
    sqrt(shift) = relative_eps * tr(S2) / C, a fraction of the target's mean variance.
    The true W2 gradient is unbounded where the image's features have no variance in
    a direction the target's have (always so when C > H W, e.g. relu5_1 at a coarse
    scale); the smoothing caps it at about 1/relative_eps times the scale of the other terms.
    The value moves by at most about 2 * relative_eps (relative); the bias at S1 = S2 is
    subtracted exactly, so identical inputs give 0.
    """
    with torch.no_grad():
        mean, cov = gaussian_stats(features.detach())
        cov = cov.double()
        cov_sqrt = _sym_sqrt(cov)
        trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
        channels = cov.shape[-1]
        root_shift = relative_eps * trace / channels
        shift = root_shift.square().clamp_min(1e-30)  # the floor keeps an all-zero target finite
        # At S1 = S2 the cross matrix is S2^2, whose eigenvalues are those of S2 squared.
        s = torch.linalg.eigvalsh(cov).clamp_min(0.0)
        offset = ((s.square() + shift[:, None]).sqrt() - s).sum(-1)
        scale = trace + mean.double().square().sum(-1)
    return W2Target(mean, cov_sqrt, trace, scale, shift, offset)


def wasserstein2_distance(features: torch.Tensor, target: W2Target) -> torch.Tensor:
    """(N,) squared W2 between the Gaussian fits of ``features`` and the target (not normalized).

    tr((S2^{1/2} S1 S2^{1/2})^{1/2}) is the sum of the square roots of the eigenvalues
    of the symmetric cross matrix: only eigenvalues are differentiated (eigvalsh), so
    repeated eigenvalues give no 0/0 in the backward pass; negatives from rounding are
    clamped at 0 and the target's shift keeps sqrt's derivative finite at 0.
    """
    mean, cov = gaussian_stats(features)
    if cov.shape[-1] != target.cov_sqrt.shape[-1]:
        raise ValueError(f"features have {cov.shape[-1]} channels but the W2 target has "
                         f"{target.cov_sqrt.shape[-1]}")
    cov = cov.double()
    cross = target.cov_sqrt @ cov @ target.cov_sqrt
    cross = (cross + cross.transpose(-1, -2)) / 2  # exactly symmetric for eigvalsh
    values = torch.linalg.eigvalsh(cross).clamp_min(0.0)
    cross_trace = (values + target.shift[:, None]).sqrt().sum(-1) - target.offset
    mean_term = (mean.double() - target.mean.double()).square().sum(-1)
    trace1 = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    return mean_term + trace1 + target.trace - 2.0 * cross_trace


def wasserstein2_loss(features: torch.Tensor, target: W2Target) -> torch.Tensor:
    """Scalar float32 loss: W2^2 / (tr(S2) + ||mu2||^2), averaged over the batch."""
    relative = wasserstein2_distance(features, target) / (target.scale + 1e-12)
    return relative.mean().to(torch.promote_types(features.dtype, torch.float32))


# ---- sliced Wasserstein -------------------------------------------------------------


def random_directions(channels: int, num_projections: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """(K, C) random unit vectors, uniform on the sphere (normalized Gaussians).

    Drawn on the generator's device (CPU for a default ``torch.Generator()``), so a
    seed gives the same directions on every device, then moved to ``device``.
    """
    gen_device = generator.device if generator is not None else "cpu"
    directions = torch.randn(num_projections, channels, generator=generator, device=gen_device)
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return directions.to(device) if device is not None else directions


def flatten_positions(features: torch.Tensor, max_positions: int | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,M) float32 target features to keep for redrawing directions.

    With ``max_positions``, a random subset of positions (without replacement): an
    unbiased sample of the feature distribution at a fraction of the memory.
    """
    flat = _flat(features.detach())
    if max_positions is None or flat.shape[2] <= max_positions:
        return flat
    gen_device = generator.device if generator is not None else "cpu"
    keep = torch.randperm(flat.shape[2], generator=generator, device=gen_device)[:max_positions]
    return flat[:, :, keep.to(flat.device)]


def _argsort_rows(values: np.ndarray) -> np.ndarray:
    """Argsort of each row of a 2-D array, the rows split over the torch thread count.

    NumPy's argsort releases the GIL, so threads run in parallel.
    """
    order = np.empty(values.shape, dtype=np.int64)
    workers = max(1, min(torch.get_num_threads(), values.shape[0]))

    def work(rows: slice) -> None:
        order[rows] = np.argsort(values[rows], axis=1)

    if workers == 1:
        work(slice(None))
    else:
        bounds = np.linspace(0, values.shape[0], workers + 1).astype(int)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, [slice(a, b) for a, b in zip(bounds, bounds[1:])]))
    return order


def sort_last(values: torch.Tensor) -> torch.Tensor:
    """Sorted along the last dimension, differentiable (gradients follow the permutation).

    On the CPU the permutation comes from NumPy, whose AVX-512 argsort is several times
    faster than torch.sort on these long rows (measured: 64 rows of 196k float32,
    torch.sort 650 ms, np.argsort on two threads 210 ms). Only the order comes from
    NumPy; the values are gathered by torch, so autograd sees a plain gather.
    """
    if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64):
        return torch.sort(values, dim=-1).values
    rows = values.detach().reshape(-1, values.shape[-1]).contiguous().numpy()
    if not (values.requires_grad and torch.is_grad_enabled()):  # values only: NumPy's sort is faster still
        return torch.from_numpy(np.sort(rows, axis=1)).reshape(values.shape)
    with torch.no_grad():
        order = torch.from_numpy(_argsort_rows(rows)).reshape(values.shape)
    return torch.gather(values, -1, order)


def _sorted_projections(features: torch.Tensor, projections: torch.Tensor) -> torch.Tensor:
    flat = _flat(features)
    if projections.shape[1] != flat.shape[1]:
        raise ValueError(f"features have {flat.shape[1]} channels but the projections "
                         f"{projections.shape[1]}")
    return sort_last(projections.to(flat) @ flat)  # (N,K,M)


def sliced_wasserstein_target(features: torch.Tensor, num_projections: int | None = None,
                              generator: torch.Generator | None = None,
                              projections: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(projections (K,C), sorted target projections (N,K,M)) for ``sliced_wasserstein_loss``.

    ``features`` is (N,C,H,W), or the (N,C,M) kept by ``flatten_positions``: calling
    this again on those with the same generator draws fresh directions each iteration
    at the cost of one (K,C)x(C,M) product and a sort. K defaults to C (Heitz et al.).
    Pass ``projections`` to reuse given directions instead of drawing.
    """
    with torch.no_grad():
        if projections is None:
            k = features.shape[1] if num_projections is None else num_projections
            projections = random_directions(features.shape[1], k, generator, device=features.device)
        return projections, _sorted_projections(features.detach(), projections)


def _resample_sorted(values: torch.Tensor, size: int) -> torch.Tensor:
    """Sorted (N,K,M) -> (N,K,size) by linear interpolation of the empirical quantile function.

    Sample i of M sits at quantile (i + 0.5) / M; align_corners=False maps exactly
    these centres, and clamps to the extremes beyond the first and last.
    """
    if values.shape[2] == size:
        return values
    return F.interpolate(values, size=size, mode="linear", align_corners=False)


def sliced_wasserstein_loss(features: torch.Tensor, target_sorted: torch.Tensor,
                            projections: torch.Tensor) -> torch.Tensor:
    """Scalar loss: mean squared difference of sorted projections / target projections' mean square.

    Sorting solves 1-D optimal transport exactly, so each projection contributes its
    squared 1-D Wasserstein-2 distance (Heitz et al. 2021, eq. 5). A target with a
    different number of positions is resampled along its quantiles. Differentiable in
    ``features`` (through the sort's permutation).
    """
    ours = _sorted_projections(features, projections)
    if target_sorted.shape[1] != ours.shape[1]:
        raise ValueError(f"{ours.shape[1]} projections but the target was projected on {target_sorted.shape[1]}")
    target = target_sorted.to(ours)
    scale = target.square().mean(dim=(1, 2))
    target = _resample_sorted(target, ours.shape[2])
    relative = (ours - target).square().mean(dim=(1, 2)) / (scale + 1e-12)
    return relative.mean()
