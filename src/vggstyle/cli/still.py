"""`vggstyle CONTENT STYLE...`: a thin adapter from argv to stylize() and back to files.

Options are generated from StyleConfig's fields, so defaults and help live in one
place. Every user error is one line on stderr and exit code 2; Ctrl-C stops the
run, saves the image as it is and exits 130.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import __version__
from ..config import INT, MAX_ITERATIONS, Range, number_problem
from ..errors import ConfigError, OutputError
from ..layers import LAYER_NAMES
from .common import (EXIT_INTERRUPTED, CtrlC, Parser, add_config_options, config_from_args, number_type,
                     run_reporting_errors)

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vggstyle",
        description="Repaint a content image in the style of one or more style images "
                    "(Gatys et al., VGG19). Run `vggstyle serve` for the web app.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"VGG19 layer names: {', '.join(n for n in LAYER_NAMES if n.startswith('relu'))} "
               "(also conv*_* and pool*).",
    )
    parser.add_argument("content", help="content image (its structure is kept)")
    parser.add_argument("styles", nargs="+", metavar="style", help="style image(s) (their textures are taken)")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", default="out.png",
                     help="result file; .png (with the parameters inside), .jpg or .webp (default: out.png)")
    out.add_argument("--save-every", type=number_type(INT), default=0, metavar="N",
                     help="also write the image every N iterations, as OUTPUT-stem_000N.ext")
    out.add_argument("--plot", metavar="FILE", help="write a PNG plot of the loss curves (needs matplotlib)")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only errors")
    out.add_argument("--version", action="version", version=f"vggstyle {__version__}")
    add_config_options(parser)
    return parser


class _ProgressBar:
    """tqdm on stderr with the loss terms; also writes --save-every snapshots."""

    def __init__(self, total: int, quiet: bool, output: Path, save_every: int, parameters: dict, ctrl_c: CtrlC):
        self.quiet, self.ctrl_c = quiet, ctrl_c
        self.output = output
        self.save_every = save_every
        self.parameters = parameters
        self.history: list[dict] = []
        self.total = total
        self.bar = None  # made at the first iteration, so a setup error prints no empty bar
        self.last = None

    def __call__(self, progress) -> bool:
        self.last = progress
        self.history.append({"step": progress.step, **progress.losses})
        if self.bar is None and not self.quiet:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit="it", dynamic_ncols=True, file=sys.stderr)
        if self.bar is not None:
            losses = progress.losses
            self.bar.set_postfix_str(f"content {losses['content']:.3g} style {losses['style']:.3g} "
                                     f"tv {losses['tv']:.3g} total {losses['total']:.4g}", refresh=False)
            self.bar.update(progress.step - self.bar.n)
        if self.save_every and progress.step % self.save_every == 0:
            from ..image import save_image
            name = f"{self.output.stem}_{progress.step:04d}{self.output.suffix}"
            save_image(progress.image(), self.output.with_name(name), self.parameters)
        return not self.ctrl_c.requested

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _check_plot(path: str | None) -> None:
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'vggstyle[plot]'") from None
    from ..image import check_output_path
    if Path(path).suffix.lower() != ".png":
        raise OutputError(f"--plot {path}: the plot is a PNG; give a file name ending in .png")
    check_output_path(path)


def write_plot(history: list[dict], path: str) -> None:
    """The loss curves as a PNG, written atomically like every other output."""
    import io

    from matplotlib.figure import Figure
    from PIL import Image

    from ..image import save_image
    from ..notebook import plot_losses

    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    plot_losses(fig.add_subplot(), history)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    save_image(Image.open(buffer).convert("RGB"), path)


def main(argv: list[str]) -> int:
    return run_reporting_errors("vggstyle", _run, build_parser().parse_args(argv), "aborted; nothing saved")


def _run(args: argparse.Namespace) -> int:
    from ..image import check_output_path, save_image

    config = config_from_args(args)
    config.validate(num_styles=len(args.styles))
    if problem := number_problem("--save-every", args.save_every, True, Range(0, MAX_ITERATIONS)):
        raise ConfigError(problem)
    output = check_output_path(args.output)
    _check_plot(args.plot)

    from ..device import set_threads
    from ..optimize import stylize  # torch is imported here, after the cheap checks

    set_threads(config.threads)  # the process's thread count is the command's choice, not the library's
    parameters = config.to_dict()
    with CtrlC("vggstyle: stopping after this iteration and saving the image (Ctrl-C again to abort)") as ctrl_c:
        bar = _ProgressBar(config.iterations, args.quiet, output, args.save_every, parameters, ctrl_c)
        start = time.perf_counter()
        try:
            result = stylize(args.content, args.styles, config, on_step=bar)
        finally:
            bar.close()
    seconds = time.perf_counter() - start
    save_image(result, output, result.info.get("vggstyle", parameters))
    if args.plot and bar.history:
        write_plot(bar.history, args.plot)
    if not args.quiet:
        info = result.info["vggstyle"]
        losses = bar.last.losses if bar.last else {}
        loss_text = " ".join(f"{k} {losses[k]:.4g}" for k in ("content", "style", "tv", "total") if k in losses)
        width, height = info["size"]
        print(f"{'stopped' if ctrl_c.requested else 'done'}: {info['iterations_done']} iterations in "
              f"{seconds:.1f} s ({info['iterations_done'] / seconds:.2f} it/s), {width}x{height} px, "
              f"{info['precision_used']} ({_kernels_text(info)}); {loss_text} -> {output}", file=sys.stderr)
    return EXIT_INTERRUPTED if ctrl_c.requested else 0


def _kernels_text(info: dict) -> str:
    return info["kernels_used"].replace("onednn", "oneDNN").replace("winograd", "Winograd")
