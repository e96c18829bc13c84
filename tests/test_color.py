"""Colour control against hand-written references and the properties the paper relies on."""

import pytest
import torch

from vggstyle.color import (color_stats, combine_luminance, gray_to_rgb, luminance, match_histogram,
                            match_luminance, rgb_to_yiq, yiq_to_rgb)


def colored_image(seed, n=1, h=12, w=10, mean=(0.5, 0.4, 0.3), spread=0.12):
    """Random image with correlated channels, inside 0..1 by construction."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(3, 3, generator=g) * spread / 2
    z = torch.rand(n, 3, h * w, generator=g) - 0.5
    x = torch.tensor(mean)[None, :, None] + mix @ z
    return x.reshape(n, 3, h, w).clamp(0, 1)


def gray_image(seed, n=1, h=12, w=10):
    g = torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1
    return g.repeat(1, 3, 1, 1)


def test_yiq_by_hand_for_pure_red():
    # Column 0 of the NTSC matrix.
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 1.0
    assert rgb_to_yiq(red).flatten().tolist() == pytest.approx([0.299, 0.5959, 0.2115], abs=1e-6)


def test_yiq_round_trip():
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-6)
    yiq = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(rgb_to_yiq(yiq_to_rgb(yiq)), yiq, atol=1e-5)


def test_luminance_of_gray_is_the_gray_value_and_chroma_is_zero():
    x = gray_image(0)
    assert luminance(x).shape == (1, 1, 12, 10)
    assert torch.allclose(luminance(x), x[:, :1], atol=1e-6)
    assert rgb_to_yiq(x)[:, 1:].abs().max() < 1e-6


def test_gray_to_rgb_is_zero_chroma_luminance():
    y = torch.rand(2, 1, 4, 5)
    rgb = gray_to_rgb(y)
    assert rgb.shape == (2, 3, 4, 5)
    assert torch.equal(rgb[:, 0], y[:, 0]) and torch.equal(rgb[:, 2], y[:, 0])
    yiq = torch.cat([y, torch.zeros(2, 2, 4, 5)], dim=1)
    assert torch.allclose(yiq_to_rgb(yiq), rgb, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N,1,H,W\)"):
        gray_to_rgb(rgb)


def test_match_luminance_takes_content_mean_and_std():
    style = luminance(colored_image(0, n=2, spread=0.3))
    content = luminance(colored_image(1, n=2, h=8, w=9, mean=(0.2, 0.3, 0.2), spread=0.1))
    out = match_luminance(style, content)
    assert out.shape == style.shape
    for b in range(2):
        assert out[b].mean().item() == pytest.approx(content[b].mean().item(), abs=1e-6)
        assert out[b].std(unbiased=False).item() == pytest.approx(content[b].std(unbiased=False).item(), rel=1e-5)
    # A linear map: the style's structure is kept (correlation 1 with the input).
    corr = torch.corrcoef(torch.stack([out[0].flatten(), style[0].flatten()]))[0, 1]
    assert corr.item() == pytest.approx(1.0, abs=1e-6)


def test_match_luminance_by_hand():
    style = torch.tensor([0.0, 1.0, 0.0, 1.0]).reshape(1, 1, 2, 2)    # mean 0.5, std 0.5
    content = torch.tensor([0.4, 0.6, 0.4, 0.6]).reshape(1, 1, 2, 2)  # mean 0.5, std 0.1
    assert match_luminance(style, content).flatten().tolist() == pytest.approx([0.4, 0.6, 0.4, 0.6])


def test_match_luminance_of_flat_style_is_content_mean():
    out = match_luminance(torch.full((1, 1, 3, 3), 0.7), luminance(colored_image(2)))
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.full_like(out, luminance(colored_image(2)).mean().item()), atol=1e-6)


def test_combine_luminance_keeps_content_chroma_and_takes_stylized_y():
    content = colored_image(3, h=6, w=8)
    stylized_y = torch.rand(1, 1, 6, 8, generator=torch.Generator().manual_seed(4))
    out = combine_luminance(stylized_y, content, clamp=False)
    got, want = rgb_to_yiq(out), rgb_to_yiq(content)
    assert torch.allclose(got[:, 1:], want[:, 1:], atol=1e-6)
    assert torch.allclose(got[:, :1], stylized_y, atol=1e-6)
    # The network's 3-channel gray output works the same; clamped output is an image.
    assert torch.allclose(combine_luminance(gray_to_rgb(stylized_y), content, clamp=False), out, atol=1e-6)
    clamped = combine_luminance(stylized_y, content)
    assert clamped.min() >= 0 and clamped.max() <= 1


def test_combine_luminance_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match=r"\(6, 8\).*\(5, 8\)"):
        combine_luminance(torch.rand(1, 1, 6, 8), torch.rand(1, 3, 5, 8))


def test_luminance_pipeline_with_gray_content_gives_gray_result():
    content = gray_image(5, h=6, w=8)
    out = combine_luminance(torch.rand(1, 1, 6, 8), content)
    assert rgb_to_yiq(out)[:, 1:].abs().max() < 1e-6


@pytest.mark.parametrize("method", ["sqrt", "cholesky"])
def test_match_histogram_gives_content_mean_and_covariance(method):
    style = colored_image(6, n=2, h=16, w=14, mean=(0.3, 0.5, 0.6), spread=0.25)
    content = colored_image(7, n=2, h=9, w=11, mean=(0.6, 0.4, 0.3), spread=0.1)
    out = match_histogram(style, content, eps=1e-9, method=method, clamp=False)
    assert out.shape == style.shape
    mu_o, cov_o = color_stats(out)
    mu_c, cov_c = color_stats(content)
    assert torch.allclose(mu_o, mu_c, atol=1e-6)
    assert torch.allclose(cov_o, cov_c, atol=1e-6, rtol=1e-4)
    # The colour changed a lot, so this was not a trivial pass.
    assert (color_stats(style)[1] - cov_c).abs().max() > 10 * (cov_o - cov_c).abs().max()


def test_match_histogram_sqrt_by_hand_for_diagonal_covariances():
    # Channels on mutually orthogonal zero-mean patterns have diagonal covariances, so
    # A = diag(sigma_c / sigma_s): the style's patterns with the content's means and deviations.
    h = torch.tensor([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]])
    def image(means, stds, patterns):
        return (torch.tensor(means)[:, None] + torch.tensor(stds)[:, None] * patterns).reshape(1, 3, 2, 2)
    style = image([0.3, 0.5, 0.6], [0.2, 0.1, 0.25], h)
    content = image([0.6, 0.4, 0.2], [0.05, 0.3, 0.1], h[[2, 0, 1]])
    want = image([0.6, 0.4, 0.2], [0.05, 0.3, 0.1], h)
    out = match_histogram(style, content, eps=0.0, clamp=False)
    assert torch.allclose(out, want, atol=1e-6)


@pytest.mark.parametrize("method", ["sqrt", "cholesky"])
def test_match_histogram_is_identity_when_style_is_content(method):
    x = colored_image(8, h=10, w=10)
    assert torch.allclose(match_histogram(x, x, method=method), x, atol=1e-6)
    g = gray_image(9)
    assert torch.allclose(match_histogram(g, g, method=method), g, atol=1e-6)


@pytest.mark.parametrize("method", ["sqrt", "cholesky"])
def test_match_histogram_with_gray_content(method):
    style = colored_image(10, h=16, w=14, spread=0.25)
    content = gray_image(11)
    out = match_histogram(style, content, method=method)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    # The recoloured style is gray to within the regularization (eps = 1e-5: std ~ 0.003).
    chroma = rgb_to_yiq(out)[:, 1:]
    assert chroma.abs().max() < 0.02
    mu_c, cov_c = color_stats(content)
    assert torch.allclose(color_stats(out)[0], mu_c, atol=2e-3)
    # Unclamped and with little regularization, the singular content covariance is matched.
    mu_o, cov_o = color_stats(match_histogram(style, content, eps=1e-9, method=method, clamp=False))
    assert torch.allclose(mu_o, mu_c, atol=1e-6)
    assert torch.allclose(cov_o, cov_c, atol=1e-6)


@pytest.mark.parametrize("method", ["sqrt", "cholesky"])
def test_match_histogram_with_gray_style(method):
    style = gray_image(12, h=16, w=14)
    content = colored_image(13)
    out = match_histogram(style, content, method=method)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    # A gray style has no colour variation to redistribute: its variation stays on one
    # colour axis, while the mean takes the content's colour.
    mu_o, _ = color_stats(out)
    assert torch.allclose(mu_o, color_stats(content)[0], atol=1e-3)
    centered = (out - out.mean(dim=(2, 3), keepdim=True)).flatten(2)[0]  # (3, HW)
    singular = torch.linalg.svdvals(centered)
    assert singular[1] < 1e-4 * singular[0]


def test_match_histogram_clamps_to_image_range():
    style = colored_image(14, spread=0.25)
    content = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(15))  # wide spread, near the edges
    assert match_histogram(style, content, clamp=False).min() < 0 or \
        match_histogram(style, content, clamp=False).max() > 1
    out = match_histogram(style, content)
    assert out.min() >= 0 and out.max() <= 1


def test_match_histogram_rejects_unknown_method():
    with pytest.raises(ValueError, match="cholesky"):
        match_histogram(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), method="lu")
