"""The resumable work folder: atomic frames, contiguous prefix, option changes, torn writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vggstyle.errors import OutputError
from vggstyle.video.store import open_frame_store, options_hash

OPTIONS = {"style_weight": 1e5, "styles": ["a.png"], "frame_iterations": 50}


def _image(value: int) -> Image.Image:
    return Image.fromarray(np.full((8, 12, 3), value, np.uint8), "RGB")


def _fill(folder, count, options=OPTIONS):
    store, _ = open_frame_store(folder, options)
    for i in range(count):
        store.save(i, _image(10 * i), {"losses": {"total": float(i)}, "seconds": 0.5})
    return store


def test_new_folder_starts_empty_and_says_nothing(tmp_path):
    store, message = open_frame_store(tmp_path / "work", OPTIONS)
    assert (store.done, message) == (0, None)
    assert json.loads((tmp_path / "work" / "manifest.json").read_text())["hash"] == options_hash(OPTIONS)


def test_frames_round_trip_and_resume_reports_the_prefix(tmp_path):
    _fill(tmp_path, 3)
    store, message = open_frame_store(tmp_path, OPTIONS)
    assert store.done == 3
    assert message == f"work dir {tmp_path}: resuming after 3 finished frames"
    assert np.asarray(store.load(2))[0, 0, 0] == 20
    assert [r["index"] for r in store.records()] == [0, 1, 2]
    assert store.records()[1]["losses"]["total"] == 1.0


def test_done_is_the_contiguous_prefix(tmp_path):
    store = _fill(tmp_path, 2)
    store.save(3, _image(1))  # frame 2 missing
    assert store.done == 2
    assert open_frame_store(tmp_path, OPTIONS)[0].done == 2


def test_changed_option_starts_over_and_names_it(tmp_path):
    _fill(tmp_path, 3)
    changed = {**OPTIONS, "style_weight": 2e5}
    store, message = open_frame_store(tmp_path, changed)
    assert message == f"work dir {tmp_path}: options changed since the last run (style_weight); starting over"
    assert store.done == 0 and store.records() == []
    assert not list(tmp_path.glob("frame_*.png"))
    assert open_frame_store(tmp_path, changed)[1] is None  # the new manifest is kept


def test_kill_mid_frame_loses_only_that_frame(tmp_path):
    """A kill -9 while frame 2 is written leaves its temp file and maybe its record, never frame_000002.png."""
    _fill(tmp_path, 2)
    half = tmp_path / ".frame_000002.png.part-abc123"
    half.write_bytes(b"\x89PNG\r\n\x1a\n half written")
    with open(tmp_path / "frames.jsonl", "a") as f:
        f.write(json.dumps({"index": 2, "seconds": 9.0}) + "\n" + '{"index": 3, "sec')  # record, then a torn line
    store, message = open_frame_store(tmp_path, OPTIONS)
    assert store.done == 2 and "resuming after 2" in message
    assert not half.exists()
    assert [r["index"] for r in store.records()] == [0, 1]
    store.save(2, _image(7), {"seconds": 1.0})  # redone: its new record wins
    assert store.records()[2]["seconds"] == 1.0


def test_only_its_own_files_are_deleted(tmp_path):
    _fill(tmp_path, 1)
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    open_frame_store(tmp_path, {**OPTIONS, "seed": 1})
    assert keep.read_text() == "mine"


def test_frames_without_manifest_start_over(tmp_path):
    _fill(tmp_path, 2)
    (tmp_path / "manifest.json").write_text("{not json")
    store, message = open_frame_store(tmp_path, OPTIONS)
    assert store.done == 0 and "without a readable manifest; starting over" in message


def test_unusable_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"^work dir .*file/work: cannot use it .*--work-dir$"):
        open_frame_store(blocker / "work", OPTIONS)


def test_a_later_pass_replaces_the_frame_and_survives_a_kill_between_its_two_files(tmp_path):
    store = _fill(tmp_path, 3)
    store.save_content(1, _image(99))
    store.save(1, _image(200), {"losses": {"total": 0.1}, "seconds": 0.25}, pass_number=2)
    assert sorted(p.name for p in tmp_path.glob("frame_*")) == ["frame_000000.png", "frame_000001.pass2.png",
                                                                "frame_000002.png"]
    assert np.asarray(store.load(1))[0, 0, 0] == 200 and np.asarray(store.load_content(1))[0, 0, 0] == 99
    record = store.records()[1]
    assert record["pass"] == 2 and record["losses"] == {"total": 0.1} and record["seconds"] == 0.75  # both passes
    # killed after the new pass was renamed into place but before the old one went: the newer wins
    _image(10).save(tmp_path / "frame_000001.png")
    reopened, message = open_frame_store(tmp_path, OPTIONS)
    assert reopened.done == 3 and reopened.pass_of(1) == 2 and reopened.pass_of(0) == 1
    assert np.asarray(reopened.load(1))[0, 0, 0] == 200 and 1 in reopened.contents
    reopened.clear()
    assert not list(tmp_path.iterdir())
