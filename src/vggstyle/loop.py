"""optimize(): the plain optimization loop, and the optimizers it is run with.

The loop knows nothing of scales, precision, colour or rendering: it steps an optimizer
over one image against one objective and reports each step. The drivers (optimize.py and
video/passes.py, through engine.run_steps) wrap it (coarse-to-fine scales, the float32 fallback) or hook into it (the EMA of iterates,
Adam's clamp, progress records).

One *iteration* is one optimizer step and costs exactly one forward and one backward pass
through VGG19: our L-BFGS evaluates once per step with no line search (the fastest
configuration per evaluation and per second, docs/measurements.md), Adam likewise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .lbfgs import LBFGS

LBFGS_HISTORY = 100
LBFGS_HISTORY_BYTES = 2 * 1024**3
# L-BFGS's first steps move the most-changed pixel by this many gray levels (lbfgs.py). Measured on
# flat, dark and photographic images in docs/measurements.md.
LBFGS_FIRST_STEP_LEVELS = 4.0

# on_step(step, image, terms) -> False to stop; terms are the weighted loss terms as floats.
StepHook = Callable[[int, torch.Tensor, dict], "bool | None"]


class NonFiniteLoss(FloatingPointError):
    """The loss or its gradient became NaN or infinite at ``step``; the image is as it was before it."""

    def __init__(self, step: int):
        super().__init__(f"the loss became NaN or infinite at iteration {step}; lower the --learning-rate "
                         "or the loss weights")
        self.step = step


def lbfgs_history_size(numel: int) -> int:
    """L-BFGS keeps two float32 image-sized vectors per history entry: 100 entries at 4096x3072 px
    would be 30 GB. Cap the history at about 2 GB (100 entries up to ~2.6 MP, 6 at 12.6 MP)."""
    return max(5, min(LBFGS_HISTORY, LBFGS_HISTORY_BYTES // (2 * 4 * numel)))


def make_optimizer(kind: str, image: torch.Tensor, learning_rate: float) -> torch.optim.Optimizer:
    """The optimizer named by --optimizer over ``image`` (0..1 units).

    learning_rate: for Adam its step in gray levels (0..255), the unit users think in; for
    L-BFGS a unitless multiplier of its own quasi-Newton step (1: the natural one).
    """
    if kind == "lbfgs":
        return LBFGS([image], lr=learning_rate, first_step=LBFGS_FIRST_STEP_LEVELS / 255,
                     history_size=lbfgs_history_size(image.numel()))
    if kind == "adam":
        return torch.optim.Adam([image], lr=learning_rate / 255)
    raise ValueError(f"unknown optimizer '{kind}'")


def optimize(image: torch.Tensor, objective: Callable[[torch.Tensor], dict], steps: int,
             optimizer: torch.optim.Optimizer, on_step: StepHook | None = None) -> int:
    """Take up to ``steps`` optimizer steps on ``image`` (a leaf tensor that requires grad, the
    optimizer's only parameter) against ``objective``; return the number of steps taken.

    Raises NonFiniteLoss, with the image restored to its value before that step, when the loss
    or the gradient stops being finite: the caller decides what to do (the float32 fallback).
    """
    last: dict[str, float] = {}

    def closure():
        optimizer.zero_grad(set_to_none=True)
        terms = objective(image)
        terms["total"].backward()
        last.clear()
        last.update({name: float(value.detach()) for name, value in terms.items()})
        return terms["total"]

    for step in range(1, steps + 1):
        before = image.detach().clone()
        optimizer.step(closure)
        if not math.isfinite(last["total"]) or not torch.isfinite(image.grad).all():
            with torch.no_grad():
                image.copy_(before)
            raise NonFiniteLoss(step)
        if on_step is not None and on_step(step, image, dict(last)) is False:
            return step
    return steps
