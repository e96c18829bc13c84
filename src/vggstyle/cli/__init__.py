"""The `vggstyle` command: one module a subcommand, each a thin shell over the Python API.

    vggstyle CONTENT STYLE...   still.py  -> vggstyle.stylize
    vggstyle video ...          video.py  -> vggstyle.stylize_video
    vggstyle batch ...          batch.py  -> vggstyle.stylize_batch
    vggstyle serve ...          serve.py  -> vggstyle.web

Only the chosen command's module is imported, and none of them imports torch, PyAV or FastAPI
before its arguments are checked: `vggstyle --help` and a mistyped option answer at once.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = ("video", "batch", "serve")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return importlib.import_module(f".{argv[0]}", __name__).main(argv[1:])
    return importlib.import_module(".still", __name__).main(argv)
