"""StyleConfig: every knob, its default and its one-line doc, in one place.

The CLI parser and the web form are generated from the field metadata below, so a
default changed here changes everywhere. No torch import: validating a config must
be cheap enough to run on every keystroke of a form.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .layers import format_layer_weights, parse_layer_weights

DEFAULT_ITERATIONS = 300
OPTIMIZERS = ("lbfgs", "adam")
POOLINGS = ("max", "avg")
WEIGHT_SOURCES = ("caffe", "torchvision")
PREPROCESSINGS = ("torchvision", "caffe")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INIT_KEYWORDS = ("content", "random")
# Default step size per optimizer, in 0..255 pixel units. L-BFGS scales its own steps
# after the first; Adam on this scale works best at 5-10 (../shared/MEASUREMENTS.md).
DEFAULT_LEARNING_RATE = {"lbfgs": 1.0, "adam": 8.0}


def _opt(default, help, group, **extra) -> Any:
    """A dataclass field that also carries its CLI/web metadata."""
    meta = {"help": help, "group": group, **extra}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class StyleConfig:
    """The knobs of one stylization. Build it, then call ``validate()`` (stylize does)."""

    # Loss weights. The loss terms are normalized (see losses.py) so that these
    # defaults give a balanced result at any image size.
    content_weight: float = _opt(1.0, "how strongly the result keeps the content image's structure", "weights")
    style_weight: float = _opt(40.0, "how strongly the result takes the style images' textures", "weights")
    tv_weight: float = _opt(5.0, "total-variation weight: smooths high-frequency noise", "weights")

    # Images.
    image_size: int = _opt(512, "long side of the output in pixels", "images")
    style_scale: float = _opt(1.0, "style image long side, relative to --image-size", "images")
    style_blend_weights: list = _opt([], "relative weight per style image, e.g. 3,7 (default: equal)", "images",
                                     type="floats")
    init: str = _opt("content", "starting image: content, random (seeded noise) or an image path", "images",
                   metavar="INIT")
    max_input_pixels: int = _opt(100_000_000, "refuse input images with more pixels than this", "images")

    # Optimization.
    optimizer: str = _opt("lbfgs", "lbfgs (best per iteration) or adam", "optimization", choices=OPTIMIZERS)
    learning_rate: float | None = _opt(None, "step size (default: 1 for lbfgs, 8 for adam)", "optimization")
    num_iterations: int | None = _opt(None, "iterations in all (or give --epochs)", "optimization")
    epochs: int | None = _opt(None, "epochs to run; iterations = epochs x steps per epoch", "optimization")
    steps_per_epoch: int = _opt(100, "iterations per epoch (with --epochs)", "optimization")
    seed: int | None = _opt(None, "random seed: the same seed gives the same image on the CPU", "optimization")

    # Network.
    content_layers: dict = _opt({"relu4_2": 1.0}, "content layers, optionally name:weight", "network",
                                type="layers")
    style_layers: dict = _opt({"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0, "relu5_1": 1.0},
                              "style layers, optionally name:weight", "network", type="layers")
    pooling: str = _opt("max", "pooling in the network: max or avg", "network", choices=POOLINGS)
    weights_source: str = _opt("caffe", "caffe (original VGG19, bundled) or torchvision (downloaded once)",
                               "network", choices=WEIGHT_SOURCES)
    weights: str | None = _opt(None, "local VGG19 state dict in torchvision's layout (.pth or .safetensors)",
                               "network", metavar="PATH")
    weights_preprocessing: str = _opt("torchvision", "input convention of --weights: torchvision (RGB, "
                                      "ImageNet mean/std) or caffe (BGR 0..255 minus mean)", "network",
                                      choices=PREPROCESSINGS)

    # Hardware.
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N", "hardware", metavar="DEVICE")
    precision: str = _opt("auto", "auto (bf16 where the hardware has it), fp32, bf16 or fp16", "hardware",
                          choices=PRECISIONS)
    threads: int | None = _opt(None, "CPU threads (default: all physical cores)", "hardware")

    def __post_init__(self) -> None:
        # Accept the string forms the CLI and web form send, so they share one parser.
        try:
            self.content_layers = parse_layer_weights(self.content_layers)
            self.style_layers = parse_layer_weights(self.style_layers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if isinstance(self.style_blend_weights, str):
            self.style_blend_weights = _parse_floats(self.style_blend_weights, "style blend weights")
        self.style_blend_weights = list(self.style_blend_weights or [])

    # ------------------------------------------------------------------ derived
    @property
    def iterations(self) -> int:
        """Total optimizer steps: --num-iterations, else epochs x steps per epoch, else the default."""
        if self.num_iterations is not None:
            return self.num_iterations
        if self.epochs is not None:
            return self.epochs * self.steps_per_epoch
        return DEFAULT_ITERATIONS

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE[self.optimizer]

    def replace(self, **changes) -> "StyleConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-able values (layers as 'name:w' strings), e.g. for the PNG text chunk."""
        out = dataclasses.asdict(self)
        out["content_layers"] = format_layer_weights(self.content_layers)
        out["style_layers"] = format_layer_weights(self.style_layers)
        return out

    # --------------------------------------------------------------- validation
    def validate(self, num_styles: int | None = None) -> "StyleConfig":
        """Raise ConfigError with one line naming the bad option and what to do; return self."""
        for name in ("content_weight", "style_weight", "tv_weight", "style_scale"):
            value = getattr(self, name)
            if not _finite_nonneg(value):
                raise ConfigError(f"--{_flag(name)} must be a finite number >= 0, got {value}")
        if self.style_scale <= 0:
            raise ConfigError("--style-scale must be > 0")
        if self.content_weight == 0 and self.style_weight == 0:
            raise ConfigError("--content-weight and --style-weight are both 0: nothing to optimize")
        for w in self.style_blend_weights:
            if not _finite_nonneg(w):
                raise ConfigError(f"--style-blend-weights must be finite numbers >= 0, got {w}")
        if self.style_blend_weights and sum(self.style_blend_weights) <= 0:
            raise ConfigError("--style-blend-weights must not all be 0")
        if num_styles is not None:
            if num_styles < 1:
                raise ConfigError("give at least one style image")
            if self.style_blend_weights and len(self.style_blend_weights) != num_styles:
                raise ConfigError(f"--style-blend-weights has {len(self.style_blend_weights)} values "
                                  f"for {num_styles} style image(s): give one per style image")
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ConfigError(f"--image-size must be a whole number of at least 16 px, got {self.image_size}")
        if self.max_input_pixels < 1:
            raise ConfigError("--max-input-pixels must be >= 1")
        for name in ("num_iterations", "epochs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{_flag(name)} must be a whole number >= 1, got {value}")
        if not isinstance(self.steps_per_epoch, int) or self.steps_per_epoch < 1:
            raise ConfigError(f"--steps-per-epoch must be a whole number >= 1, got {self.steps_per_epoch}")
        if self.num_iterations is not None and self.epochs is not None:
            raise ConfigError("give either --num-iterations or --epochs (with --steps-per-epoch), not both")
        if self.learning_rate is not None and not (_finite_nonneg(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"--learning-rate must be a finite number > 0, got {self.learning_rate}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("pooling", POOLINGS),
                              ("weights_source", WEIGHT_SOURCES), ("precision", PRECISIONS),
                              ("weights_preprocessing", PREPROCESSINGS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"unknown --{_flag(name)} '{value}': choose one of {', '.join(allowed)}")
        if not isinstance(self.init, str) or not self.init:
            raise ConfigError("--init must be content, random or an image path")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"--threads must be a whole number >= 1, got {self.threads}")
        if not (self.device == "auto" or self.device == "cpu" or self.device == "cuda"
                or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ConfigError(f"unknown --device '{self.device}': choose auto, cpu, cuda or cuda:N")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ConfigError(f"--seed must be a whole number, got {self.seed}")
        return self


def _finite_nonneg(value) -> bool:
    try:
        return math.isfinite(value) and value >= 0
    except TypeError:
        return False


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, e.g. 3,7; got '{text}'") from None


def config_fields() -> list[dataclasses.Field]:
    """The fields in declaration order, for building the CLI parser and the web form."""
    return list(dataclasses.fields(StyleConfig))
