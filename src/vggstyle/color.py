"""Colour control (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer").

Both of the paper's methods, as pure functions on (N,3,H,W) RGB tensors in 0..1:

* Luminance-only transfer: the network sees only luminance (``luminance`` of content
  and style, the style's matched to the content's mean and deviation with
  ``match_luminance``, each fed as ``gray_to_rgb``); the stylized luminance is then
  recombined with the content's chroma (``combine_luminance``).
* Colour histogram matching: the style image is recoloured before the transfer so
  its pixel mean and covariance equal the content's (``match_histogram``), the
  paper's linear map x' = A (x - mu_s) + mu_c.

Choices and departures from the paper, one line each:

* Colour space: YIQ with the FCC NTSC coefficients, as in the paper. The inverse is
  computed from the forward matrix (not the rounded published one), so the pair is
  an exact inverse to float precision. I and Q rows sum to zero: gray has no chroma.
* Statistics are over all pixels of each image (population mean and deviation /
  covariance, 1/(HW)), per batch element; style and content may differ in size.
* ``match_luminance`` does not clamp: clamping would undo the match, and VGG takes
  values slightly outside 0..1. ``combine_luminance`` and ``match_histogram`` clamp,
  since they produce images.
* ``match_histogram`` adds eps*I to both covariances: a grayscale (or otherwise
  flat) image has a singular covariance, and regularizing both keeps A exactly the
  identity when style == content. The 3x3 algebra runs in float64.
"""

from __future__ import annotations

import torch

# FCC NTSC RGB -> YIQ. Rows: Y (luma, sums to 1), I and Q (chroma, each sums to 0).
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.5959, -0.2746, -0.3213],
                            [0.2115, -0.5227, 0.3112]], dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _check_rgb(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be (N,3,H,W), got shape {tuple(x.shape)}")


def _apply_matrix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel 3x3 colour transform of (N,3,H,W), in x's dtype (a float)."""
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return torch.einsum("ij,njhw->nihw", matrix.to(device=x.device, dtype=dtype), x.to(dtype))


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) RGB -> YIQ: luminance in channel 0 separates structure from colour."""
    _check_rgb(x, "rgb_to_yiq input")
    return _apply_matrix(_RGB_TO_YIQ, x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) YIQ -> RGB; the exact inverse of ``rgb_to_yiq`` (not clamped)."""
    _check_rgb(x, "yiq_to_rgb input")
    return _apply_matrix(_YIQ_TO_RGB, x)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) RGB -> (N,1,H,W) Y: what the network sees in luminance-only transfer."""
    return rgb_to_yiq(x)[:, :1]


def _mean_std(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = tuple(range(1, y.dim()))
    return y.mean(dim=dims, keepdim=True), y.std(dim=dims, keepdim=True, unbiased=False)


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Style luminance linearly mapped to the content's mean and deviation (the paper's eq. 1).

    L_s' = sigma_c / sigma_s (L_s - mu_s) + mu_c, per batch element, so the style's
    brightness and contrast do not leak into the result, only its texture. A flat
    style (sigma_s under 1e-6, far below one 8-bit level, where float rounding is all
    there is to scale up) becomes flat at the content's mean. Not clamped (see module).
    """
    mu_s, sigma_s = _mean_std(style_y)
    mu_c, sigma_c = _mean_std(content_y)
    flat = sigma_s < 1e-6
    gain = torch.where(flat, torch.zeros_like(sigma_s), sigma_c / torch.where(flat, torch.ones_like(sigma_s), sigma_s))
    return gain * (style_y - mu_s) + mu_c


def gray_to_rgb(y: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) -> (N,3,H,W) with Y in every channel: a gray image the RGB network accepts.

    Since YIQ -> RGB maps (Y, 0, 0) to (Y, Y, Y), this is the luminance with zero chroma.
    """
    if y.dim() != 4 or y.shape[1] != 1:
        raise ValueError(f"gray_to_rgb input must be (N,1,H,W), got shape {tuple(y.shape)}")
    return y.repeat(1, 3, 1, 1)


def combine_luminance(stylized_y: torch.Tensor, content_rgb: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """RGB with Y from the stylized luminance and I, Q from the content: the content's colours back.

    ``stylized_y`` is (N,1,H,W), or the network's (N,3,H,W) output, whose luminance is
    taken (for a gray image that is its value). Both must have the same H, W: resize
    the content first. Clamped to 0..1 unless ``clamp`` is False.
    """
    _check_rgb(content_rgb, "combine_luminance content")
    if stylized_y.dim() != 4 or stylized_y.shape[1] not in (1, 3):
        raise ValueError(f"combine_luminance stylized image must be (N,1,H,W) or (N,3,H,W), "
                         f"got shape {tuple(stylized_y.shape)}")
    if stylized_y.shape[-2:] != content_rgb.shape[-2:]:
        raise ValueError(f"combine_luminance: stylized image is {tuple(stylized_y.shape[-2:])} (H,W) but "
                         f"content is {tuple(content_rgb.shape[-2:])}; resize the content first")
    y = luminance(stylized_y) if stylized_y.shape[1] == 3 else stylized_y
    content_yiq = rgb_to_yiq(content_rgb)
    y, chroma = y.to(content_yiq.dtype), content_yiq[:, 1:]
    n = max(y.shape[0], chroma.shape[0])  # a batch of one broadcasts against the other
    rgb = yiq_to_rgb(torch.cat([y.expand(n, -1, -1, -1), chroma.expand(n, -1, -1, -1)], dim=1))
    return rgb.clamp(0.0, 1.0) if clamp else rgb


def color_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,3,H,W) -> pixel mean (N,3) and covariance (N,3,3), population (1/HW), in float64.

    float64 because the covariance of a nearly gray image has eigenvalues near zero
    that the inverse square root in ``match_histogram`` magnifies.
    """
    _check_rgb(x, "color_stats input")
    flat = x.detach().double().flatten(2)
    mean = flat.mean(dim=2)
    centered = flat - mean[:, :, None]
    return mean, centered @ centered.transpose(1, 2) / flat.shape[2]


def _sym_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
    """matrix^power for symmetric positive (semi)definite matrices, via eigendecomposition."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.clamp_min(0.0) ** power) @ vectors.transpose(-1, -2)


def match_histogram(style_rgb: torch.Tensor, content_rgb: torch.Tensor, eps: float = 1e-5,
                    method: str = "sqrt", clamp: bool = True) -> torch.Tensor:
    """The style recoloured so its pixel mean and covariance equal the content's (linear colour transfer).

    x' = A (x - mu_s) + mu_c, with, for ``method``:

    * "sqrt" (the paper's 3D matrix square-root variant): A = Sigma_c^{1/2} Sigma_s^{-1/2},
      symmetric roots via eigendecomposition.
    * "cholesky" (the paper's other variant): A = L_c L_s^{-1} with Sigma = L L^T.

    Any A with A Sigma_s A^T = Sigma_c matches; the two differ in how they mix channels.
    Both covariances get ``eps`` * I (units: squared 0..1 intensity; 1e-5 is about one
    8-bit level of deviation), so singular covariances (grayscale or flat images) work,
    and colour directions in which the style varies by less than that (noise) are
    damped rather than blown up to the content's variance. A grayscale style stays gray
    up to its mean: it has no colour variation to redistribute. Clamped to 0..1 unless
    ``clamp`` is False (which keeps the match exact). A preprocessing step: not
    differentiable.
    """
    if eps < 0:
        raise ValueError(f"match_histogram eps must be >= 0, got {eps}")
    _check_rgb(style_rgb, "match_histogram style")
    _check_rgb(content_rgb, "match_histogram content")
    mu_s, cov_s = color_stats(style_rgb)
    mu_c, cov_c = color_stats(content_rgb)
    eye = eps * torch.eye(3, dtype=torch.float64, device=cov_s.device)
    cov_s, cov_c = cov_s + eye, cov_c + eye
    if method == "sqrt":
        a = _sym_power(cov_c, 0.5) @ _sym_power(cov_s, -0.5)
    elif method == "cholesky":
        l_s = torch.linalg.cholesky(cov_s)
        l_c = torch.linalg.cholesky(cov_c)
        # A = L_c L_s^{-1}, i.e. the solution of A L_s = L_c.
        a = torch.linalg.solve_triangular(l_s, l_c, upper=False, left=False)
    else:
        raise ValueError(f"match_histogram method must be 'sqrt' or 'cholesky', got {method!r}")
    # Applied in float64 too: for a gray style A is large off the gray axis, and only
    # exact arithmetic keeps (x - mu_s), which lies on that axis, from picking up colour.
    h, w = style_rgb.shape[-2:]
    flat = style_rgb.detach().double().flatten(2) - mu_s[:, :, None]
    out = (a @ flat + mu_c[:, :, None]).reshape(-1, 3, h, w)
    out = out.to(style_rgb.dtype if style_rgb.is_floating_point() else torch.float32)
    return out.clamp(0.0, 1.0) if clamp else out
