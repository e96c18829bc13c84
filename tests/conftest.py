"""Shared fixtures: small real images and the real weights, loaded once per session."""

from __future__ import annotations

import atexit
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

try:  # the client starlette prefers; httpx has the same API. Without the [web] extra the web tests skip.
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    try:
        import httpx
    except ImportError:
        httpx = None

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# A suite started in the background of a non-interactive shell (`nohup make test &`) inherits
# SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the Ctrl-C tests
# (_thread.interrupt_main) would see nothing happen. Give the suite the handler a terminal has.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The kernel calibration's cache (kernels.py) goes to a folder of this run, never the user's ~/.cache;
# set before any test runs so that the CLI's child processes share it.
if "VGGSTYLE_CACHE_DIR" not in os.environ:
    os.environ["VGGSTYLE_CACHE_DIR"] = tempfile.mkdtemp(prefix="vggstyle-test-cache-")
    atexit.register(shutil.rmtree, os.environ["VGGSTYLE_CACHE_DIR"], True)


def _cpu_runs_bf16() -> bool:
    from vggstyle.device import cpu_runs_bf16
    return cpu_runs_bf16()


# Tests of bf16's own accuracy and kernels: only where oneDNN runs bf16 convolutions.
needs_bf16 = pytest.mark.skipif(not _cpu_runs_bf16(), reason="needs a CPU with bf16 convolutions in oneDNN "
                                "(AVX512-BW/VL/DQ, AVX-NE-CONVERT or AMX); this one has none")


@pytest.fixture
def bf16_anywhere(monkeypatch):
    """bf16 runs on every CPU: natively where oneDNN has bf16 kernels; elsewhere through torch's
    unfused autocast convolutions (slow, the same bf16 numbers), so that the logic around reduced
    precision (the float32 fallback, the first steps) is tested on AVX2-only CPUs too. Yields
    whether it is emulated."""
    from vggstyle import device, engine, vgg
    emulated = not device.cpu_runs_bf16()
    if emulated:
        monkeypatch.setattr(device, "cpu_runs_bf16", lambda: True)
        monkeypatch.setattr(vgg, "fused_conv_relu_available", lambda policy: False)
        engine.network.cache_clear()
    yield emulated
    if emulated:
        engine.network.cache_clear()


@pytest.fixture(scope="session")
def weights():
    from vggstyle.weights import load_weights
    return load_weights("caffe")


def _small(src: Path, dst: Path, long_side: int) -> Path:
    image = Image.open(src).convert("RGB")
    image.thumbnail((long_side, long_side), Image.LANCZOS)
    image.save(dst)
    return dst


@pytest.fixture(scope="session")
def small_images(tmp_path_factory):
    """content.png (tubingen) and style.png / style2.png (starry night, shipwreck), 96 px long side."""
    folder = tmp_path_factory.mktemp("images")
    return {
        "content": _small(EXAMPLES / "content" / "tubingen.jpg", folder / "content.png", 96),
        "style": _small(EXAMPLES / "style" / "starry_night.jpg", folder / "style.png", 96),
        "style2": _small(EXAMPLES / "style" / "shipwreck.jpg", folder / "style2.png", 96),
    }


@pytest.fixture
def make_client():
    """make_client(runner=None, video_runner=None, scheduler=None, **limits) -> a TestClient of a fresh web app; each
    is shut down (and its queue closed) after the test."""
    from fastapi.testclient import TestClient

    from vggstyle.web.server import create_app
    from vggstyle.web.uploads import Limits
    stack = []

    def make(runner=None, video_runner=None, scheduler=None, **limits):
        client = TestClient(create_app(Limits(**limits), runner=runner, video_runner=video_runner,
                                       scheduler=scheduler))
        client.__enter__()
        stack.append(client)
        return client

    yield make
    for client in reversed(stack):
        client.__exit__(None, None, None)


def wait_for_job(client, job_id, predicate, timeout):
    """Poll a web job (through a TestClient) until predicate(state) holds; fail after ``timeout`` s."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if predicate(job):
            return job
        assert time.monotonic() < deadline, f"timed out waiting; last state {job}"
        time.sleep(0.02)


# ------------------------------------------------------------------ the web app without the network
def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def example(path: str, side: int) -> bytes:
    image = Image.open(EXAMPLES / path).convert("RGB")
    image.thumbnail((side, side))
    return png_of(image)


CONTENT = example("content/tubingen.jpg", 64)
STYLE = example("style/starry_night.jpg", 48)


class FakeRunner:
    """stylize's signature without the network: `delay` seconds per iteration, blocked while
    `gate` is clear; records the calls and the masks it got."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.calls = []

    def __call__(self, content, styles, config, *, on_step, masks=None):
        self.calls.append(SimpleNamespace(config=config, masks=masks))
        start = time.perf_counter()
        for step in range(1, config.iterations + 1):
            self.gate.wait()
            time.sleep(self.delay)
            progress = SimpleNamespace(step=step, total=config.iterations, size=content.size,
                                       losses={"content": 1.0, "style": 1.0, "tv": 1.0, "total": 3.0},
                                       elapsed=time.perf_counter() - start, iterations_per_second=10.0,
                                       scale=1, num_scales=1, image=lambda: content)
            if on_step(progress) is False:
                break
        result = content.copy()
        result.info["vggstyle"] = {**config.to_dict(), "iterations_done": step}
        return result


def post_job(client, content=CONTENT, styles=(STYLE,), masks=(), **params):
    parts = [("content", ("c.png", content, "image/png"))]
    parts += [("style", (f"s{i}.png", s, "image/png")) for i, s in enumerate(styles)]
    parts += [("style_mask", (f"m{i}.png", m, "image/png")) for i, m in enumerate(masks)]
    data = {"image_size": "32", "num_iterations": "3", **{k: str(v) for k, v in params.items()}}
    return client.post("/api/jobs", files=parts, data=data)


# ------------------------------------------------------------------ a video job without the network
class FakeVideoRunner:
    """stylize_video's signature and hooks, no network: each frame is its content inverted after
    ``steps`` iterations (``pace`` seconds each), in ``passes`` passes like the library's (later ones
    revisit every frame but the one where they turn). ``hold_at``: before that frame's (0-based) first
    iteration in pass ``hold_in_pass``, wait for ``release`` (the test looks at the job, or cancels it,
    meanwhile)."""

    def __init__(self, steps: int = 4, hold_at: int | None = None, pace: float = 0.0, passes: int = 1,
                 hold_in_pass: int = 1):
        self.steps, self.hold_at, self.pace, self.passes = steps, hold_at, pace, passes
        self.hold_in_pass = hold_in_pass
        self.held, self.release = threading.Event(), threading.Event()
        self.calls = []

    def __call__(self, input, styles, output, config, *, video, masks=None, on_step, on_frame):
        import numpy as np

        from vggstyle.video import FrameDone, VideoSummary
        from vggstyle.video.reader import open_video
        from vggstyle.video.writer import VideoWriter
        self.calls.append({"config": config, "video": video, "input": input})
        clip = open_video(input)
        done = []
        count = clip.frame_count
        for frame in clip.frames():
            image = Image.fromarray(255 - np.asarray(frame.image.resize((48, 36))))
            if not self._frame(frame.index, count, image, 1, count, on_step):
                return VideoSummary(None, len(done), count, clip.fps, (48, 36), 0.0, stopped=True)
            done.append(image)
            on_frame(FrameDone(frame.index, count, self.losses, 0.01, frame.index == 0, False, image, 1, self.passes,
                               count))
        for number in range(2, self.passes + 1):  # later passes: every frame but the one where it turns
            order = range(count - 2, -1, -1) if number % 2 == 0 else range(1, count)
            for index in order:
                if not self._frame(index, count, done[index], number, len(order), on_step):
                    return VideoSummary(None, len(done), count, clip.fps, (48, 36), 0.0, stopped=True,
                                        passes=self.passes, pass_number=number)
                on_frame(FrameDone(index, count, self.losses, 0.01, False, False, done[index], number, self.passes,
                                   len(order)))
        with VideoWriter(output, clip.fps) as writer:
            for image in done:
                writer.write(image)
        return VideoSummary(output, len(done), count, clip.fps, (48, 36), 0.0, passes=self.passes,
                            pass_number=self.passes)

    def _frame(self, index, count, image, number, pass_frames, on_step) -> bool:
        from vggstyle.video.frame import FrameStep
        for step in range(1, self.steps + 1):
            if index == self.hold_at and step == 1 and number == self.hold_in_pass:
                self.held.set()
                assert self.release.wait(30)
            time.sleep(self.pace)
            temporal = 0.0 if index == 0 and number == 1 else 0.5  # a shot's first frame has none
            self.losses = {"content": 1.0 / step, "style": 2.0 / step, "tv": 0.1,
                           **({"temporal": temporal} if temporal else {}), "total": 3.1 / step + temporal}
            info = FrameStep(index, count, step, self.steps, self.losses, index == 0 and number == 1,
                             lambda image=image: image, number, self.passes, pass_frames)
            if on_step(info) is False:
                return False
        return True


class FakeSpreadRunner:
    """stylize_video spread over a cluster, as the web app sees it, no network: SpreadProgress before
    each chunk pass, then that chunk's frames (chunks of 3, the second chunk first), two passes.
    ``hold_after``: after that many chunk passes, wait for ``release``."""

    def __init__(self, hold_after: int | None = None):
        self.hold_after, self.held, self.release = hold_after, threading.Event(), threading.Event()
        self.calls = []

    def __call__(self, input, styles, output, config, *, video, masks=None, on_step, on_frame, scheduler=None):
        import numpy as np

        from vggstyle.video import FrameDone, SpreadProgress, VideoSummary
        from vggstyle.video.reader import open_video
        from vggstyle.video.writer import VideoWriter
        self.calls.append({"scheduler": scheduler, "video": video})
        clip = open_video(input)
        images = [Image.fromarray(255 - np.asarray(f.image.resize((48, 36)))) for f in clip.frames()]
        count = len(images)
        chunks = [range(3, count), range(0, 3)]
        tasks = [(chunk, number) for number in (1, 2) for chunk in chunks]
        losses = {"content": 1.0, "style": 2.0, "total": 3.0}
        for done, (chunk, number) in enumerate(tasks):
            if done == self.hold_after:
                self.held.set()
                assert self.release.wait(30)
            if on_step(SpreadProgress(done, len(tasks), 2, len(chunks), 0.5 * (len(tasks) - done))) is False:
                return VideoSummary(None, done, count, clip.fps, (48, 36), 0.0, stopped=True, passes=2)
            for t in chunk:
                on_frame(FrameDone(t, count, losses, 0.01, t == 0 and number == 1, False, images[t], number, 2, count))
        with VideoWriter(output, clip.fps) as writer:
            for image in images:
                writer.write(image)
        return VideoSummary(output, count, count, clip.fps, (48, 36), 0.0, passes=2, pass_number=2)


# ------------------------------------------------------------------ `vggstyle serve` as a real process
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def serve(tmp_path):
    """serve() starts `vggstyle serve` with its temporary files under tmp_path and returns (process,
    base URL); whatever happens in the test, the process is killed at the end."""
    started = []

    def start():
        process, url = _serve(tmp_path)
        started.append(process)
        return process, url

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _serve(tmp_path):
    port = free_port()
    import vggstyle

    source = Path(vggstyle.__file__).resolve().parents[1]  # the vggstyle under test, installed or not
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(source)}
    process = subprocess.Popen([sys.executable, "-m", "vggstyle", "serve", "--host", "127.0.0.1", "--port", str(port),
                                "--max-queue", "3", "--log-level", "warning"],
                               stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            if httpx.get(url + "/api/status", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("the server did not answer within 60 s")


def results_dirs(tmp_path):
    return [p for p in tmp_path.iterdir() if p.name.startswith("vggstyle-web-")]


def stop(process, sig) -> tuple[float, str]:
    start = time.monotonic()
    process.send_signal(sig)
    try:
        stderr = process.communicate(timeout=15)[1]
    finally:
        if process.poll() is None:
            process.kill()
    return time.monotonic() - start, stderr


# ---------------------------------------------------------------------------- a local Dask cluster
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _descendants(pid: int) -> list[int]:
    import psutil
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _stop(pids: list[int], timeout: float = 20.0) -> list[int]:
    """SIGTERM each of our processes by PID, then SIGKILL what is left; return the PIDs still alive."""
    import psutil
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _, alive = psutil.wait_procs([p for p in map(process_of, pids) if p], timeout=timeout)
    for process in alive:
        process.kill()
    _, alive = psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in alive]


def process_of(pid: int):
    import psutil
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """`dask scheduler` and `dask worker --nworkers 2 --nthreads 1` on 127.0.0.1 (for the batch and the
    video tests), stopped by PID at the end of the session."""
    pytest.importorskip("distributed")
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                                         if p)}
    loopback = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    started: list[subprocess.Popen] = []
    seen: set[int] = set()
    client = None
    try:
        scheduler_file = folder / "scheduler.json"
        started.append(subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--port", "0", *loopback,
                                         "--scheduler-file", str(scheduler_file)], env=env,
                                        stdout=open(folder / "scheduler.log", "wb"), stderr=subprocess.STDOUT))
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        started.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nworkers", "2",
                                         "--nthreads", "1", *loopback, "--local-directory", str(folder / "work")],
                                        env=env, stdout=open(folder / "worker.log", "wb"),
                                        stderr=subprocess.STDOUT))
        client = Client(address, timeout="30s", set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        state = SimpleNamespace(address=address, client=client, env=env, started=started, seen=seen,
                                pids=lambda: _all_pids(started, seen))
        yield state
    finally:
        if client is not None:
            client.close()
        pids = _all_pids(started, seen)
        assert _stop([p.pid for p in started[::-1]] + sorted(pids - {p.pid for p in started})) == []
        assert not [pid for pid in pids if process_of(pid) and process_of(pid).status() != "zombie"]


def _all_pids(started: list, seen: set) -> set[int]:
    for process in started:
        seen.add(process.pid)
        seen.update(_descendants(process.pid))
    return set(seen)


def assert_loopback_only(pids: set[int]) -> int:
    """Every TCP socket of these processes is bound to, and talks to, loopback only (ss -tanp)."""
    listing = subprocess.run(["ss", "-tanp"], capture_output=True, text=True, check=True).stdout
    checked = 0
    for line in listing.splitlines()[1:]:
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if not owners & pids:
            continue
        state, _, _, local, peer = line.split()[:5]
        ends = [local] if state == "LISTEN" else [local, peer]  # a listening socket's peer is '*'
        hosts = [end.rsplit(":", 1)[0].strip("[]") for end in ends]
        assert all(host in LOOPBACK_HOSTS for host in hosts), line
        checked += 1
    return checked


def kill_worker_while(cluster, proc, pid: int, timeout: float = 300) -> tuple[int, str, str]:
    """SIGKILL the worker process ``pid`` while ``proc`` (a command against the cluster) runs; check
    every socket is on loopback; return (sockets checked, stdout, stderr) once ``proc`` has ended."""
    try:
        os.kill(pid, signal.SIGKILL)
        sockets = assert_loopback_only(cluster.pids() | {proc.pid})
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return sockets, out, err


def executing_tasks(client) -> dict:
    """{worker address: keys of the tasks running there now}."""
    return client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])


def wait_until_executing(client, proc, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        executing = executing_tasks(client)
        if any(executing.values()):
            return executing
        time.sleep(0.3)
    raise AssertionError("no task ever ran")
