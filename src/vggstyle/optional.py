"""Packages only some features need (PyAV and OpenCV for video), imported when first used.

Why: still-image users should not load (or need) ~90 MB of FFmpeg and OpenCV wheels; when a
video feature runs without them, the user gets one line saying what to install, not a traceback.
"""

from __future__ import annotations

import importlib

from .errors import ConfigError

_EXTRAS = {"av": ("PyAV", "video"), "cv2": ("OpenCV", "video")}


def require(module: str):
    """Import ``module`` or raise a one-line ConfigError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        name, extra = _EXTRAS.get(module, (module, "video"))
        raise ConfigError(f"this needs {name}, which is not installed; run: pip install 'vggstyle[{extra}]'") from None
