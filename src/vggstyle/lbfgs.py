"""L-BFGS with one evaluation per step, no line search, and a first step sized in pixels.

Why our own rather than torch.optim.LBFGS: torch's version starts with steepest descent
scaled by min(1, 1/|g|_1). For an image the gradient's L1 norm sums over every pixel, so
that first step moves each pixel by a tiny fraction of a gray level: on tubingen at 512 px
the loss barely moves for the first ~9 iterations, and on a flat gray or near-black image
(or a video's black first frame) the step is below what bfloat16 resolves at the network's
input: the network sees the same image, the curvature pair is zero, no scale is ever learned
and the run never starts (docs/measurements.md). Here, until a curvature pair exists, each
step is steepest descent that moves the most-changed pixel by ``first_step`` (in image units,
0..1): a size that means something for images whatever their size or content. After that it
is the textbook two-loop recursion (Nocedal & Wright, alg. 7.4) with the initial Hessian
scaled by s'y / y'y, exactly as torch's, one closure call per step.
"""

from __future__ import annotations

import torch

# Steps of torch.optim.LBFGS's curvature test: pairs with s'y below this are skipped.
CURVATURE_EPS = 1e-10


class LBFGS(torch.optim.Optimizer):
    """Minimize ``closure()`` over one tensor; each ``step(closure)`` evaluates it exactly once.

    lr: multiplies the quasi-Newton step (1 is the natural scale); first_step: the largest
    pixel change of the steepest-descent steps taken while there is no curvature history;
    history_size: curvature pairs kept (two image-sized float32 vectors each).
    """

    def __init__(self, params, lr: float = 1.0, first_step: float = 4 / 255, history_size: int = 100):
        super().__init__(params, dict(lr=lr, first_step=first_step, history_size=history_size))
        if len(self.param_groups) != 1 or len(self.param_groups[0]["params"]) != 1:
            raise ValueError("this L-BFGS optimizes exactly one tensor (the image)")
        self.history: list[tuple[torch.Tensor, torch.Tensor, float]] = []  # (s, y, 1 / s'y)
        self.scale = 1.0  # of the initial inverse Hessian, s'y / y'y of the newest pair
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (gradient, step) of the last call

    @property
    def _param(self) -> torch.Tensor:
        return self.param_groups[0]["params"][0]

    @torch.no_grad()
    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        param = self._param
        grad = param.grad.detach().reshape(-1).to(torch.promote_types(param.dtype, torch.float32))
        self._remember(grad)
        group = self.param_groups[0]
        if self.history:
            direction = self._two_loop(grad).mul_(group["lr"])
        else:
            largest = grad.abs().max()
            direction = grad.neg() * (group["first_step"] / largest) if largest > 0 else grad.neg()
        param.add_(direction.view_as(param).to(param.dtype))
        self._last = (grad, direction)
        return loss

    def _remember(self, grad: torch.Tensor) -> None:
        """Add the curvature pair of the last step, when it has positive curvature."""
        if self._last is None:
            return
        previous_grad, s = self._last
        y = grad - previous_grad
        ys = float(y.dot(s))
        if ys <= CURVATURE_EPS:
            return
        if len(self.history) == self.param_groups[0]["history_size"]:
            self.history.pop(0)
        self.history.append((s, y, 1.0 / ys))
        self.scale = ys / float(y.dot(y))

    def _two_loop(self, grad: torch.Tensor) -> torch.Tensor:
        """-H g for the inverse-Hessian approximation H of the stored pairs."""
        q = grad.neg()
        alphas = []
        for s, y, rho in reversed(self.history):
            alpha = float(s.dot(q)) * rho
            q.add_(y, alpha=-alpha)
            alphas.append(alpha)
        q.mul_(self.scale)
        for (s, y, rho), alpha in zip(self.history, reversed(alphas)):
            beta = float(y.dot(q)) * rho
            q.add_(s, alpha=alpha - beta)
        return q
