"""libgomp's spin count is in the environment by the time torch loads libgomp, when vggstyle is
imported first (the CLI, the Python API, a Dask worker's first task); the user's own setting is
kept. Each case in a fresh process: libgomp reads the environment once, at load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vggstyle.openmp import SPIN_COUNT, SPIN_COUNT_ENV, WAIT_POLICY_ENV

# Records the spin count in the environment at the moment torch's import starts (libgomp loads with it).
PROBE = r"""
import importlib.abc, json, os, sys

seen = {}

class WatchTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" and "at_torch_import" not in seen:
            seen["at_torch_import"] = os.environ.get("GOMP_SPINCOUNT")
        return None

sys.meta_path.insert(0, WatchTorch())
import vggstyle
vggstyle.stylize  # the lazy API: its first use imports torch
seen["torch_loaded"] = "torch" in sys.modules
print(json.dumps(seen))
"""


def probe(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (SPIN_COUNT_ENV, WAIT_POLICY_ENV)}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_spin_count_is_set_before_torch_loads_libgomp():
    seen = probe()
    assert seen == {"at_torch_import": str(SPIN_COUNT), "torch_loaded": True}


@pytest.mark.parametrize("env, expected", [({SPIN_COUNT_ENV: "500"}, "500"),
                                           ({WAIT_POLICY_ENV: "ACTIVE"}, None)])
def test_a_spin_count_or_wait_policy_the_user_chose_is_kept(env, expected):
    assert probe(**env)["at_torch_import"] == expected
