"""What a client may send, and turning it into a validated job: form fields -> StyleConfig,
uploaded bytes -> checked RGB images. No FastAPI here: every refusal is an UploadError
carrying its HTTP status and a one-line message, and the app only maps it.

The form is generated from StyleConfig's option specs (one source of defaults, like the CLI):
a client may set exactly the options whose spec says ``web=True``; none of those names a file,
and an option that takes a keyword or a path (init) takes only its keywords here.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict

from PIL import Image

from ..config import (BOOL, CHOICE, CHOICE_OR_PATH, DEFAULT_ITERATIONS, FLOAT, INT, NAMES_FILES, Option,
                      StyleConfig, config_options, option, parse_text)
from ..errors import DamagedImage, ImageTooLarge, NotAnImage, VggstyleError
from ..image import decode_image, long_side_size, resize_long_side
from ..layers import deepest, min_side
from ..video import VideoConfig, video_fields
from .limits import IMAGE_FORMATS, VIDEO_FORMATS, Limits, UploadError  # noqa: F401 (re-exported)

# The knobs the page shows up front; the rest sit under "more options".
MAIN_FIELDS = ("content_weight", "style_weight", "image_size", "num_iterations", "original_colors")
FILE_FIELDS = ("content", "style", "style_mask")  # multipart file fields; the rest are StyleConfig fields
PRESETS = {
    "fast": {"image_size": 256, "num_iterations": 100},
    "balanced": {"image_size": 512, "num_iterations": DEFAULT_ITERATIONS},  # StyleConfig's defaults
    "best": {"image_size": 768, "num_iterations": 500},
}


# ---------------------------------------------------------------------------- form fields
def form_options() -> list[Option]:
    """The options a client may set (their spec says web=True), in declaration order; then the
    few video ones."""
    return [o for o in config_options() if o.web] + video_form_options()


# The video options a client may set, in the page's "more options": kept few on purpose.
VIDEO_FORM_FIELDS = {"frame_iterations": INT, "temporal_weight": FLOAT}


def video_form_options() -> list[Option]:
    """The VideoConfig fields a web client may set, as Option specs like StyleConfig's."""
    return [Option(name=f.name, default=f.default, kind=VIDEO_FORM_FIELDS[f.name], group="video",
                   help=f.metadata["help"] + " (a video content only)", web=True)
            for f in video_fields() if f.name in VIDEO_FORM_FIELDS]


_FLAG = re.compile(r"--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def form_words(message: str) -> str:
    """A config message as a web client reads it: the command-line flags it names (--content-weight)
    become the form's field names (content_weight)."""
    return _FLAG.sub(lambda m: m.group(1).replace("-", "_"), message)


def video_config_from_form(values: dict[str, str], limits: Limits) -> VideoConfig:
    """The video fields of a form (empty: default) -> a validated VideoConfig within the limits."""
    changes = {}
    for name, kind in VIDEO_FORM_FIELDS.items():
        text = values.get(name, "").strip()
        if text:
            try:
                changes[name] = parse_text(kind, text)
            except ValueError as exc:
                raise UploadError(422, f"{name} must be {exc}, got '{text[:40]}'") from None
    try:
        video = VideoConfig(**changes).validate()
    except VggstyleError as exc:
        raise UploadError(422, form_words(str(exc))) from None
    if video.frame_iterations > limits.max_iterations:
        raise UploadError(422, f"frame_iterations {video.frame_iterations} is over this server's limit of "
                               f"{limits.max_iterations}")
    return video


def page_field(o: Option) -> dict:
    """One option as the page builds its input: a keyword-or-path option offers its keywords only."""
    kind = CHOICE if o.kind == CHOICE_OR_PATH else o.kind
    spec = {"name": o.name, "kind": kind, "default": o.shown, "help": o.page_help or o.help, "group": o.group,
            "optional": o.optional, "main": o.name in MAIN_FIELDS}
    if o.choices:
        spec["choices"] = list(o.choices)
    return spec


def options(limits: Limits) -> dict:
    """Everything the page needs to build its form: fields with defaults and help, presets, limits."""
    from .video_uploads import takes_video
    presets = {name: {"image_size": min(p["image_size"], limits.max_image_size),
                      "num_iterations": min(p["num_iterations"], limits.max_iterations)}
               for name, p in PRESETS.items()}
    return {"fields": [page_field(o) for o in form_options()], "presets": presets,
            "limits": {**asdict(limits), "max_upload_bytes": limits.max_upload_bytes,
                       "max_files": limits.max_files, "image_formats": list(IMAGE_FORMATS),
                       "video": takes_video(), "video_formats": VIDEO_FORMATS}}


def _refuse_unknown(name: str) -> UploadError:
    """Why a field a client may not set is refused, in one line."""
    try:
        spec = option(name)
    except KeyError:
        close = difflib.get_close_matches(name, [o.name for o in form_options()], n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see /api/options for the fields"
        return UploadError(422, f"unknown field '{name[:40]}'{hint}")
    if name == "style_masks":
        return UploadError(422, "style_masks: send the masks as files in the field 'style_mask', one per style image")
    if spec.kind in NAMES_FILES:
        return UploadError(422, f"{name} names files on the server, which a client cannot choose")
    return UploadError(422, f"{name} is set by the server, not per job")


def _convert(o: Option, text: str):
    if o.kind == CHOICE_OR_PATH and text not in o.choices:  # a path would name a file on the server
        raise UploadError(422, f"{o.name} must be one of {', '.join(o.choices)} here, got '{text[:40]}'")
    try:
        return parse_text(o.kind, text) if o.kind in (INT, FLOAT, BOOL) else text
    except ValueError as exc:
        raise UploadError(422, f"{o.name} must be {exc}, got '{text[:40]}'") from None


def config_from_form(values: dict[str, str], num_styles: int, limits: Limits) -> StyleConfig:
    """Form values (all strings; empty means 'default') -> a validated StyleConfig within the limits.

    Every size the job will cause is checked here, before any image is decoded or resized."""
    allowed = {o.name: o for o in form_options()}
    for name in values:
        if name not in allowed:
            raise _refuse_unknown(name)
    kwargs = {name: _convert(allowed[name], text.strip()) for name, text in values.items()
              if text.strip() != "" and name not in VIDEO_FORM_FIELDS}
    try:
        config = StyleConfig(**kwargs, max_input_pixels=limits.max_input_pixels).validate(num_styles=num_styles)
    except VggstyleError as exc:
        raise UploadError(422, form_words(str(exc))) from None
    if config.image_size > limits.max_image_size:
        raise UploadError(422, f"image_size {config.image_size} is over this server's limit of "
                               f"{limits.max_image_size} px")
    style_side = config.style_side(config.image_size)
    if style_side > limits.max_image_size:
        raise UploadError(422, f"style_scale {config.style_scale:g} makes the style images {style_side} px on the "
                               f"long side, over this server's limit of {limits.max_image_size} px; lower "
                               "style_scale or image_size")
    if config.iterations > limits.max_iterations:
        raise UploadError(422, f"{config.iterations} iterations is over this server's limit of "
                               f"{limits.max_iterations}")
    return config


# ---------------------------------------------------------------------------- images
def upload_label(what: str, filename: str | None) -> str:
    name = "".join(c for c in (filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1] if c.isprintable())
    return f"{what} '{name[:60]}'" if name else what


def decode_upload(data: bytes, what: str, filename: str | None, limits: Limits) -> Image.Image:
    """Bytes from a client -> 8-bit RGB through the library's decoder; its error kinds become
    413 (too many pixels), 415 (not an image) and 422 (empty, damaged, too small)."""
    label = upload_label(what, filename)
    try:
        return decode_image(data, label, limits.max_input_pixels, IMAGE_FORMATS)
    except ImageTooLarge as exc:
        if exc.size is None:
            raise UploadError(413, str(exc)) from None
        width, height = exc.size
        raise UploadError(413, f"{label}: {width}x{height} px is over this server's limit of "
                               f"{limits.max_input_pixels:,} pixels; shrink it first") from None
    except NotAnImage as exc:
        raise UploadError(415, str(exc)) from None
    except (DamagedImage, VggstyleError) as exc:
        raise UploadError(422, str(exc)) from None


def prepare_images(config: StyleConfig, content: Image.Image, styles: list[Image.Image],
                   masks: list[Image.Image] = ()):
    """Shrink the images to the sizes the job works at (as stylize would), so a waiting job holds
    no more memory than it needs; check they are large enough for the deepest layer used.
    Masks are stretched to the content's shape, as stylize does at each scale.
    Returns (content, styles, masks (grayscale), (width, height) of the result)."""
    layers = [*config.content_layers, *config.style_layers]
    smallest = min_side(layers)
    style_side = config.style_side(config.image_size)
    sized = [("content image", content, config.image_size)]
    sized += [(f"style image {i}", s, style_side) for i, s in enumerate(styles, 1)]
    for what, image, side in sized:  # before any resize
        width, height = long_side_size(image.size, side)
        if min(width, height) < smallest:
            raise UploadError(422, f"{what} is {width}x{height} px at this image_size, too small for layer "
                                   f"{deepest(layers)} (at least {smallest} px on each side); use a larger "
                                   "image_size or a less elongated image")
    content = resize_long_side(content, config.image_size)
    masks = [m.convert("L").resize(content.size, Image.BILINEAR) for m in masks]
    styles = [resize_long_side(s, style_side) for s in styles]
    return content, styles, masks, content.size
