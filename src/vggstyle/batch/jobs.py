"""The jobs of a batch as the facade (batch/__init__) and its runners (work, cluster) share them:
below all three, so none imports another to know what a job is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import StyleConfig

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}


@dataclass
class Job:
    """One stylization: a content file, a style file, per-job option overrides, an output name."""

    content: Path
    style: Path
    options: dict = field(default_factory=dict)  # StyleConfig fields for this job only
    output: str = ""  # file name inside the output folder; default {content-stem}__{style-stem}.png

    def __post_init__(self) -> None:
        self.content, self.style = Path(self.content), Path(self.style)
        if not self.output:
            suffix = ".mp4" if is_video(self.content) else ".png"
            self.output = f"{self.content.stem}__{self.style.stem}{suffix}"

    def config(self, base: StyleConfig) -> StyleConfig:
        return base.replace(**self.options) if self.options else base


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Task:
    """A job ready to run: its resolved config and hash (what a runner needs, nothing else)."""

    job: Job
    config: StyleConfig
    hash: str
