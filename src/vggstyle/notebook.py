"""vggstyle.show(): content, style(s) and result side by side, and the loss curve, for notebooks.

The figure is a plain ``matplotlib.figure.Figure`` (not made through pyplot): Jupyter shows
it once when it is the cell's value, nothing is left open in pyplot's global state, and it
works under any backend, Agg included. Matplotlib is imported on the first call only.
"""

from __future__ import annotations

from PIL import Image

LOSS_KEYS = ("total", "style", "content", "tv")


def _as_image(source, what: str) -> Image.Image:
    from .image import load_image
    return load_image(source, what=what)


def _history_rows(history) -> list[dict]:
    """Dicts with 'step' and loss keys (as the CLI collects them), or Progress records."""
    rows = []
    for item in history:
        if isinstance(item, dict):
            rows.append(item)
        else:  # a Progress
            rows.append({"step": item.step, **item.losses})
    return rows


def show(content, styles, result, history=None, *, titles: bool = True, width: float = 4.0):
    """Return a Matplotlib figure: content, style image(s) and result in a row, and below them
    the weighted losses against the iteration (log scale) when ``history`` is given.

    content, styles, result: paths, PIL images or RGB tensors in 0..1 (styles: one or a list).
    history: a list of {'step': n, 'content': .., 'style': .., 'tv': .., 'total': ..} dicts, or
    the Progress records an ``on_step`` callback received.
    width: inches per image.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("vggstyle.show needs matplotlib: pip install 'vggstyle[plot]'") from None

    from .image import as_image_list
    style_images = [_as_image(s, "style image") for s in as_image_list(styles)]
    if not style_images:
        raise ValueError("show() needs at least one style image")
    panels = [("content", _as_image(content, "content image"))]
    panels += [(f"style {i}" if len(style_images) > 1 else "style", s) for i, s in enumerate(style_images, 1)]
    result_image = _as_image(result, "result image")
    info = result.info.get("vggstyle") if isinstance(result, Image.Image) else None
    result_title = "result"
    if info and "iterations_done" in info:
        result_title += f" ({info['iterations_done']} iterations)"
    panels.append((result_title, result_image))

    rows = _history_rows(history) if history else []
    columns = len(panels)
    tallest = max(image.size[1] / image.size[0] for _, image in panels)
    image_height = width * min(tallest, 1.5)
    height = image_height + (width * 0.8 if rows else 0) + (0.4 if titles else 0)
    fig = Figure(figsize=(width * columns, height), layout="constrained")
    grid = fig.add_gridspec(2 if rows else 1, columns,
                            height_ratios=[image_height, width * 0.8] if rows else None)
    for column, (title, image) in enumerate(panels):
        ax = fig.add_subplot(grid[0, column])
        ax.imshow(image)
        ax.set_axis_off()
        if titles:
            ax.set_title(f"{title}\n{image.size[0]}×{image.size[1]} px", fontsize=10)
    if rows:
        plot_losses(fig.add_subplot(grid[1, :]), rows)
    return fig


def plot_losses(ax, rows: list[dict]) -> None:
    """The weighted loss terms against the iteration, log scale, on a Matplotlib axes."""
    steps = [row["step"] for row in rows]
    for key in LOSS_KEYS:
        if all(key in row for row in rows):
            # Floor at a tiny value: a log axis cannot show the exact 0 of the first content loss.
            ax.plot(steps, [max(float(row[key]), 1e-12) for row in rows], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted loss")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
