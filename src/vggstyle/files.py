"""Files as every part of vggstyle writes and reads them: written whole or not at all, PNGs that
carry their parameters, content hashes. No torch, no PIL import beyond what a PNG needs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from PIL import Image, PngImagePlugin


def write_atomically(path: Path, write: bytes | Callable[[BinaryIO], None]) -> None:
    """A temporary file in the same folder, fsync, rename: readers see all of it or nothing, and a
    crash, Ctrl-C or kill leaves the destination as it was. ``write``: the bytes, or a function
    that writes them to the open file. The file gets the usual permissions (mkstemp makes 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, (bytes, bytearray)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def png_info(parameters: dict | None) -> PngImagePlugin.PngInfo:
    """The text chunks of a vggstyle PNG: 'Software', and the parameters as JSON in 'vggstyle'."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "vggstyle")
    if parameters is not None:
        info.add_text("vggstyle", json.dumps(parameters, sort_keys=True, default=str))
    return info


def png_bytes(image: Image.Image, parameters: dict | None = None, compress_level: int = 6) -> bytes:
    """A PNG in memory, with the parameters as save_image writes them (compress_level 1 for
    previews re-encoded every few iterations: there time matters more than size)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(parameters), compress_level=compress_level)
    return buffer.getvalue()


def rgb_from_bytes(data: bytes) -> Image.Image:
    """An image file held in memory (a frame or a style sent to a worker), decoded whole, as RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
