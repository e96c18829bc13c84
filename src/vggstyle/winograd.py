"""Winograd F(4x4, 3x3) convolutions as matrix products: the bf16 Winograd that no library ships.

On a CPU with AVX512-BF16 a bf16 VGG iteration is 82% oneDNN convolutions running near the cores'
peak (docs/speed.md), so only fewer multiplications make it faster. F(4x4, 3x3) computes each 4x4
output tile from a 6x6 input tile with 36 multiplications per channel pair instead of 144: the
input and kernel tiles are transformed (B^T d B and G g G^T), multiplied elementwise, which over
the channels is 36 independent matrix products (tiles x C) @ (C x K), and transformed back
(A^T m A). All three steps are matrix products in torch (oneDNN's bf16 kernels, float32
accumulation, one rounding each): the input transform is one (36 x 36) product over the gathered
tiles, the output one (16 x 36) product, so each value is rounded once per step however many terms
it sums. Session 13's F(2x2, 3x3) did the transforms as chains of bf16 additions and needed 16
products per 4 outputs instead of 36 per 16; this is 1.8x fewer multiplications.

The interpolation points are 0, 1, -1, 2, -1/2 and infinity: measured on VGG's layers with real
activations (docs/speed.md, session 15), bf16 products at these points err 0.5-0.8% against
float32, against 0.7-1.2% at 0, +-1, +-2 and 1.1-2.6% at 0, +-1, 2, 1/2 (oneDNN's bf16
convolutions: 0.2%, F(2x2, 3x3): 0.3%). The matrices below are Toom-Cook's for these points
(Lavin & Gray, *Fast Algorithms for Convolutional Neural Networks*, 2016); tests check the
convolution they give against conv2d to 1e-12 in float64.

Everything works on NHWC-contiguous data (channels_last as torch calls it), the layout the bf16
network runs in, so no layer pays for a layout change. The functions are dtype-generic: float64
gives the exact convolution (to rounding), which is how the tests check them on any CPU.

The input gradient of a stride-1, pad-1 3x3 convolution is the convolution with the kernel flipped
and in/out channels swapped; a flipped kernel is the same kernel on the flipped image. So the
backward pass gathers the gradient's tiles on a grid aligned to the far edges, reads each tile
backwards (the input matrix's columns reversed), multiplies by the transposed view of the forward's
kernel tiles and writes each output tile backwards (the output matrix's rows reversed): no second
kernel is stored, and no image is flipped.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import torch

_THIRD, _FIFTEENTH = Fraction(1, 3), Fraction(1, 15)
# F(4x4, 3x3) at 0, 1, -1, 2, -1/2, infinity: G (6 x 3), B^T (6 x 6), A^T (4 x 6).
_G = ((1, 0, 0), (-_THIRD, -_THIRD, -_THIRD), (_THIRD, -_THIRD, _THIRD),
      (_FIFTEENTH, 2 * _FIFTEENTH, 4 * _FIFTEENTH), (-16 * _FIFTEENTH, 8 * _FIFTEENTH, -4 * _FIFTEENTH), (0, 0, 1))
_BT = ((1, 1.5, -2, -1.5, 1, 0), (0, -1, -2.5, -0.5, 1, 0), (0, 1, 0.5, -2.5, 1, 0),
       (0, -0.5, -1, 0.5, 1, 0), (0, 2, -1, -2, 1, 0), (0, 1, 1.5, -2, -1.5, 1))
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -0.5, 0), (0, 1, 1, 4, 0.25, 0), (0, 1, -1, 8, -0.125, 1))
TILE, OUT = 6, 4  # input and output tile sides; tiles step by OUT


@cache
def _transform(name: str, dtype: torch.dtype, flipped: bool) -> torch.Tensor:
    """The (36 x 36) input or (16 x 36) output transform over flattened tiles, B^T (x) B^T or
    A^T (x) A^T (every entry a short binary fraction: exact in bf16); flipped: for a tile read
    backwards (reversing both sides of a tile reverses its flattened positions)."""
    side = torch.tensor(_BT if name == "input" else _AT, dtype=torch.float64)
    matrix = torch.kron(side, side)
    if flipped:
        matrix = matrix.flip(1 if name == "input" else 0)
    return matrix.to(dtype)


def _grid_shift(rows: int, cols: int, height: int, width: int, flipped: bool) -> tuple[int, int]:
    """Where the map starts inside the tile grid (rows x cols tiles of OUT): at the grid's corner,
    or for a flipped pass flush with its far edges, so that the tiles line up with the flipped
    image's. input_tiles pads by it and output_from_tiles crops by it: one rule for both."""
    return (OUT * rows - height, OUT * cols - width) if flipped else (0, 0)


def kernel_tiles(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(K, C, 3, 3) kernel -> (36, C, K): G g G^T at each of the 36 tile positions, summed in float32
    (float64 for a float64 kernel) and rounded once to ``dtype`` (default: the weight's).

    One row of G at a time into the finished tensor: whole-kernel float64 temporaries (52 MB at
    512->512) left holes in glibc's heap, pinned by the result, that the next large tensor was
    served from (a checkpointed run's memory, heap.py); these are 3 MB at most."""
    outputs, channels = weight.shape[:2]
    work = torch.float64 if weight.dtype == torch.float64 else torch.float32
    kernel = weight.detach()
    tiles = torch.empty(TILE, TILE, channels, outputs, dtype=dtype or weight.dtype)
    for i, g_row in enumerate(_G):
        # (G g)[i]: (K, C, 3), the kernel's rows combined; then its columns, one position at a time.
        rows = sum(float(coef) * kernel[:, :, j].to(work) for j, coef in enumerate(g_row) if coef)
        for m, g_col in enumerate(_G):
            position = sum(float(coef) * rows[:, :, l] for l, coef in enumerate(g_col) if coef)
            tiles[i, m].copy_(position.t())
    return tiles.reshape(TILE * TILE, channels, outputs)


def input_tiles(x: torch.Tensor, flipped: bool = False,
                relu_output: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
    """(1, C, H, W) -> (36, T, C): B^T d B for each 6x6 tile (stride 4) of the zero-padded input,
    T = ceil(H/4) * ceil(W/4). Sides that are not a multiple of 4 get zero rows or columns, at the
    far edge (flipped: at the near one, so that the tiles line up with the flipped image's).
    relu_output: x is the gradient at a ReLU's output; masked where that output is 0 on its way
    into the padded buffer (one pass over it instead of two)."""
    _, channels, height, width = x.shape
    rows, cols = -(-height // OUT), -(-width // OUT)
    padded_height, padded_width = OUT * rows + 2, OUT * cols + 2
    top, left = (1 + shift for shift in _grid_shift(rows, cols, height, width, flipped))
    padded = x.new_empty(padded_height, padded_width, channels)
    padded[:top].zero_()
    padded[top + height:].zero_()
    padded[:, :left].zero_()
    padded[:, left + width:].zero_()
    inside = padded[top:top + height, left:left + width]
    if relu_output is None:
        inside.copy_(x[0].permute(1, 2, 0))
    else:
        torch.ops.aten.threshold_backward.grad_input(x[0].permute(1, 2, 0), relu_output[0].permute(1, 2, 0), 0,
                                                     grad_input=inside)
    row_step, col_step = padded_width * channels, channels
    gathered = padded.as_strided((TILE, TILE, rows, cols, channels),
                                 (row_step, col_step, OUT * row_step, OUT * col_step, 1))
    gathered = gathered.reshape(TILE * TILE, rows * cols * channels)  # the copy: 2.25x the input
    del padded
    transformed = torch.mm(_transform("input", x.dtype, flipped), gathered)
    return transformed.view(TILE * TILE, rows * cols, channels), rows, cols


def output_from_tiles(products: torch.Tensor, rows: int, cols: int, height: int, width: int,
                      flipped: bool = False, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(36, T, K) -> (1, K, height, width) in channels_last: A^T m A for each tile, each 4x4 output
    tile put in place (flipped: written backwards and the grid's far-edge alignment cropped), plus
    ``bias`` per output channel on the way (one pass instead of two)."""
    outputs = products.shape[-1]
    tiles = torch.mm(_transform("output", products.dtype, flipped), products.view(TILE * TILE, -1))
    placed = tiles.view(OUT, OUT, rows, cols, outputs).permute(2, 0, 3, 1, 4)
    y = products.new_empty(rows, OUT, cols, OUT, outputs)
    if bias is None:
        y.copy_(placed)
    else:
        torch.add(placed, bias.to(y.dtype), out=y)
    del tiles, placed
    y = y.view(OUT * rows, OUT * cols, outputs)
    top, left = _grid_shift(rows, cols, height, width, flipped)
    if (height, width) != (OUT * rows, OUT * cols):
        y = y[top:top + height, left:left + width].contiguous()
    return y.permute(2, 0, 1).unsqueeze(0)


def winograd_conv(x: torch.Tensor, tiles: torch.Tensor, flipped: bool = False, bias: torch.Tensor | None = None,
                  relu_output: torch.Tensor | None = None) -> torch.Tensor:
    """The 3x3, stride-1, pad-1 convolution of a batch-1 x with the kernel behind ``tiles``
    (kernel_tiles), plus ``bias``; flipped: with that kernel flipped and transposed instead (the
    input gradient's), from the same tiles without a copy, of x masked where ``relu_output`` is 0
    when given. Any layout in, channels_last out."""
    height, width = x.shape[-2:]
    transformed, rows, cols = input_tiles(x, flipped, relu_output)
    products = torch.bmm(transformed, tiles.transpose(1, 2) if flipped else tiles)
    del transformed  # before the output transform allocates
    return output_from_tiles(products, rows, cols, height, width, flipped, bias)


class WinogradConvReLU(torch.autograd.Function):
    """relu(conv(x) + bias) forward; backward the ReLU mask from the saved output, then the input
    gradient through the flipped kernel's tiles. Saves only its output, as kernels' other paths do."""

    @staticmethod
    def forward(ctx, x, tiles, bias):
        out = winograd_conv(x.to(tiles.dtype), tiles, bias=bias).relu_()
        ctx.save_for_backward(out, tiles)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, tiles = ctx.saved_tensors
        return winograd_conv(grad.to(out.dtype), tiles, flipped=True, relu_output=out), None, None
