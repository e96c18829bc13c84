"""`vggstyle video INPUT STYLE [STYLE ...] -o OUTPUT`: the thin adapter from argv to stylize_video().

Every still-image option (generated from StyleConfig by cli.add_config_options) plus the video
ones (generated from VideoConfig). One progress bar over the frames of each pass ("pass 2/3"),
with the frame's iteration, its losses and an ETA. Ctrl-C stops after the current iteration, keeps
the finished frames in the work dir and exits 130 (the same command continues); every user error
is one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import MISSING, fields

from ..config import FLOAT, INT
from ..video import SpreadProgress, VideoConfig, video_fields
from .common import (EXIT_INTERRUPTED, CtrlC, Parser, add_config_options, add_where_options, config_from_args,
                     number_type, run_reporting_errors, where_from_args)

_KINDS = {"float": FLOAT, "float | None": FLOAT, "int": INT, "int | None": INT}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vggstyle video",
                     description="Stylize a video without flicker (Ruder et al. 2016: optical flow, a temporal "
                                 "loss, warped starts), keeping its frame rate and sound.")
    parser.add_argument("input", help="video (mp4, mov, mkv, avi, webm, gif), folder of frames, or a pattern "
                                      "like frames/%%04d.png")
    parser.add_argument("styles", nargs="+", metavar="style", help="style image(s)")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", required=True,
                     help=".mp4 (H.264), .webm (VP9), .gif, or a folder name without extension (PNG frames)")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only errors")
    group = parser.add_argument_group("video")
    for f in video_fields():
        default = None if f.default is MISSING else f.default
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS,
                  "help": f.metadata["help"] + (f" (default: {default})" if default not in (None, []) else "")}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        elif f.type in _KINDS:
            kwargs.update(type=number_type(_KINDS[f.type]), metavar="N" if _KINDS[f.type] == INT else "X")
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        group.add_argument(f"--{f.name.replace('_', '-')}", **kwargs)
    add_where_options(parser.add_argument_group("where it runs (a clip spread over workers: docs/video.md)"),
                      "the device (auto, cpu, cuda, cuda:N); repeat to spread the clip over several, one chunk of "
                      "frames per device at once", "the clip cut into chunks, one task per chunk and pass on its workers")
    add_config_options(parser, skip=("device",))
    return parser


def video_config_from_args(args: argparse.Namespace) -> VideoConfig:
    names = {f.name for f in fields(VideoConfig)}
    return VideoConfig(**{k: v for k, v in vars(args).items() if k in names})


class _Bar:
    """tqdm over the frames of a pass (a new bar for each pass); its postfix shows the frame's
    iteration and losses."""

    def __init__(self, quiet: bool, ctrl_c: CtrlC):
        self.quiet, self.ctrl_c = quiet, ctrl_c
        self.bar = None
        self.pass_number = None

    def _ensure(self, progress):
        if self.quiet or (self.bar is not None and self.pass_number == progress.pass_number):
            return
        from tqdm import tqdm
        self.close()
        self.pass_number = progress.pass_number
        label = f"pass {progress.pass_number}/{progress.passes}" if progress.passes > 1 else None
        self.bar = tqdm(total=progress.pass_frames or progress.frames, desc=label, unit="frame", dynamic_ncols=True,
                        file=sys.stderr)

    def step(self, progress) -> bool:
        if isinstance(progress, SpreadProgress):
            return self.spread(progress)
        self._ensure(progress)
        if self.bar is not None:
            text = " ".join(f"{k} {v:.3g}" for k, v in progress.losses.items() if k != "total")
            kind = "first" if progress.first else "frame"
            self.bar.set_postfix_str(f"{kind} {progress.index + 1} it {progress.step}/{progress.steps} {text}")
        return not self.ctrl_c.requested

    def spread(self, progress: SpreadProgress) -> bool:
        """A clip over many workers: one bar over its chunks' passes."""
        if not self.quiet and self.bar is None:
            from tqdm import tqdm
            self.pass_number = "spread"
            self.bar = tqdm(total=progress.total, desc=f"{progress.chunks} chunks x passes", unit="task",
                            dynamic_ncols=True, file=sys.stderr)
        if self.bar is not None:
            self.bar.update(progress.done - self.bar.n)
            eta = "" if progress.eta_seconds is None else f", about {progress.eta_seconds:.0f} s left"
            self.bar.set_postfix_str(f"{progress.running} running{eta}")
        return not self.ctrl_c.requested

    def frame(self, done) -> bool:
        if self.pass_number == "spread":
            return not self.ctrl_c.requested
        self._ensure(done)
        if self.bar is not None:
            self.bar.update(1)
        return not self.ctrl_c.requested

    def message(self, text: str) -> None:
        if not self.quiet:
            print(f"vggstyle video: {text}", file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[2:] if argv is None else list(argv))
    return run_reporting_errors("vggstyle video", _run, args, "aborted; the finished frames are kept in the work dir")


def _run(args: argparse.Namespace) -> int:
    config, where = where_from_args(args, config_from_args(args))
    config.validate(num_styles=len(args.styles))
    video = video_config_from_args(args).validate()

    from ..device import set_threads
    from ..video import stylize_video  # torch, PyAV and OpenCV are imported after the cheap checks

    set_threads(config.threads)  # the process's thread count is the command's choice, as in `vggstyle`

    with CtrlC("vggstyle video: stopping; the finished frames are kept (Ctrl-C again to abort now)") as ctrl_c:
        bar = _Bar(args.quiet, ctrl_c)
        start = time.perf_counter()
        try:
            summary = stylize_video(args.input, args.styles, args.output, config, video=video,
                                    on_frame=bar.frame, on_step=bar.step, on_message=bar.message, **where)
        finally:
            bar.close()
    for warning in summary.warnings:  # damaged media: said even with --quiet, once, at the end
        print(f"vggstyle video: warning: {warning}", file=sys.stderr)
    if summary.stopped:
        where = (f"after {summary.frames} of {summary.total_frames} frames" if summary.pass_number == 1 else
                 f"in pass {summary.pass_number} of {summary.passes} (the first pass is complete)")
        print(f"vggstyle video: stopped {where}; run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(_done_line(summary, time.perf_counter() - start), file=sys.stderr)
    return 0


def _done_line(summary, seconds: float) -> str:
    new = summary.frame_seconds[summary.resumed:]
    first = f"first frame {new[0]:.1f} s" if new and summary.resumed == 0 else ""
    rest = new[1:] if summary.resumed == 0 else new
    rest_text = f"the rest {sum(rest) / len(rest):.1f} s/frame" if rest else ""
    timing = ", ".join(t for t in (first, rest_text) if t)
    resumed = f" ({summary.resumed} resumed)" if summary.resumed else ""
    cuts = f"; shot cuts at frames {', '.join(map(str, summary.cuts))}" if summary.cuts else ""
    width, height = summary.size
    passes = f", {summary.passes} passes" if summary.passes > 1 else ""
    return (f"done: {summary.frames} frames{resumed}{passes} in {seconds:.1f} s ({timing}), {width}x{height} px, "
            f"{float(summary.fps):g} fps{cuts} -> {summary.output}")
