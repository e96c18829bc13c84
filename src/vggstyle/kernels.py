"""The ways a frozen 3x3 convolution + ReLU runs on the CPU, and which one each VGG layer uses.

* oneDNN: one primitive with the ReLU as a post-op (channels_last, float32 or bf16).
* Winograd (NNPACK, in torch's CPU wheels): F(6x6, 3x3) transforms need about a fifth of the
  multiplications of a direct convolution, so on CPUs without native bf16 (AVX2 + FMA: most
  laptops, desktops and cloud machines) it is the fastest float32 convolution there is. float32,
  NCHW only.
* Winograd in bf16 (winograd.py, ours: F(4x4, 3x3) as matrix products, channels_last): a
  quarter of the multiplications, for the deep layers of the bf16 network where oneDNN's direct
  convolutions are already at the cores' peak.

Both are autograd Functions that return only the input gradient: the weights are frozen. For a
stride-1, pad-1 3x3 convolution that gradient is itself such a convolution, of the output
gradient with the kernel flipped and its in/out channels swapped, so the Winograd path runs both
passes through NNPACK. Each saves only its output (the ReLU mask, and the next layer's input
anyway), never the input: no more memory than the oneDNN path.

Which kernel a layer gets is measured, not guessed: ``calibrated_model`` times each VGG layer
shape each way at two image sizes on this machine and thread count, in a child process (about 12 s
in float32, 6 s in bf16 on 2 cores, once: cached on disk), and ``CostModel.plan_at`` picks, per
image size, the layout and each layer's kernel from those timings; in bf16 the choice is between
oneDNN and our bf16 Winograd, both in channels_last (docs/speed.md has the figures per CPU class).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .heap import tune_heap
from .openmp import SPIN_COUNT_ENV, WAIT_POLICY_ENV
from .winograd import WinogradConvReLU, kernel_tiles

ONEDNN, WINOGRAD, WINOGRAD_BF16 = "onednn", "winograd", "winograd-bf16"
CACHE_ENV = "VGGSTYLE_CACHE_DIR"
CALIBRATION_ROUNDS = 2  # timed rounds over every layer and variant, after one warm-up; the fastest is kept
# A kernel must be this much faster to replace oneDNN: noise is not a reason to switch.
MIN_GAIN = 1.05
# More for our bf16 Winograd: it costs memory (its transforms' buffers, the kernel tiles), and its
# memory-bound transforms suffer more from other load during the calibration. At 1.05 a calibration
# taken beside other work put conv2_2 on it (1.08x then; 0.5-0.85x on the quiet machine).
MIN_GAIN_BF16 = 1.10

# A first run's pause of ~12 s needs a word: the CLI shows this logger's INFO lines (cli/common.py).
log = logging.getLogger(__name__)
_pool_threads: int | None = None  # NNPACK's thread pool is sized once, at its first convolution


def winograd_available() -> bool:
    """NNPACK is compiled in and initializes on this CPU (it needs x86-64 with AVX2 + FMA, or ARM NEON)."""
    try:
        return bool(torch.backends.nnpack.is_available())
    except (AttributeError, RuntimeError):
        return False


def winograd_usable_now() -> bool:
    """NNPACK sizes its thread pool to torch's thread count at its first call, for the life of the
    process: a later call with another --threads must not run on the old pool (the thread count
    is a promise), so it goes to oneDNN instead, which honours it."""
    return _pool_threads is None or _pool_threads == torch.get_num_threads()


def winograd_pool_threads() -> int | None:
    """The thread count NNPACK's pool was sized to in this process (None: not used yet)."""
    return _pool_threads


def onednn_conv_relu_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def conv_relu(x: torch.Tensor, conv: nn.Conv2d, channels_last: bool) -> torch.Tensor:
    """relu(conv(x)) in one oneDNN primitive, in the convolution's dtype and channels_last."""
    x = x.to(conv.weight.dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return _OneDNNConvReLU.apply(x, conv.weight, conv.bias)


def winograd_conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(conv(x)) through NNPACK, in float32 NCHW whatever x is (autocast does not reach it).
    weight, bias: float32, NCHW-contiguous."""
    global _pool_threads
    if _pool_threads is None:
        if not winograd_available():  # also NNPACK's initialization: its convolutions fail before it
            raise RuntimeError("NNPACK is not available in this torch build or on this CPU")
        _pool_threads = torch.get_num_threads()
    return _WinogradConvReLU.apply(x.float().contiguous(), weight, bias)


def winograd_bf16_conv_relu(x: torch.Tensor, tiles: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(conv(x)) through winograd.py's F(4x4, 3x3) in the tiles' dtype (bf16), channels_last out.
    tiles: winograd.kernel_tiles of the layer's weight."""
    return WinogradConvReLU.apply(x, tiles, bias)


def flipped_transposed(weight: torch.Tensor) -> torch.Tensor:
    """The kernel whose convolution is the input gradient of ``weight``'s (stride 1, padding 1)."""
    return weight.flip(2, 3).transpose(0, 1).contiguous()


class _OneDNNConvReLU(torch.autograd.Function):
    """Forward: the convolution with the ReLU as a post-op (one pass over the output instead of two).
    Backward: the ReLU mask from the saved output, then the input gradient only."""

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


class _WinogradConvReLU(torch.autograd.Function):
    """Both passes through NNPACK: forward conv + ReLU in place; backward the ReLU mask from the saved
    output, then the input gradient as a convolution with the flipped, transposed kernel."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        out = torch._nnpack_spatial_convolution(x, weight, bias, [1, 1], [1, 1])
        out.relu_()
        ctx.save_for_backward(out, weight)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, weight = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad.float().contiguous(), out, 0)
        # Made here, not kept: the copy costs ~1 ms a layer, keeping it would cost 80 MB at relu5_1.
        grad_x = torch._nnpack_spatial_convolution(grad, flipped_transposed(weight), None, [1, 1], [1, 1])
        return grad_x, None, None


# ------------------------------------------------------------------------------ the choice per layer
@dataclass(frozen=True)
class KernelPlan:
    """The kernel of each convolution of VGG19 (by its position 0..15) and the memory layout the
    activations flow in, at one image size. NNPACK takes NCHW only, and converting a large
    activation between layouts costs as much as its convolution (50 ms for 64x384x512), so a plan
    with Winograd layers runs the whole network in NCHW."""

    kernels: tuple[str, ...]
    channels_last: bool

    @classmethod
    def everywhere(cls, kernel: str, channels_last: bool = True) -> "KernelPlan":
        return cls((kernel,) * len(CONV_SHAPES), channels_last and kernel != WINOGRAD)

    def kernel(self, position: int) -> str:
        return self.kernels[position]

    @property
    def uses_winograd(self) -> bool:
        """Whether NNPACK runs any layer (its thread pool is the process's: winograd_usable_now)."""
        return WINOGRAD in self.kernels

    def describe(self, depth: int) -> str:
        """The kernel's name when the first ``depth`` layers agree ('onednn', 'winograd', ...), else
        'winograd at N of depth' (or winograd-bf16): a plan mixes oneDNN with one other kernel."""
        kinds = self.kernels[:depth]
        if len(set(kinds)) == 1:
            return kinds[0]
        other = next(kind for kind in kinds if kind != ONEDNN)
        return f"{other} at {kinds.count(other)} of {depth} layers"


def _conv_shapes() -> tuple[tuple[int, int, int], ...]:
    """(in channels, out channels, poolings before) of VGG19's 16 convolutions, in order."""
    from .layers import VGG19_BLOCKS
    shapes, cin = [], 3
    for pools, block in enumerate(VGG19_BLOCKS):
        for cout in block:
            shapes.append((cin, cout, pools))
            cin = cout
    return tuple(shapes)


CONV_SHAPES = _conv_shapes()
# The three ways a float32 layer can run: oneDNN in channels_last (weights kept NCHW, so that one
# copy serves all three; oneDNN reorders them, ~1 ms a layer), oneDNN in NCHW, NNPACK in NCHW.
CL_ONEDNN, NCHW_ONEDNN, NCHW_WINOGRAD = "cl-onednn", "nchw-onednn", "nchw-winograd"
VARIANTS = (CL_ONEDNN, NCHW_ONEDNN, NCHW_WINOGRAD)
# The two ways a bf16 layer can run, both in channels_last: oneDNN's direct convolution, our Winograd.
CL_ONEDNN_BF16, CL_WINOGRAD_BF16 = "cl-onednn-bf16", "cl-winograd-bf16"
BF16_VARIANTS = (CL_ONEDNN_BF16, CL_WINOGRAD_BF16)
VARIANTS_OF = {"fp32": VARIANTS, "bf16": BF16_VARIANTS}


@dataclass(frozen=True)
class CostModel:
    """Seconds of one forward + backward of each layer shape, per variant, as fixed + per-pixel
    cost: fitted to timings at two image sizes. Winograd has a large fixed cost (NNPACK transforms
    the kernel on every call: 512x512 channels cost ~35 ms at any size) and a small per-pixel one,
    so it wins on large maps and loses on small ones; the crossover is this machine's."""

    costs: dict  # {(shape, variant): (fixed seconds, seconds per pixel)}
    precision: str = "fp32"  # the variants timed: VARIANTS_OF[precision]

    def seconds(self, shape, variant: str, pixels: int) -> float:
        fixed, per_pixel = self.costs[(shape, variant)]
        return fixed + per_pixel * pixels

    def plan_at(self, height: int, width: int, depth: int) -> KernelPlan:
        """float32: the faster of every layer on oneDNN in channels_last, or NCHW with each layer on its
        faster kernel. bf16: channels_last, each layer on its faster kernel. Layers past ``depth``
        (not run) keep oneDNN."""
        pixels = [(height >> pools) * (width >> pools) for _, _, pools in CONV_SHAPES[:depth]]
        rest = (ONEDNN,) * (len(CONV_SHAPES) - depth)
        if self.precision == "bf16":
            return KernelPlan(tuple(WINOGRAD_BF16 if self.seconds(shape, CL_ONEDNN_BF16, n)
                                    > MIN_GAIN_BF16 * self.seconds(shape, CL_WINOGRAD_BF16, n) else ONEDNN
                                    for shape, n in zip(CONV_SHAPES, pixels)) + rest, True)
        channels_last = sum(self.seconds(shape, CL_ONEDNN, n) for shape, n in zip(CONV_SHAPES, pixels))
        nchw, kernels = 0.0, []
        for shape, n in zip(CONV_SHAPES, pixels):
            onednn, winograd = self.seconds(shape, NCHW_ONEDNN, n), self.seconds(shape, NCHW_WINOGRAD, n)
            kernels.append(WINOGRAD if onednn > MIN_GAIN * winograd else ONEDNN)
            nchw += min(onednn, winograd)
        if WINOGRAD in kernels and channels_last > MIN_GAIN * nchw:
            return KernelPlan(tuple(kernels) + rest, False)
        return KernelPlan.everywhere(ONEDNN)

    def to_json(self) -> list:
        return [[list(shape), variant, fixed, per_pixel] for (shape, variant), (fixed, per_pixel) in self.costs.items()]

    @classmethod
    def from_json(cls, data, precision: str = "fp32") -> "CostModel":
        costs = {(tuple(int(x) for x in shape), str(variant)): (float(fixed), float(per_pixel))
                 for shape, variant, fixed, per_pixel in data}
        missing = {(shape, variant) for shape in CONV_SHAPES for variant in VARIANTS_OF[precision]} - set(costs)
        if missing:  # a cache from another version: measure again
            raise KeyError(sorted(missing)[0])
        return cls(costs, precision)


# Two sizes for the fit: the default's two scales at 512 px (its half-size start and its full size),
# where the plan matters most. Fitted from 96x128 and 192x256 instead, the line missed the costs at
# 384x512 by up to 3.4x (AVX2-simulated AMD EPYC, 2 threads: NNPACK for conv2_1 predicted 189 ms,
# measured 55) and put conv1_1 and conv2_1 on oneDNN, 8-10% slower per iteration. About 12 s on
# 2 cores, once per machine and thread count (cached).
CALIBRATION_SIZES = ((192, 256), (384, 512))
# What that costs on 2 cores (AMD EPYC; said on stderr the first time): three float32 variants, two bf16 ones.
CALIBRATION_SECONDS = {"fp32": 12, "bf16": 6}


def calibrated_model(cpu: str, precision: str = "fp32") -> CostModel:
    """This machine's CostModel at torch's thread count for the network's precision (fp32 or bf16):
    from the cache, else measured now and cached. cpu: what the timings depend on besides torch and
    the threads (device.cpu_description())."""
    key = _machine_key(cpu, precision)
    path = _cache_path()
    cached = _read_cache(path).get(key)
    if cached is not None:
        try:
            return CostModel.from_json(cached, precision)
        except (KeyError, TypeError, ValueError):
            pass
    log.info("measuring this CPU's convolution kernels, once (about %d s on 2 cores; kept in %s)",
             CALIBRATION_SECONDS[precision], path)
    model = measure_model(precision=precision)
    _write_cache(path, key, model.to_json())
    return model


def measure_model(sizes=CALIBRATION_SIZES, rounds: int = CALIBRATION_ROUNDS, precision: str = "fp32") -> CostModel:
    """measure_model_here in a child process, at this process's thread count and environment.

    Apart, because the calibration's tensors stay in glibc's heap once freed, pinned by the small
    allocations made on the way: measured in the process (bf16, AMD EPYC), a first run on a machine
    kept 849 MB of its 1096 MB heap free, and a checkpointed run after it took its large tensors from
    those blocks instead of leaving them to mmap (heap.py). Where no child can run (no usable
    sys.executable, say), it is measured here."""
    request = json.dumps({"sizes": [list(size) for size in sizes], "rounds": rounds, "precision": precision,
                          "threads": torch.get_num_threads()})
    try:
        done = subprocess.run([sys.executable, "-c", _MEASURE_IN_CHILD, request], capture_output=True, text=True,
                              timeout=CALIBRATION_TIMEOUT)
        if done.returncode == 0:
            return CostModel.from_json(json.loads(done.stdout.strip().splitlines()[-1]), precision)
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError, TypeError) as exc:
        reason = str(exc)
    log.debug("the kernel calibration could not run in a child process (%s); measuring here", reason)
    return measure_model_here(sizes, rounds, precision)


CALIBRATION_TIMEOUT = 600  # seconds: twenty times what it takes on 2 cores
# vggstyle first, as in a run: libgomp's spin count is set before torch loads it (openmp.py).
_MEASURE_IN_CHILD = """
import json, sys
import vggstyle
import torch
from vggstyle.kernels import measure_model_here
request = json.loads(sys.argv[1])
torch.set_num_threads(request["threads"])
model = measure_model_here([tuple(size) for size in request["sizes"]], request["rounds"], request["precision"])
print(json.dumps(model.to_json()))
"""


def measure_model_here(sizes=CALIBRATION_SIZES, rounds: int = CALIBRATION_ROUNDS,
                       precision: str = "fp32") -> CostModel:
    """Each layer's cost per variant at two sizes (measure_layers), fitted as fixed + per pixel."""
    tune_heap(large_blocks=True)  # as the step loop runs them (heap.py): mmapped tensors page-fault
    (h1, w1), (h2, w2) = sizes
    small = measure_layers((h1, w1), rounds, precision)
    large = measure_layers((h2, w2), rounds, precision)
    costs = {}
    for shape in dict.fromkeys(CONV_SHAPES):
        pools = shape[2]
        n1, n2 = (h1 >> pools) * (w1 >> pools), (h2 >> pools) * (w2 >> pools)
        for variant in VARIANTS_OF[precision]:
            t1, t2 = small[shape][variant], large[shape][variant]
            per_pixel = max(0.0, (t2 - t1) / (n2 - n1))
            costs[(shape, variant)] = (max(0.0, t1 - per_pixel * n1), per_pixel)
    return CostModel(costs, precision)


def measure_layers(size: tuple[int, int], rounds: int,
                   precision: str = "fp32") -> dict[tuple[int, int, int], dict[str, float]]:
    """{(in, out, poolings): {variant: fastest seconds of one forward + backward}} in ``precision``
    (VARIANTS_OF's variants) on random data of the layer's shape when the image is ``size`` (height, width).

    Round by round over every layer and variant, the first round untimed: after a run of one shape,
    the next one's first runs pay for the heap's growing and trimming (2x at 384x512: conv1_2 on
    oneDNN 276-286 ms right after conv1_1, 139-159 later), and consecutive runs of one variant would
    pay for it alone. The fastest round is kept: interference on a shared machine only adds time."""
    runs = {}
    for shape in dict.fromkeys(CONV_SHAPES):
        cin, cout, pools = shape
        conv, weight, bias = _random_conv(cin, cout)
        height, width = max(1, size[0] >> pools), max(1, size[1] >> pools)
        nchw = torch.rand(1, cin, height, width, generator=torch.Generator().manual_seed(1))
        cl = nchw.contiguous(memory_format=torch.channels_last)
        if precision == "bf16":  # as VGG19Features holds a bf16 network: weights and activations channels_last
            conv = conv.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
            cl, tiles = cl.bfloat16(), kernel_tiles(weight, torch.bfloat16)
            runs[(shape, CL_ONEDNN_BF16)] = (lambda i, c=conv: conv_relu(i, c, True), cl)
            runs[(shape, CL_WINOGRAD_BF16)] = (lambda i, t=tiles, b=conv.bias: winograd_bf16_conv_relu(i, t, b), cl)
            continue
        runs[(shape, CL_ONEDNN)] = (lambda i, c=conv: conv_relu(i, c, True), cl)
        runs[(shape, NCHW_ONEDNN)] = (lambda i, c=conv: conv_relu(i, c, False), nchw)
        runs[(shape, NCHW_WINOGRAD)] = (lambda i, w=weight, b=bias: winograd_conv_relu(i, w, b), nchw)
    results: dict = {}
    for attempt in range(rounds + 1):
        for (shape, variant), (run, x) in runs.items():
            seconds = one_forward_backward(run, x)
            if attempt:
                fastest = results.setdefault(shape, {})
                fastest[variant] = min(seconds, fastest.get(variant, seconds))
    return results


def _random_conv(cin: int, cout: int):
    weight = torch.randn(cout, cin, 3, 3, generator=torch.Generator().manual_seed(cin * 1000 + cout))
    weight *= (2.0 / (9 * cin)) ** 0.5
    bias = torch.zeros(cout)
    conv = nn.Conv2d(cin, cout, 3, padding=1).requires_grad_(False)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.zero_()
    return conv, weight, bias


def one_forward_backward(run, x: torch.Tensor) -> float:
    """Seconds of run(x) and its backward to x."""
    leaf = x.detach().requires_grad_(True)
    started = time.perf_counter()
    with torch.enable_grad():
        out = run(leaf)
        out.backward(torch.ones_like(out))
    return time.perf_counter() - started


def _machine_key(cpu: str, precision: str = "fp32") -> str:
    """What the timings depend on: the CPU, torch, the thread count, the precision timed, and how
    long OpenMP's idle threads spin beside NNPACK's (openmp.py: 20% of a Winograd iteration)."""
    spin = [os.environ.get(name, "") for name in (SPIN_COUNT_ENV, WAIT_POLICY_ENV)]
    text = "|".join([cpu, torch.__version__, str(torch.get_num_threads()),
                     str(CALIBRATION_SIZES), "v5", precision, *spin])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_path() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME")
                                                     or os.path.expanduser("~/.cache"), "vggstyle")
    return Path(base) / "kernels.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, value) -> None:
    """Best effort and atomic: an unwritable cache only means measuring again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = value
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(data, f)
        os.replace(f.name, path)
    except OSError:
        pass
