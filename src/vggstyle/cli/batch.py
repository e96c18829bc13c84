"""`vggstyle batch`: many pairs, on this machine or on a Dask cluster, with a progress bar over jobs.

Exit codes: 0 every job done (or already done), 1 some job failed (see results.csv),
2 bad arguments (one line, nothing started), 130 stopped by Ctrl-C (a rerun continues).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ConfigError, VggstyleError
from .common import (EXIT_INTERRUPTED, EXIT_USAGE, Parser, add_config_options, add_where_options, config_from_args,
                     count_type, where_from_args)

EXIT_FAILED = 1


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
    add_where_options(run, "one job at a time on this device (auto, cpu, cuda, cuda:N); repeat for one job per "
                           "device at once", "one task per job on its workers")
    run.add_argument("--max-in-flight", type=count_type, metavar="N",
                     help="with --scheduler: tasks submitted at once (default: twice the workers' threads)")
    add_config_options(parser, skip=("device",))
    return parser


def _jobs(args: argparse.Namespace):
    from ..batch import jobs_from_pairs, jobs_from_paths

    if args.pairs and (args.contents or args.styles):
        raise ConfigError("give either --pairs or --contents with --styles, not both")
    if args.pairs:
        return jobs_from_pairs(args.pairs)
    if not args.contents or not args.styles:
        raise ConfigError("give --contents and --styles (files, folders or globs), or --pairs pairs.csv")
    return jobs_from_paths(args.contents, args.styles)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from ..batch.progress import JobBar

    bar = None
    try:
        config, runner = where_from_args(args, config_from_args(args))
        if "scheduler" in runner:
            runner["max_in_flight"] = args.max_in_flight or None
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
