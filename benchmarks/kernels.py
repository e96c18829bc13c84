"""The VGG pass with convolution + ReLU fused, against separate layers, interleaved in one run.

    .venv/bin/python benchmarks/kernels.py [--image-size 512] [--rounds 15]

A VGG19 pass to relu5_1 with the default losses' layers, forward + backward to the image, in the
default precision: convolution + ReLU fused in one oneDNN primitive (kernels.conv_relu) vs separate
convolution and ReLU; then each layer shape every way it can run here: float32 on oneDNN in
channels_last or NCHW, float32 on NNPACK's Winograd, and where the CPU has bf16, bf16 on oneDNN
and on our Winograd (winograd.py), both channels_last.
Prints median milliseconds; the load average before and after.
"""

import argparse
import os
import statistics
import time

import vggstyle  # noqa: F401, I001 - before torch: libgomp's spin count as in a run (src/vggstyle/openmp.py)
import torch

from vggstyle.config import StyleConfig
from vggstyle.device import resolve_policy
from vggstyle.engine import loaded_weights
from vggstyle.vgg import VGG19Features


def _median_ms(fn, rounds: int, others) -> list[float]:
    """Median of each of several callables, run in turn round after round (drift hits all alike)."""
    times = [[] for _ in others]
    for _ in range(rounds):
        for i, f in enumerate(others):
            start = time.perf_counter()
            f()
            times[i].append(1000 * (time.perf_counter() - start))
    return [statistics.median(t[2:]) for t in times]


def vgg_pass(net: VGG19Features, image: torch.Tensor):
    def run():
        x = image.clone().requires_grad_(True)
        features = net(x)
        sum(f.float().square().mean() for f in features.values()).backward()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}; {torch.get_num_threads()} threads")
    config = StyleConfig()
    policy = resolve_policy("auto", "auto")
    weights = loaded_weights(config.weights_source, config.weights, config.weights_preprocessing)
    layers = [*config.content_layers, *config.style_layers]
    width, height = args.image_size, args.image_size * 3 // 4
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    fused = VGG19Features(weights, layers, policy=policy)
    plain = VGG19Features(weights, layers, policy=policy, fused=False)
    ms = _median_ms(None, args.rounds, [vgg_pass(fused, image), vgg_pass(plain, image)])
    print(f"\n| VGG pass, {width}x{height}, {policy.precision} | ms |\n| --- | --- |")
    print(f"| fused conv+ReLU ({'on' if fused.fused else 'not available here'}) | {ms[0]:.0f} |")
    print(f"| separate | {ms[1]:.0f} |")

    per_layer(height, width, args.rounds)
    print(f"\nload average after: {os.getloadavg()}")


def per_layer(height: int, width: int, rounds: int) -> None:
    """Each VGG layer shape, forward + backward, every way it can run here: float32 on oneDNN and
    NNPACK, and where the CPU has bf16, bf16 on oneDNN and on our Winograd (kernels.measure_layers,
    the calibration's own timing)."""
    from vggstyle.device import cpu_runs_bf16
    from vggstyle.kernels import VARIANTS_OF, measure_layers

    precisions = ["fp32", *(["bf16"] if cpu_runs_bf16() else [])]
    timings = {p: measure_layers((height, width), max(2, rounds // 5), p) for p in precisions}
    columns = [(p, v) for p in precisions for v in VARIANTS_OF[p]]
    print(f"\n| layer (in->out @ map) | {' | '.join(f'{v} (ms)' for _, v in columns)} |")
    print("| --- |" + " --- |" * len(columns))
    for shape in timings["fp32"]:
        cin, cout, pools = shape
        cells = " | ".join(f"{1000 * timings[p][shape][v]:.1f}" for p, v in columns)
        print(f"| {cin}->{cout} @ {width >> pools}x{height >> pools} | {cells} |")


if __name__ == "__main__":
    main()
