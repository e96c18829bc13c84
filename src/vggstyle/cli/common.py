"""What every command shares (`vggstyle`, `vggstyle video`, `vggstyle batch`): the parser whose
usage error is one line, the options generated from StyleConfig's specs, the Ctrl-C contract and
the exit codes. Below the commands, which import it; it imports none of them."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys

from ..config import BOOL, CHOICE, FLOAT, INT, PATHS, Option, StyleConfig, config_options, parse_text
from ..errors import ConfigError, VggstyleError

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
    described = option.help.replace("%", "%%")  # argparse formats help with %: a literal % is %%
    help_text = described + (f" (default: {shown})" if shown not in (None, "", False) else "")
    kwargs = {"help": help_text, "default": argparse.SUPPRESS, "dest": option.name}
    flags = [option.flag]
    if option.kind == BOOL:
        kwargs.update(action="store_true", help=described)
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
        with library_notes(prog):
            return run(args)
    except VggstyleError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: {aborted}", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def library_notes(prog: str):
    """The library's INFO lines (a first run's kernel calibration) on stderr as `prog: message`, for
    this command only: a Python caller sees them only if it configures logging."""
    logger = logging.getLogger("vggstyle.kernels")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


# ---------------------------------------------------------------------------- where the work runs
def count_type(text: str) -> int:
    if not (text.isdigit() and len(text.lstrip("0")) <= 7 and int(text) <= 1_000_000):
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a whole number from 0 to 1,000,000")
    return int(text)


def add_where_options(group, device_help: str, scheduled: str) -> None:
    """--device (repeated), --scheduler, --worker-resources, --retries: where a command's work runs."""
    group.add_argument("--device", action="append", dest="devices", metavar="DEVICE",
                       help=f"this machine: {device_help} (default: auto). With --scheduler: the workers' device")
    group.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS"), metavar="ADDRESS",
                       help=f"a Dask scheduler, tcp://HOST:PORT: {scheduled} "
                            "(default: $DASK_SCHEDULER_ADDRESS, else this machine)")
    group.add_argument("--worker-resources", action="append", default=[], metavar="NAME=N",
                       help="with --scheduler: run each task only where a worker offers this, e.g. GPU=1")
    group.add_argument("--retries", type=count_type, default=2, metavar="N",
                       help="with --scheduler: run a task that raised again up to N times (default: 2)")


def parse_resources(items: list[str]) -> dict[str, float]:
    """['GPU=1', 'MEMORY=8e9,FOO=2'] -> {'GPU': 1.0, 'MEMORY': 8e9, 'FOO': 2.0}."""
    resources = {}
    for part in (p.strip() for item in items for p in item.split(",") if p.strip()):
        name, _, amount = part.partition("=")
        try:
            resources[name.strip()] = float(amount)
        except ValueError:
            raise ConfigError(f"--worker-resources {part}: give NAME=NUMBER, e.g. GPU=1") from None
        if not name.strip():
            raise ConfigError(f"--worker-resources {part}: give NAME=NUMBER, e.g. GPU=1")
    return resources


def where_from_args(args: argparse.Namespace, config: StyleConfig) -> tuple[StyleConfig, dict]:
    """The config (with the workers' device) and the keyword arguments that say where the work runs
    (stylize_batch's and stylize_video's: devices, or scheduler, resources and retries)."""
    devices = args.devices or ["auto"]
    for device in devices:
        StyleConfig(device=device).validate()
    if not args.scheduler:
        if args.worker_resources:
            raise ConfigError("--worker-resources needs --scheduler (it says which Dask workers may run a job)")
        return config, {"devices": devices}
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError("--scheduler needs Dask's distributed package: pip install 'vggstyle[cluster]'") from None
    if len(devices) > 1:
        raise ConfigError("with --scheduler, give at most one --device (the device every worker uses)")
    return config.replace(device=devices[0]), {
        "scheduler": args.scheduler, "resources": parse_resources(args.worker_resources),
        "retries": args.retries}
