"""Shared fixtures: small real images and the real weights, loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


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
    """make_client(runner=None, video_runner=None, **limits) -> a TestClient of a fresh web app; each
    is shut down (and its queue closed) after the test."""
    from fastapi.testclient import TestClient

    from vggstyle.web.server import create_app
    from vggstyle.web.uploads import Limits
    stack = []

    def make(runner=None, video_runner=None, **limits):
        client = TestClient(create_app(Limits(**limits), runner=runner, video_runner=video_runner))
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
