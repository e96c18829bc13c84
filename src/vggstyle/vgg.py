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

from .device import ComputePolicy, cpu_description
from .errors import ImageError
from .kernels import (ONEDNN, WINOGRAD, WINOGRAD_BF16, KernelPlan, calibrated_model, conv_relu,
                      onednn_conv_relu_available, winograd_available, winograd_bf16_conv_relu, winograd_conv_relu,
                      winograd_usable_now)
from .layers import LAYER_INDEX, LAYER_NAMES, VGG19_BLOCKS, min_side, unknown_layer_message
from .weights import CONV_INDICES, LoadedWeights
from .winograd import kernel_tiles


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

        needed = [i for i in CONV_INDICES if i <= self.last_index]
        self.convs = _frozen_convs(weights, needed)
        self.conv_at = dict(zip(needed, self.convs))  # layer index -> its convolution
        # One segment per VGG block, cut after each pooling: the unit of gradient checkpointing.
        cuts = [i + 1 for i in range(self.last_index + 1) if LAYER_NAMES[i].startswith("pool")]
        bounds = [0] + [c for c in cuts if c <= self.last_index] + [self.last_index + 1]
        self.segments = list(zip(bounds[:-1], bounds[1:]))
        self.fused = fused and fused_conv_relu_available(self.policy)
        self.position_of = {index: number for number, index in enumerate(needed)}  # layer index -> conv 0..15
        # float32 on a CPU with NNPACK: the kernels and the layout are chosen per image size
        # (kernels.CostModel); the weights stay NCHW, one copy serving both kernels. bf16 on the CPU:
        # each layer's kernel (oneDNN or our Winograd) per image size, in channels_last.
        self.winograd = self.fused and winograd_applies(self.policy)
        self.bf16_winograd = self.fused and bf16_winograd_applies(self.policy)
        self.cost_model = (calibrated_model(cpu_description(), self.policy.precision)
                           if (self.winograd and self.policy.winograd == "auto") or self.bf16_winograd else None)
        self._tiles: dict[int, torch.Tensor] = {}  # conv position -> its Winograd kernel, made when a plan uses it
        self._plans: dict[tuple[int, int], KernelPlan] = {}
        self.onednn_plan = KernelPlan.everywhere(ONEDNN, self.policy.channels_last)  # also the fallback
        self.requires_grad_(False)
        self.eval()

        prep = weights.preprocessing
        self.bgr = prep.bgr
        std = torch.tensor(prep.std)
        self.register_buffer("in_scale", (prep.scale / std).view(1, 3, 1, 1))
        self.register_buffer("in_shift", (torch.tensor(prep.mean) / std).view(1, 3, 1, 1))

        channels_last = self.policy.channels_last and not self.winograd
        self.to(device=self.policy.device, memory_format=torch.channels_last if channels_last
                else torch.contiguous_format)
        if self.policy.autocast_dtype is not None:
            # Keep the convolutions in the autocast dtype: autocast would otherwise re-cast all
            # 20M weights on every forward pass (its cast cache lives only inside one context).
            self.convs.to(self.policy.autocast_dtype)

    def kernels_at(self, height: int, width: int) -> str:
        """What plan_at chose, in words: onednn, winograd, or 'winograd at 11 of 13 layers'."""
        return self.plan_at(height, width).describe(len(self.convs))

    def plan_at(self, height: int, width: int) -> KernelPlan:
        """Each convolution's kernel and the activations' layout for an input of this size."""
        plan = self._plans.get((height, width))
        if plan is None:
            if not (self.winograd or self.bf16_winograd):
                plan = self.onednn_plan
            elif self.cost_model is None:  # --winograd on
                plan = KernelPlan.everywhere(WINOGRAD, False)
            else:
                plan = self.cost_model.plan_at(height, width, len(self.convs))
            self._plans[(height, width)] = plan
        return plan

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
        plan = self.plan_at(image.shape[-2], image.shape[-1])
        if plan.uses_winograd and not winograd_usable_now():
            plan = self.onednn_plan
        x = image.flip(1) if self.bgr else image
        x = x * self.in_scale - self.in_shift
        if plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        wanted = set(self.layers)
        out: dict[str, torch.Tensor] = {}
        checkpoint = checkpoint and torch.is_grad_enabled() and image.requires_grad
        for begin, end in self.segments:
            names = [LAYER_NAMES[i] for i in range(begin, end) if LAYER_NAMES[i] in wanted]
            if checkpoint:
                results = torch.utils.checkpoint.checkpoint(self._segment, x, begin, end, plan, use_reentrant=False)
            else:
                results = self._segment(x, begin, end, plan)
            x = results[0]
            out.update(zip(names, results[1:]))
        return out

    def _segment(self, x: torch.Tensor, begin: int, end: int, plan: KernelPlan) -> tuple[torch.Tensor, ...]:
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
                    x = self._relu_after(x, index, wanted, plan)
                elif self.pooling == "max":
                    x = F.max_pool2d(x, 2, 2)
                else:
                    x = F.avg_pool2d(x, 2, 2)
                if name in wanted:
                    features.append(x)
        return (x, *features)

    def _relu_after(self, x: torch.Tensor, index: int, wanted: set, plan: KernelPlan) -> torch.Tensor:
        """The ReLU at ``index``, fused with its convolution where that convolution was skipped."""
        conv_name = LAYER_NAMES[index - 1]
        if self.fused and conv_name not in wanted:
            conv = self.conv_at[index - 1]
            position = self.position_of[index - 1]
            if plan.kernel(position) == WINOGRAD:
                return winograd_conv_relu(x, conv.weight, conv.bias)
            if plan.kernel(position) == WINOGRAD_BF16:
                return winograd_bf16_conv_relu(x, self._kernel_tiles(position, conv), conv.bias)
            return conv_relu(x, conv, plan.channels_last)
        # In place saves a copy per layer, unless the conv output itself was asked for.
        return F.relu(x, inplace=conv_name not in wanted)

    def _kernel_tiles(self, position: int, conv: nn.Conv2d) -> torch.Tensor:
        """The layer's Winograd kernel (4x its weights), made once and only for layers a plan puts
        on Winograd: 19 MB at 512->512 channels in bf16."""
        tiles = self._tiles.get(position)
        if tiles is None:
            tiles = self._tiles[position] = kernel_tiles(conv.weight)
        return tiles


def _frozen_convs(weights: LoadedWeights, indices: list[int]) -> nn.ModuleList:
    """The convolutions at these layer indices, holding the loaded weights (no random init first)."""
    channels = [3, *(c for block in VGG19_BLOCKS for c in block)]
    convs = nn.ModuleList()
    with torch.no_grad():
        for number, index in enumerate(indices):
            conv = torch.nn.utils.skip_init(nn.Conv2d, channels[number], channels[number + 1], 3, padding=1)
            conv.weight.copy_(weights.state_dict[f"features.{index}.weight"])
            conv.bias.copy_(weights.state_dict[f"features.{index}.bias"])
            convs.append(conv)
    return convs


def fused_conv_relu_available(policy: ComputePolicy) -> bool:
    """A convolution fused with its ReLU, through oneDNN (and NNPACK where it applies): CPU only."""
    return policy.device.type == "cpu" and onednn_conv_relu_available()


def bf16_winograd_applies(policy: ComputePolicy) -> bool:
    """--winograd auto in bf16 on the CPU: our Winograd where the calibration measures it faster."""
    return policy.device.type == "cpu" and policy.autocast_dtype == torch.bfloat16 and policy.winograd == "auto"


def winograd_applies(policy: ComputePolicy) -> bool:
    """--winograd auto/on reaches float32 CPU convolutions where NNPACK runs (device.resolve_policy)."""
    return (policy.device.type == "cpu" and policy.autocast_dtype is None and policy.winograd != "off"
            and winograd_available())
