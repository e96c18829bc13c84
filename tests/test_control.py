"""Colour control, spatial masks and the alternative style statistics, end to end on small images."""

import numpy as np
import pytest
from PIL import Image

import vggstyle
from vggstyle.color import rgb_to_yiq
from vggstyle.image import pil_to_tensor
from vggstyle.optimize import measure_losses

pytestmark = pytest.mark.slow
KW = dict(image_size=64, num_iterations=30, precision="fp32")


def _chroma(image):
    return rgb_to_yiq(pil_to_tensor(image))[:, 1:]


def _content_at(images, size):
    return Image.open(images["content"]).convert("RGB").resize(size, Image.LANCZOS)


def _luminance_diff(a, b):
    return np.abs(np.asarray(a.convert("L"), np.float32) - np.asarray(b.convert("L"), np.float32)).mean()


def test_luminance_method_keeps_the_content_chroma_per_pixel(small_images):
    plain = vggstyle.stylize(small_images["content"], small_images["style"], **KW)
    kept = vggstyle.stylize(small_images["content"], small_images["style"], original_colors="luminance", **KW)
    content = _content_at(small_images, kept.size)
    error_kept = (_chroma(kept) - _chroma(content)).abs().mean().item()
    error_plain = (_chroma(plain) - _chroma(content)).abs().mean().item()
    assert error_kept < error_plain / 2, (error_kept, error_plain)
    assert _luminance_diff(kept, content) > 5  # ... while the structure is stylized


def test_histogram_method_gives_the_content_colour_statistics(small_images):
    from vggstyle.color import color_stats

    def distance(image, reference):
        (mu_a, cov_a), (mu_b, cov_b) = color_stats(pil_to_tensor(image)), color_stats(pil_to_tensor(reference))
        return float((mu_a - mu_b).norm() + (cov_a - cov_b).norm())

    plain = vggstyle.stylize(small_images["content"], small_images["style"], **KW)
    kept = vggstyle.stylize(small_images["content"], small_images["style"], original_colors="histogram", **KW)
    content = _content_at(small_images, kept.size)
    assert distance(kept, content) < distance(plain, content) / 2, (distance(kept, content),
                                                                    distance(plain, content))
    assert _luminance_diff(kept, content) > 5


def test_luminance_method_keeps_chroma_exactly_in_the_preview(small_images):
    previews = []
    vggstyle.stylize(small_images["content"], small_images["style"], original_colors="luminance",
                     image_size=48, num_iterations=3, on_step=lambda p: previews.append(p.image()))
    content = _content_at(small_images, previews[-1].size)
    # Only 8-bit rounding and clamping separate the preview's chroma from the content's.
    assert (_chroma(previews[-1]) - _chroma(content)).abs().mean().item() < 0.02


@pytest.mark.parametrize("method", ["luminance", "histogram"])
def test_grayscale_content_or_style_works(small_images, tmp_path, method):
    gray = tmp_path / "gray.png"
    Image.open(small_images["content"]).convert("L").save(gray)
    out = vggstyle.stylize(gray, small_images["style"], original_colors=method, image_size=48, num_iterations=5)
    rgb = np.asarray(out, np.float32)
    assert np.isfinite(rgb).all() and out.size == (48, 36)
    # Content colours of a gray photo are gray: the result stays (nearly) gray.
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() < 12
    gray_style = tmp_path / "gray_style.png"
    Image.open(small_images["style"]).convert("L").save(gray_style)
    out = vggstyle.stylize(small_images["content"], gray_style, original_colors=method, image_size=48,
                           num_iterations=5)
    assert np.isfinite(np.asarray(out, np.float32)).all()


def _half_masks(tmp_path, size):
    width, height = size
    left = np.zeros((height, width), np.uint8)
    left[:, : width // 2] = 255
    paths = []
    for name, array in (("left.png", left), ("right.png", 255 - left)):
        Image.fromarray(array).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    return paths


def test_masks_put_each_style_in_its_region(small_images, tmp_path):
    masks = _half_masks(tmp_path, (64, 48))
    styles = [small_images["style"], small_images["style2"]]  # starry night (blue) left, shipwreck right
    out = vggstyle.stylize(small_images["content"], styles, style_masks=masks, **KW)
    only_first = vggstyle.stylize(small_images["content"], small_images["style"], **KW)
    only_second = vggstyle.stylize(small_images["content"], small_images["style2"], **KW)
    out_a, first, second = (np.asarray(i, np.float32) for i in (out, only_first, only_second))
    left, right = slice(4, 28), slice(36, 60)  # away from the seam
    assert np.abs(out_a[:, left] - first[:, left]).mean() < np.abs(out_a[:, left] - second[:, left]).mean()
    assert np.abs(out_a[:, right] - second[:, right]).mean() < np.abs(out_a[:, right] - first[:, right]).mean()


def test_region_with_no_mask_keeps_the_content(small_images, tmp_path):
    left_only = _half_masks(tmp_path, (64, 48))[0]
    out = np.asarray(vggstyle.stylize(small_images["content"], small_images["style"], style_masks=[left_only],
                                      **KW), np.float32)
    content = np.asarray(_content_at(small_images, (64, 48)), np.float32)
    styled = np.abs(out[:, 4:28] - content[:, 4:28]).mean()
    untouched = np.abs(out[:, 40:] - content[:, 40:]).mean()
    assert untouched < styled / 2, (untouched, styled)


def test_mask_count_must_match_styles(small_images, tmp_path):
    with pytest.raises(vggstyle.ConfigError, match="1 mask"):
        vggstyle.stylize(small_images["content"], [small_images["style"], small_images["style2"]],
                         style_masks=_half_masks(tmp_path, (64, 48))[:1], **KW)


def test_masks_held_in_memory_work_as_paths_do(small_images, tmp_path):
    paths = _half_masks(tmp_path, (64, 48))
    styles = [small_images["style"], small_images["style2"]]
    kw = {**KW, "num_iterations": 5, "seed": 3}
    from_paths = vggstyle.stylize(small_images["content"], styles, style_masks=paths, **kw)
    in_memory = [Image.open(p) for p in paths]
    from_images = vggstyle.stylize(small_images["content"], styles, masks=in_memory, **kw)
    as_tensor = [pil_to_tensor(in_memory[0].convert("RGB"))[:, :1], paths[1]]  # (1,1,H,W), mixed with a path
    from_tensor = vggstyle.stylize(small_images["content"], styles, masks=as_tensor, **kw)
    assert np.array_equal(np.asarray(from_paths), np.asarray(from_images))
    assert np.array_equal(np.asarray(from_paths), np.asarray(from_tensor))
    assert from_paths.info["vggstyle"]["style_masks"] == paths
    assert from_images.info["vggstyle"]["style_masks"] == ["<style mask 1 in memory>", "<style mask 2 in memory>"]
    with pytest.raises(vggstyle.ConfigError, match="1 mask"):
        vggstyle.stylize(small_images["content"], styles, masks=in_memory[:1], **kw)
    # Images never travel through the config: the override names the right parameter.
    with pytest.raises(vggstyle.ConfigError, match="masks="):
        vggstyle.stylize(small_images["content"], styles, style_masks=in_memory, **kw)


@pytest.mark.parametrize("kind", ["wasserstein", "sliced-wasserstein"])
def test_alternative_style_losses_lower_the_gram_distance(small_images, kind):
    history = []
    out = vggstyle.stylize(small_images["content"], small_images["style"], style_loss=kind,
                           on_step=lambda p: history.append(p.losses["style"]), seed=0, **KW)
    assert history[-1] < history[0] / 4
    # Matching the distribution also matches its second moments: the Gram distance falls too.
    before = measure_losses(small_images["content"], small_images["style"], **KW)["style"]
    after = measure_losses(small_images["content"], small_images["style"], image=out, **KW)["style"]
    assert after < before / 2, (before, after)


@pytest.mark.parametrize("kind", ["gram", "wasserstein", "sliced-wasserstein"])
def test_every_statistic_blends_and_masks(small_images, tmp_path, kind):
    """Each statistic honours the blend weights (the result is nearer the style weighted more) and
    the masks (each half nearer the result of its own style alone). Before: only that the output was
    finite, which a uint8 image always is."""
    content, styles = small_images["content"], [small_images["style"], small_images["style2"]]
    kw = {"style_loss": kind, "image_size": 48, "num_iterations": 10, "seed": 0, "precision": "fp32"}

    def style_distance(image, style):
        return measure_losses(content, style, image=image, **kw)["style"]

    toward_second = vggstyle.stylize(content, styles, style_blend_weights="1,9", **kw)
    toward_first = vggstyle.stylize(content, styles, style_blend_weights="9,1", **kw)
    assert style_distance(toward_second, styles[1]) < style_distance(toward_first, styles[1])
    assert style_distance(toward_first, styles[0]) < style_distance(toward_second, styles[0])

    masked = np.asarray(vggstyle.stylize(content, styles, style_masks=_half_masks(tmp_path, (48, 36)), **kw),
                        np.float32)
    first, second = (np.asarray(vggstyle.stylize(content, style, **kw), np.float32) for style in styles)
    left, right = slice(3, 20), slice(28, 45)  # away from the seam
    assert np.abs(masked[:, left] - first[:, left]).mean() < np.abs(masked[:, left] - second[:, left]).mean()
    assert np.abs(masked[:, right] - second[:, right]).mean() < np.abs(masked[:, right] - first[:, right]).mean()


def test_sliced_wasserstein_is_reproducible_with_a_seed(small_images):
    kw = dict(style_loss="sliced-wasserstein", image_size=48, num_iterations=5, precision="fp32", seed=1)
    a = np.asarray(vggstyle.stylize(small_images["content"], small_images["style"], **kw))
    b = np.asarray(vggstyle.stylize(small_images["content"], small_images["style"], **kw))
    assert np.array_equal(a, b)
