"""`vggstyle batch`: many pairs, on this machine or on a Dask cluster, with a progress bar over jobs.

Exit codes: 0 every job done (or already done), 1 some job failed (see results.csv),
2 bad arguments (one line, nothing started), 130 stopped by Ctrl-C (a rerun continues).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..config import StyleConfig
from ..errors import ConfigError, VggstyleError
from .common import EXIT_INTERRUPTED, EXIT_USAGE, Parser, add_config_options, config_from_args

EXIT_FAILED = 1


def _count(text: str) -> int:
    if not (text.isdigit() and len(text.lstrip("0")) <= 7 and int(text) <= 1_000_000):
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a whole number from 0 to 1,000,000")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vggstyle batch", description=(
        "Stylize every content with every style (or the pairs of a CSV) into OUTDIR as "
        "{content}__{style}.png, with OUTDIR/results.csv. Finished jobs are skipped on a rerun."))
    jobs = parser.add_argument_group("jobs")
    jobs.add_argument("--contents", nargs="+", action="extend", default=[], metavar="PATH",
                      help="content images or videos: files, folders, globs")
    jobs.add_argument("--styles", nargs="+", action="extend", default=[], metavar="PATH",
                      help="style images: files, folders, globs")
    jobs.add_argument("--pairs", metavar="CSV", help="instead: a CSV with columns content, style, optionally "
                      "output and any option (image_size, style_weight, ...) per row")
    jobs.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    jobs.add_argument("--force", action="store_true", help="redo jobs whose output already exists")
    jobs.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only failures")
    run = parser.add_argument_group("where the jobs run")
    run.add_argument("--device", action="append", dest="devices", metavar="DEVICE",
                     help="this machine: one job at a time on this device (auto, cpu, cuda, cuda:N); repeat "
                          "for one job per device at once (default: auto). With --scheduler: the workers' device")
    run.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS"), metavar="ADDRESS",
                     help="a Dask scheduler, tcp://HOST:PORT: one task per job on its workers "
                          "(default: $DASK_SCHEDULER_ADDRESS, else this machine)")
    run.add_argument("--worker-resources", action="append", default=[], metavar="NAME=N",
                     help="with --scheduler: run each task only where a worker offers this, e.g. GPU=1")
    run.add_argument("--retries", type=_count, default=2, metavar="N",
                     help="with --scheduler: run a task that raised again up to N times (default: 2)")
    run.add_argument("--max-in-flight", type=_count, metavar="N",
                     help="with --scheduler: tasks submitted at once (default: twice the workers' threads)")
    add_config_options(parser, skip=("device",))
    return parser


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


def _jobs(args: argparse.Namespace):
    from ..batch import jobs_from_pairs, jobs_from_paths

    if args.pairs and (args.contents or args.styles):
        raise ConfigError("give either --pairs or --contents with --styles, not both")
    if args.pairs:
        return jobs_from_pairs(args.pairs)
    if not args.contents or not args.styles:
        raise ConfigError("give --contents and --styles (files, folders or globs), or --pairs pairs.csv")
    return jobs_from_paths(args.contents, args.styles)


def _where(args: argparse.Namespace, config: StyleConfig) -> tuple[StyleConfig, dict]:
    """The base config (with the workers' device) and the keyword arguments of stylize_batch's runner."""
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
        "retries": args.retries, "max_in_flight": args.max_in_flight or None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from ..batch.progress import JobBar

    bar = None
    try:
        config, runner = _where(args, config_from_args(args))
        jobs = _jobs(args)
        from ..batch import check_jobs, stylize_batch
        check_jobs(jobs, config)  # stylize_batch checks again; here so that an error comes before the bar
        bar = JobBar(len(jobs), args.quiet)
        results = stylize_batch(jobs, args.outdir, config, force=args.force, on_result=bar, **runner)
    except VggstyleError as exc:
        if bar is not None:
            bar.close(clear=True)
        print(f"vggstyle batch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print("vggstyle batch: stopped; finished jobs are kept, run the same command again to continue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    bar.close()
    failed = [r for r in results if r.status == "failed"]
    if not args.quiet or failed:
        print(f"{bar.summary()} -> {os.path.join(args.outdir, 'results.csv')}", file=sys.stderr)
    return EXIT_FAILED if failed else 0
