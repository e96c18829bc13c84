"""The resumable work folder of a video run: finished frames, their records, the options they came from.

Why it is built this way:
- A frame counts as finished only when its PNG exists under its final name; it is written to a
  temporary file, flushed to disk and renamed, so kill -9 at any moment loses at most the frame
  in progress (a leftover ``.part`` file is removed on the next open).
- Its record (losses, seconds, ...) is appended to ``frames.jsonl`` *before* the rename: every
  finished frame has a record; a record without its frame (killed in between) is simply
  superseded when the frame is redone, and a line torn by a kill is cut off on the next open.
- ``done`` is the contiguous prefix 0..done-1 of finished frames: the run continues from there.
- Passes (VideoConfig.passes): a frame redone in pass p >= 2 is written as ``frame_N.passP.png``
  (the same atomic rename), then its older file is removed; the highest pass on disk is the
  frame, so a kill between the two leaves the newer one in charge. Later passes revisit frames
  in any order, so they need each frame's content at the working size: ``content_N.png``.
- ``manifest.json`` holds the options that decide what a frame looks like and their hash; other
  options (say, the output path) are the caller's business and are not passed. A different hash
  clears the frames and starts over, with a message naming the changed options for the CLI.
- Only this module's own files are ever deleted from the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from PIL import Image

from ..errors import OutputError
from ..files import write_atomically

MANIFEST = "manifest.json"
RECORDS = "frames.jsonl"
PLAN = "plan.json"  # a run spread over workers: the clip's length and its shot cuts
FRAME_NAME = re.compile(r"^frame_(\d{6})(?:\.pass(\d+))?\.png$")
CONTENT_NAME = re.compile(r"^content_(\d{6})\.png$")
TEMP_NAME = re.compile(r"^\.(frame_\d{6}(\.pass\d+)?\.png|content_\d{6}\.png|manifest\.json|plan\.json)\.part-")
VERSION = 2


def options_hash(options: dict) -> str:
    """sha256 of the options as canonical JSON (sorted keys; non-JSON values by their str())."""
    text = json.dumps(options, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def open_frame_store(folder, options: dict) -> tuple["FrameStore", str | None]:
    """Open (or create) the work folder for a run with ``options``.

    Returns the store and a one-line message for the user, or None when there is nothing to say:
    'resuming ...' when earlier frames are reused, 'options changed ... starting over' when not.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_temporaries(folder)
        _drop_torn_record(folder / RECORDS)
    except OSError as exc:
        raise OutputError(f"work dir {folder}: cannot use it ({exc.strerror or exc}); "
                          "choose another with --work-dir") from None
    store = FrameStore(folder, options)
    previous = _read_manifest(folder)
    message = None
    if previous is None and store.finished:
        message = f"work dir {folder}: frames without a readable manifest; starting over"
    elif previous is not None and previous.get("hash") != store.hash:
        changed = _changed_keys(previous.get("options", {}), options)
        message = f"work dir {folder}: options changed since the last run ({changed}); starting over"
    if message is not None or previous is None:
        store.clear()
        store.write_manifest()
    elif store.done:
        message = f"work dir {folder}: resuming after {store.done} finished frames"
    return store, message


class FrameStore:
    """Finished frames ``frame_000000.png`` ... (and their later passes), their records and, for
    later passes, their content frames, in one folder."""

    def __init__(self, folder: Path, options: dict):
        self.folder, self.options, self.hash = Path(folder), options, options_hash(options)
        self.passes: dict[int, int] = {}  # frame -> the highest pass on disk
        self.contents: set[int] = set()
        for path in self.folder.iterdir():
            if match := FRAME_NAME.match(path.name):
                index, number = int(match.group(1)), int(match.group(2) or 1)
                self.passes[index] = max(number, self.passes.get(index, 0))
            elif match := CONTENT_NAME.match(path.name):
                self.contents.add(int(match.group(1)))

    @property
    def finished(self) -> set[int]:
        """The frames with at least their first pass on disk."""
        return set(self.passes)

    def pass_of(self, index: int) -> int:
        """The highest pass of frame ``index`` on disk; 0 when it has none."""
        return self.passes.get(index, 0)

    @property
    def done(self) -> int:
        """How many frames from the start are finished (frames 0 .. done-1)."""
        count = 0
        while count in self.passes:
            count += 1
        return count

    def frame_path(self, index: int, pass_number: int | None = None) -> Path:
        """The file of frame ``index`` in ``pass_number`` (default: the highest on disk, or 1)."""
        number = pass_number or self.passes.get(index, 1)
        return self.folder / (f"frame_{index:06d}.png" if number == 1 else f"frame_{index:06d}.pass{number}.png")

    def kept_path(self, index: int, pass_number: int) -> Path:
        """The file of frame ``index`` as it was after ``pass_number``: that pass's, or the latest
        before it that is kept (a pass that turned at the frame left it as it was)."""
        for number in range(min(pass_number, self.passes.get(index, 1)), 1, -1):
            path = self.frame_path(index, number)
            if path.exists():
                return path
        return self.frame_path(index, 1)

    def save(self, index: int, image: Image.Image, record: dict | None = None, pass_number: int = 1,
             keep_older: bool = False) -> Path:
        """Store a finished frame (of a pass): its record first, then the PNG by an atomic rename,
        then the frame's file of an earlier pass, if any, is removed (kept with ``keep_older``: a
        chunk's edge frame, which its neighbour reads at the earlier pass; ``clear`` removes it)."""
        self._append_record({**(record or {}), "index": index, "pass": pass_number})
        path = self.frame_path(index, pass_number)
        self._write(path, image, f"frame {index}")
        older = self.passes.get(index)
        self.passes[index] = pass_number
        if older is not None and older != pass_number and not keep_older:
            self.frame_path(index, older).unlink(missing_ok=True)
        return path

    def load(self, index: int, pass_number: int | None = None) -> Image.Image:
        """A finished frame, its latest pass (or ``pass_number``'s, if kept), as an RGB image (to warp
        from, or to encode the video)."""
        with Image.open(self.frame_path(index) if pass_number is None else self.kept_path(index, pass_number)) as image:
            return image.convert("RGB")

    def frame_bytes(self, index: int, pass_number: int | None = None) -> bytes:
        """A finished frame's PNG file as it is (for a worker: no decoding and encoding again)."""
        return (self.frame_path(index) if pass_number is None else self.kept_path(index, pass_number)).read_bytes()

    def content_bytes(self, index: int) -> bytes:
        return (self.folder / f"content_{index:06d}.png").read_bytes()

    def save_content(self, index: int, image: Image.Image) -> None:
        """The content frame at the working size, for the passes after the first."""
        self._write(self.folder / f"content_{index:06d}.png", image, f"content frame {index}")
        self.contents.add(index)

    def load_content(self, index: int) -> Image.Image:
        with Image.open(self.folder / f"content_{index:06d}.png") as image:
            return image.convert("RGB")

    def records(self) -> list[dict]:
        """For each finished frame 0 .. done-1, in order: the record of its latest pass on disk,
        with ``seconds`` summed over its passes (rebuilds the summary)."""
        by_index = self.records_by_index()
        return [by_index[index] for index in range(self.done) if index in by_index]

    def records_by_index(self) -> dict[int, dict]:
        """The same for every frame on disk, in any order (a clip spread over workers fills it
        chunk by chunk)."""
        latest = _records_by_pass(self.folder / RECORDS)
        out = {}
        for index, number in sorted(self.passes.items()):
            if (index, number) in latest:
                seconds = sum(latest[index, p].get("seconds", 0.0) for p in range(1, number + 1)
                              if (index, p) in latest)
                out[index] = {**latest[index, number], "seconds": round(seconds, 3)}
        return out

    def clear(self) -> None:
        """Delete this module's files (frames, content frames, records, manifest) and nothing else."""
        for path in self.folder.iterdir():
            if FRAME_NAME.match(path.name) or CONTENT_NAME.match(path.name) or path.name in (RECORDS, MANIFEST, PLAN):
                path.unlink()
        self.passes.clear()
        self.contents.clear()

    def write_manifest(self) -> None:
        manifest = {"version": VERSION, "hash": self.hash, "options": self.options}
        text = json.dumps(manifest, sort_keys=True, indent=1, default=str)
        write_atomically(self.folder / MANIFEST, lambda f: f.write(text.encode()))

    def _write(self, path: Path, image: Image.Image, what: str) -> None:
        try:
            write_atomically(path, lambda f: image.save(f, format="PNG", compress_level=1))
        except OSError as exc:
            raise OutputError(f"work dir {self.folder}: cannot write {what} ({exc.strerror or exc})") from None

    def _append_record(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with open(self.folder / RECORDS, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def load_plan(store: FrameStore) -> dict | None:
    """What a run spread over workers found before the passes (the clip's length, its shot cuts)."""
    try:
        plan = json.loads((store.folder / PLAN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) else None


def save_plan(store: FrameStore, plan: dict | None) -> None:
    """Keep ``plan`` in the work dir (None: remove it); ``clear`` removes it with the frames."""
    if plan is None:
        (store.folder / PLAN).unlink(missing_ok=True)
        return
    text = json.dumps(plan, sort_keys=True)
    write_atomically(store.folder / PLAN, lambda f: f.write(text.encode()))


def _records_by_pass(path: Path) -> dict[tuple[int, int], dict]:
    """The last record of each (frame, pass) in the records file."""
    latest: dict[tuple[int, int], dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if isinstance(record, dict) and isinstance(record.get("index"), int):
                latest[record["index"], record.get("pass", 1)] = record
    return latest


def _remove_temporaries(folder: Path) -> None:
    for path in folder.iterdir():
        if TEMP_NAME.match(path.name):
            path.unlink()


def _drop_torn_record(path: Path) -> None:
    """Cut a last line left unfinished by a kill, so the next record starts on a line of its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _changed_keys(old: dict, new: dict) -> str:
    new_json = json.loads(json.dumps(new, default=str))
    keys = sorted(k for k in set(old) | set(new_json) if old.get(k) != new_json.get(k))
    return ", ".join(keys) if keys else "option values"
