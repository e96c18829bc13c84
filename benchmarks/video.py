"""Video: flicker, style and speed of the temporal methods on a real clip (issue #11's table).

    python benchmarks/video.py                                  # 20 frames at 384 px (hours on 2 cores)
    python benchmarks/video.py --frames 8 --image-size 128 --threads 1 --strip docs/images/video_strip.jpg
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/video.py --rows c --frames 6 --first-iterations 20 --winograd off
        # seconds per frame as on an AVX2-only CPU, oneDNN only (then --winograd auto: the default)

Rows, all on the same frames, style and seed:
  (a) each frame on its own: the still-image path (vggstyle.stylize) in a loop, content init;
  (b) prev-warped init only (temporal weight 0, one pass);
  (c) the default: prev-warped init + the temporal term, a forward and a backward pass;
  (d) (c) + long-term consistency with frames t-1, t-2, t-4;
  (e) the propagation floor: (a)'s first frame warped along the flow, frame after frame, no optimization;
  (f) (c) in one forward pass with twice the iterations per frame (the same cost): what the
      backward pass buys.
(b)-(e) start from (a)'s first frame (stored in their work dirs, so the driver resumes after it):
the first frame of a shot is a still in every method, and it is computed once.

Columns: the warping error of Lai et al. (2018) measured with Farneback flow (the methods optimize
with DIS), divided by the input clip's own (1.0 = as stable as the source); the mean style and
content distance of the frames (unweighted normalized terms, float32, at the working size); seconds
per frame, first and the rest (all the work after the first frame, every pass, over the other frames).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from _harness import ROOT, STYLE

CLIP = ROOT.parent / "shared" / "videos" / "vtest_5s.mp4"
ROWS = {
    "a": "each frame on its own",
    "b": "prev-warped init only",
    "c": "default (prev-warped + temporal)",
    "d": "(c) + long-term 1,2,4",
    "e": "propagation floor",
    "f": "(c) in one pass, same cost",
}
OPTIONS = {"b": {"temporal_weight": 0.0, "passes": 1}, "c": {}, "d": {"long_term": [1, 2, 4]}, "f": {"passes": 1}}


def input_frames(clip: Path, count: int, side: int) -> list[Image.Image]:
    from vggstyle.image import long_side_size
    from vggstyle.video.reader import open_video
    video = open_video(clip, end=f"f{count}")
    return [f.image.resize(long_side_size(f.image.size, side), Image.LANCZOS) for f in video.frames()]


def still_row(frames, style, args) -> tuple[list[Image.Image], list[float]]:
    import vggstyle
    from vggstyle.config import VIDEO_CONTENT_WEIGHT  # a video's frames' (an image's default is higher)
    outputs, seconds = [], []
    for frame in frames:
        started = time.perf_counter()
        outputs.append(vggstyle.stylize(frame, style, image_size=args.image_size, num_iterations=args.first_iterations,
                                        seed=0, init="content", threads=args.threads, precision=args.precision,
                                        winograd=args.winograd, content_weight=VIDEO_CONTENT_WEIGHT))
        seconds.append(time.perf_counter() - started)
        print(f"  (a) frame {len(outputs)}/{len(frames)}: {seconds[-1]:.1f} s", flush=True)
    return outputs, seconds


def driver_row(name, frames, style, first: Image.Image, args, workdir: Path) -> tuple[list[Image.Image], list[float]]:
    """stylize_video on the frames (a folder), resuming after (a)'s first frame placed in its work dir."""
    from vggstyle.config import StyleConfig
    from vggstyle.video.store import open_frame_store
    from vggstyle.video import VideoConfig
    from vggstyle.video.run import VideoRun

    source = workdir / "input"
    source.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        frame.save(source / f"frame_{i:04d}.png")
    config = StyleConfig(image_size=args.image_size, seed=0, threads=args.threads, precision=args.precision,
                         winograd=args.winograd)
    video = VideoConfig(first_frame_iterations=args.first_iterations, work_dir=str(workdir / f"work_{name}"),
                        flow=args.flow, fps=10, **{k: v for k, v in vars(args).items()
                                                   if k in ("temporal_weight", "frame_iterations") and v is not None},
                        ).replace(**OPTIONS[name])
    if name == "f":  # one pass with the iterations of all of (c)'s passes
        video = video.replace(frame_iterations=video.frame_iterations * VideoConfig().passes)
    video = video.validate()
    output = workdir / f"{name}.mp4"
    output.unlink(missing_ok=True)
    run = VideoRun(source, [style], output, config, video)
    store, _ = open_frame_store(video.work_dir, run.options())
    store.clear()
    store.write_manifest()
    store.save(0, first, {"source_index": 0, "first": True, "cut": False, "coverage": None, "iterations": 0,
                          "losses": {}, "seconds": 0.0})
    summary = run.run(on_frame=lambda d: print(f"  ({name}) pass {d.pass_number} frame {d.index + 1}/{d.frames}: "
                                                f"{d.seconds:.1f} s", flush=True))
    store, _ = open_frame_store(video.work_dir, run.options())  # anew: the run wrote later passes' files
    outputs = [store.load(i) for i in range(len(frames))]
    return outputs, summary.frame_seconds


def floor_row(frames, first: Image.Image, args) -> tuple[list[Image.Image], list[float]]:
    from vggstyle.video.flow import optical_flow, warp
    outputs, seconds, current = [first], [0.0], np.asarray(first, np.float32) / 255
    for previous, frame in zip(frames, frames[1:]):
        started = time.perf_counter()
        current = warp(current, optical_flow(frame, previous, args.flow))
        outputs.append(Image.fromarray((current.clip(0, 1) * 255 + 0.5).astype(np.uint8)))
        seconds.append(time.perf_counter() - started)
    return outputs, seconds


def distances(frames, outputs, style) -> tuple[float, float]:
    from vggstyle.optimize import measure_losses
    style_d, content_d = [], []
    for frame, output in zip(frames, outputs):
        losses = measure_losses(frame, style, image=output, image_size=max(frame.size), single_scale=True,
                                precision="fp32")
        style_d.append(losses["style"])
        content_d.append(losses["content"])
    return statistics.mean(style_d), statistics.mean(content_d)


def strip(frames, rows: dict, path: Path, columns: int = 4, thumb: int = 160) -> None:
    """Input and each row's frames (``columns`` of them, spread evenly) as one JPEG."""
    from vggstyle.video.notebook import pick
    picks = pick(len(frames), columns)
    labelled = [("input", frames)] + [(f"({k})", v) for k, v in rows.items()]
    height = round(thumb * frames[0].height / frames[0].width)
    sheet = Image.new("RGB", (60 + thumb * len(picks), height * len(labelled)), "white")
    for r, (label, images) in enumerate(labelled):
        ImageDraw.Draw(sheet).text((4, r * height + height // 2), label, fill="black")
        for c, i in enumerate(picks):
            sheet.paste(images[i].resize((thumb, height), Image.LANCZOS), (60 + c * thumb, r * height))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=80, optimize=True)


def clip_arguments(parser: argparse.ArgumentParser, frames: int, image_size: int, first_help: str | None = None):
    """The options every video benchmark takes: which clip, style, how many frames, how large, the
    iterations of a first frame."""
    parser.add_argument("--input", type=Path, default=CLIP)
    parser.add_argument("--style", type=Path, default=STYLE)
    parser.add_argument("--frames", type=int, default=frames)
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--first-iterations", type=int, default=300, help=first_help)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    clip_arguments(parser, 20, 384, "(a) per frame, and every first frame")
    parser.add_argument("--frame-iterations", type=int, default=None, help="default: VideoConfig's")
    parser.add_argument("--temporal-weight", type=float, default=None, help="default: VideoConfig's")
    parser.add_argument("--flow", default="dis-medium")
    parser.add_argument("--rows", default="abcdef")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", default="auto", help="StyleConfig's --precision for every row")
    parser.add_argument("--winograd", default="auto", help="StyleConfig's --winograd for every row (speed.md)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "out" / "video")
    parser.add_argument("--strip", type=Path, default=None, help="write a JPEG strip of the frames here")
    args = parser.parse_args()
    from vggstyle.video.flow import warping_error

    frames = input_frames(args.input, args.frames, args.image_size)
    base = warping_error(frames, method="farneback").value
    print(f"{len(frames)} frames of {args.input.name} at {frames[0].size[0]}x{frames[0].size[1]}, "
          f"style {args.style.name}; input's own warping error (farneback) {base:.3g}", flush=True)
    rows, seconds = {}, {}
    rows["a"], seconds["a"] = still_row(frames if "a" in args.rows else frames[:1], args.style, args)
    for name in "bcdf":
        if name in args.rows:
            rows[name], seconds[name] = driver_row(name, frames, args.style, rows["a"][0], args, args.workdir)
    if "e" in args.rows:
        rows["e"], seconds["e"] = floor_row(frames, rows["a"][0], args)
    rows = dict(sorted(rows.items()))
    if "a" not in args.rows:
        del rows["a"]
    print("\n| method | warping error / input's | style distance | content distance | s/frame first | s/frame rest |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, outputs in rows.items():
        ratio = warping_error(outputs, reference=frames, method="farneback").value / base
        style_d, content_d = distances(frames, outputs, args.style)
        first = seconds["a"][0]
        # after the first frame, all of it: (b)-(d)'s frame 0 holds only its later passes' seconds
        spent = sum(seconds[name]) - (seconds[name][0] if name == "a" else 0.0)
        rest = spent / (len(seconds[name]) - 1) if len(seconds[name]) > 1 else float("nan")
        print(f"| ({name}) {ROWS[name]} | {ratio:.2f} | {style_d:.3g} | {content_d:.3g} | {first:.1f} | {rest:.2f} |",
              flush=True)
    if args.strip:
        strip(frames, rows, args.strip)


if __name__ == "__main__":
    main()
