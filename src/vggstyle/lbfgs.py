"""L-BFGS with one evaluation per step, no line search, and a first step sized in pixels.

Why our own rather than torch.optim.LBFGS: torch's version starts with steepest descent
scaled by min(1, 1/|g|_1). For an image the gradient's L1 norm sums over every pixel, so
that first step moves each pixel by a tiny fraction of a gray level: on tubingen at 512 px
the loss barely moves for the first ~9 iterations, and on a flat gray or near-black image
(or a video's black first frame) the step is below what bfloat16 resolves at the network's
input: the network sees the same image, the curvature pair is zero, no scale is ever learned
and the run never starts (docs/measurements.md). Here, until a curvature pair exists, each
step is steepest descent that moves the most-changed pixel by ``first_step`` (in image units,
0..1): a size that means something for images whatever their size or content. After that the
steps are torch's (the same inverse-Hessian approximation, initial scale s'y / y'y of the newest
pair, pairs with s'y <= 1e-10 skipped), computed in the compact form below, one closure call
per step.
"""

from __future__ import annotations

import torch

# Steps of torch.optim.LBFGS's curvature test: pairs with s'y below this are skipped.
CURVATURE_EPS = 1e-10


class CurvatureHistory:
    """The newest curvature pairs (s, y) as the rows of two matrices, and H g in compact form.

    Why not the two-loop recursion: it makes 400 vector passes per step at history 100 (a dot
    and an axpy per pair and loop), each streaming image-sized vectors: about 63 ms per
    iteration at 512 px, a quarter of an iteration. The compact representation of Byrd, Nocedal
    & Schnabel (1994, eq. 3.1) gives the same H g from matrix-vector products that read each
    matrix twice per step, plus m x m algebra (in float64):

        H = g I + [S  gY] [[R^-T (D + g Y'Y) R^-1, -R^-T], [-R^-1, 0]] [S'; gY']

    with g = s'y / y'y of the newest pair, R = triu(S'Y), D = diag(S'Y). Rows are slots of a
    ring; ``order`` lists them oldest first.
    """

    def __init__(self, size: int, numel: int, dtype: torch.dtype, device: torch.device):
        self.size = size
        # torch.empty commits memory only as rows are written: a short run uses a few rows' worth.
        self.s = torch.empty(size, numel, dtype=dtype, device=device)
        self.y = torch.empty(size, numel, dtype=dtype, device=device)
        self.sy = torch.zeros(size, size, dtype=torch.float64)  # s_i . y_j by slot
        self.yy = torch.zeros(size, size, dtype=torch.float64)
        self.order: list[int] = []
        self.scale = 1.0

    def __len__(self) -> int:
        return len(self.order)

    def add(self, s: torch.Tensor, y: torch.Tensor, ys: float) -> None:
        slot = len(self.order) if len(self.order) < self.size else self.order.pop(0)
        self.s[slot], self.y[slot] = s, y
        self.order.append(slot)
        used = len(self.order) if len(self.order) < self.size else self.size
        s_dot = (self.s[:used] @ y).double()  # s_i . y_new
        y_dot = (self.y[:used] @ torch.stack([s, y], 1)).double()  # y_i . s_new, y_i . y_new
        self.sy[:used, slot], self.sy[slot, :used] = s_dot, y_dot[:, 0]
        self.yy[:used, slot], self.yy[slot, :used] = y_dot[:, 1], y_dot[:, 1]
        self.scale = ys / float(y_dot[slot, 1])

    def apply(self, grad: torch.Tensor) -> torch.Tensor:
        """H grad for the inverse-Hessian approximation of the stored pairs."""
        used = len(self.order) if len(self.order) < self.size else self.size
        s, y, scale = self.s[:used], self.y[:used], self.scale
        index = torch.tensor(self.order)
        a = (s @ grad).double()[index]
        b = scale * (y @ grad).double()[index]
        sy = self.sy[index][:, index]
        r = torch.triu(sy)
        u = torch.linalg.solve_triangular(r, a[:, None], upper=True)
        inner = sy.diagonal()[:, None] * u + scale * (self.yy[index][:, index] @ u) - b[:, None]
        top = torch.linalg.solve_triangular(r.T, inner, upper=False)
        coeff_s = torch.zeros(used, dtype=torch.float64).index_copy_(0, index, top[:, 0])
        coeff_y = torch.zeros(used, dtype=torch.float64).index_copy_(0, index, -scale * u[:, 0])
        result = grad * scale
        result.addmv_(s.T, coeff_s.to(grad.dtype)).addmv_(y.T, coeff_y.to(grad.dtype))
        return result


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
        self.history: CurvatureHistory | None = None  # made with the first pair
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
            direction = self.history.apply(grad).neg_().mul_(group["lr"])
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
        if self.history is None:
            self.history = CurvatureHistory(self.param_groups[0]["history_size"], grad.numel(), grad.dtype,
                                            grad.device)
        self.history.add(s, y, ys)
