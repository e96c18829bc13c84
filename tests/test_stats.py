"""Gaussian W2 and sliced Wasserstein against closed forms and hand computations on small tensors."""

import numpy as np
import pytest
import torch

from vggstyle.stats import (flatten_positions, gaussian_stats, random_directions, sliced_wasserstein_loss,
                            sliced_wasserstein_target, sort_last, wasserstein2_distance, wasserstein2_loss,
                            wasserstein2_target)


def hadamard(n):
    """Sylvester Hadamard matrix: rows are +-1, mutually orthogonal; rows 1.. have zero mean."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def independent_features(means, stds, positions, rows=(1, 2, 3)):
    """(1,C,positions) features whose population covariance is exactly diag(stds^2)."""
    h = hadamard(positions)[list(rows)[:len(means)]]
    return (torch.tensor(means, dtype=torch.float64)[:, None]
            + torch.tensor(stds, dtype=torch.float64)[:, None] * h)[None]


def random_rotation(c, seed):
    q, _ = torch.linalg.qr(torch.randn(c, c, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return q


# ---- Gaussian statistics ------------------------------------------------------------


def test_gaussian_stats_match_numpy():
    f = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    mean, cov = gaussian_stats(f)
    assert mean.shape == (2, 3) and cov.shape == (2, 3, 3) and cov.dtype == torch.float32
    for b in range(2):
        x = f[b].reshape(3, 20).double().numpy()
        np.testing.assert_allclose(mean[b].numpy(), x.mean(axis=1), atol=1e-6)
        np.testing.assert_allclose(cov[b].numpy(), np.cov(x, bias=True), atol=1e-6)


def test_gaussian_stats_of_bf16_are_float32():
    f = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    mean, cov = gaussian_stats(f.bfloat16())
    assert mean.dtype == cov.dtype == torch.float32
    assert torch.allclose(cov, gaussian_stats(f.bfloat16().float())[1], atol=1e-6)


# ---- Wasserstein-2 between Gaussian fits --------------------------------------------


def test_w2_one_dimensional_closed_form():
    g = torch.Generator().manual_seed(2)
    f1 = torch.randn(1, 1, 4, 5, dtype=torch.float64, generator=g) * 2 + 1
    f2 = torch.randn(1, 1, 3, 3, dtype=torch.float64, generator=g) * 0.5 - 0.3
    m1, s1 = f1.mean().item(), f1.std(unbiased=False).item()
    m2, s2 = f2.mean().item(), f2.std(unbiased=False).item()
    want = (m1 - m2) ** 2 + (s1 - s2) ** 2
    target = wasserstein2_target(f2, relative_eps=1e-10)
    assert wasserstein2_distance(f1, target).item() == pytest.approx(want, rel=1e-9)
    assert wasserstein2_loss(f1, target).item() == pytest.approx(want / (s2 ** 2 + m2 ** 2), rel=1e-9)
    # The default smoothing moves the value by at most ~2 relative_eps.
    assert wasserstein2_loss(f1, wasserstein2_target(f2)).item() == pytest.approx(want / (s2 ** 2 + m2 ** 2), rel=2e-3)


@pytest.mark.parametrize("rotate", [False, True])
def test_w2_diagonal_closed_form(rotate):
    # Independent channels: W2^2 = sum (mu1 - mu2)^2 + sum (s1 - s2)^2. A zero-variance channel
    # on each side makes both covariances singular. Rotating the channels of both by the
    # same orthogonal matrix leaves W2 unchanged and makes the covariances full matrices.
    m1, s1 = [0.5, -1.0, 2.0], [1.5, 0.0, 0.7]
    m2, s2 = [0.0, -0.5, 2.5], [0.5, 2.0, 0.0]
    f1 = independent_features(m1, s1, positions=4)
    f2 = independent_features(m2, s2, positions=8, rows=(3, 5, 6))
    if rotate:
        q = random_rotation(3, seed=3)
        f1, f2 = q @ f1, q @ f2
        assert gaussian_stats(f1)[1][0, 0, 1].abs() > 0.1  # really not diagonal any more
    want = sum((a - b) ** 2 for a, b in zip(m1, m2)) + sum((a - b) ** 2 for a, b in zip(s1, s2))
    scale = sum(b ** 2 for b in s2) + sum(b ** 2 for b in m2)
    target = wasserstein2_target(f2, relative_eps=1e-10)
    assert wasserstein2_distance(f1, target).item() == pytest.approx(want, rel=1e-7)
    assert wasserstein2_loss(f1, target).item() == pytest.approx(want / scale, rel=1e-7)


def test_w2_float32_features_and_batch_broadcast():
    g = torch.Generator().manual_seed(4)
    f1 = torch.randn(2, 5, 6, 6, generator=g)
    f2 = torch.randn(1, 5, 7, 5, generator=g) * 0.5 + 0.2
    loss = wasserstein2_loss(f1, wasserstein2_target(f2))
    assert loss.dtype == torch.float32 and loss.dim() == 0
    per_image = [wasserstein2_loss(f1[b:b + 1].double(), wasserstein2_target(f2.double())).item() for b in range(2)]
    assert loss.item() == pytest.approx(sum(per_image) / 2, rel=1e-5)
    bf16 = wasserstein2_loss(f1.bfloat16(), wasserstein2_target(f2))
    assert bf16.dtype == torch.float32 and bf16.item() == pytest.approx(loss.item(), rel=2e-2)


@pytest.mark.parametrize("case", ["full_rank", "rank_deficient", "repeated_eigenvalues"])
def test_w2_is_zero_with_finite_gradient_for_identical_inputs(case):
    g = torch.Generator().manual_seed(5)
    if case == "full_rank":
        f = torch.randn(1, 4, 5, 6, generator=g)
    elif case == "rank_deficient":       # C > positions, as at relu5_1 on a small image
        f = torch.randn(1, 8, 2, 2, generator=g)
    else:                                # covariance exactly 4 I: every eigenvalue repeated
        f = independent_features([0.1, 0.2, 0.3], [2.0, 2.0, 2.0], positions=4).float().reshape(1, 3, 2, 2)
    target = wasserstein2_target(f)
    x = f.clone().requires_grad_(True)
    loss = wasserstein2_loss(x, target)
    loss.backward()
    assert abs(loss.item()) < 1e-6
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().max() < 1e-3  # a minimum: the gradient vanishes


def test_w2_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(6)
    f1 = torch.randn(1, 3, 2, 3, dtype=torch.float64, generator=g).requires_grad_(True)
    f2 = torch.randn(1, 3, 3, 3, dtype=torch.float64, generator=g)
    target = wasserstein2_target(f2)
    assert torch.autograd.gradcheck(lambda f: wasserstein2_loss(f, target), (f1,))


def test_w2_falls_under_gradient_descent():
    g = torch.Generator().manual_seed(7)
    target = wasserstein2_target(torch.randn(1, 6, 5, 5, generator=g) * 2 + 1)
    x = torch.randn(1, 6, 5, 5, generator=g).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = wasserstein2_loss(x, target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.3 * losses[0]


def test_w2_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="4 channels.*3"):
        wasserstein2_loss(torch.randn(1, 4, 3, 3), wasserstein2_target(torch.randn(1, 3, 3, 3)))


# ---- sliced Wasserstein -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_sort_last_matches_torch_sort_in_values_and_gradient(dtype, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(threads)
        # distinct nonzero values (randn can repeat one in float32), then ties at zero, as ReLU gives
        x = torch.stack([torch.randperm(301, generator=g) for _ in range(10)]).reshape(2, 5, 301)
        x = (x.to(dtype) - 150.5) * 0.37
        x[:, :, :40] = 0.0
        weights = torch.randn(2, 5, 301, dtype=dtype, generator=g)
        ours = x.clone().requires_grad_(True)
        theirs = x.clone().requires_grad_(True)
        sorted_ours = sort_last(ours)
        (sorted_ours * weights).sum().backward()
        (torch.sort(theirs, dim=-1).values * weights).sum().backward()
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(sorted_ours.detach(), torch.sort(x, dim=-1).values)
    # Tied zeros may be permuted differently, so compare each row's gradient on the tied
    # positions as a multiset and exactly elsewhere.
    assert torch.equal(ours.grad[:, :, 40:], theirs.grad[:, :, 40:])
    assert torch.equal(ours.grad[:, :, :40].sort(dim=-1).values, theirs.grad[:, :, :40].sort(dim=-1).values)
    assert ours.grad.abs().sum() > 0


def test_sort_last_without_grad_gives_values():
    x = torch.randn(3, 50)
    assert torch.equal(sort_last(x), torch.sort(x, dim=-1).values)
    assert torch.equal(sort_last(x.bfloat16()), torch.sort(x.bfloat16(), dim=-1).values)


def test_random_directions_are_unit_and_seeded():
    a = random_directions(5, 7, torch.Generator().manual_seed(0))
    b = random_directions(5, 7, torch.Generator().manual_seed(0))
    assert a.shape == (7, 5) and torch.equal(a, b)
    assert torch.allclose(a.norm(dim=1), torch.ones(7), atol=1e-6)


def test_sw_one_channel_is_the_sorted_difference():
    # C = 1: every direction is +1 or -1, and either gives the 1-D Wasserstein-2 by sorting.
    x = [0.3, -1.2, 2.0, 0.7, 0.0, 1.1]
    y = [1.0, 0.5, -0.5, 2.5, 0.2, -1.0]
    want = sum((a - b) ** 2 for a, b in zip(sorted(x), sorted(y))) / len(x) / (sum(b * b for b in y) / len(y))
    f = torch.tensor(x).reshape(1, 1, 2, 3)
    projections, target = sliced_wasserstein_target(torch.tensor(y).reshape(1, 1, 3, 2), 4,
                                                    torch.Generator().manual_seed(1))
    assert sorted(projections.flatten().tolist()) == pytest.approx(sorted(projections.flatten().sign().tolist()))
    assert sliced_wasserstein_loss(f, target, projections).item() == pytest.approx(want, rel=1e-6)


def test_sw_is_zero_for_a_permutation_of_positions():
    f = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(2))
    shuffled = f.flatten(2)[:, :, torch.randperm(30, generator=torch.Generator().manual_seed(3))].reshape(2, 4, 5, 6)
    assert not torch.equal(shuffled, f)
    projections, target = sliced_wasserstein_target(f, generator=torch.Generator().manual_seed(4))
    assert projections.shape == (4, 4) and target.shape == (2, 4, 30)  # K defaults to C
    assert sliced_wasserstein_loss(shuffled, target, projections).item() == pytest.approx(0.0, abs=1e-10)
    assert sliced_wasserstein_loss(f + 0.5, target, projections).item() > 0.01


def test_sw_with_a_different_number_of_target_positions():
    # Every target value twice: the same distribution, so the resampled quantiles match exactly.
    f = torch.randn(1, 3, 4, 5, generator=torch.Generator().manual_seed(5))
    doubled = f.flatten(2).repeat(1, 1, 2)
    projections, target = sliced_wasserstein_target(doubled, 6, torch.Generator().manual_seed(6))
    assert target.shape == (1, 6, 40)
    assert sliced_wasserstein_loss(f, target, projections).item() == pytest.approx(0.0, abs=1e-10)
    # By hand, C = 1: target sorted [0, 1] read at the quantiles (i + 0.5) / 4 of 4 positions
    # is [0, 0.25, 0.75, 1] (clamped at the ends); mean square of the target is 0.5.
    direction = torch.ones(1, 1)
    _, two = sliced_wasserstein_target(torch.tensor([[[1.0, 0.0]]]), projections=direction)
    x = torch.tensor([0.0, 0.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    want = (0 + 0.25 ** 2 + 0.75 ** 2 + 1) / 4 / 0.5
    assert sliced_wasserstein_loss(x, two, direction).item() == pytest.approx(want)


def test_sw_falls_under_gradient_descent_and_redrawn_directions_work():
    g = torch.Generator().manual_seed(7)
    style = torch.randn(1, 5, 6, 6, generator=g) ** 2  # skewed: not a Gaussian
    stored = flatten_positions(style, max_positions=20, generator=g)
    assert stored.shape == (1, 5, 20)
    x = torch.randn(1, 5, 5, 5, generator=g).requires_grad_(True)
    # Measured on directions that the optimization never saw.
    held_out = sliced_wasserstein_target(stored, 16, torch.Generator().manual_seed(8))
    before = sliced_wasserstein_loss(x.detach(), held_out[1], held_out[0]).item()
    opt = torch.optim.Adam([x], lr=0.1)
    losses = []
    for _ in range(30):
        projections, target = sliced_wasserstein_target(stored, 8, g)  # fresh directions each step
        opt.zero_grad()
        loss = sliced_wasserstein_loss(x, target, projections)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert sliced_wasserstein_loss(x.detach(), held_out[1], held_out[0]).item() < 0.3 * before
    assert sum(losses[-5:]) < 0.3 * sum(losses[:5])


def test_sw_stored_features_give_the_same_target():
    f = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    p1, t1 = sliced_wasserstein_target(f, 5, torch.Generator().manual_seed(10))
    p2, t2 = sliced_wasserstein_target(flatten_positions(f), 5, torch.Generator().manual_seed(10))
    assert torch.equal(p1, p2) and torch.equal(t1, t2)


def test_sw_bf16_features_and_channel_mismatch():
    f = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(11))
    projections, target = sliced_wasserstein_target(f * 2, generator=torch.Generator().manual_seed(12))
    loss = sliced_wasserstein_loss(f.bfloat16(), target, projections)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(sliced_wasserstein_loss(f, target, projections).item(), rel=2e-2)
    with pytest.raises(ValueError, match="3 channels.*4"):
        sliced_wasserstein_loss(torch.randn(1, 3, 5, 5), target, projections)
