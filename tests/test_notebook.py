"""vggstyle.show(): the figure a notebook user gets (rendered with Agg, no display)."""

import numpy as np
import pytest
import torch
from PIL import Image

matplotlib = pytest.importorskip("matplotlib", reason="vggstyle.show needs matplotlib (the [plot] extra)")
matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from vggstyle.notebook import show  # noqa: E402


def gradient(width, height, channel):
    array = np.zeros((height, width, 3), np.uint8)
    array[..., channel] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    array[..., (channel + 1) % 3] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
    return Image.fromarray(array, "RGB")


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def render(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def test_images_side_by_side_in_order_and_unaltered():
    content, style, result = gradient(48, 32, 0), gradient(40, 40, 1), gradient(48, 32, 2)
    fig = show(content, style, result)
    axes = image_axes(fig)
    assert len(fig.axes) == 3 and len(axes) == 3
    for ax, image in zip(axes, (content, style, result)):
        np.testing.assert_array_equal(ax.images[0].get_array(), np.asarray(image))
    assert [ax.get_title().split("\n")[0] for ax in axes] == ["content", "style", "result"]
    lefts = [ax.get_position().x0 for ax in axes]
    assert lefts == sorted(lefts), "content, style, result from left to right"
    pixels = render(fig)
    assert pixels.shape[1] > pixels.shape[0], "a row of images is wider than tall"


def test_several_styles_paths_and_tensors(tmp_path):
    content_path = tmp_path / "content.png"
    gradient(32, 48, 0).save(content_path)
    styles = [gradient(32, 32, 1), torch.rand(1, 3, 24, 24)]
    result = gradient(32, 48, 2)
    result.info["vggstyle"] = {"iterations_done": 7}
    fig = show(str(content_path), styles, result)
    titles = [ax.get_title().split("\n")[0] for ax in image_axes(fig)]
    assert titles == ["content", "style 1", "style 2", "result (7 iterations)"]
    assert image_axes(fig)[2].images[0].get_array().shape == (24, 24, 3)
    render(fig)


def test_loss_curve_from_history_dicts():
    history = [{"step": s, "content": 0.0 if s == 1 else 1.0 / s, "style": 10.0 / s, "tv": 0.1,
                "total": 0.1 + 11.0 / s} for s in range(1, 21)]
    fig = show(gradient(32, 32, 0), gradient(32, 32, 1), gradient(32, 32, 2), history)
    curves = [ax for ax in fig.axes if ax.lines]
    assert len(curves) == 1
    ax = curves[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "iteration"
    lines = {line.get_label(): line for line in ax.lines}
    assert set(lines) == {"total", "style", "content", "tv"}
    np.testing.assert_allclose(lines["style"].get_xdata(), range(1, 21))
    np.testing.assert_allclose(lines["style"].get_ydata(), [10.0 / s for s in range(1, 21)])
    assert lines["content"].get_ydata()[0] > 0, "a zero loss is floored so the log axis can show it"
    assert ax.get_position().y1 < min(a.get_position().y0 for a in image_axes(fig)), "curve below the images"
    render(fig)


def test_history_from_progress_records_of_a_real_run():
    """The workflow the notebooks taught: run, collect what on_step sees, show it."""
    import vggstyle

    content, style = gradient(32, 32, 0), gradient(32, 32, 1)
    seen = []
    result = vggstyle.stylize(content, style, image_size=32, num_iterations=3, seed=0, on_step=seen.append)
    fig = show(content, style, result, seen)
    (ax,) = [ax for ax in fig.axes if ax.lines]
    total = {line.get_label(): line for line in ax.lines}["total"]
    np.testing.assert_allclose(total.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(total.get_ydata(), [p.losses["total"] for p in seen])
    assert image_axes(fig)[-1].get_title().startswith("result (3 iterations)")


def test_not_left_open_in_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    show(gradient(32, 32, 0), gradient(32, 32, 1), gradient(32, 32, 2))
    assert plt.get_fignums() == before, "Jupyter would show a pyplot figure twice"


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(vggstyle_image_error()):
        show(tmp_path / "missing.png", gradient(32, 32, 1), gradient(32, 32, 2))
    with pytest.raises(ValueError, match="at least one style"):
        show(gradient(32, 32, 0), [], gradient(32, 32, 2))


def vggstyle_image_error():
    from vggstyle import ImageError
    return ImageError
