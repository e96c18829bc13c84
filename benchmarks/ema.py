"""Averaging the iterates: the loss of an exponential moving average of them against the last one.

    python benchmarks/ema.py                          # 256 px, 150 iterations, lbfgs and adam
    python benchmarks/ema.py --image-size 512 --iterations 100 --optimizers adam

Each optimizer runs once with --ema-decay 0 (the last iterate is the result); the averages
with each decay are formed from the 8-bit images of every step, as the result would be
saved. Each image is measured as stylize's final scale measures it (the same targets and
normalization), and the table gives the weighted total loss, lower is better. Used to
choose the --ema-decay defaults.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from _harness import CONTENT, STYLE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--optimizers", nargs="+", default=["lbfgs", "adam"], choices=["lbfgs", "adam"])
    parser.add_argument("--decays", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    args = parser.parse_args()

    import vggstyle
    from vggstyle.optimize import measure_losses

    config = vggstyle.StyleConfig()

    def total(image) -> float:
        terms = measure_losses(CONTENT, STYLE, image=image, image_size=args.image_size)
        return (config.content_weight * terms["content"] + config.style_weight * terms["style"]
                + config.tv_weight * terms["tv"])

    print(f"{args.image_size} px, {args.iterations} iterations, {CONTENT.name} x {STYLE.name}; "
          "weighted total loss of the result\n")
    print("| optimizer | last iterate | " + " | ".join(f"EMA {d:g}" for d in args.decays) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in args.decays) + " |")
    for optimizer in args.optimizers:
        averages: dict[float, np.ndarray | None] = {d: None for d in args.decays}

        def on_step(progress):
            image = np.asarray(progress.image(), np.float64)
            for d, average in averages.items():
                averages[d] = image if average is None else d * average + (1 - d) * image

        last = vggstyle.stylize(CONTENT, STYLE, image_size=args.image_size, num_iterations=args.iterations,
                                optimizer=optimizer, ema_decay=0, seed=0, on_step=on_step)
        cells = [f"{total(last):.4f}"]
        for d in args.decays:
            image = Image.fromarray(np.clip(averages[d] + 0.5, 0, 255).astype(np.uint8))
            cells.append(f"{total(image):.4f}")
        print(f"| {optimizer} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
