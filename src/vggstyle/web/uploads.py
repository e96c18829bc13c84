"""What a client may send, and turning it into a validated job: form fields -> StyleConfig,
uploaded bytes -> checked RGB images. No FastAPI here: every refusal is an UploadError
carrying its HTTP status and a one-line message, and the app only maps it.

The form is built from StyleConfig's fields (one source of defaults, like the CLI),
less the ones that belong to the server (where weights come from, devices, threads) and
every field whose value names a file on the server: nothing a client sends becomes a path.
"""

from __future__ import annotations

import difflib
import io
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields

from PIL import Image, UnidentifiedImageError

from ..config import DEFAULT_ITERATIONS, INIT_KEYWORDS, StyleConfig, config_fields
from ..errors import VggstyleError
from ..image import MIN_INPUT_SIDE, load_image, resize_long_side
from ..layers import LAYER_INDEX, format_layer_weights, pools_before

# Decided by whoever runs the server, never by a client: the weights, the input limit, and every
# field of the "hardware" group (device, precision, threads, memory trade-offs).
SERVER_FIELDS = frozenset({"weights", "weights_source", "weights_preprocessing", "max_input_pixels"})
SERVER_GROUPS = frozenset({"hardware"})
# The knobs the page shows up front; the rest sit under "more options".
MAIN_FIELDS = ("content_weight", "style_weight", "image_size", "num_iterations", "original_colors")
# Pillow decoders a client may reach: the common photo formats, not every format Pillow knows
# (JPEG includes the MPO files some cameras write).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
PRESETS = {
    "fast": {"image_size": 256, "num_iterations": 100},
    "balanced": {"image_size": 512, "num_iterations": DEFAULT_ITERATIONS},  # StyleConfig's defaults
    "best": {"image_size": 768, "num_iterations": 500},
}


def _limit(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Limits:
    """What one server accepts; `vggstyle serve` makes an option of each field."""

    max_queue: int = _limit(16, "jobs that may wait behind the running ones; more are refused (503)")
    max_upload_mb: float = _limit(30.0, "size of one job's uploads, all images together, in MB")
    max_input_pixels: int = _limit(40_000_000, "pixels in one uploaded image")
    max_styles: int = _limit(8, "style images in one job")
    max_image_size: int = _limit(2048, "largest image_size a job may ask for")
    max_iterations: int = _limit(5000, "most iterations a job may ask for")
    keep_results: int = _limit(50, "finished results kept; the oldest go first")
    keep_minutes: float = _limit(60.0, "minutes a finished result is kept")
    preview_every: int = _limit(5, "iterations between preview images")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def check(self) -> Limits:
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"--{f.name.replace('_', '-')} must be > 0, got {getattr(self, f.name)}")
        return self


class UploadError(VggstyleError):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------- form fields
def names_files(f) -> bool:
    """A field whose value is a path on the server (weights, style masks): never from a client."""
    return f.metadata.get("type") == "paths" or f.metadata.get("metavar") == "PATH"


def server_sets(f) -> bool:
    return f.name in SERVER_FIELDS or f.metadata.get("group") in SERVER_GROUPS


def form_fields() -> list:
    """The StyleConfig fields a client may set, in declaration order."""
    return [f for f in config_fields() if not server_sets(f) and not names_files(f)]


def _kind(f) -> str:
    """The field's value kind from its annotation string ('float | None' -> 'float')."""
    meta = f.metadata
    if "type" in meta:  # 'layers', 'floats', 'ints': text that StyleConfig parses
        return meta["type"]
    return str(f.type).replace(" | None", "").strip()


def _default(f):
    value = f.default if f.default is not MISSING else f.default_factory()
    if f.name == "num_iterations" and value is None:
        return DEFAULT_ITERATIONS
    if isinstance(value, dict):
        return format_layer_weights(value)
    if isinstance(value, list):
        return ",".join(f"{v:g}" for v in value)
    return value


def options(limits: Limits) -> dict:
    """Everything the page needs to build its form: fields with defaults and help, presets, limits."""
    specs = []
    for f in form_fields():
        spec = {"name": f.name, "kind": _kind(f), "default": _default(f), "help": f.metadata["help"],
                "group": f.metadata["group"], "optional": "None" in str(f.type), "main": f.name in MAIN_FIELDS}
        if "choices" in f.metadata:
            spec["choices"] = list(f.metadata["choices"])
        if f.name == "init":
            spec["choices"] = list(INIT_KEYWORDS)  # an image path would name a file on the server
        specs.append(spec)
    presets = {name: {"image_size": min(p["image_size"], limits.max_image_size),
                      "num_iterations": min(p["num_iterations"], limits.max_iterations)}
               for name, p in PRESETS.items()}
    return {"fields": specs, "presets": presets,
            "limits": {**asdict(limits), "max_upload_bytes": limits.max_upload_bytes}}


def _convert(f, text: str):
    kind = _kind(f)
    try:
        if kind == "float":
            return float(text)
        if kind == "int":
            return int(text)
    except ValueError:
        what = "a whole number" if kind == "int" else "a number"
        raise UploadError(422, f"{f.name} must be {what}, got '{text[:40]}'") from None
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("1", "true", "on", "yes"):
            return True
        if lowered in ("0", "false", "off", "no"):
            return False
        raise UploadError(422, f"{f.name} must be true or false, got '{text[:40]}'")
    return text  # strings, and layer/number lists, which StyleConfig parses itself


def config_from_form(values: dict[str, str], num_styles: int, limits: Limits) -> StyleConfig:
    """Form values (all strings; empty means 'default') -> a validated StyleConfig within the limits."""
    known = {f.name: f for f in form_fields()}
    every = {f.name: f for f in config_fields()}
    unknown = sorted(set(values) - set(known) - {"content", "style", "style_mask"})
    for name in unknown:
        if name in every and server_sets(every[name]):
            raise UploadError(422, f"{name} is set by the server, not per job")
        if name == "style_masks":
            raise UploadError(422, "style_masks: send the masks as files in the field 'style_mask', one per "
                                   "style image")
        if name in every:  # names_files
            raise UploadError(422, f"{name} names files on the server, which a client cannot choose")
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see /api/options for the fields"
        raise UploadError(422, f"unknown field '{name[:40]}'{hint}")
    kwargs = {name: _convert(known[name], text.strip()) for name, text in values.items()
              if name in known and text.strip() != ""}
    try:
        config = StyleConfig(**kwargs).validate(num_styles=num_styles)
    except VggstyleError as exc:
        raise UploadError(422, str(exc)) from None
    if config.init not in INIT_KEYWORDS:
        raise UploadError(422, f"init must be one of {', '.join(INIT_KEYWORDS)} here, got '{config.init[:40]}'")
    if config.image_size > limits.max_image_size:
        raise UploadError(422, f"image_size {config.image_size} is over this server's limit of "
                               f"{limits.max_image_size} px")
    if config.iterations > limits.max_iterations:
        raise UploadError(422, f"{config.iterations} iterations is over this server's limit of "
                               f"{limits.max_iterations}")
    return config.replace(max_input_pixels=limits.max_input_pixels)


# ---------------------------------------------------------------------------- images
def _label(what: str, filename: str | None) -> str:
    name = "".join(c for c in (filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1] if c.isprintable())
    return f"{what} '{name[:60]}'" if name else what


def decode_image(data: bytes, what: str, filename: str | None, limits: Limits) -> Image.Image:
    """Bytes from a client -> 8-bit RGB, or UploadError: 413 too many pixels, 415 not an image,
    422 empty, damaged, truncated or too small. The pixel count is read from the header, so an
    image over the limit is refused before it is decoded."""
    label = _label(what, filename)
    if not data:
        raise UploadError(422, f"{label}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > limits.max_input_pixels:
                raise UploadError(413, f"{label}: {width}x{height} px is over this server's limit of "
                                       f"{limits.max_input_pixels:,} pixels; shrink it first")
            image.load()
    except UploadError:
        raise
    except Image.DecompressionBombError:
        raise UploadError(413, f"{label}: too many pixels to decode safely; shrink it first") from None
    except UnidentifiedImageError:
        raise UploadError(415, f"{label}: not an image this server reads (send PNG, JPEG, WebP, GIF, BMP "
                               "or TIFF)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UploadError(422, f"{label}: damaged or truncated image ({reason[:80]}); re-export it") from None
    if min(image.size) < MIN_INPUT_SIDE:
        raise UploadError(422, f"{label}: {width}x{height} px is too small; images need at least "
                               f"{MIN_INPUT_SIDE} px on each side")
    return load_image(image, what=what)  # orientation from EXIF, any mode -> RGB


def prepare_images(config: StyleConfig, content: Image.Image, styles: list[Image.Image],
                   masks: list[Image.Image] = ()):
    """Shrink the images to the sizes the job works at (as stylize would), so a waiting job holds
    no more memory than it needs; check they are large enough for the deepest layer used.
    Masks are stretched to the content's shape, as stylize does at each scale.
    Returns (content, styles, masks (grayscale), (width, height) of the result)."""
    content = resize_long_side(content, config.image_size)
    masks = [m.convert("L").resize(content.size, Image.BILINEAR) for m in masks]
    style_side = config.style_side(config.image_size)
    styles = [resize_long_side(s, style_side) for s in styles]
    deepest = max([*config.content_layers, *config.style_layers], key=LAYER_INDEX.__getitem__)
    min_side = 2 ** pools_before(deepest)
    for what, image in [("content image", content)] + [(f"style image {i}", s) for i, s in enumerate(styles, 1)]:
        if min(image.size) < min_side:
            raise UploadError(422, f"{what} is {image.size[0]}x{image.size[1]} px at this image_size, too small "
                                   f"for layer {deepest} (at least {min_side} px on each side); use a larger "
                                   "image_size or a less elongated image")
    return content, styles, masks, content.size
