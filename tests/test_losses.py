"""Each loss against a hand-written reference on small tensors."""

import math

import pytest
import torch

from vggstyle.losses import (blend_grams, content_loss, content_reference, gram_matrix, range_loss,
                             relative_squared_error, tv_loss)
from vggstyle.objective import ContentTerm, StyleTerm
from vggstyle.style import GramStatistic, masked_gram


def reference_gram(f):
    n, c, h, w = f.shape
    g = torch.zeros(n, c, c, dtype=torch.float64)
    for b in range(n):
        for i in range(c):
            for j in range(c):
                total = 0.0
                for y in range(h):
                    for x in range(w):
                        total += float(f[b, i, y, x]) * float(f[b, j, y, x])
                g[b, i, j] = total / (h * w)
    return g


def test_gram_matches_loops():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 4, 5)
    assert torch.allclose(gram_matrix(f).double(), reference_gram(f), atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gram_gradient_is_exact(channels_last):
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(gram_matrix, (x.requires_grad_(True),))


@pytest.mark.parametrize("channels_last", [False, True])
def test_gram_gradient_comes_back_in_the_features_layout(channels_last):
    """The next layer's gradient is added to it: across layouts that add reads one side transposed."""
    x = torch.rand(1, 8, 6, 5, dtype=torch.float64)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=layout).requires_grad_(True)
    features = x * 1.0  # a layer's output, as in VGG (a leaf's .grad is laid out by its own rule)
    seen = []
    features.register_hook(seen.append)
    gram_matrix(features).square().sum().backward()
    assert seen[0].is_contiguous(memory_format=layout)


def test_masked_gram_matches_loops_in_both_layouts():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 4, 5)
    mask = torch.rand(1, 1, 4, 5)
    expected = reference_gram(f * mask.sqrt()) * (4 * 5) / mask.sum()
    for layout in (torch.contiguous_format, torch.channels_last):
        assert torch.allclose(masked_gram(f.contiguous(memory_format=layout), mask).double(), expected, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_masked_gram_gradient_is_exact_and_in_the_features_layout(channels_last):
    layout = torch.channels_last if channels_last else torch.contiguous_format
    mask = torch.rand(1, 1, 3, 5, dtype=torch.float64)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: masked_gram(t, mask), (x,))
    features = x * 1.0
    seen = []
    features.register_hook(seen.append)
    masked_gram(features, mask).square().sum().backward()
    assert seen[0].is_contiguous(memory_format=layout)


def test_gram_is_size_invariant_for_a_tiled_pattern():
    torch.manual_seed(0)
    tile = torch.randn(1, 4, 3, 3)
    big = tile.repeat(1, 1, 4, 4)
    assert torch.allclose(gram_matrix(tile), gram_matrix(big), atol=1e-5)


def test_gram_of_bf16_features_is_float32():
    f = torch.randn(1, 8, 6, 6).bfloat16()
    g = gram_matrix(f)
    assert g.dtype == torch.float32
    assert torch.allclose(g, gram_matrix(f.float()), rtol=2e-2, atol=1e-2)


def test_relative_squared_error_by_hand():
    v = torch.tensor([1.0, 2.0, 3.0])
    t = torch.tensor([1.0, 0.0, 3.0])
    assert relative_squared_error(v, t).item() == pytest.approx(4.0 / 10.0)
    assert relative_squared_error(t, t).item() == 0.0


def test_content_loss_weighted_mean_over_layers():
    a = {"relu4_2": torch.tensor([2.0, 0.0]), "relu5_2": torch.tensor([1.0, 1.0])}
    t = {"relu4_2": torch.tensor([1.0, 0.0]), "relu5_2": torch.tensor([1.0, 1.0])}
    # relu4_2: (1)^2 / 1 = 1; relu5_2: 0. Weights 3:1 -> 0.75.
    got = content_loss(a, t, {"relu4_2": 3.0, "relu5_2": 1.0})
    assert got.item() == pytest.approx(0.75)


def test_content_reference_is_the_target_energy_above_the_floor():
    target = torch.full((1, 2, 3, 3), 2.0)  # ||P||^2 = 18 * 4 = 72
    quiet_style = [torch.full((1, 2, 3, 3), 1.0)]  # mean square 1: floor 0.1 * 1 * 18 = 1.8
    assert content_reference(target, quiet_style).item() == pytest.approx(72.0)
    loud_style = [torch.full((1, 2, 3, 3), 100.0)]  # mean square 1e4: floor 0.1 * 1e4 * 18 = 18000
    assert content_reference(target, loud_style).item() == pytest.approx(18000.0)
    # Several styles: their mean energy.
    assert content_reference(target, quiet_style + loud_style).item() == pytest.approx(0.1 * 5000.5 * 18)


def test_a_featureless_content_does_not_inflate_the_content_term():
    # The flat-image bug: with the plain relative error a near-zero target makes any change huge.
    flat = {"relu4_2": torch.full((1, 4, 3, 3), 0.01)}
    changed = {"relu4_2": torch.full((1, 4, 3, 3), 1.0)}
    style = [{"relu4_2": torch.full((1, 4, 3, 3), 1.0)}]
    plain = ContentTerm(1.0, flat, {"relu4_2": 1.0})(None, changed)
    floored = ContentTerm(1.0, flat, {"relu4_2": 1.0}, style)(None, changed)
    assert plain.item() > 1e3 and floored.item() == pytest.approx(0.99 ** 2 / 0.1, rel=1e-4)


def style_loss(features, style_features, layer_weights):
    return StyleTerm(1.0, GramStatistic(), layer_weights, [style_features], [1.0])(None, features)


def test_style_loss_by_hand():
    torch.manual_seed(1)
    f = {"relu1_1": torch.randn(1, 3, 4, 4), "relu2_1": torch.randn(1, 5, 2, 2)}
    style = {k: torch.randn_like(v) for k, v in f.items()}
    expected = 0.0
    for name, w in (("relu1_1", 1.0), ("relu2_1", 0.5)):
        g = reference_gram(f[name])
        a = reference_gram(style[name])
        expected += w / 1.5 * float(((g - a) ** 2).sum() / (a ** 2).sum())
    got = style_loss(f, style, {"relu1_1": 1.0, "relu2_1": 0.5})
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_style_loss_is_zero_at_target_and_positive_elsewhere():
    f = {"relu1_1": torch.rand(1, 4, 5, 5)}
    assert style_loss(f, f, {"relu1_1": 1.0}).item() == pytest.approx(0.0, abs=1e-7)
    other = {"relu1_1": torch.rand(1, 4, 5, 5) * 2}
    assert style_loss(other, f, {"relu1_1": 1.0}).item() > 0.1


def test_a_full_image_mask_gives_the_unmasked_loss():
    torch.manual_seed(2)
    f = {"relu1_1": torch.randn(1, 3, 6, 4), "relu2_1": torch.randn(1, 5, 3, 2)}
    style = {k: torch.randn_like(v) for k, v in f.items()}
    weights = {"relu1_1": 1.0, "relu2_1": 0.5}
    masked = StyleTerm(1.0, GramStatistic(), weights, [style], [1.0], masks=[torch.ones(1, 1, 6, 4)])(None, f)
    assert masked.item() == pytest.approx(style_loss(f, style, weights).item(), rel=1e-5)


def test_tv_loss_by_hand():
    image = torch.tensor([[[[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]]])  # 1x1x2x3
    # horizontal diffs: (1,0),(0,1) -> squares 1,0,0,1 mean 0.5; vertical: (0,-1,0) -> mean 1/3
    assert tv_loss(image).item() == pytest.approx(0.5 + 1 / 3)
    assert tv_loss(torch.full((1, 3, 5, 5), 0.3)).item() == 0.0


def test_tv_loss_gradient_smooths():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 16, requires_grad=True)
    tv_loss(image).backward()
    smoother = image.detach() - 5.0 * image.grad
    assert tv_loss(smoother) < tv_loss(image.detach())


def test_range_loss_by_hand():
    image = torch.tensor([[[[-0.5, 0.0, 0.4, 1.0, 1.25, 2.0]]]])  # 1x1x1x6
    # outside 0..1 by 0.5, 0.25 and 1.0: (0.25 + 0.0625 + 1) / 6
    assert range_loss(image).item() == pytest.approx((0.25 + 0.0625 + 1.0) / 6)
    assert range_loss(torch.rand(1, 3, 8, 8)).item() == 0.0
    image.requires_grad_(True)
    range_loss(image).backward()  # pushes each value back toward the range, leaves those inside alone
    assert image.grad.flatten().tolist() == pytest.approx([-1 / 6, 0.0, 0.0, 0.0, 0.5 / 6, 2 / 6])


def test_blend_grams_weighted_mean():
    g1 = {"relu1_1": torch.ones(1, 2, 2)}
    g2 = {"relu1_1": torch.full((1, 2, 2), 11.0)}
    out = blend_grams([g1, g2], [3.0, 7.0])
    assert torch.allclose(out["relu1_1"], torch.full((1, 2, 2), 0.3 + 7.7))
    assert math.isclose(float(blend_grams([g1], [5.0])["relu1_1"][0, 0, 0]), 1.0)
