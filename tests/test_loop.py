"""The plain loop, our L-BFGS and the Objective, on a tiny random-weight encoder (fast), plus the
end-to-end properties that need the real network: flat and dark images stylize, a kept Progress
frees the objective, custom terms travel through stylize()."""

import gc
import weakref

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

import vggstyle
from conftest import EXAMPLES
from vggstyle.lbfgs import LBFGS
from vggstyle.loop import NonFiniteLoss, make_optimizer, optimize
from vggstyle.objective import Objective, StyleTerm, TVTerm
from vggstyle.optimize import measure_losses
from vggstyle.style import GramStatistic


class TinyEncoder(torch.nn.Module):
    """Two random 3x3 convolutions with ReLUs, named like VGG's first layers."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1, stride=2)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.3)
                conv.bias.zero_()
        self.requires_grad_(False)

    def forward(self, image, checkpoint=False):
        relu1 = torch.relu(self.conv1(image))
        return {"relu1_1": relu1, "relu2_1": torch.relu(self.conv2(relu1))}


def _objective(style_seed=1):
    net = TinyEncoder()
    style = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(style_seed))
    with torch.no_grad():
        features = net(style)
    term = StyleTerm(1.0, GramStatistic(), {"relu1_1": 1.0, "relu2_1": 1.0}, [features], [1.0])
    return Objective(net, [term, TVTerm(0.1)])


def _start():
    return torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(2)).requires_grad_(True)


@pytest.mark.parametrize("kind", ["lbfgs", "adam"])
def test_the_loop_lowers_the_objective_and_reports_each_step(kind):
    objective, image = _objective(), _start()
    seen = []
    taken = optimize(image, objective, 20, make_optimizer(kind, image, 1.0 if kind == "lbfgs" else 8.0),
                     lambda step, img, losses: seen.append((step, losses)))
    assert taken == 20 and [s for s, _ in seen] == list(range(1, 21))
    assert set(seen[0][1]) == {"style", "tv", "total"}
    assert seen[-1][1]["total"] < seen[0][1]["total"] / 3


def test_on_step_false_stops_the_loop():
    image = _start()
    taken = optimize(image, _objective(), 50, make_optimizer("lbfgs", image, 1.0), lambda step, *_: step < 4)
    assert taken == 4


def test_a_non_finite_loss_restores_the_image_and_says_where():
    objective, image = _objective(), _start()
    calls = {"n": 0}

    def poisoned(img):
        terms = objective(img)
        calls["n"] += 1
        if calls["n"] == 3:
            terms["total"] = terms["total"] * float("nan")
        return terms

    snapshots = []
    with pytest.raises(NonFiniteLoss) as caught:
        optimize(image, poisoned, 10, make_optimizer("lbfgs", image, 1.0),
                 lambda step, img, losses: snapshots.append(img.detach().clone()))
    assert caught.value.step == 3 and len(snapshots) == 2
    assert torch.equal(image.detach(), snapshots[-1])  # as it was after the last good step


def test_lbfgs_first_step_moves_the_largest_pixel_by_first_step():
    image = torch.zeros(1, 3, 8, 8, requires_grad=True)
    target = torch.linspace(0, 1e-4, image.numel()).view_as(image)  # a tiny gradient, like a flat image's
    optimizer = LBFGS([image], first_step=4 / 255)

    def closure():
        optimizer.zero_grad()
        loss = ((image - target) ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert image.detach().abs().max().item() == pytest.approx(4 / 255, rel=1e-5)


def test_lbfgs_after_its_first_step_is_the_textbook_two_loop():
    # Same first step as torch.optim.LBFGS, then the same iterates: our recursion is torch's.
    matrix = torch.randn(12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hessian = matrix @ matrix.T + 12 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run(make):
        x = torch.zeros(12, dtype=torch.float64, requires_grad=True)
        optimizer = make(x)

        def closure():
            optimizer.zero_grad()
            loss = 0.5 * x @ hessian @ x - b @ x
            loss.backward()
            return loss
        path = []
        for _ in range(8):
            optimizer.step(closure)
            path.append(x.detach().clone())
        return path

    first = float(b.abs().max() * min(1.0, 1.0 / float(b.abs().sum())))  # torch's first step, largest entry
    theirs = run(lambda x: torch.optim.LBFGS([x], lr=1, max_iter=1, history_size=5,
                                             tolerance_grad=-1, tolerance_change=-1))
    ours = run(lambda x: LBFGS([x], lr=1, first_step=first, history_size=5))
    for a, b_ in zip(theirs, ours):
        assert torch.allclose(a, b_, rtol=1e-9, atol=1e-12)


def test_objective_refuses_duplicate_or_reserved_names():
    with pytest.raises(ValueError, match="unique"):
        Objective(TinyEncoder(), [TVTerm(1.0), TVTerm(2.0)])


# ----------------------------------------------------------------- end to end, real network
STYLE = EXAMPLES / "style" / "starry_night.jpg"


@pytest.fixture(scope="module")
def hard_contents(tmp_path_factory):
    """A flat gray image and tubingen at 4% brightness: neither moved at all before the fix."""
    folder = tmp_path_factory.mktemp("hard")
    gray = folder / "gray.png"
    Image.new("RGB", (256, 188), (128, 128, 128)).save(gray)
    dark = folder / "dark.png"
    ImageEnhance.Brightness(Image.open(EXAMPLES / "content" / "tubingen.jpg").convert("RGB")).enhance(0.04).save(dark)
    return {"gray": gray, "dark": dark}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("which", ["gray", "dark"])
def test_flat_and_dark_images_stylize_in_every_precision(hard_contents, which, precision, request):
    # bf16 where the CPU has no bf16 kernels is emulated (conftest.bf16_anywhere): ~10x slower, so smaller there
    emulated = precision == "bf16" and request.getfixturevalue("bf16_anywhere")
    kw = dict(image_size=64 if emulated else 128, precision=precision)
    before = measure_losses(hard_contents[which], STYLE, **kw)["style"]
    out = vggstyle.stylize(hard_contents[which], STYLE, num_iterations=30, seed=0, **kw)
    after = measure_losses(hard_contents[which], STYLE, image=out, **kw)["style"]
    assert after < before / 2, (before, after)


@pytest.mark.slow
def test_a_kept_progress_does_not_keep_the_objective_alive(small_images, monkeypatch):
    from vggstyle import optimize as driver
    built = []
    original = driver.build_objective

    def recording(*args, **kwargs):
        objective = original(*args, **kwargs)
        built.append(weakref.ref(objective))
        return objective

    monkeypatch.setattr(driver, "build_objective", recording)
    kept = []
    vggstyle.stylize(small_images["content"], small_images["style"], image_size=48, num_iterations=3,
                     on_step=kept.append)
    gc.collect()
    assert len(built) == 1 and built[0]() is None, "a Progress keeps the objective (network, targets) alive"
    assert kept[-1].image().size == (48, 36)  # and it still renders


class Brightness:
    """The README's custom term: pull the mean brightness toward a level (0..1)."""

    name, layers = "brightness", ()

    def __init__(self, weight, level):
        self.weight, self.level = weight, level

    def __call__(self, image, features):
        return (image.mean() - self.level) ** 2


@pytest.mark.slow
def test_a_custom_term_travels_through_stylize(small_images):
    kw = dict(image_size=48, num_iterations=15, precision="fp32", seed=0)
    history = []
    brighter = vggstyle.stylize(small_images["content"], small_images["style"], terms=[Brightness(500.0, 0.9)],
                                on_step=lambda p: history.append(p.losses), **kw)
    plain = vggstyle.stylize(small_images["content"], small_images["style"], **kw)
    assert "brightness" in history[0] and history[-1]["brightness"] < history[0]["brightness"]
    assert history[-1]["total"] == pytest.approx(sum(v for k, v in history[-1].items() if k != "total"), rel=1e-5)
    assert np.asarray(brighter, np.float32).mean() > np.asarray(plain, np.float32).mean() + 20
