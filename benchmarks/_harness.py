"""Shared by the benchmark scripts: run one stylization in a fresh process, measure it.

A fresh process per measurement gives an honest peak RSS (ru_maxrss of that child
alone, through os.wait4) and keeps one contender's allocator state from helping the
next. The child prints one JSON line: per-iteration times, losses, wall time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ROOT / "examples" / "content" / "tubingen.jpg"
STYLE = ROOT / "examples" / "style" / "starry_night.jpg"
THUMB = 256  # px, a gallery tile
# Importing vggstyle here (for a quality measure) puts its OpenMP spin count in this process's
# environment (src/vggstyle/openmp.py); a contender that does not set it itself (pastiche, an
# older checkout) must run as its users run it, so children get the environment as it was.
SPIN_ENV = "GOMP_SPINCOUNT"  # openmp.SPIN_COUNT_ENV, named here: importing vggstyle would set it first
SPIN_AT_START = os.environ.get(SPIN_ENV)


def run_measured(argv: list[str], timeout: float = 3600, env: dict | None = None) -> tuple[str, int, float]:
    """Run a command; return (stdout, exit code, peak RSS in MB of that process alone, via os.wait4)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    out = proc.stdout.read()
    timer.cancel()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return out, proc.returncode, usage.ru_maxrss / 1024.0


def child_env(source: str | None = None) -> dict:
    """The children's environment: another checkout's src/ (source), and ONEDNN_MAX_CPU_ISA from
    VGGSTYLE_BENCH_ISA (e.g. AVX2: oneDNN then runs as on an AVX2-only CPU, bf16 refused, for a
    side-by-side on such a CPU class when the machine has more); libgomp's spin count as it was
    when the benchmark started (SPIN_AT_START)."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = source
    if os.environ.get("VGGSTYLE_BENCH_ISA"):
        env["ONEDNN_MAX_CPU_ISA"] = os.environ["VGGSTYLE_BENCH_ISA"]
    env.pop(SPIN_ENV, None)
    if SPIN_AT_START is not None:
        env[SPIN_ENV] = SPIN_AT_START
    return env


def vggstyle_run(options: dict, content=CONTENT, styles=(STYLE,), record_images_at: str | None = None,
                 timeout: float = 7200, source: str | None = None) -> dict:
    """Stylize in a child process with these StyleConfig options; returns the child's JSON plus peak_rss_mb.

    source: another checkout's src/ folder to import vggstyle from (a before/after comparison).
    """
    payload = json.dumps({"options": options, "content": str(content), "styles": [str(s) for s in styles],
                          "save": record_images_at})
    out, code, rss = run_measured([sys.executable, str(Path(__file__).resolve()), payload], timeout,
                                  child_env(source))
    if code != 0:
        return {"error": f"exit {code}", "peak_rss_mb": rss}
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = rss
    return result


def thumbnail(path: Path, label: str):
    """A gallery tile: the image fitted into THUMB px, a label above it."""
    from PIL import Image, ImageDraw
    image = Image.open(path).convert("RGB")
    image.thumbnail((THUMB, THUMB), Image.LANCZOS)
    tile = Image.new("RGB", (THUMB, THUMB + 18), "white")
    tile.paste(image, ((THUMB - image.width) // 2, 18 + (THUMB - image.height) // 2))
    ImageDraw.Draw(tile).text((4, 3), label, fill="black")
    return tile


def save_gallery(rows: list[list], path: Path) -> None:
    """Rows of tiles (thumbnail) as one sheet."""
    from PIL import Image
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (columns * THUMB, len(rows) * (THUMB + 18)), "white")
    for y, row in enumerate(rows):
        for x, tile in enumerate(row):
            sheet.paste(tile, (x * THUMB, y * (THUMB + 18)))
    sheet.save(path)


def distances(content: Path, style: Path, output: Path) -> dict:
    """The output's content distance (relative squared error of relu4_2 against the content's) and
    style distance (mean relative squared error of the Gram matrices, relu1_1..relu5_1), float32 at 512 px."""
    from vggstyle.optimize import measure_losses
    losses = measure_losses(content, style, image=output, image_size=512, single_scale=True, precision="fp32")
    return {"content": losses["content"], "style": losses["style"]}


def median_ms(times: list[float], skip: int = 2) -> float:
    """Median step time in ms, skipping the first steps (allocator and kernel warm-up)."""
    steps = [b - a for a, b in zip(times, times[1:])]
    steps = steps[skip:] if len(steps) > skip else steps
    return 1000.0 * statistics.median(steps) if steps else float("nan")


def _child(payload: str) -> None:
    import time

    import vggstyle

    spec = json.loads(payload)
    times, losses, scales = [], [], []
    start = time.perf_counter()

    def on_step(progress):
        times.append(time.perf_counter())
        losses.append(progress.losses["total"])
        scales.append(progress.scale == progress.num_scales)

    image = vggstyle.stylize(spec["content"], spec["styles"], on_step=on_step, **spec["options"])
    wall = time.perf_counter() - start
    if spec.get("save"):
        vggstyle.save_image(image, spec["save"], image.info.get("vggstyle"))
    first_step = times[0] - start if times else float("nan")
    print(json.dumps({"times": [t - start for t in times], "losses": losses, "final_scale": scales,
                      "wall_s": wall, "first_step_s": first_step, "ms_per_iter": median_ms(times),
                      "precision": image.info["vggstyle"]["precision_used"], "size": image.size,
                      "kernels": image.info["vggstyle"].get("kernels_used", "onednn")}))


if __name__ == "__main__":
    _child(sys.argv[1])
