"""Which jobs a batch has: files, folders and globs crossed (every content with every style), or a
pairs CSV whose extra columns are per-job options, or dicts; all checked before anything runs, so a
bad cell or two jobs writing one file is one line before the first job, not an hour in."""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

from ..config import StyleConfig
from ..errors import ConfigError
from .jobs import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Job, is_video


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
