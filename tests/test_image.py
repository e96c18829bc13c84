"""Image loading (every mode a user may have, every broken file) and atomic saving."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vggstyle.errors import ImageError, OutputError
from vggstyle.image import (check_output_path, load_image, pil_to_tensor, read_parameters, resize_long_side,
                            save_image, tensor_to_pil)


def _gradient(width=40, height=30):
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    return np.stack([x, y, 255 - x], axis=2).astype(np.uint8)


def test_rgb_round_trip_through_tensor():
    image = Image.fromarray(_gradient())
    tensor = pil_to_tensor(image)
    assert tensor.shape == (1, 3, 30, 40) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert np.array_equal(np.asarray(tensor_to_pil(tensor)), np.asarray(image))


def test_grayscale_becomes_gray_rgb(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(_gradient()[:, :, 0]).save(path)
    out = np.asarray(load_image(path))
    assert out.shape == (30, 40, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 10:, 3] = 255  # left half transparent, right half opaque red-ish
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = np.asarray(load_image(path))
    assert tuple(out[5, 2]) == (255, 255, 255)
    assert tuple(out[5, 15]) == (200, 0, 0)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (20, 20), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.info["transparency"] = 0
    image.paste(0, (0, 0, 10, 20))
    path = tmp_path / "p.png"
    image.save(path, transparency=0)
    out = np.asarray(load_image(path))
    assert tuple(out[3, 3]) == (255, 255, 255)
    assert tuple(out[3, 15]) == (10, 200, 30)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    data = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = tmp_path / "16.png"
    Image.fromarray(data).save(path)  # mode I;16
    out = np.asarray(load_image(path))[..., 0]
    assert out.min() == 0 and out.max() == 255
    assert 100 < out[16, 0] < 160  # mid-range stays mid-range (clipping would give 255)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    r, g, b = np.asarray(load_image(path))[16, 16]
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_honoured(tmp_path):
    image = Image.fromarray(_gradient(40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "r.jpg"
    image.save(path, exif=exif.tobytes())
    assert load_image(path).size == (30, 40)


def test_pil_and_tensor_inputs():
    image = Image.fromarray(_gradient()).convert("L")
    assert load_image(image).mode == "RGB"
    tensor = torch.rand(1, 3, 20, 24)
    assert load_image(tensor).size == (24, 20)
    with pytest.raises(ImageError, match="tensor image must be"):
        load_image(torch.rand(2, 3, 4, 4, 4))


def _png_with_size(width, height):
    """A syntactically valid PNG header claiming any size, with a tiny IDAT (decodes would fail later)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("make,pattern", [
    (lambda p: None, "file not found"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_text("hello, not an image"), "not an image Pillow can read"),
    (lambda p: p.write_bytes(b""), "the file is empty"),
    (lambda p: Image.new("RGB", (1, 1)).save(p, "PNG"), r"1x1 px is too small"),
    (lambda p: p.write_bytes(_png_with_size(0, 0)), "(too small|damaged|not an image)"),
    (lambda p: p.write_bytes(_png_with_size(12000, 12000)), "over the limit of 100,000,000 pixels"),
    (lambda p: p.write_bytes(_png_with_size(30000, 30000)), "decompression bomb"),
])
def test_bad_inputs_raise_one_line(tmp_path, make, pattern):
    path = tmp_path / "input.png"
    make(path)
    with pytest.raises(ImageError, match=pattern) as info:
        load_image(path, max_pixels=100_000_000)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_refused(tmp_path, fmt):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, fmt)
    path = tmp_path / f"t.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(path)


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(ImageError, match="over the limit of 9,999 pixels"):
        load_image(path, max_pixels=9_999)


def test_resize_long_side():
    image = Image.new("RGB", (400, 300))
    assert resize_long_side(image, 200).size == (200, 150)
    assert resize_long_side(Image.new("RGB", (300, 400)), 800).size == (600, 800)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_save_formats_by_extension(tmp_path, suffix):
    path = save_image(Image.fromarray(_gradient()), tmp_path / f"out{suffix}", {"style_weight": 5})
    with Image.open(path) as image:
        assert image.format == {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}[suffix]
        assert image.size == (40, 30)
    if suffix == ".png":
        assert read_parameters(path) == {"style_weight": 5}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    image = Image.fromarray(_gradient())
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")

    def broken_save(self, fp, format=None, **params):
        fp.write(b"half an image")
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-write

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_image(image, target)
    assert target.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_output_path_checks(tmp_path):
    with pytest.raises(OutputError, match="unknown extension '.gif'"):
        check_output_path(tmp_path / "a.gif")
    with pytest.raises(OutputError, match="folder .* does not exist"):
        check_output_path(tmp_path / "nope" / "a.png")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        check_output_path(tmp_path / "d.png")
    with pytest.raises(OutputError, match="not writable"):
        check_output_path("/proc/vggstyle-out.png")  # unwritable even for root


# ------------------------------------------------------------------ bytes and error kinds
def _png_bytes(size=(40, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, "PNG")
    return buffer.getvalue()


def test_decode_image_from_bytes_matches_load_image(tmp_path):
    from vggstyle.image import decode_image

    path = tmp_path / "g.png"
    Image.fromarray(_gradient()).save(path)
    assert np.array_equal(np.asarray(decode_image(path.read_bytes())), np.asarray(load_image(path)))


def test_decode_errors_have_distinct_kinds(tmp_path):
    from vggstyle.errors import DamagedImage, ImageTooLarge, NotAnImage
    from vggstyle.image import decode_image

    with pytest.raises(ImageTooLarge, match="40x30 px is over the limit of 1,000 pixels") as info:
        decode_image(_png_bytes(), "content image", max_pixels=1000)
    assert info.value.size == (40, 30) and info.value.limit == 1000
    with pytest.raises(NotAnImage, match="content image: not an image Pillow can read"):
        decode_image(b"%PDF-1.4 not an image", "content image")
    with pytest.raises(NotAnImage, match=r"\(use PNG, JPEG\)"):  # a decoder not allowed counts as unknown
        decode_image(_gif_bytes(), formats=("PNG", "JPEG"))
    with pytest.raises(DamagedImage, match="the file is empty"):
        decode_image(b"")
    data = _png_bytes((200, 200))
    with pytest.raises(DamagedImage, match="damaged or truncated"):
        decode_image(data[: len(data) // 2])
    with pytest.raises(ImageError, match="too small") as small:
        decode_image(_png_bytes((10, 40)))
    assert type(small.value) is ImageError
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DamagedImage, match="the file is empty"):
        load_image(empty)


def _gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (20, 20)).save(buffer, "GIF")
    return buffer.getvalue()


def test_min_side_of_layers_without_torch():
    import subprocess
    import sys

    from vggstyle.layers import min_side

    assert min_side(["relu1_1"]) == 1 and min_side(["relu1_1", "relu2_1"]) == 2
    assert min_side(["relu5_1", "relu4_2"]) == 16 and min_side(["pool5"]) == 32
    code = "import sys, vggstyle.layers, vggstyle.image; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
