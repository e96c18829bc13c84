"""StyleConfig: every knob, its default and its one-line doc, in one place.

Each field declares an Option spec: its kind (int, float, choice, ...), group, help, the
default to show where the field's own default is None, and whether a web client may set
it. The CLI parser, the web form's checks and the page's fields are generated from these
specs, so a default changed here changes everywhere, and what a client may send is a
decision written next to the field, not inferred from its type or help text. No torch
import: validating a config must be cheap enough to run on every keystroke of a form.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .layers import format_layer_weights, parse_layer_weights

# 250 at 512 px: 50 at 256 px, then 200 (half_size_share): on four untuned pairs within 5.7% of the content
# and 1.7% of the style distance 300 single-scale iterations reached, in about 70% of their time
# (docs/speed.md, benchmarks/schedule.py).
DEFAULT_ITERATIONS = 250
# Content weight: 1.25 for an image since the range term (with the clamp no longer cutting the style
# off, 1 left the content 1.7-6.7% further from the photo than the old default on untuned pairs;
# 1.25 is 1.2-6.7% closer, the style still 12-73% closer: docs/speed.md, session 14). A video's
# frames keep 1: they start from the content or the frame before and take 10 iterations, and 1.25
# cost them 17% of their style distance and 4% more flicker (docs/video.md).
DEFAULT_CONTENT_WEIGHT = 1.25
VIDEO_CONTENT_WEIGHT = 1.0
OPTIMIZERS = ("lbfgs", "adam")
POOLINGS = ("max", "avg")
WEIGHT_SOURCES = ("caffe", "torchvision")
PREPROCESSINGS = ("torchvision", "caffe")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTO_ON_OFF = ("auto", "on", "off")
INIT_KEYWORDS = ("content", "random")
CHECKPOINT_AUTO_PIXELS = 1_500_000  # about 1400x1050: where activations pass ~3 GB in bf16
STYLE_LOSSES = ("gram", "wasserstein", "sliced-wasserstein")
ORIGINAL_COLORS = ("none", "luminance", "histogram")
# Seeds are drawn into a 63-bit range (torch generators take 64 bits; PNG parameters stay JSON-safe).
MAX_SEED = 2**63 - 1
# Default step size per optimizer, in 0..255 pixel units. L-BFGS scales its own steps
# after the first; Adam on this scale works best at 5-10 (docs/measurements.md).
DEFAULT_LEARNING_RATE = {"lbfgs": 1.0, "adam": 8.0}
# Averaging the iterates (EMA) smooths Adam's noisy steps: at 256 px, 150 iterations, decay 0.9
# lowered Adam's final total loss by 7%. L-BFGS iterates are already smooth: no decay gained
# more than 0.1% there, and 0.95 cost 3%. So on for Adam, off for L-BFGS.
DEFAULT_EMA_DECAY = {"lbfgs": 0.0, "adam": 0.9}

# The kinds of value an option holds; each adapter (CLI, web form, page) handles exactly these.
INT, FLOAT, BOOL, CHOICE, TEXT = "int", "float", "bool", "choice", "text"
LAYERS, FLOATS, INTS = "layers", "floats", "ints"  # comma-separated lists StyleConfig parses itself
PATH, PATHS = "path", "paths"  # files on the machine that runs the job
CHOICE_OR_PATH = "choice-or-path"  # a keyword from ``choices`` or an image path (init)
KINDS = (INT, FLOAT, BOOL, CHOICE, TEXT, LAYERS, FLOATS, INTS, PATH, PATHS, CHOICE_OR_PATH)
NAMES_FILES = frozenset({PATH, PATHS})


# Lists a user may give (scales, blend weights): longer ones are refused where they are parsed.
MAX_LIST_ITEMS = 32
MAX_ITERATIONS = 1_000_000  # in all, also as epochs x steps per epoch
MAX_SIDE = 16_384  # px: any long side a user may ask for (image, scales); memory refuses far less first
MAX_WEIGHT = 1e9


@dataclass(frozen=True)
class Range:
    """The values a number may take. Every number a user gives is checked against one where it is
    parsed, so that nothing derived from it (schedules, sizes, ETAs) can overflow or take hours."""

    low: float
    high: float
    low_open: bool = False  # low itself is not allowed ("above 0")
    high_open: bool = False  # high itself is not allowed ("up to (not including) 1")

    def holds(self, value) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def words(self) -> str:
        if self.low_open:
            return f"above {_shown(self.low)} and at most {_shown(self.high)}"
        if self.high_open:
            return f"from {_shown(self.low)} up to (not including) {_shown(self.high)}"
        return f"from {_shown(self.low)} to {_shown(self.high)}"


def _shown(number) -> str:
    return f"{number:,}" if isinstance(number, int) else f"{number:g}"


def number_problem(flag: str, value, whole: bool, allowed: Range, *, in_list: bool = False) -> str | None:
    """One line saying why ``value`` is not a number ``allowed`` holds (whole: an int; in_list: one
    of a list's); None if it is. Huge ints are compared as ints (math.isfinite would overflow)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
        fine = False
    else:
        fine = (isinstance(value, int) or math.isfinite(value)) and allowed.holds(value)
    if fine:
        return None
    text = str(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    kind = ("whole numbers" if whole else "finite numbers") if in_list else ("a whole number" if whole else
                                                                             "a finite number")
    return f"{flag} must be {kind} {allowed.words()}, got {text}"


def check_bounds(flag: str, value, whole: bool, allowed: Range, max_items: int = MAX_LIST_ITEMS) -> None:
    """Raise ConfigError (one line) unless ``value``, a number or a list of at most ``max_items``
    numbers, is within ``allowed``: StyleConfig's and VideoConfig's fields are checked by it."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) > max_items:
        raise ConfigError(f"{flag} has {len(value)} values; give at most {max_items}")
    for item in items:
        if problem := number_problem(flag, item, whole, allowed, in_list=isinstance(value, list)):
            raise ConfigError(problem)


@dataclass(frozen=True)
class Option:
    """One StyleConfig field as the CLI, the web form and the page see it."""

    name: str
    default: Any  # the field's own default (None: derived at run time)
    kind: str  # one of KINDS
    group: str  # the CLI's argument group and the page's section
    help: str  # for the CLI: may name other flags (--image-size)
    web: bool  # may a web client set it? Decided per field, never inferred
    choices: tuple = ()
    shown_default: Any = None  # what to show when ``default`` is None and a value is derived
    page_help: str | None = None  # for the page, where CLI flags mean nothing; default: help
    metavar: str | None = None  # the CLI's placeholder; display only
    bounds: Range | None = None  # the values a number (or each number of a list) may take

    @property
    def whole(self) -> bool:
        return self.kind in (INT, INTS)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def optional(self) -> bool:
        """None is a valid value: 'derive it' (learning_rate, seed, ...)."""
        return self.default is None

    @property
    def shown(self):
        """The default as a user should read it: derived ones filled in, layers and lists as text."""
        value = self.shown_default if self.default is None else self.default
        if isinstance(value, dict):
            return format_layer_weights(value)
        if isinstance(value, list):
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        return value


def _opt(default, kind: str, group: str, help: str, *, web: bool, **spec) -> Any:
    """A dataclass field carrying its Option spec (less the name, which dataclasses supply)."""
    if kind not in KINDS:
        raise ValueError(f"unknown option kind {kind!r}")
    meta = {"option": dict(default=default, kind=kind, group=group, help=help, web=web, **spec)}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class StyleConfig:
    """The knobs of one stylization. Build it, then call ``validate()`` (stylize does)."""

    # Loss weights. The loss terms are normalized (see losses.py) so that these
    # defaults give a balanced result at any image size.
    content_weight: float | None = _opt(None, FLOAT, "weights", "how strongly the result keeps the content image's "
                                        f"structure (a video's frames: {VIDEO_CONTENT_WEIGHT:g})", web=True,
                                        shown_default=DEFAULT_CONTENT_WEIGHT, bounds=Range(0.0, MAX_WEIGHT))
    style_weight: float = _opt(40.0, FLOAT, "weights", "how strongly the result takes the style images' textures",
                               web=True, bounds=Range(0.0, MAX_WEIGHT))
    tv_weight: float = _opt(5.0, FLOAT, "weights", "total-variation weight: smooths high-frequency noise",
                            web=True, page_help="smoothing: higher values remove fine noise, and fine detail with it",
                            bounds=Range(0.0, MAX_WEIGHT))
    range_weight: float = _opt(1000.0, FLOAT, "weights", "keeps pixel values inside 0..1 while L-BFGS runs "
                               "unclamped, so the final clamp cuts nothing off (without it the clamp raised the "
                               "style distance by 16-84%); 0: off", web=True,
                               page_help="keeps colours inside what an image can show while optimizing, so none are "
                                         "cut off at the end; 0 turns it off",
                               bounds=Range(0.0, MAX_WEIGHT))

    # Images.
    image_size: int = _opt(512, INT, "images", "long side of the output in pixels", web=True,
                           bounds=Range(16, MAX_SIDE))
    style_scale: float = _opt(1.0, FLOAT, "images", "style image long side, relative to --image-size", web=True,
                              page_help="size of the style images relative to the result's: below 1 gives "
                                        "finer brush strokes, above 1 coarser ones",
                              bounds=Range(0.0, 100.0, low_open=True))
    style_blend_weights: list = _opt([], FLOATS, "images", "relative weight per style image, e.g. 3,7 "
                                     "(default: equal)", web=True, metavar="LIST",
                                     page_help="relative weight per style image (the sliders set it)",
                                     bounds=Range(0.0, MAX_WEIGHT))
    init: str = _opt("content", CHOICE_OR_PATH, "images", "starting image: content, random (seeded noise) "
                     "or an image path", web=True, choices=INIT_KEYWORDS, metavar="INIT",
                     page_help="where the result starts: the content image, or random noise (set by the seed)")
    max_input_pixels: int = _opt(100_000_000, INT, "images", "refuse input images with more pixels than this",
                                 web=False, bounds=Range(1, 10**10))

    # Optimization.
    optimizer: str = _opt("lbfgs", CHOICE, "optimization", "lbfgs (best per iteration) or adam", web=True,
                          choices=OPTIMIZERS)
    learning_rate: float | None = _opt(None, FLOAT, "optimization", "step size (default: 1 for lbfgs, 8 for adam)",
                                       web=True, bounds=Range(0.0, 1e6, low_open=True))
    ema_decay: float | None = _opt(None, FLOAT, "optimization", "the result is an exponential moving average of "
                                   "the iterates with this decay; 0: the last iterate (default: 0.9 for adam, 0 "
                                   "for lbfgs)", web=True,
                                   page_help="average the steps with this decay (0: keep the last step; empty: "
                                             "0.9 for adam, 0 for lbfgs)", bounds=Range(0.0, 1.0, high_open=True))
    num_iterations: int | None = _opt(None, INT, "optimization", "iterations in all (or give --epochs)", web=True,
                                      shown_default=DEFAULT_ITERATIONS,
                                      page_help="iterations in all; more take longer and settle the image further",
                                      bounds=Range(1, MAX_ITERATIONS))
    epochs: int | None = _opt(None, INT, "optimization", "epochs to run; iterations = epochs x steps per epoch",
                              web=True, page_help="instead of iterations: epochs x steps per epoch (leave "
                                                  "iterations empty then)", bounds=Range(1, MAX_ITERATIONS))
    steps_per_epoch: int = _opt(100, INT, "optimization", "iterations per epoch (with --epochs)", web=True,
                                page_help="iterations per epoch, when epochs is set", bounds=Range(1, MAX_ITERATIONS))
    seed: int | None = _opt(None, INT, "optimization", "random seed: the same seed gives the same image on the CPU",
                            web=True, bounds=Range(0, MAX_SEED))

    # Style statistics, colour and spatial control.
    style_loss: str = _opt("gram", CHOICE, "style", "style statistic: gram (Gatys), wasserstein (Gaussian W2) or "
                           "sliced-wasserstein (Heitz et al. 2021)", web=True, choices=STYLE_LOSSES)
    original_colors: str = _opt("none", CHOICE, "style", "keep the content's colours: luminance (transfer on "
                                "luminance only) or histogram (recolour the style to the content first)", web=True,
                                choices=ORIGINAL_COLORS)
    style_masks: list = _opt([], PATHS, "style", "one grayscale mask per style image, white where that style "
                             "applies (comma-separated paths)", web=False, metavar="FILE")

    # Coarse-to-fine (Gatys et al. 2017): optimize small first, upsample, refine.
    single_scale: bool = _opt(False, BOOL, "scales", "optimize at --image-size only, at any size (the classic "
                              "method)", web=True, page_help="optimize at the final size only, however large")
    coarse_to_fine_above: int = _opt(1024, INT, "scales", "coarse-to-fine from --min-scale starts "
                                     "automatically above this --image-size (at and below it, the half-size "
                                     "start); 0: always", web=True,
                                     page_help="above this image size, optimize small first, then refine "
                                               "larger; 0: always", bounds=Range(0, 10**6))
    min_scale: int = _opt(256, INT, "scales", "long side of the first, coarsest scale in px", web=True,
                          bounds=Range(16, MAX_SIDE))
    scale_steps: int | None = _opt(None, INT, "scales", "number of scales, coarse-to-fine at any size (default: "
                                   "steps of about sqrt(2) from --min-scale up to --image-size)", web=True,
                                   page_help="number of scales from the coarsest to the final size (empty: "
                                             "steps of about 1.4x)", bounds=Range(1, MAX_LIST_ITEMS))
    scales: list = _opt([], INTS, "scales", "explicit long sides per scale, e.g. 128,256,512 (overrides the above)",
                        web=True, metavar="LIST", bounds=Range(16, MAX_SIDE))
    half_size_share: float = _opt(0.2, FLOAT, "scales", "at sizes up to --coarse-to-fine-above, the share of the "
                                  "iterations run first at half the side (when that is at least --min-scale); 0: "
                                  "one scale", web=True,
                                  page_help="share of the iterations run first at half the size (0: one scale)",
                                  bounds=Range(0.0, 0.9))
    coarse_iterations_factor: float = _opt(1.25, FLOAT, "scales", "each coarser scale gets this many times the "
                                           "iterations of the next finer one (within --num-iterations)", web=True,
                                           page_help="each coarser scale gets this many times the iterations of "
                                                     "the next finer one", bounds=Range(0.01, 100.0))

    # Network.
    content_layers: dict = _opt({"relu4_2": 1.0}, LAYERS, "network", "content layers, optionally name:weight",
                                web=True, metavar="LIST")
    style_layers: dict = _opt({"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0, "relu5_1": 1.0},
                              LAYERS, "network", "style layers, optionally name:weight", web=True, metavar="LIST")
    pooling: str = _opt("max", CHOICE, "network", "pooling in the network: max or avg", web=True, choices=POOLINGS)
    weights_source: str = _opt("caffe", CHOICE, "network", "caffe (original VGG19, bundled) or torchvision "
                               "(downloaded once)", web=False, choices=WEIGHT_SOURCES)
    weights: str | None = _opt(None, PATH, "network", "local VGG19 state dict in torchvision's layout (.pth or "
                               ".safetensors)", web=False, metavar="PATH")
    weights_preprocessing: str = _opt("torchvision", CHOICE, "network", "input convention of --weights: "
                                      "torchvision (RGB, ImageNet mean/std) or caffe (BGR 0..255 minus mean)",
                                      web=False, choices=PREPROCESSINGS)

    # Hardware: the server's to decide, never a client's.
    device: str = _opt("auto", TEXT, "hardware", "auto, cpu, cuda or cuda:N", web=False, metavar="DEVICE")
    precision: str = _opt("auto", CHOICE, "hardware", "auto (bf16 where the hardware has it), fp32, bf16 or fp16",
                          web=False, choices=PRECISIONS)
    threads: int | None = _opt(None, INT, "hardware", "CPU threads (default: all physical cores)", web=False,
                               bounds=Range(1, 1024))
    winograd: str = _opt("auto", CHOICE, "hardware", "CPU convolutions through Winograd transforms: "
                         "auto (each layer on the kernel measured fastest on this machine, once, cached: "
                         "NNPACK's in float32, ours in bf16), on (every layer on NNPACK, float32), "
                         "off (oneDNN only)", web=False, choices=AUTO_ON_OFF)
    checkpoint: str = _opt("auto", CHOICE, "hardware", "recompute each VGG block in the backward pass to save "
                           "memory (about a third more time); auto: for scales over "
                           f"{CHECKPOINT_AUTO_PIXELS / 1e6:g} megapixels", web=False, choices=AUTO_ON_OFF)

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
            self.scales = _parse_floats(self.scales, "--scales", "128,256,512")
        self.scales = [_whole(x) for x in (self.scales or [])]  # 1e400 and nan stay as they are, for validate
        if isinstance(self.style_blend_weights, str):
            self.style_blend_weights = _parse_floats(self.style_blend_weights, "--style-blend-weights", "3,7")
        self.style_blend_weights = list(self.style_blend_weights or [])

    # ------------------------------------------------------------------ derived
    @property
    def iterations(self) -> int:
        """Total optimizer steps: --num-iterations, else epochs x steps per epoch, else the default."""
        return self.iterations_or(DEFAULT_ITERATIONS)

    def iterations_or(self, default: int) -> int:
        """--num-iterations, else epochs x steps per epoch, else ``default`` (a video's first frame
        has its own)."""
        if self.num_iterations is not None:
            return self.num_iterations
        if self.epochs is not None:
            return self.epochs * self.steps_per_epoch
        return default

    def scale_schedule(self) -> list[tuple[int, int]]:
        """[(long side in px, iterations)] from coarse to fine; the iterations add up to ``iterations``.

        Up to coarse_to_fine_above (default 1024 px), a half-size start (_half_size_start). Above
        it, or with --scale-steps, sizes step by about sqrt(2) (doubling the pixel count) from
        min_scale up to image_size: the coarse scales lay out the large-scale structure that
        VGG's receptive field cannot see at print sizes, and cost little. Coarser scales are cheap
        (half the pixels, half the time), so they get more iterations: each gets
        coarse_iterations_factor times the next finer one.
        """
        if self.single_scale:
            sizes = [self.image_size]
        elif not self.scales and self.scale_steps is None and self.image_size <= self.coarse_to_fine_above:
            return self._half_size_start()
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

    def _half_size_start(self) -> list[tuple[int, int]]:
        """Up to coarse_to_fine_above: half_size_share of the iterations at half the side, the rest at
        the full size. The half-size scale costs a quarter per iteration and settles the style's
        statistics sooner; full-size iterations then restore the detail (docs/speed.md)."""
        total, half = self.iterations, round(self.image_size / 2)
        coarse = math.floor(total * self.half_size_share)
        if coarse < 1 or coarse >= total or half < self.min_scale:
            return [(self.image_size, total)]
        return [(half, coarse), (self.image_size, total - coarse)]

    def style_side(self, long_side: int) -> int:
        """Long side of the style images when the output's long side is ``long_side`` (--style-scale)."""
        return max(16, round(long_side * self.style_scale))

    def content_weight_or(self, default: float = DEFAULT_CONTENT_WEIGHT) -> float:
        """--content-weight, else ``default`` (an image's; a video's frames have their own)."""
        return self.content_weight if self.content_weight is not None else default

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
        Every number is first held to its option's Range, so that the checks after it, and
        everything derived later (the scale schedule, style sizes, ETAs), work on bounded values.
        """
        num_masks = len(self.style_masks) if num_masks is None else num_masks
        self._check_numbers()
        self._check_weights()
        self._check_counts(num_styles, num_masks)
        self._check_sizes()
        self._check_iterations()
        self._check_choices_and_hardware()
        self._check_style_side()
        return self

    def _check_numbers(self) -> None:
        for option in config_options():
            value = getattr(self, option.name)
            if option.bounds is not None and not (value is None and option.optional):
                check_bounds(option.flag, value, option.whole, option.bounds)

    def _check_weights(self) -> None:
        if self.content_weight == 0 and self.style_weight == 0:
            raise ConfigError("--content-weight and --style-weight are both 0: nothing to optimize")
        if self.style_blend_weights and sum(self.style_blend_weights) <= 0:
            raise ConfigError("--style-blend-weights must not all be 0")

    def _check_counts(self, num_styles: int | None, num_masks: int) -> None:
        if num_styles is None:
            return
        if num_styles < 1:
            raise ConfigError("give at least one style image")
        if num_masks and num_masks != num_styles:
            raise ConfigError(f"--style-masks has {num_masks} mask(s) for {num_styles} style "
                              "image(s): give one per style image")
        if self.style_blend_weights and len(self.style_blend_weights) != num_styles:
            raise ConfigError(f"--style-blend-weights has {len(self.style_blend_weights)} values "
                              f"for {num_styles} style image(s): give one per style image")

    def _check_sizes(self) -> None:
        if self.scales and self.scales != sorted(set(self.scales)):
            raise ConfigError(f"--scales must rise strictly, got {','.join(map(str, self.scales))}")

    def _check_iterations(self) -> None:
        if self.num_iterations is not None and self.epochs is not None:
            raise ConfigError("give either --num-iterations or --epochs (with --steps-per-epoch), not both")
        if self.iterations > MAX_ITERATIONS:
            raise ConfigError(f"--epochs {self.epochs} x --steps-per-epoch {self.steps_per_epoch} is "
                              f"{self.iterations:,} iterations, more than {MAX_ITERATIONS:,}; give fewer")

    def _check_choices_and_hardware(self) -> None:
        for option in config_options():
            value = getattr(self, option.name)
            if option.kind == CHOICE and value not in option.choices:
                raise ConfigError(f"unknown {option.flag} '{str(value)[:40]}': choose one of "
                                  f"{', '.join(option.choices)}")
        if not isinstance(self.init, str) or not self.init:
            raise ConfigError("--init must be content, random or an image path")
        if not isinstance(self.device, str) or not (
                self.device in ("auto", "cpu", "cuda")
                or (self.device.startswith("cuda:") and self.device[5:].isdigit() and len(self.device) < 10)):
            raise ConfigError(f"unknown --device '{str(self.device)[:40]}': choose auto, cpu, cuda or cuda:N")

    def _check_style_side(self) -> None:
        """--style-scale can ask for a style image of any size: bound it before anything is resized.

        The style images are resized to style_side(image_size) on the long side, so up to that side
        squared in pixels: more than --max-input-pixels (or than the result's own size, when that is
        larger) is refused, as memory would not hold the network's activations for it either."""
        side = self.style_side(self.image_size)
        if side > self.image_size and side * side > self.max_input_pixels:
            raise ConfigError(f"--style-scale {self.style_scale:g} makes the style images {side} px on the long "
                              f"side at --image-size {self.image_size}, more pixels than the limit of "
                              f"{self.max_input_pixels:,} (--max-input-pixels); lower --style-scale")


def _parse_floats(text: str, flag: str, example: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated numbers, e.g. {example}; got '{text[:40]}'") from None


def _whole(value):
    """An integral float as an int (256.0 -> 256); anything else as it is, for validate to refuse."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def config_fields() -> list[dataclasses.Field]:
    """The dataclass fields in declaration order (their specs: config_options())."""
    return list(dataclasses.fields(StyleConfig))


def config_options() -> list[Option]:
    """Every StyleConfig field's Option spec, in declaration order: what the CLI parser, the web
    form's checks and the page's fields are generated from."""
    return list(_OPTIONS)


def option(name: str) -> Option:
    """The spec of one field by name (KeyError if there is none)."""
    return _OPTIONS_BY_NAME[name]


_OPTIONS = tuple(Option(name=f.name, **f.metadata["option"]) for f in dataclasses.fields(StyleConfig))
_OPTIONS_BY_NAME = {o.name: o for o in _OPTIONS}


def parse_text(kind: str, text: str):
    """Text from a command line or a form -> the value StyleConfig takes, or ValueError saying what
    was expected ('a whole number'). Lists and layers stay text: StyleConfig parses those itself."""
    if kind == INT:
        try:
            return int(text)
        except ValueError:
            raise ValueError("a whole number") from None
    if kind == FLOAT:
        try:
            return float(text)
        except ValueError:
            raise ValueError("a number") from None
    if kind == BOOL:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "on", "yes"):
            return True
        if lowered in ("0", "false", "off", "no"):
            return False
        raise ValueError("true or false")
    return text
