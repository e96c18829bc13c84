"""What one server accepts (Limits, made into `vggstyle serve` options) and how it refuses
(UploadError, with its HTTP status): below the upload checks for images (uploads.py) and for
videos (video_uploads.py), which both use them."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..config import FLOAT, INT, MAX_ITERATIONS, MAX_SIDE, Range, number_problem
from ..errors import VggstyleError

# Pillow decoders a client may reach: the common photo formats, not every format Pillow knows
# (JPEG includes the MPO files some cameras write).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
VIDEO_FORMATS = "mp4, mov, mkv, webm, avi or an animated GIF"


def _limit(default, kind: str, help: str, bounds: Range):
    return field(default=default, metadata={"help": help, "kind": kind, "bounds": bounds})


@dataclass
class Limits:
    """What one server accepts; `vggstyle serve` makes an option of each field (its kind declared)."""

    max_queue: int = _limit(16, INT, "jobs that may wait behind the running ones; more are refused (503)",
                            Range(1, 10_000))
    max_upload_mb: float = _limit(30.0, FLOAT, "size of one job's uploads, all images together, in MB",
                                  Range(0.0, 100_000.0, low_open=True))
    max_input_pixels: int = _limit(40_000_000, INT, "pixels in one uploaded image", Range(1, 10**10))
    max_styles: int = _limit(8, INT, "style images in one job", Range(1, 64))
    max_image_size: int = _limit(2048, INT, "largest image_size a job may ask for (and largest style image side)",
                                 Range(16, MAX_SIDE))
    max_iterations: int = _limit(5000, INT, "most iterations a job may ask for", Range(1, MAX_ITERATIONS))
    keep_results: int = _limit(50, INT, "finished results kept; the oldest go first", Range(1, 100_000))
    keep_minutes: float = _limit(60.0, FLOAT, "minutes a finished result is kept", Range(0.0, 1e6, low_open=True))
    preview_every: int = _limit(5, INT, "iterations between preview images", Range(1, MAX_ITERATIONS))
    max_video_seconds: float = _limit(10.0, FLOAT, "seconds of video a job may send as its content, at "
                                      "most 120 frames a second (413 beyond)", Range(0.0, 86_400.0, low_open=True))
    upload_seconds: float = _limit(60.0, FLOAT, "seconds a client may take to send one job's upload, and to "
                                   "pause within it (a quarter of that); slower ones get 408",
                                   Range(1.0, 3600.0))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_files(self) -> int:
        """File parts in one job: the content, and per style its image and optionally its mask."""
        return 1 + 2 * self.max_styles

    def check(self) -> Limits:
        for f in fields(self):
            flag = f"--{f.name.replace('_', '-')}"
            if problem := number_problem(flag, getattr(self, f.name), f.metadata["kind"] == INT, f.metadata["bounds"]):
                raise ValueError(problem)
        return self


class UploadError(VggstyleError):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def shutting_down() -> UploadError:
    """The refusal of an upload that arrives, or is still arriving, while the server stops."""
    return UploadError(503, "the server is shutting down; send the job again when it is back")


def too_large(limits: Limits) -> UploadError:
    """The refusal of a body over the server's upload limit (by its Content-Length or as it arrives)."""
    return UploadError(413, f"the upload is over this server's limit of {limits.max_upload_mb:g} MB per job; "
                            "send smaller images")
