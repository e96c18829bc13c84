"""vggstyle: neural style transfer (Gatys et al.) on the original VGG19 ImageNet weights.

Public API::

    import vggstyle
    vggstyle.stylize("content.jpg", "style.jpg", image_size=256).save("out.png")
"""

from .config import StyleConfig
from .errors import ConfigError, ImageError, OutputError, VggstyleError, WeightsError
from .image import load_image, read_parameters, save_image
from .optimize import Progress, stylize

__all__ = [
    "stylize", "StyleConfig", "Progress", "load_image", "save_image", "read_parameters",
    "VggstyleError", "ConfigError", "ImageError", "OutputError", "WeightsError",
]
__version__ = "0.1.0"
