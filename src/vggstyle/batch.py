"""Batch: many content x style pairs, on this machine or on a Dask cluster, resumable.

Data flows one way: jobs are expanded and checked here (cheap, no torch), the ones whose
output already exists with the same parameters are skipped, a runner (batch_work for this
machine, batch_dask for a cluster) turns the others into outcomes (output bytes, losses,
timings), and this module writes each outcome atomically and appends its row to
OUTDIR/results.csv as it arrives. Only this process writes files, so a cluster needs no
shared filesystem, and a crash or Ctrl-C leaves finished outputs that a rerun skips.

The "same parameters" test is a hash of the result-changing options and of the bytes of
both inputs, stored in the output PNG's 'vggstyle' metadata as ``batch_hash``.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

from .batch_jobs import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Job, Task, is_video  # noqa: F401 (re-exported)
from .config import StyleConfig
from .errors import ConfigError, OutputError
from .files import file_sha256, write_atomically
from .image import unwritable

RESULTS_NAME = "results.csv"
RESULT_COLUMNS = ("content", "style", "output", "status", "error", "seconds", "content_loss", "style_loss",
                  "tv_loss", "total_loss", "worker", "finished")
# Options that change how a result is computed but not what it is: left out of the hash, so
# that rerunning a batch on another device or with more threads still skips finished jobs.
NOT_HASHED = {"device", "threads", "checkpoint", "max_input_pixels"}
HASH_VERSION = 1


@dataclass
class JobResult:
    """What happened to one job: one row of results.csv, and what on_result receives."""

    job: Job
    status: str  # done, failed or skipped
    output: Path
    error: str = ""
    seconds: float = 0.0
    losses: dict = field(default_factory=dict)
    worker: str = ""
    timings: dict = field(default_factory=dict)  # setup, optimize, encode, transfer (seconds)

    def row(self) -> dict:
        losses = {f"{k}_loss": f"{self.losses[k]:.6g}" for k in ("content", "style", "tv", "total")
                  if k in self.losses}
        return {"content": str(self.job.content), "style": str(self.job.style), "output": self.output.name,
                "status": self.status, "error": self.error, "seconds": f"{self.seconds:.2f}", **losses,
                "worker": self.worker, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


# ------------------------------------------------------------------ expanding the jobs
def expand_paths(items: Iterable[str], what: str) -> list[Path]:
    """Files, folders (their image and video files) and globs, in the order given, sorted within each."""
    found: dict[Path, None] = {}  # ordered, without repeats
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not matches:
                raise ConfigError(f"{what} folder {item}: no image or video files in it")
        elif path.exists():
            matches = [path]
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(item)) if Path(p).is_file())
            if not matches:
                raise ConfigError(f"{what} {item}: the pattern matches no file")
        else:
            raise ConfigError(f"{what} {item}: file not found")
        found.update(dict.fromkeys(matches))
    return list(found)


def jobs_from_paths(contents: Iterable[str], styles: Iterable[str]) -> list[Job]:
    """Every content with every style, content-major (all styles of the first content first)."""
    content_paths = expand_paths(contents, "--contents")
    style_paths = expand_paths(styles, "--styles")
    return [Job(c, s) for c in content_paths for s in style_paths]


def jobs_from_pairs(csv_path) -> list[Job]:
    """Rows of a CSV with columns content, style, optionally output and any StyleConfig field.

    Relative paths are relative to the CSV's folder; an empty cell keeps the batch's option.
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"--pairs {csv_path}: cannot read it ({exc}); give a CSV file") from None
    options = _option_columns(csv_path, header)
    jobs = []
    for number, row in enumerate(rows, start=2):
        if not (row.get("content") or "").strip() or not (row.get("style") or "").strip():
            raise ConfigError(f"--pairs {csv_path} line {number}: the content and style cells must not be empty")
        overrides = {name: _parse_cell(row[column], name, csv_path, number)
                     for column, name in options.items() if (row[column] or "").strip()}
        jobs.append(Job(csv_path.parent / row["content"].strip(), csv_path.parent / row["style"].strip(),
                        overrides, (row.get("output") or "").strip()))
    if not jobs:
        raise ConfigError(f"--pairs {csv_path}: no rows; give a header line (content,style,...) and one row per pair")
    return jobs


def _option_columns(csv_path: Path, header: list[str]) -> dict[str, str]:
    """{column: StyleConfig field} for the option columns; one clear error for a wrong header."""
    if "content" not in header or "style" not in header:
        raise ConfigError(f"--pairs {csv_path}: the first line must name the columns, with at least "
                          f"content and style (found: {', '.join(header) or 'nothing'})")
    names = {f.name for f in fields(StyleConfig)}
    columns = {}
    for column in header:
        if column in ("content", "style", "output"):
            continue
        name = (column or "").strip().replace("-", "_")
        if name not in names:
            raise ConfigError(f"--pairs {csv_path}: unknown column '{column}'; use content, style, output "
                              "or option names such as image_size, style_weight")
        columns[column] = name
    return columns


def _parse_cell(text: str, name: str, csv_path: Path, number: int):
    """A cell as the field's type (numbers, yes/no); list and layer fields take their text forms."""
    kind = next(f.type for f in fields(StyleConfig) if f.name == name)
    text = text.strip()
    try:
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise ConfigError(f"--pairs {csv_path} line {number}: {name} must be a number, got '{text}'") from None
    if kind == "bool":
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"--pairs {csv_path} line {number}: {name} must be yes or no, got '{text}'")
        return text.lower() in ("1", "true", "yes")
    return text


def as_jobs(jobs) -> list[Job]:
    """Job objects from Jobs, (content, style) pairs or dicts {content, style, output?, **options}."""
    out = []
    for job in jobs:
        if isinstance(job, Job):
            out.append(job)
        elif isinstance(job, dict):
            options = {k: v for k, v in job.items() if k not in ("content", "style", "output")}
            out.append(Job(job["content"], job["style"], options, job.get("output", "")))
        else:
            content, style = job
            out.append(Job(content, style))
    return out


def check_jobs(jobs: list[Job], base: StyleConfig) -> None:
    """Every job's options valid and every output name distinct, before any work starts."""
    seen: dict[str, Job] = {}
    for job in jobs:
        try:
            job.config(base).validate(num_styles=1)
        except ConfigError as exc:
            raise ConfigError(f"job {job.content.name} x {job.style.name}: {exc}") from None
        wanted = ".mp4" if is_video(job.content) else ".png"
        if Path(job.output).name != job.output or Path(job.output).suffix.lower() != wanted:
            raise ConfigError(f"output name '{job.output}' for {job.content.name} x {job.style.name}: give a "
                              f"file name ending in {wanted}, without folders")
        if job.output in seen:
            other = seen[job.output]
            raise ConfigError(f"{other.content} x {other.style} and {job.content} x {job.style} would both "
                              f"write {job.output}; rename one input or give an output column in --pairs")
        seen[job.output] = job


# ------------------------------------------------------------------ resumability
def job_hash(job: Job, config: StyleConfig, digests: dict) -> str:
    """A hash of everything that decides the result: the hashed options and both inputs' bytes."""
    options = {k: v for k, v in config.to_dict().items() if k not in NOT_HASHED}
    record = {"version": HASH_VERSION, "options": options,
              "content": file_digest(job.content, digests), "style": file_digest(job.style, digests)}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: Path, cache: dict) -> str:
    """sha256 of a file's bytes (cached: a style is shared by many jobs); '' if it cannot be read."""
    if path not in cache:
        try:
            cache[path] = file_sha256(path)
        except OSError:
            cache[path] = ""
    return cache[path]


def already_done(output: Path, wanted_hash: str) -> bool:
    """True when ``output`` exists and carries ``wanted_hash`` in its metadata (a PNG's text chunk,
    an MP4's comment tag)."""
    if not output.is_file():
        return False
    if output.suffix.lower() == ".mp4":
        from .video_io import read_parameters  # PyAV, only when there is a video to look at
        return (read_parameters(output) or {}).get("batch_hash") == wanted_hash
    if output.suffix.lower() != ".png":
        return False
    try:
        from PIL import Image
        with Image.open(output) as image:
            text = image.info.get("vggstyle")
        return bool(text) and json.loads(text).get("batch_hash") == wanted_hash
    except Exception:  # noqa: BLE001 - a damaged or foreign file is simply not a finished job
        return False


# ------------------------------------------------------------------ writing results
def prepare_outdir(outdir) -> Path:
    """Create the output folder if needed; fail early and clearly if it cannot be written."""
    outdir = Path(outdir).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output folder {outdir}: is a file; give a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output folder {outdir}: cannot create it ({exc.strerror or exc}); "
                          "choose another folder") from None
    reason = unwritable(outdir)
    if reason:
        raise OutputError(f"output folder {outdir}: cannot write there ({reason}); choose another folder")
    return outdir


def append_row(path: Path, row: dict) -> None:
    """One whole CSV line per os.write on an O_APPEND file: rows never interleave or tear."""
    line = io.StringIO()
    writer = csv.DictWriter(line, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size == 0:
            writer.writeheader()
        writer.writerow(row)
        os.write(fd, line.getvalue().encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the driver
def stylize_batch(jobs, outdir, config: StyleConfig | None = None, *, scheduler: str | None = None,
                  on_result: Callable[[JobResult], None] | None = None, force: bool = False,
                  devices=("auto",), resources: dict | None = None, retries: int = 2,
                  max_in_flight: int | None = None) -> list[JobResult]:
    """Run every job, skipping those already done; return one JobResult per job.

    jobs: Jobs, (content, style) pairs or dicts {content, style, output?, **StyleConfig fields}.
    outdir: outputs as {content-stem}__{style-stem}.png, and results.csv (one row per finished job).
    scheduler: a Dask scheduler address (tcp://host:port): one task per job on the cluster, with
    ``resources`` (e.g. {"GPU": 1}) and ``retries``; otherwise this machine, one job at a time per
    entry of ``devices``. on_result: called with each JobResult as it arrives (skipped ones too).
    A failing job is recorded and the others go on. Ctrl-C (KeyboardInterrupt) stops the running
    jobs, keeps what is finished and propagates; calling again continues.
    """
    base = config or StyleConfig()
    jobs = as_jobs(jobs)
    check_jobs(jobs, base)
    outdir = prepare_outdir(outdir)
    on_result = on_result or (lambda result: None)
    results, tasks, digests = [], [], {}
    for job in jobs:
        job_config = job.config(base)
        task = Task(job, job_config, job_hash(job, job_config, digests))
        if not force and already_done(outdir / job.output, task.hash):
            results.append(JobResult(job, "skipped", outdir / job.output))
            on_result(results[-1])
        else:
            tasks.append(task)
    for task, outcome in _runner(scheduler, devices, resources, retries, max_in_flight)(tasks):
        results.append(record(task, outcome, outdir))
        on_result(results[-1])
    return results


def _runner(scheduler, devices, resources, retries, max_in_flight):
    if scheduler:
        from .batch_dask import DaskRunner
        return DaskRunner(scheduler, resources=resources, retries=retries, max_in_flight=max_in_flight)
    from .batch_work import LocalRunner
    return LocalRunner(devices)


def record(task: Task, outcome, outdir: Path) -> JobResult:
    """Write a finished job's output (atomically) and then its results.csv row."""
    output = outdir / task.job.output
    status, error = outcome.status, outcome.error
    with _interrupt_deferred():
        if status == "done":
            try:
                write_atomically(output, outcome.data)
            except OSError as exc:
                status, error = "failed", f"output {output}: cannot write ({exc.strerror or exc})"
        result = JobResult(task.job, status, output, error, outcome.timings.get("total", 0.0),
                           outcome.losses, outcome.worker, outcome.timings)
        append_row(outdir / RESULTS_NAME, result.row())
    return result


@contextlib.contextmanager
def _interrupt_deferred():
    """Ctrl-C between an output and its row waits until both are written (never an output without
    its row, which a rerun would skip). Only the main thread can handle signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt here
