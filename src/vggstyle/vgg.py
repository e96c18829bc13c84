"""VGG19Features: a frozen VGG19 that returns named activations from one forward pass.

It is truncated after the deepest layer asked for (relu5_1 needs 13 of the 16
convolutions), holds no gradients for its weights, and does its weight source's
preprocessing inside ``forward``: callers always pass RGB images in 0..1.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from .device import ComputePolicy
from .errors import ImageError
from .layers import LAYER_INDEX, LAYER_NAMES, VGG19_BLOCKS, min_side, unknown_layer_message
from .weights import CONV_INDICES, LoadedWeights


class VGG19Features(nn.Module):
    def __init__(self, weights: LoadedWeights, layers: Iterable[str], pooling: str = "max",
                 policy: ComputePolicy | None = None, fused: bool = True):
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))
        for name in self.layers:
            if name not in LAYER_INDEX:
                raise ValueError(unknown_layer_message(name))
        self.policy = policy or ComputePolicy(torch.device("cpu"), None, False)
        self.pooling = pooling
        self.last_index = max(LAYER_INDEX[n] for n in self.layers)
        self.min_side = min_side(self.layers)

        convs = []
        in_ch = 3
        for out_ch in (c for block in VGG19_BLOCKS for c in block):
            convs.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))
            in_ch = out_ch
        needed = [i for i in CONV_INDICES if i <= self.last_index]
        self.convs = nn.ModuleList(convs[: len(needed)])
        self.conv_at = dict(zip(needed, self.convs))  # layer index -> its convolution
        # One segment per VGG block, cut after each pooling: the unit of gradient checkpointing.
        cuts = [i + 1 for i in range(self.last_index + 1) if LAYER_NAMES[i].startswith("pool")]
        bounds = [0] + [c for c in cuts if c <= self.last_index] + [self.last_index + 1]
        self.segments = list(zip(bounds[:-1], bounds[1:]))
        self.fused = fused and fused_conv_relu_available(self.policy)
        with torch.no_grad():
            for conv, index in zip(self.convs, needed):
                conv.weight.copy_(weights.state_dict[f"features.{index}.weight"])
                conv.bias.copy_(weights.state_dict[f"features.{index}.bias"])
        self.requires_grad_(False)
        self.eval()

        prep = weights.preprocessing
        self.bgr = prep.bgr
        std = torch.tensor(prep.std)
        self.register_buffer("in_scale", (prep.scale / std).view(1, 3, 1, 1))
        self.register_buffer("in_shift", (torch.tensor(prep.mean) / std).view(1, 3, 1, 1))

        memory_format = torch.channels_last if self.policy.channels_last else torch.contiguous_format
        self.to(device=self.policy.device, memory_format=memory_format)
        if self.policy.autocast_dtype is not None:
            # Keep the convolutions in the autocast dtype: autocast would otherwise re-cast all
            # 20M weights on every forward pass (its cast cache lives only inside one context).
            self.convs.to(self.policy.autocast_dtype)

    def check_size(self, height: int, width: int) -> None:
        if min(height, width) < self.min_side:
            raise ImageError(
                f"an image of {width}x{height} px is too small for layer {LAYER_NAMES[self.last_index]}: it needs "
                f"at least {self.min_side} px on each side; use a larger --image-size or a less elongated image")

    def forward(self, image: torch.Tensor, checkpoint: bool = False) -> dict[str, torch.Tensor]:
        """Map an (N,3,H,W) RGB image in 0..1 to {layer name: activation} for the layers asked for.

        checkpoint: keep only each block's input and the requested features, and recompute the
        block's insides in the backward pass (~+30% time, a fraction of the memory at print sizes).
        An argument rather than a setting: one network serves callers that differ in it.
        """
        self.check_size(image.shape[-2], image.shape[-1])
        x = image.flip(1) if self.bgr else image
        x = x * self.in_scale - self.in_shift
        if self.policy.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        wanted = set(self.layers)
        out: dict[str, torch.Tensor] = {}
        checkpoint = checkpoint and torch.is_grad_enabled() and image.requires_grad
        for begin, end in self.segments:
            names = [LAYER_NAMES[i] for i in range(begin, end) if LAYER_NAMES[i] in wanted]
            if checkpoint:
                results = torch.utils.checkpoint.checkpoint(self._segment, x, begin, end, use_reentrant=False)
            else:
                results = self._segment(x, begin, end)
            x = results[0]
            out.update(zip(names, results[1:]))
        return out

    def _segment(self, x: torch.Tensor, begin: int, end: int) -> tuple[torch.Tensor, ...]:
        """Layers begin..end-1 (one VGG block): returns the block's output, then the features asked for."""
        wanted = set(self.layers)
        features = []
        with self.policy.autocast():
            for index in range(begin, end):
                name = LAYER_NAMES[index]
                if name.startswith("conv"):
                    if self.fused and name not in wanted:
                        continue  # its ReLU, next, runs the convolution too
                    x = self.conv_at[index](x)
                elif name.startswith("relu"):
                    x = self._relu_after(x, index, wanted)
                elif self.pooling == "max":
                    x = F.max_pool2d(x, 2, 2)
                else:
                    x = F.avg_pool2d(x, 2, 2)
                if name in wanted:
                    features.append(x)
        return (x, *features)

    def _relu_after(self, x: torch.Tensor, index: int, wanted: set) -> torch.Tensor:
        """The ReLU at ``index``, fused with its convolution where that convolution was skipped."""
        conv_name = LAYER_NAMES[index - 1]
        if self.fused and conv_name not in wanted:
            return conv_relu(x, self.conv_at[index - 1])
        # In place saves a copy per layer, unless the conv output itself was asked for.
        return F.relu(x, inplace=conv_name not in wanted)


def fused_conv_relu_available(policy: ComputePolicy) -> bool:
    """oneDNN's convolution with a ReLU post-op: CPU, channels_last, and a torch built with oneDNN."""
    return (policy.device.type == "cpu" and policy.channels_last and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def conv_relu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """relu(conv(x)) for a frozen 3x3 convolution (stride 1, padding 1) in one oneDNN primitive."""
    return _ConvReLU.apply(x.to(conv.weight.dtype), conv.weight, conv.bias)


class _ConvReLU(torch.autograd.Function):
    """Forward: one oneDNN convolution with the ReLU as a post-op (one pass over the output instead
    of two). Backward: the ReLU mask from the saved output, then the input gradient only: the
    weights are frozen, so their gradient is never computed."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        out = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
        ctx.save_for_backward(x, weight, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, out = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad.to(out.dtype), out, 0)
        grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                     [True, False, False])[0]
        return grad_x, None, None
