"""Our bf16 Winograd (winograd.py): the exact convolution and input gradient (checked in float64 on
any CPU), the bf16 network on it close to float32, the per-layer choice from this machine's timings,
the switch and what the run reports."""

import json

import pytest
import torch
import torch.nn.functional as F

import vggstyle
from vggstyle import engine, kernels, vgg
from vggstyle.device import ComputePolicy, resolve_policy
from vggstyle.kernels import (CL_ONEDNN_BF16, CL_WINOGRAD_BF16, ONEDNN, WINOGRAD_BF16, CostModel, KernelPlan)
from vggstyle.vgg import VGG19Features
from vggstyle.winograd import WinogradConvReLU, kernel_tiles

from conftest import needs_bf16

LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]


@pytest.mark.parametrize("channels, outputs, height, width", [(3, 5, 7, 9), (8, 16, 10, 6), (16, 8, 1, 1),
                                                               (4, 4, 2, 3), (32, 24, 13, 4)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_convolution_and_its_input_gradient_are_exact(channels, outputs, height, width, layout):
    """Even and odd sides, a 1x1 map, more or fewer outputs than inputs, either layout in."""
    generator = torch.Generator().manual_seed(channels * 100 + height)
    x = torch.randn(1, channels, height, width, dtype=torch.float64, generator=generator)
    weight = torch.randn(outputs, channels, 3, 3, dtype=torch.float64, generator=generator)
    bias = torch.randn(outputs, dtype=torch.float64, generator=generator)
    grad_out = torch.randn(1, outputs, height, width, dtype=torch.float64, generator=generator)
    reference = x.clone().requires_grad_(True)
    expected = torch.relu(F.conv2d(reference, weight, bias, padding=1))
    expected.backward(grad_out)
    ours = x.contiguous(memory_format=layout).requires_grad_(True)
    out = WinogradConvReLU.apply(ours, kernel_tiles(weight), bias)
    out.backward(grad_out)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)
    assert torch.allclose(ours.grad, reference.grad, rtol=0, atol=1e-12)


def _features_and_gradient(net, plan=None, size=(64, 96)):
    if plan is not None:
        net._plans[size] = plan
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = net(image)
    sum(v.float().square().mean() for v in out.values()).backward()
    return {k: v.detach().float() for k, v in out.items()}, image.grad


@needs_bf16
def test_the_bf16_network_on_winograd_stays_close_to_float32(weights):
    """F(4x4, 3x3) rounds the transformed tiles, the products and the result once each: with every
    layer on it, measured 1.1-2.0% on the features against float32 (oneDNN bf16: 0.3-0.6%) and a
    gradient cosine of 0.995 (0.999); with the deep layers only, as the default plans put it, 0.8-1.8%."""
    cpu = torch.device("cpu")
    features, gradient = _features_and_gradient(VGG19Features(weights, LAYERS, policy=ComputePolicy(cpu, None, True,
                                                                                                   "off")))
    bf16 = VGG19Features(weights, LAYERS, policy=ComputePolicy(cpu, torch.bfloat16, True, "off"))
    ours, our_gradient = _features_and_gradient(bf16, KernelPlan.everywhere(WINOGRAD_BF16))
    assert bf16._tiles and set(bf16._tiles) == set(range(13))  # the plan ran every layer through it
    for name in LAYERS:
        assert ours[name].shape == features[name].shape
        assert ((ours[name] - features[name]).norm() / features[name].norm()).item() < 0.03, name
    assert F.cosine_similarity(our_gradient.flatten(), gradient.flatten(), dim=0).item() > 0.99


def test_a_bf16_plan_takes_winograd_where_the_model_says_it_wins():
    shapes = list(dict.fromkeys(kernels.CONV_SHAPES))
    # oneDNN: dear per pixel; Winograd: a fixed cost per call (its transforms) and cheaper per pixel
    # only where the channels are many (here from 256 on)
    costs = {}
    for shape in shapes:
        costs[(shape, CL_ONEDNN_BF16)] = (0.0, 1e-6)
        costs[(shape, CL_WINOGRAD_BF16)] = (0.0002, 5e-7 if shape[0] >= 256 else 3e-6)
    model = CostModel(costs, "bf16")
    large = model.plan_at(384, 512, 13)
    assert large.channels_last
    assert large.kernels[:13] == (ONEDNN,) * 5 + (WINOGRAD_BF16,) * 8
    assert large.kernels[13:] == (ONEDNN,) * 3  # not run at relu5_1
    assert large.describe(13) == "winograd-bf16 at 8 of 13 layers"
    assert model.plan_at(16, 16, 13) == KernelPlan.everywhere(ONEDNN)  # the fixed cost does not pay
    assert CostModel.from_json(json.loads(json.dumps(model.to_json())), "bf16") == model
    # a gain of 8% is within what a busy machine makes of the memory-bound transforms: not taken
    close = CostModel({(s, v): (0.0, 1.08e-6 if v == CL_ONEDNN_BF16 else 1e-6)
                       for s in shapes for v in kernels.BF16_VARIANTS}, "bf16")
    assert close.plan_at(384, 512, 13) == KernelPlan.everywhere(ONEDNN)
    with pytest.raises(KeyError):  # a float32 model is no bf16 one: measured again, not misread
        CostModel.from_json(model.to_json(), "fp32")


def test_each_precision_is_calibrated_and_cached_on_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path))
    measured = []

    def fake(precision="fp32", **kwargs):
        measured.append(precision)
        variants = kernels.VARIANTS_OF[precision]
        return CostModel({(s, v): (0.0, 1e-6) for s in kernels.CONV_SHAPES for v in variants}, precision)

    monkeypatch.setattr(kernels, "measure_model", fake)
    assert kernels.calibrated_model("a CPU", "bf16").precision == "bf16"
    assert kernels.calibrated_model("a CPU", "fp32").precision == "fp32"
    assert kernels.calibrated_model("a CPU", "bf16") == kernels.calibrated_model("a CPU", "bf16")
    assert measured == ["bf16", "fp32"]
    assert len(json.loads((tmp_path / "kernels.json").read_text())) == 2


@needs_bf16
def test_the_calibration_times_both_bf16_kernels():
    timings = kernels.measure_layers((32, 32), rounds=1, precision="bf16")
    assert set(timings) == set(kernels.CONV_SHAPES)
    assert all(set(variants) == {CL_ONEDNN_BF16, CL_WINOGRAD_BF16} and min(variants.values()) > 0
               for variants in timings.values())


@needs_bf16
def test_the_run_uses_and_reports_it_and_the_switch_turns_it_off(small_images, monkeypatch):
    """A machine whose calibration found Winograd faster at every layer: the run goes through it and
    says so; --winograd off keeps oneDNN and measures nothing."""
    winograd_wins = CostModel({(s, v): (0.0, 1e-6 if v == CL_ONEDNN_BF16 else 1e-7)
                               for s in kernels.CONV_SHAPES for v in kernels.BF16_VARIANTS}, "bf16")
    asked = []
    monkeypatch.setattr(vgg, "calibrated_model", lambda cpu, precision: asked.append(precision) or winograd_wins)
    engine.network.cache_clear()
    calls = []
    real = kernels.WinogradConvReLU.apply
    monkeypatch.setattr(kernels.WinogradConvReLU, "apply", lambda *a: calls.append(1) or real(*a))
    try:
        results = {}
        for setting in ("auto", "off"):
            history = []
            image = vggstyle.stylize(small_images["content"], small_images["style"], image_size=64, num_iterations=6,
                                     precision="bf16", winograd=setting, seed=0,
                                     on_step=lambda p: history.append(p.losses["total"]))
            results[setting] = (image.info["vggstyle"]["kernels_used"], history, len(calls))
    finally:
        engine.network.cache_clear()
    assert asked == ["bf16"]
    assert results["auto"][0] == "winograd-bf16" and results["auto"][2] > 0
    assert results["off"][0] == "onednn" and results["off"][2] == results["auto"][2]
    assert resolve_policy("cpu", "bf16", "off").winograd == "off"
    # the same optimization, to bf16's accuracy
    assert all(abs(a - b) / b < 0.05 for a, b in zip(results["auto"][1], results["off"][1])), results


@pytest.mark.skipif(not kernels.winograd_available(), reason="float32's calibration times NNPACK, absent here")
def test_the_calibration_runs_in_a_child_process_or_else_here(monkeypatch):
    """Apart, so that its freed gigabyte stays out of the run's heap (tests/test_heap.py's checkpointed
    case failed after an in-process calibration); where no child can start, here."""
    here = []
    real = kernels.measure_model_here
    monkeypatch.setattr(kernels, "measure_model_here", lambda *a: here.append(a) or real(*a))
    model = kernels.measure_model(sizes=((32, 32), (64, 64)), rounds=1)
    assert here == [] and model.precision == "fp32"
    assert set(model.costs) == {(s, v) for s in kernels.CONV_SHAPES for v in kernels.VARIANTS}
    monkeypatch.setattr(kernels.sys, "executable", "/nonexistent/python")
    assert kernels.measure_model(sizes=((32, 32), (64, 64)), rounds=1).precision == "fp32"
    assert here == [(((32, 32), (64, 64)), 1, "fp32")]
