"""What the final clamp to 0..1 costs a result, with and without the range term (--range-weight).

    .venv/bin/python benchmarks/range_term.py                    # 3 pairs x 128, 256 px (~5 min on 2 cores)
    .venv/bin/python benchmarks/range_term.py --sizes 512 --pairs 1 --iterations 250

L-BFGS optimizes the image unclamped; the saved picture is clamped to 0..1 and rounded to 8 bits.
For each pair, size and range weight (0 and the default), one still (single scale, seed 0, float32,
so that runs compare exactly): the style distance the optimizer reached (the last iteration's
unweighted style term, on the unclamped image), the saved image's (measured as quality.py does, at
the same size), their ratio, and the saved image's content distance. A ratio near 1 means the
clamp cut nothing off.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [
    ("content/tubingen.jpg", "style/starry_night.jpg"),
    ("content/golden_gate.jpg", "style/shipwreck.jpg"),
    ("content/tubingen.jpg", "style/woman-with-hat-matisse.jpg"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--pairs", type=int, default=len(PAIRS), choices=range(1, len(PAIRS) + 1))
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    if not all(32 <= size <= 2048 for size in args.sizes) or not 1 <= args.iterations <= 5000:
        parser.error("--sizes from 32 to 2048 px, --iterations from 1 to 5000")
    import vggstyle
    from vggstyle.optimize import measure_losses
    default = vggstyle.StyleConfig()
    print(f"load average before: {os.getloadavg()}")
    print("\n| content | style | px | range weight | style reached | style saved | saved / reached "
          "| content saved | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for content_rel, style_rel in PAIRS[: args.pairs]:
        content, style = ROOT / "examples" / content_rel, ROOT / "examples" / style_rel
        for size in args.sizes:
            options = dict(image_size=size, num_iterations=args.iterations, precision="fp32", single_scale=True,
                           seed=0)
            for weight in (0.0, default.range_weight):
                history = []
                started = time.perf_counter()
                result = vggstyle.stylize(content, style, range_weight=weight,
                                          on_step=lambda p: history.append(p.losses["style"]), **options)
                seconds = time.perf_counter() - started
                reached = history[-1] / default.style_weight
                saved = measure_losses(content, style, image=result, **options)
                print(f"| {content.stem} | {style.stem} | {size} | {weight:g} | {reached:.5f} | {saved['style']:.5f} "
                      f"| {saved['style'] / reached:.3f} | {saved['content']:.4f} | {seconds:.0f} |", flush=True)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
