"""GPU figures in one short run: ms per iteration at 512 and 1024 px, a default 512 px run, the largest size that fits.

    bash benchmarks/gpu.sh          # on a machine with a CUDA GPU
    python benchmarks/gpu.py --device cpu --sizes 128 --largest 256 384   # a dry run of the script itself
"""

from __future__ import annotations

import argparse

from _harness import vggstyle_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--default-iterations", type=int, default=300)
    parser.add_argument("--largest", type=int, nargs="+", default=[2048, 3072, 4096, 6144, 8192])
    args = parser.parse_args()
    import torch
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU (dry run)"
    print(f"# vggstyle on {name}, torch {torch.__version__}\n")
    print("| size | precision | ms / iteration | peak host RSS (MB) |")
    print("| --- | --- | --- | --- |")
    for size in args.sizes:
        for precision in ("fp32", "auto"):
            r = vggstyle_run({"device": args.device, "image_size": size, "single_scale": True,
                              "num_iterations": args.iterations, "precision": precision}, timeout=600)
            if "error" in r:
                print(f"| {size} | {precision} | failed: {r['error']} | |", flush=True)
            else:
                print(f"| {size} | {r['precision']} | {r['ms_per_iter']:.1f} | {r['peak_rss_mb']:.0f} |", flush=True)
    r = vggstyle_run({"device": args.device, "num_iterations": args.default_iterations}, timeout=600)
    if "error" in r:
        print(f"\ndefault run at 512 px: failed ({r['error']})")
    else:
        print(f"\ndefault run at 512 px ({args.default_iterations} iterations, coarse-to-fine, {r['precision']}): "
              f"{r['wall_s']:.1f} s including setup")
    fits = None
    for size in args.largest:
        r = vggstyle_run({"device": args.device, "image_size": size, "single_scale": True, "num_iterations": 2},
                         timeout=600)
        status = "fits" if "error" not in r else f"does not fit ({r['error']})"
        print(f"{size} px single scale, 2 iterations: {status}", flush=True)
        if "error" in r:
            break
        fits = size
    print(f"\nlargest size that fits: {fits} px" if fits else "\nnone of the sizes fit")


if __name__ == "__main__":
    main()
