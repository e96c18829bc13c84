"""Do flat and dark content images stylize? Style distance before and after N iterations, per precision.

    .venv/bin/python benchmarks/hard_images.py [--iterations 30] [--image-size 128]

A flat gray image and tubingen darkened to 4% brightness (the redesign issue's bug: neither moved
at all), and tubingen itself for reference. Prints the unweighted Gram style distance (the same
normalized term stylize optimizes) at the content init and after the run, and their ratio.
"""

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageEnhance

import vggstyle
from vggstyle.optimize import measure_losses

ROOT = Path(__file__).resolve().parents[1]
STYLE = ROOT / "examples" / "style" / "starry_night.jpg"
TUBINGEN = ROOT / "examples" / "content" / "tubingen.jpg"


def contents(folder: Path) -> dict[str, Path]:
    gray = folder / "gray.png"
    Image.new("RGB", (256, 188), (128, 128, 128)).save(gray)
    dark = folder / "dark.png"
    ImageEnhance.Brightness(Image.open(TUBINGEN).convert("RGB")).enhance(0.04).save(dark)
    return {"flat gray": gray, "tubingen at 4%": dark, "tubingen": TUBINGEN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    print(f"| content | precision | style distance at start | after {args.iterations} | ratio |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for name, path in contents(Path(folder)).items():
            for precision in ("fp32", "bf16"):
                kw = dict(image_size=args.image_size, precision=precision)
                before = measure_losses(path, STYLE, **kw)["style"]
                out = vggstyle.stylize(path, STYLE, num_iterations=args.iterations, seed=0, **kw)
                after = measure_losses(path, STYLE, image=out, **kw)["style"]
                print(f"| {name} | {precision} | {before:.3f} | {after:.3f} | {after / before:.2f} |", flush=True)


if __name__ == "__main__":
    main()
