"""What glibc's mmap threshold costs the largest activations: one process with glibc's defaults, one
with a 1 GiB mmap threshold (MALLOC_MMAP_THRESHOLD_), side by side.

    python benchmarks/allocator.py                 # 512x384 px, the ops of relu1_x's backward
    python benchmarks/allocator.py --rounds 3 --height 768 --width 1024

Why: glibc serves every allocation above its mmap threshold (adaptive, but never above 32 MiB)
with a fresh mmap, so each use of a 64x384x512 float32 tensor (48 MiB: relu1_1, relu1_2 and
their gradients at 512 px) page-faults and zeroes it anew. The table says what that costs each op
that allocates such a tensor; the whole-iteration effect is for benchmarks/speed.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

OPS = ("nnpack 64->64 conv", "threshold_backward (ReLU mask)", "empty + fill_", "max_pool2d 2x2")


def child(height: int, width: int, rounds: int) -> None:
    import torch
    torch.set_num_threads(2)
    torch.backends.nnpack.is_available()  # initializes NNPACK
    x = torch.randn(1, 64, height, width)
    relu = torch.relu(x)
    grad = torch.randn_like(x)
    weight, bias = torch.randn(64, 64, 3, 3) * 0.05, torch.zeros(64)
    runs = [lambda: torch._nnpack_spatial_convolution(x, weight, bias, [1, 1], [1, 1]),
            lambda: torch.ops.aten.threshold_backward(grad, relu, 0),
            lambda: torch.empty_like(x).fill_(0),
            lambda: torch.nn.functional.max_pool2d(relu, 2, 2)]
    result = {}
    for name, run in zip(OPS, runs):
        run()
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        result[name] = sorted(times)[len(times) // 2] * 1e3
    print(json.dumps(result))


def measure(env_extra: dict, args) -> dict:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, __file__, "--child", "--height", str(args.height), "--width",
                          str(args.width), "--rounds", str(args.rounds)], env=env, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bounded(low: int, high: int):
    """An argparse type: an integer in low..high, or one line saying so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value
    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=bounded(16, 4096), default=384, metavar="PX")
    parser.add_argument("--width", type=bounded(16, 4096), default=512, metavar="PX")
    parser.add_argument("--rounds", type=bounded(1, 100), default=7, metavar="N")
    parser.add_argument("--repeats", type=bounded(1, 10), default=2, metavar="N",
                        help="processes per setting, interleaved; the best of them is shown")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.height, args.width, args.rounds)
    settings = {"glibc defaults": {}, "mmap threshold 1 GiB": {"MALLOC_MMAP_THRESHOLD_": str(1 << 30),
                                                               "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}}
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    best: dict[str, dict] = {name: {} for name in settings}
    for _ in range(args.repeats):
        for name, extra in settings.items():
            for op, ms in measure(extra, args).items():
                best[name][op] = min(ms, best[name].get(op, float("inf")))
    print(f"\n| op on 1x64x{args.height}x{args.width} float32, median ms | " + " | ".join(settings) + " |")
    print("| --- |" + " --- |" * len(settings))
    for op in OPS:
        print(f"| {op} | " + " | ".join(f"{best[name][op]:.1f}" for name in settings) + " |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
