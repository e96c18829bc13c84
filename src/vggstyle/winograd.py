"""Winograd F(2x2, 3x3) convolutions as batched matrix products: the bf16 Winograd that no library ships.

On a CPU with AVX512-BF16 a bf16 VGG iteration is 82% oneDNN convolutions running near the cores'
peak (docs/speed.md), so only fewer multiplications make it faster. F(2x2, 3x3) computes each 2x2
output tile from a 4x4 input tile with 16 multiplications per channel pair instead of 36: the
input and kernel tiles are transformed (additions only, B^T d B and G g G^T), multiplied
elementwise, which over the channels is 16 independent matrix products (tiles x C) @ (C x K),
and transformed back (A^T m A). The products run in torch.bmm, whose bf16 kernels go through
oneDNN like the convolutions; the transforms are a few passes over memory, cheap next to the
products only where the channels are many and the maps small, so the calibration
(kernels.py) gives it the deep layers where it measures faster. F(2x2, 3x3) and not larger
tiles: its transform matrices hold only 0, +-1 and +-1/2 (sums and differences of a few values,
no amplification), where F(4x4, 3x3)'s mix values with weights up to 8 and lose bf16's few bits
(Lavin & Gray, *Fast Algorithms for Convolutional Neural Networks*, 2016).

Everything works on NHWC-contiguous data (channels_last as torch calls it), the layout the bf16
network runs in, so no layer pays for a layout change. The functions are dtype-generic: float32
gives the exact convolution (to rounding), which is how the tests check them on any CPU.

Kernel for the input gradient: for a stride-1, pad-1 3x3 convolution it is the convolution with
the kernel flipped and in/out channels swapped (kernels.flipped_transposed). Flipping a kernel
permutes the rows of G (G J = P G, P swapping rows 0 and 3), so the flipped kernel's transform is
the forward one with its 4x4 positions permuted and each matrix transposed. The backward pass
writes its tiles to the permuted positions and multiplies by the transposed view of the forward's
kernel: no second kernel is stored or copied.
"""

from __future__ import annotations

import torch

# G of F(2x2, 3x3): the kernel transform U = G g G^T, one 4x4 tile per channel pair.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
_SAME, _FLIP = (0, 1, 2, 3), (3, 1, 2, 0)  # G J = P G: flipping the kernel swaps transform rows 0 and 3


def kernel_tiles(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(K, C, 3, 3) kernel -> (16, C, K): G g G^T at each of the 16 tile positions, summed in float32
    (float64 for a float64 kernel) and rounded once to ``dtype`` (default: the weight's).

    One row of G at a time into the finished tensor: whole-kernel float64 temporaries (52 MB at
    512->512) left holes in glibc's heap, pinned by the 8 MB result, that the next large tensor
    was served from (a checkpointed run's memory, heap.py); these are 3 MB at most."""
    outputs, channels = weight.shape[:2]
    work = torch.float64 if weight.dtype == torch.float64 else torch.float32
    kernel = weight.detach()
    tiles = torch.empty(4, 4, channels, outputs, dtype=dtype or weight.dtype)
    for i, g_row in enumerate(_G):
        # (G g)[i]: (K, C, 3), the kernel's rows combined; then its columns, one position at a time.
        rows = sum(coef * kernel[:, :, j].to(work) for j, coef in enumerate(g_row) if coef)
        for m, g_col in enumerate(_G):
            position = sum(coef * rows[:, :, l] for l, coef in enumerate(g_col) if coef)
            tiles[i, m].copy_(position.t())
    return tiles.reshape(16, channels, outputs)


def input_tiles(x: torch.Tensor, order=_SAME) -> tuple[torch.Tensor, int, int]:
    """(1, C, H, W) -> (16, T, C): B^T d B for each 4x4 tile (stride 2) of the zero-padded input,
    T = ceil(H/2) * ceil(W/2). Odd sides get one more zero row or column, cropped from the output.
    order: the transform's (i, j) goes to position (order[i], order[j])."""
    _, channels, height, width = x.shape
    rows, cols = (height + 1) // 2, (width + 1) // 2
    padded = x.new_empty(2 * rows + 2, 2 * cols + 2, channels)
    padded[0].zero_()
    padded[height + 1:].zero_()
    padded[:, 0].zero_()
    padded[:, width + 1:].zero_()
    padded[1:height + 1, 1:width + 1] = x[0].permute(1, 2, 0)
    out = x.new_empty(4, 4, rows, cols, channels)
    # B^T d B with B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]: first along the rows of the
    # whole image (each result is a tile row's combination), then along the columns into place; one
    # row combination alive at a time (half the input each), so the transform's peak memory stays
    # near its output's.
    a, b, c, d = (padded[k:k + 2 * rows:2] for k in range(4))
    for i, (combine, first, second) in zip(order, ((torch.sub, a, c), (torch.add, b, c), (torch.sub, c, b),
                                                    (torch.sub, b, d))):
        _transform_columns(combine(first, second), out[i], order, cols)
    return out.view(16, rows * cols, channels), rows, cols


def _transform_columns(combined: torch.Tensor, out: torch.Tensor, order, cols: int) -> None:
    """B^T along the columns of one tile row's combination, into out[order[j]]."""
    a, b, c, d = (combined[:, k:k + 2 * cols:2] for k in range(4))
    torch.sub(a, c, out=out[order[0]])
    torch.add(b, c, out=out[order[1]])
    torch.sub(c, b, out=out[order[2]])
    torch.sub(b, d, out=out[order[3]])


def output_from_tiles(products: torch.Tensor, rows: int, cols: int, height: int, width: int,
                      order=_SAME) -> torch.Tensor:
    """(16, T, K) -> (1, K, height, width) in channels_last: A^T m A for each tile, with
    A^T = [[1,1,1,0],[0,1,-1,-1]]. order: as input_tiles'. Sums in place, one row at a time."""
    outputs = products.shape[-1]
    m = products.view(4, 4, rows, cols, outputs)
    y = products.new_empty(rows, 2, cols, 2, outputs)
    p0, p1, p2, p3 = order
    for i in range(2):
        combined = torch.add(m[p0], m[p1]).add_(m[p2]) if i == 0 else torch.sub(m[p1], m[p2]).sub_(m[p3])
        torch.add(combined[p0], combined[p1], out=y[:, i, :, 0]).add_(combined[p2])
        torch.sub(combined[p1], combined[p2], out=y[:, i, :, 1]).sub_(combined[p3])
        del combined
    y = y.view(2 * rows, 2 * cols, outputs)
    if (height, width) != (2 * rows, 2 * cols):
        y = y[:height, :width].contiguous()
    return y.permute(2, 0, 1).unsqueeze(0)


def winograd_conv(x: torch.Tensor, tiles: torch.Tensor, flipped: bool = False) -> torch.Tensor:
    """The 3x3, stride-1, pad-1 convolution of a batch-1 x with the kernel behind ``tiles``
    (kernel_tiles), without bias; flipped: with that kernel flipped and transposed instead (the
    input gradient's), from the same tiles without a copy. Any layout in, channels_last out."""
    height, width = x.shape[-2:]
    order = _FLIP if flipped else _SAME
    transformed, rows, cols = input_tiles(x, order)
    products = torch.bmm(transformed, tiles.transpose(1, 2) if flipped else tiles)
    del transformed  # before the output transform allocates: 4x the input's size
    return output_from_tiles(products, rows, cols, height, width, order)


class WinogradConvReLU(torch.autograd.Function):
    """relu(conv(x) + bias) forward; backward the ReLU mask from the saved output, then the input
    gradient through the flipped kernel's tiles. Saves only its output, as kernels' other paths do."""

    @staticmethod
    def forward(ctx, x, tiles, bias):
        out = winograd_conv(x.to(tiles.dtype), tiles)
        out.add_(bias.to(out.dtype).view(1, -1, 1, 1)).relu_()
        ctx.save_for_backward(out, tiles)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, tiles = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad.to(out.dtype), out, 0)
        return winograd_conv(grad, tiles, flipped=True), None, None
