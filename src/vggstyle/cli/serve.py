"""`vggstyle serve`: the web app's command line (the app itself is vggstyle.web).

Exit status: 2 for a bad option, a missing [web] extra or a port that is taken (one line each,
before anything starts); 130 after Ctrl-C, 0 after SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from dataclasses import fields

from ..config import FLOAT, StyleConfig
from ..errors import ConfigError
from ..web.server import LOOPBACK_NAMES, bind, create_app, serve_until_signal
from ..web.uploads import Limits
from .common import EXIT_INTERRUPTED, EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vggstyle serve", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve the vggstyle web page and HTTP API (OpenAPI at /docs). Binds 127.0.0.1: only this "
                    "machine can reach it unless --host says otherwise.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--device", action="append", dest="devices", metavar="DEVICE",
                        help="run a worker on this device (auto, cpu, cuda, cuda:N); repeat for one worker per "
                             "device (default: one worker on auto)")
    parser.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS"), metavar="ADDRESS",
                        help="a Dask scheduler, tcp://HOST:PORT: each video job is spread over its workers, chunk "
                             "by chunk (default: $DASK_SCHEDULER_ADDRESS, else this machine)")
    group = parser.add_argument_group("limits")
    for f in fields(Limits):
        is_float = f.metadata["kind"] == FLOAT
        group.add_argument(f"--{f.name.replace('_', '-')}", type=float if is_float else int, default=f.default,
                           help=f.metadata["help"], metavar="X" if is_float else "N")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="how much the server logs")
    return parser


def _check_args(parser, args) -> Limits:
    """The serve options, checked before anything starts: one line and exit 2 for a bad one."""
    try:
        limits = Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)}).check()
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    for device in args.devices or ["auto"]:
        try:
            StyleConfig(device=device).validate()
        except ConfigError as exc:
            parser.error(str(exc))
    if args.scheduler and importlib.util.find_spec("distributed") is None:
        parser.error("--scheduler needs Dask's distributed package: pip install 'vggstyle[cluster]'")
    return limits


def _missing_web_extra() -> str | None:
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart)
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return exc.name
    return None


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    limits = _check_args(parser, args)
    missing = _missing_web_extra()
    if missing:
        print(f"vggstyle serve: error: needs the web extra ({missing} is missing): pip install 'vggstyle[web]'",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"vggstyle serve: error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
              "choose another --port", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    loopback = args.host.strip("[]") in LOOPBACK_NAMES
    app = create_app(limits, args.devices or ["auto"], allowed_hosts=LOOPBACK_NAMES if loopback else None,
                     scheduler=args.scheduler or None)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"vggstyle: serving on http://{shown}:{port}/ (API docs at /docs; Ctrl-C to stop)", file=sys.stderr)
    if not loopback:
        print("vggstyle: warning: listening beyond this machine: anyone who can reach it can run jobs",
              file=sys.stderr)
    interrupted, workers_ended = serve_until_signal(app, sock, args.log_level)
    code = EXIT_INTERRUPTED if interrupted else 0
    print("vggstyle: stopped", file=sys.stderr)
    if not workers_ended:  # a worker is inside a long step (or loading the network): do not wait for it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
