"""The benchmark scripts bound their numbers where they are parsed: a bad one is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ALLOCATOR = Path(__file__).resolve().parents[1] / "benchmarks" / "allocator.py"


@pytest.mark.parametrize("argv, says", [
    (["--rounds", "0"], "argument --rounds: 0 is outside 1..100"),
    (["--repeats", "11"], "argument --repeats: 11 is outside 1..10"),
    (["--height", "15"], "argument --height: 15 is outside 16..4096"),
    (["--width", "x"], "argument --width: 'x' is not a whole number"),
])
def test_the_allocator_benchmark_refuses_a_bad_number_in_one_line(argv, says):
    done = subprocess.run([sys.executable, str(ALLOCATOR), *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines[-1].endswith(says)
    assert "Traceback" not in done.stderr


RANGE_TERM = ALLOCATOR.with_name("range_term.py")


@pytest.mark.parametrize("argv, says", [
    (["--sizes", "16"], "--sizes from 32 to 2048 px, --iterations from 1 to 5000"),
    (["--iterations", "0"], "--sizes from 32 to 2048 px, --iterations from 1 to 5000"),
    (["--pairs", "4"], "argument --pairs: invalid choice: 4 (choose from 1, 2, 3)"),
])
def test_the_range_term_benchmark_refuses_a_bad_number_in_one_line(argv, says):
    done = subprocess.run([sys.executable, str(RANGE_TERM), *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].endswith(says)
    assert "Traceback" not in done.stderr
