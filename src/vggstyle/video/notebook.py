"""vggstyle.show_video(): a strip of input frames above the stylized ones, for notebooks.

A plain ``matplotlib.figure.Figure`` (as notebook.show): Jupyter shows it once as a cell's value,
nothing is left open in pyplot, any backend works. Matplotlib is imported on the first call only.
"""

from __future__ import annotations

from PIL import Image


def _frames(source) -> list[Image.Image]:
    """A clip (video file, folder, pattern) or a list of images / paths, as RGB images."""
    if isinstance(source, (list, tuple)):
        from ..image import load_image
        return [load_image(item, what="frame") for item in source]
    from .reader import open_video
    return [frame.image for frame in open_video(source).frames()]


def pick(count: int, shown: int) -> list[int]:
    """``shown`` frame numbers spread evenly over ``count`` frames, the first and the last included."""
    if count <= shown:
        return list(range(count))
    return sorted({round(i * (count - 1) / (shown - 1)) for i in range(shown)}) if shown > 1 else [0]


def show_video(input, output, frames: int = 5, *, width: float = 2.5, titles: bool = True):
    """Return a Matplotlib figure: ``frames`` frames of the input (top row) and of the output (below).

    input, output: video files, folders of frames, printf patterns, or lists of images (PIL or
    paths); the frames shown are spread evenly over the shorter of the two. width: inches per frame.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("vggstyle.show_video needs matplotlib: pip install 'vggstyle[plot]'") from None
    rows = [("input", _frames(input)), ("output", _frames(output))]
    count = min(len(images) for _, images in rows)
    if count == 0:
        raise ValueError("show_video() needs at least one frame in the input and the output")
    columns = pick(count, max(1, frames))
    aspect = rows[1][1][0].size[1] / rows[1][1][0].size[0]
    fig = Figure(figsize=(width * len(columns), width * aspect * 2 + (0.6 if titles else 0)), layout="constrained")
    axes = fig.subplots(2, len(columns), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, index in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(images[index])
            ax.set_xticks([])
            ax.set_yticks([])
            if titles and r == 0:
                ax.set_title(f"frame {index}")
            if c == 0:
                ax.set_ylabel(label)
    return fig
