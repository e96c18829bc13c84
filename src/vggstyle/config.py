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
CHECKPOINT_AUTO_PIXELS = 1_500_000  # about 1400x1050: where activations pass ~3 GB in bf16
STYLE_LOSSES = ("gram", "wasserstein", "sliced-wasserstein")
ORIGINAL_COLORS = ("none", "luminance", "histogram")
# Default step size per optimizer, in 0..255 pixel units. L-BFGS scales its own steps
# after the first; Adam on this scale works best at 5-10 (../shared/MEASUREMENTS.md).
DEFAULT_LEARNING_RATE = {"lbfgs": 1.0, "adam": 8.0}
# Averaging the iterates (EMA) smooths Adam's noisy steps: at 256 px, 150 iterations, decay 0.9
# lowered Adam's final total loss by 7%. L-BFGS iterates are already smooth: no decay gained
# more than 0.1% there, and 0.95 cost 3%. So on for Adam, off for L-BFGS.
DEFAULT_EMA_DECAY = {"lbfgs": 0.0, "adam": 0.9}


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
    ema_decay: float | None = _opt(None, "the result is an exponential moving average of the iterates with "
                                   "this decay; 0: the last iterate (default: 0.9 for adam, 0 for lbfgs)",
                                   "optimization")
    num_iterations: int | None = _opt(None, "iterations in all (or give --epochs)", "optimization")
    epochs: int | None = _opt(None, "epochs to run; iterations = epochs x steps per epoch", "optimization")
    steps_per_epoch: int = _opt(100, "iterations per epoch (with --epochs)", "optimization")
    seed: int | None = _opt(None, "random seed: the same seed gives the same image on the CPU", "optimization")

    # Style statistics, colour and spatial control.
    style_loss: str = _opt("gram", "style statistic: gram (Gatys), wasserstein (Gaussian W2) or "
                           "sliced-wasserstein (Heitz et al. 2021)", "style", choices=STYLE_LOSSES)
    original_colors: str = _opt("none", "keep the content's colours: luminance (transfer on luminance only) or "
                                "histogram (recolour the style to the content first)", "style",
                                choices=ORIGINAL_COLORS)
    style_masks: list = _opt([], "one grayscale mask per style image, white where that style applies "
                             "(comma-separated paths)", "style", type="paths")

    # Coarse-to-fine (Gatys et al. 2017): optimize small first, upsample, refine.
    single_scale: bool = _opt(False, "optimize at --image-size only, at any size (the classic method)", "scales")
    coarse_to_fine_above: int = _opt(1024, "coarse-to-fine starts automatically above this --image-size; "
                                     "0: always (at and below it one scale reached a lower loss sooner)",
                                     "scales")
    min_scale: int = _opt(256, "long side of the first, coarsest scale in px", "scales")
    scale_steps: int | None = _opt(None, "number of scales, coarse-to-fine at any size (default: steps of "
                                   "about sqrt(2) from --min-scale up to --image-size)", "scales")
    scales: list = _opt([], "explicit long sides per scale, e.g. 128,256,512 (overrides the above)",
                        "scales", type="ints")
    coarse_iterations_factor: float = _opt(1.25, "each coarser scale gets this many times the iterations "
                                           "of the next finer one (within --num-iterations)", "scales")

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
    checkpoint: str = _opt("auto", "recompute each VGG block in the backward pass to save memory (about a third more time); "
                           f"auto: for scales over {CHECKPOINT_AUTO_PIXELS / 1e6:g} megapixels", "hardware",
                           choices=("auto", "on", "off"))

    def __post_init__(self) -> None:
        # Accept the string forms the CLI and web form send, so they share one parser.
        try:
            self.content_layers = parse_layer_weights(self.content_layers)
            self.style_layers = parse_layer_weights(self.style_layers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        masks = [self.style_masks] if isinstance(self.style_masks, str) else list(self.style_masks or [])
        self.style_masks = [p.strip() for item in masks for p in str(item).split(",") if p.strip()]
        if isinstance(self.scales, str):
            self.scales = [int(x) for x in _parse_floats(self.scales, "scales")]
        self.scales = [int(x) for x in (self.scales or [])]
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

    def scale_schedule(self) -> list[tuple[int, int]]:
        """[(long side in px, iterations)] from coarse to fine; the iterations add up to ``iterations``.

        One scale up to coarse_to_fine_above (default 1024 px): there, single-scale runs reached
        a lower loss sooner than coarse-to-fine ones (benchmarks/speed.py, README). Above it,
        or with --scale-steps, sizes step by about sqrt(2) (doubling the pixel count) from
        min_scale up to image_size: the coarse scales lay out the large-scale structure that
        VGG's receptive field cannot see at print sizes, and cost little. Coarser scales are cheap (half the pixels, half the time), so they get more
        iterations: each gets coarse_iterations_factor times the next finer one.
        """
        if self.single_scale or (not self.scales and self.scale_steps is None
                                 and self.image_size <= self.coarse_to_fine_above):
            sizes = [self.image_size]
        elif self.scales:
            sizes = [s for s in self.scales if s < self.image_size] + [self.image_size]
        else:
            low = min(self.min_scale, self.image_size)
            steps = self.scale_steps
            if steps is None:
                steps = max(1, round(2 * math.log2(self.image_size / low)) + 1)
            if steps == 1 or low == self.image_size:
                sizes = [self.image_size]
            else:
                ratio = (self.image_size / low) ** (1 / (steps - 1))
                sizes = sorted({round(low * ratio ** i) for i in range(steps - 1)} | {self.image_size})
        total = self.iterations
        sizes = sizes[-total:]  # never more scales than iterations
        shares = [self.coarse_iterations_factor ** (len(sizes) - 1 - i) for i in range(len(sizes))]
        counts = [max(1, math.floor(total * s / sum(shares))) for s in shares]
        counts[-1] += total - sum(counts)  # rounding leftovers go to the final scale
        while counts[-1] < 1:  # only when many scales share few iterations
            k = max(range(len(counts) - 1), key=lambda i: counts[i])
            counts[k] -= 1
            counts[-1] += 1
        return list(zip(sizes, counts))

    def style_side(self, long_side: int) -> int:
        """Long side of the style images when the output's long side is ``long_side`` (--style-scale)."""
        return max(16, round(long_side * self.style_scale))

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE[self.optimizer]

    @property
    def ema(self) -> float:
        return self.ema_decay if self.ema_decay is not None else DEFAULT_EMA_DECAY[self.optimizer]

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
    def validate(self, num_styles: int | None = None, num_masks: int | None = None) -> "StyleConfig":
        """Raise ConfigError with one line naming the bad option and what to do; return self.

        num_masks: the masks given as images rather than as style_masks paths (stylize's Python API).
        """
        num_masks = len(self.style_masks) if num_masks is None else num_masks
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
            if num_masks and num_masks != num_styles:
                raise ConfigError(f"--style-masks has {num_masks} mask(s) for {num_styles} style "
                                  "image(s): give one per style image")
            if self.style_blend_weights and len(self.style_blend_weights) != num_styles:
                raise ConfigError(f"--style-blend-weights has {len(self.style_blend_weights)} values "
                                  f"for {num_styles} style image(s): give one per style image")
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ConfigError(f"--image-size must be a whole number of at least 16 px, got {self.image_size}")
        if not isinstance(self.coarse_to_fine_above, int) or self.coarse_to_fine_above < 0:
            raise ConfigError(f"--coarse-to-fine-above must be a whole number >= 0, got {self.coarse_to_fine_above}")
        if self.min_scale < 16:
            raise ConfigError(f"--min-scale must be at least 16 px, got {self.min_scale}")
        if self.scale_steps is not None and (not isinstance(self.scale_steps, int) or self.scale_steps < 1):
            raise ConfigError(f"--scale-steps must be a whole number >= 1, got {self.scale_steps}")
        if self.scales and (any(s < 16 for s in self.scales) or self.scales != sorted(set(self.scales))):
            raise ConfigError(f"--scales must rise strictly and start at 16 px or more, got {self.scales}")
        if not (_finite_nonneg(self.coarse_iterations_factor) and self.coarse_iterations_factor > 0):
            raise ConfigError("--coarse-iterations-factor must be a finite number > 0")
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
        if self.ema_decay is not None and not (_finite_nonneg(self.ema_decay) and self.ema_decay < 1):
            raise ConfigError(f"--ema-decay must be a number from 0 up to (not including) 1, got {self.ema_decay}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("pooling", POOLINGS),
                              ("weights_source", WEIGHT_SOURCES), ("precision", PRECISIONS),
                              ("weights_preprocessing", PREPROCESSINGS), ("style_loss", STYLE_LOSSES),
                              ("original_colors", ORIGINAL_COLORS), ("checkpoint", ("auto", "on", "off"))):
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
