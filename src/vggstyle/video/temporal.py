"""The temporal term of Ruder, Dosovitskiy and Brox (2016): stay close to the previous output, warped.

L_temporal(x) = sum over the earlier frames j of  mean over pixels and channels of
c_j(x) * (x - w_j)^2, where w_j is the stylized frame t-j warped into frame t along the optical
flow and c_j its consistency weight (0 at disocclusions, motion boundaries and where the flow
leaves the frame; flow.consistency). With one earlier frame this is the paper's short-term loss;
with several, the weights are the paper's long-term ones (flow.long_term_weights: each pixel
counts for the closest earlier frame it is consistent with).

Why it is written this way: the image being optimized enters the difference as it is, so the
gradient 2 c (x - w) / D pulls every consistent pixel toward the warped frame and leaves the others
alone. (cysmith/neural-style-tf turned the image into a constant before this loss, and applied
the mask after reducing to a scalar: zero gradient, no mask.) Pixel space in 0..1, so the term
does not depend on the image size; D counts every pixel and channel, as in the paper.
"""

from __future__ import annotations

import torch


class TemporalTerm:
    """One more term of the Objective (objective.Term): reads pixels only, no VGG layers.

    warped: the previous stylized frame warped into this one, (1,3,H,W) in 0..1, or a list of
    them (closest first) for the long-term version; weights: c, (1,1,H,W) in 0..1 (or a list).
    """

    name = "temporal"
    layers: tuple[str, ...] = ()

    def __init__(self, weight: float, warped, weights):
        warped = list(warped) if isinstance(warped, (list, tuple)) else [warped]
        weights = list(weights) if isinstance(weights, (list, tuple)) else [weights]
        if len(warped) != len(weights) or not warped:
            raise ValueError(f"give one weight map per warped frame, got {len(warped)} frames, {len(weights)} maps")
        for frame, mask in zip(warped, weights):
            if frame.dim() != 4 or mask.dim() != 4 or mask.shape[1] != 1 or frame.shape[-2:] != mask.shape[-2:]:
                raise ValueError(f"warped frame {tuple(frame.shape)} and weights {tuple(mask.shape)}: "
                                 "need (1,3,H,W) and (1,1,H,W)")
        self.weight = weight
        self.pairs = [(frame.detach().float(), mask.detach().float()) for frame, mask in zip(warped, weights)]

    def to(self, device) -> "TemporalTerm":
        self.pairs = [(frame.to(device), mask.to(device)) for frame, mask in self.pairs]
        return self

    def __call__(self, image: torch.Tensor, features=None) -> torch.Tensor:
        image = image.float()
        loss = image.new_zeros(())
        for frame, mask in self.pairs:
            loss = loss + (mask * (image - frame) ** 2).mean()
        return loss
