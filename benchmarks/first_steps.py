"""The loss over the first iterations, to compare L-BFGS starts (before/after a change) on one plot.

    .venv/bin/python benchmarks/first_steps.py --label after --json out/after.json
    PYTHONPATH=<old checkout>/src .venv/bin/python benchmarks/first_steps.py --label before --json out/before.json
    .venv/bin/python benchmarks/first_steps.py --plot docs/images/first_steps.png out/before.json out/after.json

Runs stylize() through its public API only (so it works on older checkouts too): tubingen x
starry night, defaults (bf16 where the CPU has it), seed 0; records the weighted total loss and
the unweighted style distance the README reports after 10 and 50 iterations.
"""

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ROOT / "examples" / "content" / "tubingen.jpg"
STYLE = ROOT / "examples" / "style" / "starry_night.jpg"


def record(label: str, size: int, iterations: int, path: str) -> None:
    import vggstyle
    totals = []
    vggstyle.stylize(CONTENT, STYLE, image_size=size, num_iterations=iterations, seed=0,
                     on_step=lambda p: totals.append(p.losses["total"]))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"label": label, "size": size, "total": totals}))
    marks = [m for m in (1, 5, 10, 20, 50, 100, 300) if m <= len(totals)]
    print(f"{label}: " + ", ".join(f"after {m}: {totals[m - 1]:.3f}" for m in marks))


def plot(out: str, inputs: list[str]) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 3.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for name in inputs:
        data = json.loads(Path(name).read_text())
        ax.plot(range(1, len(data["total"]) + 1), data["total"], label=data["label"])
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("total loss (weighted)")
    ax.set_title(f"tubingen x starry night, {data['size']} px, defaults")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.savefig(out)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--json", default="out/first_steps.json")
    parser.add_argument("--plot", metavar="PNG", help="plot the JSON files given as arguments instead")
    parser.add_argument("inputs", nargs="*")
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, args.inputs)
    else:
        record(args.label, args.image_size, args.iterations, args.json)


if __name__ == "__main__":
    main()
