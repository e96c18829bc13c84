"""Errors a user can fix.

Everything the user can cause (a bad path, a bad image, a bad option) raises a
subclass of ``VggstyleError`` whose message is one line saying what is wrong and
what to do. The CLI prints that line and exits 2; the web API turns it into a 4xx.
Anything else is a bug and is allowed to show a traceback.
"""


class VggstyleError(Exception):
    """Base of all user-facing errors."""


class ConfigError(VggstyleError, ValueError):
    """An option has a value we cannot use."""


class ImageError(VggstyleError, ValueError):
    """An input image cannot be read or used."""


class ImageTooLarge(ImageError):
    """More pixels than the limit allows (the web answers 413); read from the header, before decoding."""

    def __init__(self, message: str, size: tuple[int, int] | None = None, limit: int | None = None):
        super().__init__(message)
        self.size = size
        self.limit = limit


class NotAnImage(ImageError):
    """Not an image in a format we read (the web answers 415)."""


class DamagedImage(ImageError):
    """Empty, truncated or corrupt: it claims to be an image but does not decode (the web answers 422)."""


class WeightsError(VggstyleError, RuntimeError):
    """The VGG19 weights cannot be found, fetched or understood."""


class OutputError(VggstyleError, OSError):
    """The result cannot be written where the user asked."""


def first_line(exc: BaseException) -> str:
    """An exception's first line for a one-line message (FFmpeg's and Pillow's run longer)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
