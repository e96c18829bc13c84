"""What every command shares (`vggstyle`, `vggstyle video`, `vggstyle batch`): the parser whose
usage error is one line, the options generated from StyleConfig's specs, the Ctrl-C contract and
the exit codes. Below the commands, which import it; it imports none of them."""

from __future__ import annotations

import argparse
import signal
import sys

from ..config import BOOL, CHOICE, FLOAT, INT, PATHS, Option, StyleConfig, config_options, parse_text
from ..errors import VggstyleError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
GROUP_TITLES = {
    "weights": "loss weights (normalized: the defaults suit any --image-size)",
    "images": "images",
    "optimization": "optimization (one iteration = one forward + backward pass through VGG19)",
    "style": "style statistics, colour and masks",
    "scales": "coarse-to-fine scales (Gatys et al. 2017)",
    "network": "network",
    "hardware": "hardware",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not a usage block."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number_type(kind: str):
    """argparse type for an int or float: a bad value is one line naming what was expected."""
    def parse(text: str):
        try:
            return parse_text(kind, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"'{text}' is not {exc}") from None
    parse.__name__ = kind
    return parse


def _argument(option: Option) -> tuple[list[str], dict]:
    """The flags and add_argument keywords of one option, from its kind alone."""
    shown = option.shown
    help_text = option.help + (f" (default: {shown})" if shown not in (None, "", False) else "")
    kwargs = {"help": help_text, "default": argparse.SUPPRESS, "dest": option.name}
    flags = [option.flag]
    if option.kind == BOOL:
        kwargs.update(action="store_true", help=option.help)
    elif option.kind == CHOICE:
        kwargs["choices"] = option.choices
    elif option.kind in (INT, FLOAT):
        kwargs.update(type=number_type(option.kind), metavar="N" if option.kind == INT else "X")
    elif option.kind == PATHS:  # --style-mask a.png --style-mask b.png, or --style-masks a.png,b.png
        kwargs.update(action="append", metavar=option.metavar or "FILE")
        flags.insert(0, option.flag[:-1])
    else:  # text, lists, layers, paths: StyleConfig parses and checks them
        kwargs["metavar"] = option.metavar or "VALUE"
    return flags, kwargs


def add_config_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per StyleConfig field (all but ``skip``), in its group (shared with `vggstyle video`
    and `vggstyle batch`)."""
    groups = {}
    for option in config_options():
        if option.name in skip:
            continue
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(GROUP_TITLES[option.group])
        flags, kwargs = _argument(option)
        groups[option.group].add_argument(*flags, **kwargs)


def config_from_args(args: argparse.Namespace) -> StyleConfig:
    names = {o.name for o in config_options()}
    return StyleConfig(**{k: v for k, v in vars(args).items() if k in names})


class CtrlC:
    """While in use (a context manager): the first Ctrl-C asks the run to stop after the current
    iteration (``requested``) and says ``message``; a second one aborts (KeyboardInterrupt). The
    previous handler comes back on exit. The commands' hooks return ``not requested``."""

    def __init__(self, message: str):
        self.message, self.requested, self.previous = message, False, None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{self.message}", file=sys.stderr)

    def __enter__(self) -> "CtrlC":
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        signal.signal(signal.SIGINT, self.previous)
        return False


def run_reporting_errors(prog: str, run, args, aborted: str) -> int:
    """Every command's contract: a user error is one line on stderr and exit 2; a second Ctrl-C
    (the first stops cleanly inside ``run``) says what was kept and exits 130."""
    try:
        return run(args)
    except VggstyleError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: {aborted}", file=sys.stderr)
        return EXIT_INTERRUPTED
