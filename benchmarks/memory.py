"""Print-size runs: peak memory and time per iteration by output size.

    python benchmarks/memory.py                      # 512, 1024, 2048, 4096 px, 3 iterations each
    python benchmarks/memory.py --sizes 2048 --iterations 5 --checkpoint off

Each size runs single-scale in a fresh process (so the peak RSS is that size's own),
with the default precision and --checkpoint auto unless told otherwise. --full also
runs the default coarse-to-fine pipeline end to end at the largest size.
"""

from __future__ import annotations

import argparse
import platform

from _harness import vggstyle_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--checkpoint", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--full", type=int, metavar="N", default=0,
                        help="also run the default coarse-to-fine pipeline with N iterations at the largest size")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, precision {args.precision}, "
          f"checkpoint {args.checkpoint}")
    print("| size (long side) | pixels | ms / iteration | first iteration incl. setup (s) | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for size in args.sizes:
        result = vggstyle_run({"image_size": size, "single_scale": True, "num_iterations": args.iterations,
                               "precision": args.precision, "checkpoint": args.checkpoint})
        if "error" in result:
            print(f"| {size} | - | failed ({result['error']}) | - | {result['peak_rss_mb']:.0f} |", flush=True)
            continue
        width, height = result["size"]
        print(f"| {size} | {width}x{height} | {result['ms_per_iter']:.0f} | {result['first_step_s']:.1f} | "
              f"{result['peak_rss_mb']:.0f} |", flush=True)
    if args.full:
        size = max(args.sizes)
        result = vggstyle_run({"image_size": size, "num_iterations": args.full, "precision": args.precision})
        status = result.get("error") or f"completed in {result['wall_s']:.0f} s"
        print(f"\ndefault coarse-to-fine pipeline at {size} px, {args.full} iterations: {status}, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
