"""Images in and out: decode anything Pillow reads into 8-bit RGB, resize, tensors, atomic saves.

Every way an input can be unusable ends in an ImageError with one line naming the
file and the fix; every save goes through a temporary file and a rename, so a crash
or Ctrl-C never leaves a half-written output.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DamagedImage, ImageError, ImageTooLarge, NotAnImage, OutputError, first_line
from .files import png_info, write_atomically

MIN_INPUT_SIDE = 16  # below this an image holds too little to stylize with or from
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def load_image(source, max_pixels: int = 100_000_000, what: str = "image") -> Image.Image:
    """Open a path, PIL image or tensor as an 8-bit RGB PIL image, orientation applied.

    Tensors are (3,H,W) or (1,3,H,W) RGB in 0..1. Transparent images are composited on
    white (what a viewer shows); 16-bit and float images are scaled, not clipped.
    A file that cannot be used raises ImageTooLarge, NotAnImage, DamagedImage or ImageError.
    """
    if _is_tensor(source):
        return tensor_to_pil(source)
    if isinstance(source, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(source))
    path = Path(source)
    label = f"{what} {path}"
    if not path.exists():
        raise ImageError(f"{label}: file not found")
    if path.is_dir():
        raise ImageError(f"{label}: is a directory, not an image file")
    try:
        if path.stat().st_size == 0:
            raise DamagedImage(f"{label}: the file is empty")
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    return _decode(path, label, max_pixels, None)


def decode_image(data: bytes, what: str = "image", max_pixels: int = 100_000_000,
                 formats: tuple[str, ...] | None = None) -> Image.Image:
    """Bytes (an upload) -> 8-bit RGB, as load_image does for a file; ``formats`` restricts the
    Pillow decoders that may run (a server exposes the common photo formats, not all of them).
    The pixel count is read from the header, so an image over ``max_pixels`` is refused before
    it is decoded."""
    if not data:
        raise DamagedImage(f"{what}: the file is empty")
    return _decode(io.BytesIO(data), what, max_pixels, formats)


def _decode(file, label: str, max_pixels: int, formats) -> Image.Image:
    """The one decoder behind load_image and decode_image; every failure is one line in its kind."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file, formats=formats)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"{label}: {width}x{height} px is over the limit of {max_pixels:,} pixels; "
                                    "shrink it first or raise --max-input-pixels", (width, height), max_pixels)
            image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own guard, at twice its MAX_IMAGE_PIXELS, fires inside open() before our check.
        raise ImageTooLarge(f"{label}: refused as a possible decompression bomb ({first_line(exc)}); "
                            "shrink it first", None, max_pixels) from None
    except UnidentifiedImageError:
        known = "Pillow can read (use PNG, JPEG, WebP, ...)" if formats is None else \
            f"in a format read here (use {', '.join(formats)})"
        raise NotAnImage(f"{label}: not an image {known}") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DamagedImage(f"{label}: damaged or truncated image ({first_line(exc)}); re-export it") from None
    if min(image.size) < MIN_INPUT_SIDE:
        raise ImageError(f"{label}: {image.size[0]}x{image.size[1]} px is too small; "
                         f"images need at least {MIN_INPUT_SIDE} px on each side")
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose an otherwise good image
        pass
    return _to_rgb(image)


def _is_tensor(source) -> bool:
    """A torch tensor, without importing torch: if torch is not loaded, nothing is a tensor."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(source, torch.Tensor)


def as_image_list(images) -> list:
    """One image (path, PIL image or tensor) or a sequence of them, as a list."""
    if isinstance(images, (str, Path, Image.Image)) or _is_tensor(images):
        return [images]
    return list(images)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        if mode == "F":
            top = 1.0 if array.max() <= 1.0 else 255.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode in ("LA", "PA") or image.mode in ("RGBA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def long_side_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is ``long_side``, aspect ratio kept."""
    width, height = size
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_long_side(image: Image.Image, long_side: int) -> Image.Image:
    """Scale so the longer side is ``long_side`` px (Lanczos down, bicubic up)."""
    size = long_side_size(image.size, long_side)
    scale = long_side / max(image.size)
    if size == image.size:
        return image
    return image.resize(size, Image.LANCZOS if scale < 1 else Image.BICUBIC)


def pil_to_tensor(image: Image.Image) -> "torch.Tensor":
    """RGB PIL -> (1,3,H,W) float32 in 0..1."""
    import torch  # here, not at the top: the web server decodes images without torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_pil(tensor: "torch.Tensor") -> Image.Image:
    """(1,3,H,W) or (3,H,W) RGB in 0..1 -> 8-bit PIL, clamped and rounded."""
    import torch

    t = tensor.detach()
    if t.dim() == 4:
        t = t[0]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ImageError(f"a tensor image must be (3,H,W) or (1,3,H,W) RGB in 0..1, got shape {tuple(tensor.shape)}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    array = (t.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def check_output_path(path) -> Path:
    """Fail before any work if the result could not be written there."""
    path = Path(path)
    if path.suffix.lower() not in SAVE_FORMATS:
        raise OutputError(f"output {path}: unknown extension '{path.suffix}'; use .png, .jpg or .webp")
    if path.is_dir():
        raise OutputError(f"output {path}: is a directory; give a file name like {path / 'out.png'}")
    return check_parent_folder(path)


def check_parent_folder(path: Path) -> Path:
    """The folder ``path`` would be written in exists and takes new files (still and video outputs)."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output {path}: folder {parent} does not exist; create it first")
    reason = unwritable(parent)
    if reason:
        raise OutputError(f"output {path}: folder {parent} is not writable ({reason}); choose another path")
    return path


def unwritable(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder``, or None. A real probe: os.access says yes to root
    even on read-only or virtual filesystems."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".vggstyle.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def save_image(image: Image.Image, path, parameters: dict | None = None, quality: int = 95) -> Path:
    """Write atomically (temporary file in the same folder, then rename), format by extension.

    PNG files carry ``parameters`` as JSON in a 'vggstyle' text chunk.
    """
    path = check_output_path(path)
    fmt = SAVE_FORMATS[path.suffix.lower()]
    options = {"pnginfo": png_info(parameters)} if fmt == "PNG" else {"quality": quality}
    try:
        write_atomically(path, lambda f: image.save(f, format=fmt, **options))
    except OSError as exc:
        raise OutputError(f"output {path}: cannot write ({first_line(exc)})") from None
    return path


def read_parameters(path) -> dict | None:
    """The parameters stored in a vggstyle PNG, or None."""
    with Image.open(path) as image:
        text = image.info.get("vggstyle")
    return json.loads(text) if text else None
