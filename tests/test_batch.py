"""`vggstyle batch` and stylize_batch: on this machine (mostly with a stub in place of the network)
and on a real Dask cluster started here, on loopback only, with a worker killed mid-task."""

from __future__ import annotations

import _thread
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

import vggstyle
from vggstyle.batch import work as batch_work
from vggstyle.batch import RESULT_COLUMNS, Job, jobs_from_pairs
from vggstyle.cli import main
from conftest import (EXAMPLES, assert_loopback_only, executing_tasks, kill_worker_while, process_of,
                      wait_until_executing)

FAST = ["--image-size", "32", "--num-iterations", "2", "-q"]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The batch entry point sets torch's threads for the process; give the next test what it had."""
    import torch
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two contents, two styles (48 px) and a file that only pretends to be an image."""
    folder = tmp_path_factory.mktemp("batch-inputs")
    sources = {"contents/tubingen.png": EXAMPLES / "content" / "tubingen.jpg",
               "contents/tubingen_small.png": EXAMPLES / "content" / "tubingen.jpg",
               "styles/starry.png": EXAMPLES / "style" / "starry_night.jpg",
               "styles/shipwreck.png": EXAMPLES / "style" / "shipwreck.jpg"}
    for name, source in sources.items():
        (folder / name).parent.mkdir(exist_ok=True)
        image = Image.open(source).convert("RGB")
        image.thumbnail((48, 48) if "small" not in name else (40, 40))
        image.save(folder / name)
    (folder / "bad.png").write_bytes(b"this is not a PNG")
    return folder


def rows(outdir: Path) -> list[dict]:
    with open(outdir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


class StubStylize:
    """Stands in for the network: records each call, returns a small image with its parameters."""

    def __init__(self):
        self.calls = []

    def __call__(self, content, style, config, on_step):
        import torch
        vggstyle.load_image(content, what="content image")  # a bad input fails as it would for real
        self.calls.append((Path(content).name, Path(style).name, config))
        self.threads = torch.get_num_threads()  # what the job ran with
        on_step(SimpleNamespace(losses={"content": 1.0, "style": 2.0, "tv": 0.5, "total": 3.5}, elapsed=0.01))
        image = Image.new("RGB", (8, 8), (len(self.calls), 0, 0))
        image.info["vggstyle"] = config.to_dict()
        return image


@pytest.fixture
def stub(monkeypatch):
    stub = StubStylize()
    monkeypatch.setattr(batch_work, "_stylize", stub)
    return stub


# ------------------------------------------------------------------ on this machine
@pytest.mark.slow
def test_bad_image_among_good_ones_is_recorded_and_the_rest_finish(images, tmp_path, capsys):
    """The real network, end to end: one row per job, the bad one says why, exit 1."""
    code = main(["batch", "--contents", str(images / "contents" / "tubingen.png"), str(images / "bad.png"),
                 "--styles", str(images / "styles"), "-o", str(tmp_path / "out"), *FAST])
    assert code == 1
    table = rows(tmp_path / "out")
    assert list(table[0]) == list(RESULT_COLUMNS)
    by_output = {row["output"]: row for row in table}
    assert sorted(by_output) == ["bad__shipwreck.png", "bad__starry.png", "tubingen__shipwreck.png",
                                 "tubingen__starry.png"]
    for name in ("bad__shipwreck.png", "bad__starry.png"):
        assert by_output[name]["status"] == "failed"
        assert "not an image Pillow can read" in by_output[name]["error"]
        assert not (tmp_path / "out" / name).exists()
    for name in ("tubingen__shipwreck.png", "tubingen__starry.png"):
        row = by_output[name]
        assert row["status"] == "done" and row["error"] == "" and float(row["total_loss"]) > 0
        assert row["worker"] == "cpu"
        params = vggstyle.read_parameters(tmp_path / "out" / name)
        assert params["iterations_done"] == 2 and len(params["batch_hash"]) == 64
        with Image.open(tmp_path / "out" / name) as image:
            assert max(image.size) == 32
    assert "failed: bad.png x starry.png: content image" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "results.csv", "tubingen__shipwreck.png", "tubingen__starry.png"]


def test_rerun_skips_finished_jobs_force_redoes_and_changed_options_redo(images, tmp_path, stub):
    args = ["batch", "--contents", str(images / "contents"), "--styles", str(images / "styles" / "*.png"),
            "-o", str(tmp_path), *FAST]
    assert main(args) == 0
    assert len(stub.calls) == 4 and len(rows(tmp_path)) == 4
    assert main(args) == 0  # everything finished: nothing runs, no rows added
    assert len(stub.calls) == 4 and len(rows(tmp_path)) == 4
    assert main([*args, "--checkpoint", "on", "--device", "cpu"]) == 0  # how it runs, not what it computes
    assert len(stub.calls) == 4
    assert main([*args, "--force"]) == 0
    assert len(stub.calls) == 8 and len(rows(tmp_path)) == 8
    assert main([*args, "--style-weight", "7"]) == 0  # another result: redone
    assert len(stub.calls) == 12
    (images / "styles" / "starry.png").touch()  # the same bytes: still done
    assert main([*args, "--style-weight", "7"]) == 0
    assert len(stub.calls) == 12


def test_a_changed_input_file_is_redone(images, tmp_path, stub):
    content = tmp_path / "c.png"
    Image.open(images / "contents" / "tubingen.png").save(content)
    args = ["batch", "--contents", str(content), "--styles", str(images / "styles" / "starry.png"),
            "-o", str(tmp_path / "out"), *FAST]
    assert main(args) == 0 and main(args) == 0
    assert len(stub.calls) == 1
    Image.open(images / "contents" / "tubingen_small.png").save(content)
    assert main(args) == 0
    assert len(stub.calls) == 2


def test_pairs_csv_with_per_row_options(images, tmp_path, stub):
    pairs = images / "pairs.csv"
    pairs.write_text("content,style,image-size,style_weight,output,single_scale\n"
                     "contents/tubingen.png,styles/starry.png,40,,,\n"
                     "contents/tubingen.png,styles/shipwreck.png,,9.5,wreck.png,yes\n")
    assert main(["batch", "--pairs", str(pairs), "-o", str(tmp_path), "--image-size", "24", "-q"]) == 0
    configs = {(c, s): config for c, s, config in stub.calls}
    first, second = configs["tubingen.png", "starry.png"], configs["tubingen.png", "shipwreck.png"]
    assert (first.image_size, first.style_weight, first.single_scale) == (40, 40.0, False)
    assert (second.image_size, second.style_weight, second.single_scale) == (24, 9.5, True)
    assert sorted(row["output"] for row in rows(tmp_path)) == ["tubingen__starry.png", "wreck.png"]
    assert vggstyle.read_parameters(tmp_path / "wreck.png")["style_weight"] == 9.5


def test_stylize_batch_python_api_takes_pairs_and_dicts(images, tmp_path, stub):
    seen = []
    content, style = images / "contents" / "tubingen.png", images / "styles" / "starry.png"
    results = vggstyle.stylize_batch([(content, style), {"content": content, "style": style, "output": "b.png",
                                                         "tv_weight": 0.0}],
                                     tmp_path, vggstyle.StyleConfig(image_size=24), on_result=seen.append)
    assert [r.status for r in results] == ["done", "done"] and seen == results
    assert [r.output.name for r in results] == ["tubingen__starry.png", "b.png"]
    assert [c.tv_weight for _, _, c in stub.calls] == [5.0, 0.0]
    again = vggstyle.stylize_batch([(content, style)], tmp_path, vggstyle.StyleConfig(image_size=24))
    assert [r.status for r in again] == ["skipped"] and len(stub.calls) == 2


def test_ctrl_c_stops_cleanly_and_a_rerun_continues(images, tmp_path, monkeypatch, capsys):
    """Ctrl-C during the second job: the first is kept, nothing half-written, the rerun does the rest."""
    stub = StubStylize()

    def interrupted(content, style, config, on_step):
        if len(stub.calls) == 1:
            stub.calls.append("interrupted")
            results = tmp_path / "results.csv"
            while not (results.exists() and results.read_text().count("\n") == 2):  # the first job's row
                time.sleep(0.01)
            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
            deadline = time.time() + 10
            while on_step(SimpleNamespace(losses={}, elapsed=0.0)) is not False and time.time() < deadline:
                time.sleep(0.01)
            return Image.new("RGB", (8, 8))
        return stub(content, style, config, on_step)

    monkeypatch.setattr(batch_work, "_stylize", interrupted)
    args = ["batch", "--contents", str(images / "contents"), "--styles", str(images / "styles"),
            "-o", str(tmp_path), *FAST]
    assert main(args) == 130
    assert "stopped; finished jobs are kept, run the same command again" in capsys.readouterr().err
    assert len(rows(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", rows(tmp_path)[0]["output"]]
    monkeypatch.setattr(batch_work, "_stylize", stub)
    assert main(args) == 0
    table = rows(tmp_path)
    assert len(table) == 4 and len({row["output"] for row in table}) == 4
    assert len(stub.calls) == 2 + 3  # first job + the interrupted marker, then the three left


def test_ctrl_c_while_an_output_is_written_still_writes_its_row(images, tmp_path, monkeypatch, stub):
    from vggstyle.batch import outdir
    write = outdir.write_atomically

    def interrupted_write(path, data):
        _thread.interrupt_main()  # Ctrl-C arrives between the output and its results.csv row
        write(path, data)

    monkeypatch.setattr(outdir, "write_atomically", interrupted_write)
    args = ["batch", "--contents", str(images / "contents"), "--styles", str(images / "styles"),
            "-o", str(tmp_path), *FAST]
    assert main(args) == 130
    (row,) = rows(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", row["output"]]


def test_one_job_per_device_at_once(images, tmp_path, stub):
    args = ["batch", "--contents", str(images / "contents"), "--styles", str(images / "styles"),
            "-o", str(tmp_path), "--device", "cpu", "--device", "cpu", *FAST]
    import torch
    from vggstyle.device import physical_cores
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, physical_cores() // 2) + 1)  # a count the batch does not use itself
    try:
        assert main(args) == 0
        assert [row["worker"] for row in rows(tmp_path)] == ["cpu"] * 4
        assert stub.threads == max(1, physical_cores() // 2)  # the cores shared by the two jobs...
        assert torch.get_num_threads() == max(1, physical_cores() // 2) + 1  # ...and given back afterwards
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_a_video_content_becomes_an_mp4_through_the_video_path(images, tmp_path):
    import av
    from fractions import Fraction

    from odd_media import panning, write_clip
    clip = write_clip(tmp_path / "clip.mp4", panning(0, 3), Fraction(10))
    assert main(["batch", "--contents", str(clip), "--styles", str(images / "styles" / "starry.png"),
                 "-o", str(tmp_path / "out"), "-q", "--image-size", "48", "--num-iterations", "3",
                 "--threads", "1"]) == 0
    (row,) = rows(tmp_path / "out")
    assert row["output"] == "clip__starry.mp4" and row["status"] == "done", row
    with av.open(str(tmp_path / "out" / "clip__starry.mp4")) as container:
        stream = container.streams.video[0]
        assert sum(1 for _ in container.decode(stream)) == 3 and stream.average_rate == 10


def test_a_stopped_video_job_resumes_its_frames_and_a_finished_one_is_skipped(images, tmp_path, monkeypatch):
    """Issue #19: batch kept a video job's frames in a temporary folder (a stop lost them all) and
    recognised only PNG results as done (a finished MP4 was stylized again on every rerun)."""
    import threading

    import odd_media as media
    from vggstyle import video as video_module
    clip = media.clip(tmp_path / "clip.mp4", count=4)
    style = images / "styles" / "starry.png"
    config = vggstyle.StyleConfig(image_size=32, num_iterations=40, threads=1, precision="fp32")
    summaries = []
    real = video_module.stylize_video
    monkeypatch.setattr(video_module, "stylize_video", lambda *a, **k: summaries.append(real(*a, **k)) or summaries[-1])
    work = batch_work.video_work_dir("f" * 64)
    stop = threading.Event()
    worker = threading.Thread(target=lambda: summaries.append(
        batch_work.run_job(clip, style, config, "f" * 64, stop=stop)))
    worker.start()
    deadline = time.monotonic() + 120
    while not (work / "frame_000001.png").exists():
        assert time.monotonic() < deadline and worker.is_alive()
        time.sleep(0.05)
    stop.set()
    worker.join(60)
    assert summaries[-1].status == "stopped" and (work / "frame_000000.png").exists()
    outcome = batch_work.run_job(clip, style, config, "f" * 64)
    assert outcome.status == "done" and summaries[-1].resumed >= 2, "the frames done before the stop are kept"
    assert not work.exists(), "a finished job's frames are removed"

    args = ["batch", "--contents", str(clip), "--styles", str(style), "-o", str(tmp_path / "out"), "-q",
            "--image-size", "32", "--num-iterations", "2", "--threads", "1"]
    assert main(args) == 0
    runs = len(summaries)
    assert main(args) == 0  # the MP4 carries the job's hash: nothing runs, no row added
    assert len(summaries) == runs and [row["status"] for row in rows(tmp_path / "out")] == ["done"]


@pytest.mark.parametrize("make_args, message", [
    (lambda d: ["--pairs", d / "pairs.csv", "--contents", d / "bad.png"], "either --pairs or --contents"),
    (lambda d: ["--contents", d / "contents"], "give --contents and --styles"),
    (lambda d: ["--contents", d / "nope.png", "--styles", d / "styles"], "nope.png: file not found"),
    (lambda d: ["--contents", d / "nope*.png", "--styles", d / "styles"], "the pattern matches no file"),
    (lambda d: ["--contents", d / "contents", d / "contents" / "tubingen.png", d / "bad.png", "--styles",
                d / "styles", d / "styles" / "starry.png"], None),  # repeats are one job, not an error
    (lambda d: ["--pairs", d / "unknown.csv"], "unknown column 'style_wieght'"),
    (lambda d: ["--pairs", d / "badcell.csv"], "line 2: image_size must be a number, got 'big'"),
    (lambda d: ["--pairs", d / "badvalue.csv"], "--style-weight must be a finite number from 0 to 1e+09"),
    (lambda d: ["--pairs", d / "same.csv"], "would both write x.png"),
    (lambda d: ["--pairs", d / "escape.csv"], "output name '../x.png'"),
    (lambda d: ["--contents", d / "bad.png", "--styles", d / "styles", "--image-size", "8"], "--image-size"),
    (lambda d: ["--contents", d / "bad.png", "--styles", d / "styles", "--worker-resources", "GPU=1"],
     "--worker-resources needs --scheduler"),
    (lambda d: ["--contents", d / "bad.png", "--styles", d / "styles", "--device", "tpu"], "unknown --device"),
    (lambda d: ["--contents", d / "bad.png", "--styles", d / "styles", "--scheduler", "tcp://127.0.0.1:9",
                "--worker-resources", "GPU"], "give NAME=NUMBER"),
])
def test_bad_arguments_are_one_line_and_exit_2(images, tmp_path, capsys, stub, make_args, message):
    (images / "pairs.csv").write_text("content,style\ncontents/tubingen.png,styles/starry.png\n")
    (images / "unknown.csv").write_text("content,style,style_wieght\ncontents/tubingen.png,styles/starry.png,1\n")
    (images / "badcell.csv").write_text("content,style,image_size\ncontents/tubingen.png,styles/starry.png,big\n")
    (images / "badvalue.csv").write_text("content,style,style_weight\ncontents/tubingen.png,styles/starry.png,-1\n")
    (images / "escape.csv").write_text("content,style,output\ncontents/tubingen.png,styles/starry.png,../x.png\n")
    (images / "same.csv").write_text("content,style,output\ncontents/tubingen.png,styles/starry.png,x.png\n"
                                     "contents/tubingen.png,styles/shipwreck.png,x.png\n")
    code = main(["batch", *FAST, *map(str, make_args(images)), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    if message is None:
        table = rows(tmp_path / "out")  # 3 contents x 2 styles; bad.png fails
        assert code == 1 and len(table) == 6 and [r["status"] for r in table].count("failed") == 2
        return
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not stub.calls


def test_an_error_found_after_parsing_is_one_line_also_with_the_progress_bar(images, tmp_path, capsys, stub):
    (tmp_path / "same.csv").write_text(f"content,style,output\n{images}/bad.png,{images}/styles/starry.png,x.png\n"
                                       f"{images}/bad.png,{images}/styles/shipwreck.png,x.png\n")
    assert main(["batch", "--pairs", str(tmp_path / "same.csv"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "would both write x.png" in err, err


def test_scheduler_without_distributed_says_how_to_install(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    code = main(["batch", "--contents", str(images / "bad.png"), "--styles", str(images / "styles"),
                 "-o", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9"])
    assert code == 2
    assert "pip install 'vggstyle[cluster]'" in capsys.readouterr().err


def test_scheduler_from_the_environment(monkeypatch):
    from vggstyle.cli.batch import build_parser
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:8786")
    assert build_parser().parse_args(["-o", "x"]).scheduler == "tcp://127.0.0.1:8786"


def test_jobs_from_pairs_resolves_paths_against_the_csv(tmp_path):
    (tmp_path / "p.csv").write_text("content,style\n a/c.png , b/s.jpg \n")
    (job,) = jobs_from_pairs(tmp_path / "p.csv")
    assert job == Job(tmp_path / "a" / "c.png", tmp_path / "b" / "s.jpg", {}, "c__s.png")


# ------------------------------------------------------------------ on a real Dask cluster
def run_batch(*args, env, wait=True):
    command = [sys.executable, "-m", "vggstyle", "batch", *map(str, args)]
    if wait:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_dask_batch_runs_on_the_workers_and_a_rerun_skips(cluster, images, tmp_path):
    proc = run_batch("--contents", images / "contents" / "tubingen.png", images / "bad.png",
                     "--styles", images / "styles" / "starry.png", "-o", tmp_path, *FAST,
                     "--scheduler", cluster.address, env=cluster.env)
    assert proc.returncode == 1, proc.stderr
    good, bad = sorted(rows(tmp_path), key=lambda row: row["output"], reverse=True)
    assert good["status"] == "done" and good["worker"].startswith("tcp://127.0.0.1:"), good["error"]
    assert vggstyle.read_parameters(tmp_path / good["output"])["iterations_done"] == 2
    assert bad["status"] == "failed"
    assert bad["error"].startswith(f"content image {images / 'bad.png'}: not an image Pillow can read")
    rerun = run_batch("--contents", images / "contents" / "tubingen.png", "--styles", images / "styles" /
                      "starry.png", "-o", tmp_path, *FAST,
                      env={**cluster.env, "DASK_SCHEDULER_ADDRESS": cluster.address})
    assert rerun.returncode == 0 and len(rows(tmp_path)) == 2, rerun.stderr
    assert assert_loopback_only(cluster.pids()) >= 4


@pytest.mark.slow
def test_a_worker_killed_mid_task_loses_nothing(cluster, images, tmp_path):
    """SIGKILL the worker process running a job: the scheduler reruns it elsewhere, one row per job."""
    client = cluster.client
    pids = client.run(os.getpid)  # {worker address: PID}, known before, so that the kill is immediate
    proc = run_batch("--contents", images / "contents" / "tubingen.png", "--styles", images / "styles",
                     "-o", tmp_path, "--image-size", "32", "--num-iterations", "20", "-q",
                     "--scheduler", cluster.address, env=cluster.env, wait=False)
    try:
        executing = wait_until_executing(client, proc)
        address, key = next((address, keys[0]) for address, keys in executing.items() if keys)
    except BaseException:
        proc.kill()
        raise
    pid = pids[address]
    sockets, out, err = kill_worker_while(cluster, proc, pid)
    assert proc.returncode == 0, err
    table = rows(tmp_path)
    assert sorted(row["output"] for row in table) == ["tubingen__shipwreck.png", "tubingen__starry.png"]
    assert all(row["status"] == "done" for row in table)
    index = int(key.split("-")[2])  # vggstyle-batch-{index}-{hash}; styles in sorted order
    killed_output = ["tubingen__shipwreck.png", "tubingen__starry.png"][index]
    (rerun_row,) = [row for row in table if row["output"] == killed_output]
    assert rerun_row["worker"] != address  # finished by another (or the restarted) worker process
    assert process_of(pid) is None or process_of(pid).status() == "zombie"
    assert sockets >= 6


@pytest.mark.slow
def test_ctrl_c_on_dask_stops_the_running_tasks_and_a_rerun_continues(cluster, images, tmp_path):
    """Ctrl-C: exit 130, the tasks are cancelled and their optimizations end (500 iterations would take
    minutes: the workers are idle long before that); then the batch runs to the end."""
    args = ["--contents", images / "contents" / "tubingen_small.png", "--styles", images / "styles",
            "-o", tmp_path, "--image-size", "32", "-q", "--scheduler", cluster.address]
    proc = run_batch(*args, "--num-iterations", "500", env=cluster.env, wait=False)
    try:
        wait_until_executing(cluster.client, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "stopped; finished jobs are kept" in err, err
    deadline = time.time() + 120
    while any(executing_tasks(cluster.client).values()) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(executing_tasks(cluster.client).values()) and not any(cluster.client.processing().values())
    assert not (tmp_path / "results.csv").exists()
    rerun = run_batch(*args, "--num-iterations", "3", env=cluster.env)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(row["output"] for row in rows(tmp_path)) == ["tubingen_small__shipwreck.png",
                                                               "tubingen_small__starry.png"]
