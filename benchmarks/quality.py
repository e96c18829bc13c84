"""Quality: each method on the example pairs, measured the same way, plus a gallery to look at.

    python benchmarks/quality.py                         # 3 pairs x 6 methods, 300 iterations (~30 min)
    python benchmarks/quality.py --pairs 1 --methods default coarse-to-fine --gallery out/g.png

For each output: content distance (relative squared error of relu4_2 features against
the content image's) and style distance (mean relative squared error of the Gram
matrices of relu1_1..relu5_1 against the style image's), both with float32 VGG19 at
a fixed 512 px, and the wall time of the run. Lower distances are better; the two
trade against each other, so read them together with the gallery.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from _harness import ROOT, distances, save_gallery, thumbnail, vggstyle_run

PAIRS = [
    ("content/tubingen.jpg", "style/starry_night.jpg"),
    ("content/golden_gate.jpg", "style/shipwreck.jpg"),
    ("content/tubingen.jpg", "style/woman-with-hat-matisse.jpg"),
]
METHODS = {
    "default": {},
    "coarse-to-fine": {"coarse_to_fine_above": 0, "min_scale": 128},
    "wasserstein": {"style_loss": "wasserstein"},
    "sliced-wasserstein": {"style_loss": "sliced-wasserstein", "seed": 0},
    "luminance": {"original_colors": "luminance"},
    "histogram": {"original_colors": "histogram"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=len(PAIRS), help="how many of the example pairs")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--outdir", type=Path, default=ROOT / "out" / "quality")
    parser.add_argument("--gallery", type=Path, default=None, help="gallery PNG (default: OUTDIR/gallery.png)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep outputs already in OUTDIR (measure them again, wall time '-')")
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    gallery_rows = []
    print(f"{args.iterations} iterations at {args.image_size} px; distances at 512 px in float32\n")
    print("| content | style | method | content distance | style distance | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for content_rel, style_rel in PAIRS[: args.pairs]:
        content, style = ROOT / "examples" / content_rel, ROOT / "examples" / style_rel
        row = [thumbnail(content, "content"), thumbnail(style, "style")]
        for method in args.methods:
            output = args.outdir / f"{content.stem}__{style.stem}__{method}.png"
            options = {"image_size": args.image_size, "num_iterations": args.iterations, **METHODS[method]}
            if args.reuse and output.exists():
                result = {"wall_s": float("nan")}
            else:
                result = vggstyle_run(options, content, [style], record_images_at=str(output))
            if "error" in result:
                print(f"| {content.stem} | {style.stem} | {method} | failed: {result['error']} | | |", flush=True)
                continue
            d = distances(content, style, output)
            wall = "-" if math.isnan(result["wall_s"]) else f"{result['wall_s']:.0f}"
            print(f"| {content.stem} | {style.stem} | {method} | {d['content']:.3f} | {d['style']:.4f} | {wall} |",
                  flush=True)
            row.append(thumbnail(output, f"{method}  c={d['content']:.2f} s={d['style']:.3f}"))
        gallery_rows.append(row)
    gallery = args.gallery or args.outdir / "gallery.png"
    save_gallery(gallery_rows, gallery)
    print(f"\ngallery: {gallery}")


if __name__ == "__main__":
    main()
