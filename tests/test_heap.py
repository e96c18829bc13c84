"""glibc's heap after a stylize call: a 256 MiB tensor (relu1_x at 1024x1024) comes from the heap,
not from a fresh mmap, unless the run was checkpointed (to save memory); a threshold the user set in
the environment is kept. Each case in its own process, as a user's would be: the setting is
process-wide.

Larger than the whole heap of these 32 px runs (~250 MB), so only the threshold decides: a smaller
one (48 MiB) was at times served from a free block the run left behind, and a checkpointed run
looked like one that was not (CI, AMD EPYC: up to 208 MB free in the heap, from the Winograd
kernels' temporaries before they were made in pieces)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vggstyle.heap import MMAP_ENV, glibc

pytestmark = pytest.mark.skipif(glibc() is None, reason="tunes glibc's allocator; this process runs on another")

# mallinfo2 (glibc 2.33+): hblkhd is the bytes now held in mmapped chunks.
PROBE = r"""
import ctypes, json, sys
import torch
import vggstyle
from vggstyle.heap import glibc

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = glibc()
libc.mallinfo2.restype = Info

def mmapped_by_a_256_mib_tensor():
    before = libc.mallinfo2().hblkhd
    tensor = torch.empty(64, 1024, 1024)
    grown = libc.mallinfo2().hblkhd - before
    del tensor
    return grown

first = mmapped_by_a_256_mib_tensor()
if sys.argv[1] != "nothing":
    content, style = sys.argv[2:4]
    vggstyle.stylize(content, style, image_size=32, num_iterations=1, single_scale=True, checkpoint=sys.argv[1])
print(json.dumps({"before": first, "after": mmapped_by_a_256_mib_tensor()}))
"""


def probe(mode: str, small_images, **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    proc = subprocess.run([sys.executable, "-c", PROBE, mode, str(small_images["content"]),
                           str(small_images["style"])], capture_output=True, text=True, env=environ, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def has_mallinfo2():
    if not hasattr(glibc(), "mallinfo2"):
        pytest.skip("glibc older than 2.33 has no mallinfo2 to look at the heap with")


MIB_256 = 256 << 20


def test_a_stylize_call_keeps_large_tensors_in_the_heap(small_images, has_mallinfo2):
    result = probe("auto", small_images)
    assert result["before"] >= MIB_256  # glibc's default: a fresh mmap
    assert result["after"] == 0  # after the call: served from the heap


def test_a_checkpointed_call_leaves_them_to_mmap(small_images, has_mallinfo2):
    result = probe("on", small_images)
    assert result["before"] >= MIB_256 and result["after"] >= MIB_256


def test_without_a_call_glibc_keeps_its_default(small_images, has_mallinfo2):
    result = probe("nothing", small_images)
    assert result["before"] >= MIB_256 and result["after"] >= MIB_256  # importing vggstyle changes nothing


def test_a_threshold_the_user_set_is_kept(small_images, has_mallinfo2):
    result = probe("auto", small_images, **{MMAP_ENV: str(1 << 20)})
    assert result["before"] >= MIB_256 and result["after"] >= MIB_256
