"""vggstyle: neural style transfer (Gatys et al.) on the original VGG19 ImageNet weights.

Public API::

    import vggstyle
    vggstyle.stylize("content.jpg", "style.jpg", image_size=256).save("out.png")

The torch-backed names are imported on first use, so that the CLI can validate its
arguments (and print --help) without paying torch's import time.
"""

from .openmp import spin_less

# First, before any module imports torch: libgomp reads its spin count when torch loads it.
spin_less()

from .config import StyleConfig  # noqa: E402
from .errors import ConfigError, ImageError, OutputError, VggstyleError, WeightsError  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "stylize": "optimize", "Progress": "optimize",
    "load_image": "image", "save_image": "image", "read_parameters": "image",
    "show": "notebook", "stylize_batch": "batch",
    "stylize_video": "video", "VideoConfig": "video", "show_video": "video.notebook",
}

__all__ = ["stylize", "stylize_batch", "stylize_video", "StyleConfig", "VideoConfig", "Progress", "load_image",
           "save_image", "read_parameters", "show", "show_video",
           "VggstyleError", "ConfigError", "ImageError", "OutputError", "WeightsError"]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vggstyle' has no attribute '{name}'")
