"""Speed, side by side: vggstyle float32 on oneDNN only, float32 with Winograd where it wins, the
default (bf16 where the CPU has it), and the pastiche CLI.

    python benchmarks/speed.py                        # everything (~40 min on 2 cores)
    python benchmarks/speed.py --sizes 512 --skip-ttq # per-iteration table only
    python benchmarks/speed.py --sizes 512 --skip-quality --skip-ttq --also before=/path/to/old/src
    VGGSTYLE_BENCH_ISA=AVX2 python benchmarks/speed.py --sizes 512 --skip-quality --skip-ttq
        # every contender (pastiche too) with oneDNN limited to AVX2: an AVX2-only CPU's oneDNN

Three tables, contenders interleaved in one run (this machine is shared and noisy):
1. milliseconds per iteration (median over the steps after the first two; setup
   excluded), peak RSS, ratio to pastiche, at each size, single scale;
2. quality after the same number of iterations at 512 px: our objective's content and
   style terms measured in float32 on each output (pastiche optimizes its own
   weighting of the same terms, so read its row as a reference, not a race);
3. time to quality: seconds until the total loss at 512 px is within 5% of what 300
   single-scale float32 L-BFGS iterations reach, for the default pipeline
   (auto precision; one scale at 512 px), coarse-to-fine from 128 px, and that float32 baseline.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

from _harness import CONTENT, STYLE, child_env, median_ms, run_measured, vggstyle_run


def pastiche_run(size: int, iterations: int, output: Path) -> dict:
    argv = [sys.executable, "-m", "pastiche", "--content", str(CONTENT), "--styles", str(STYLE),
            "--output", str(output), "--size", str(size), "--num-steps", str(iterations), "--info-step", "1",
            "--device", "cpu", "--seed", "0"]
    out, code, rss = run_measured(argv, env=child_env())
    if code != 0:
        return {"error": f"exit {code}", "peak_rss_mb": rss}
    elapsed = [float(m.group(1)) for m in re.finditer(r"^\d+\s+([\d.]+)\s+[\d.eE+-]+$", out, re.M)]
    return {"ms_per_iter": median_ms(elapsed[1:]), "peak_rss_mb": rss}  # step 0 is setup only


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def quality_of(path: Path, size: int = 512) -> dict:
    from vggstyle.optimize import measure_losses
    return measure_losses(CONTENT, STYLE, image=path, image_size=size, single_scale=True, precision="fp32")


def per_iteration(sizes, iterations, rounds, workdir: Path, others: dict[str, str]) -> None:
    print("\n## Time per iteration (single scale, median ms; lower is better)\n")
    print("| size | contender | ms / iteration | vs pastiche | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for size in sizes:
        n = iterations if size <= 512 else max(4, iterations // 2)
        contenders = [("vggstyle fp32 oneDNN", {"precision": "fp32", "winograd": "off"}, None),
                      ("vggstyle fp32", {"precision": "fp32"}, None),
                      ("vggstyle default", {}, None)]
        contenders += [(f"{label} default", {}, source) for label, source in others.items()]
        rows: dict[str, list[dict]] = {"pastiche 1.6.0 (fp32)": [], **{name: [] for name, _, _ in contenders}}
        for _ in range(rounds):  # interleave the contenders
            rows["pastiche 1.6.0 (fp32)"].append(pastiche_run(size, n, workdir / "p.png"))
            for name, options, source in contenders:
                rows[name].append(vggstyle_run({"image_size": size, "single_scale": True, "num_iterations": n,
                                                **options}, source=source))
        best = {name: min(runs, key=lambda r: r.get("ms_per_iter", float("inf"))) for name, runs in rows.items()}
        base = best["pastiche 1.6.0 (fp32)"].get("ms_per_iter")
        for name, result in best.items():
            if "error" in result:
                print(f"| {size} | {name} | failed: {result['error']} | | |")
                continue
            ratio = f"{base / result['ms_per_iter']:.2f}x" if base else "-"
            label = name if "precision" not in result else f"{name} ({result['precision']}, {result['kernels']})"
            print(f"| {size} | {label} | {result['ms_per_iter']:.0f} | {ratio} | {result['peak_rss_mb']:.0f} |",
                  flush=True)


def equal_iterations(iterations: int, workdir: Path) -> None:
    print(f"\n## Quality after {iterations} iterations at 512 px, single scale (our objective, measured in fp32)\n")
    print("| contender | content term | style term | total (default weights) | wall (s) |")
    print("| --- | --- | --- | --- | --- |")
    from vggstyle.config import StyleConfig
    weights = StyleConfig()
    outputs = {}
    import time
    start = time.perf_counter()
    pastiche_run(512, iterations, workdir / "pastiche.png")
    outputs["pastiche 1.6.0"] = (workdir / "pastiche.png", time.perf_counter() - start)
    for name, precision in (("vggstyle fp32", "fp32"), ("vggstyle auto", "auto")):
        path = workdir / f"{precision}.png"
        result = vggstyle_run({"image_size": 512, "single_scale": True, "num_iterations": iterations,
                               "precision": precision}, record_images_at=str(path))
        outputs[name] = (path, result.get("wall_s", float("nan")))
    for name, (path, wall) in outputs.items():
        q = quality_of(path)
        total = weights.content_weight * q["content"] + weights.style_weight * q["style"] + weights.tv_weight * q["tv"]
        print(f"| {name} | {q['content']:.4f} | {q['style']:.5f} | {total:.4f} | {wall:.0f} |", flush=True)


def time_to_quality(baseline_iterations: int, budget: int) -> None:
    print(f"\n## Time to quality at 512 px (target: within 5% of {baseline_iterations} single-scale fp32 "
          "L-BFGS iterations)\n")
    baseline = vggstyle_run({"image_size": 512, "single_scale": True, "num_iterations": baseline_iterations,
                             "precision": "fp32"})
    target = 1.05 * min(baseline["losses"])
    print(f"baseline final loss {min(baseline['losses']):.4f} in {baseline['wall_s']:.0f} s; target {target:.4f}\n")
    print("| pipeline | iterations run | seconds to target | iterations to target | final loss | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    runs = {
        f"fp32 single scale (baseline, {baseline_iterations} it)": baseline,
        "default: auto precision (one scale at 512 px)": vggstyle_run({"image_size": 512,
                                                                       "num_iterations": budget}),
        "coarse-to-fine from 128 px, auto precision": vggstyle_run({"image_size": 512, "num_iterations": budget,
                                                                    "coarse_to_fine_above": 0,
                                                                    "min_scale": 128}),
    }
    for name, result in runs.items():
        reached = [(t, i + 1) for i, (t, loss, final) in
                   enumerate(zip(result["times"], result["losses"], result["final_scale"])) if final and loss <= target]
        seconds, steps = (f"{reached[0][0]:.0f}", str(reached[0][1])) if reached else ("not reached", "-")
        final = [loss for loss, final in zip(result["losses"], result["final_scale"]) if final][-1]
        print(f"| {name} | {len(result['losses'])} | {seconds} | {steps} | {final:.4f} | {result['wall_s']:.0f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--iterations", type=int, default=10, help="per timing run (halved above 512 px)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best is kept")
    parser.add_argument("--quality-iterations", type=int, default=100)
    parser.add_argument("--baseline-iterations", type=int, default=300)
    parser.add_argument("--budget", type=int, default=600, help="iterations the faster pipelines may use")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-ttq", action="store_true")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=SRC",
                        help="another checkout's src/ folder as one more contender, e.g. before=/tmp/old/src")
    args = parser.parse_args()
    import torch
    isa = os.environ.get("VGGSTYLE_BENCH_ISA")
    print(f"# vggstyle speed benchmark\n\nmachine: {cpu_name()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, bf16 in oneDNN here: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}"
          + (f"; every contender with ONEDNN_MAX_CPU_ISA={isa}" if isa else ""))
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        others = dict(item.split("=", 1) for item in args.also)
        per_iteration(args.sizes, args.iterations, args.rounds, Path(tmp), others)
        if not args.skip_quality:
            equal_iterations(args.quality_iterations, Path(tmp))
    if not args.skip_ttq:
        time_to_quality(args.baseline_iterations, args.budget)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
