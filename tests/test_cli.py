"""The CLI end to end in a subprocess, and every bad input: one line, exit 2, no traceback, no file."""

import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

import vggstyle
from vggstyle import engine, kernels
from vggstyle.cli import main
from vggstyle.cli.still import build_parser

FAST = ["--image-size", "48", "--num-iterations", "3"]


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "vggstyle", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.mark.slow
def test_cli_end_to_end(small_images, tmp_path):
    out = tmp_path / "out.png"
    plot = tmp_path / "loss.png"
    proc = run_cli(small_images["content"], small_images["style"], small_images["style2"],
                   "--style-blend-weights", "3,7", "--image-size", "64", "--content-weight", "5",
                   "--style-weight", "100", "--tv-weight", "1e-3", "--epochs", "2", "--steps-per-epoch", "5",
                   "--optimizer", "lbfgs", "--init", "content", "--seed", "0", "--save-every", "5",
                   "--plot", plot, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "done: 10 iterations" in proc.stderr and "it/s" in proc.stderr and str(out) in proc.stderr
    with Image.open(out) as image:
        assert image.size == (64, 48)
    params = vggstyle.read_parameters(out)
    assert params["style_blend_weights"] == [3.0, 7.0] and params["epochs"] == 2
    assert params["iterations_done"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "out.png", "out_0005.png", "out_0010.png"]
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size[0] > 300


@pytest.mark.slow
def test_python_m_and_jpeg_output(small_images, tmp_path):
    proc = run_cli(small_images["content"], small_images["style"], *FAST, "-q", "-o", tmp_path / "o.jpg")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    with Image.open(tmp_path / "o.jpg") as image:
        assert image.format == "JPEG"


@pytest.mark.slow
def test_ctrl_c_saves_the_current_image(small_images, tmp_path):
    out = tmp_path / "out.png"
    proc = subprocess.Popen([sys.executable, "-m", "vggstyle", str(small_images["content"]),
                             str(small_images["style"]), "--image-size", "64", "--num-iterations", "100000",
                             "-o", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    buffer = ""
    while time.time() < deadline:  # wait until iterations are running
        buffer += proc.stderr.read(1)
        if "it/s" in buffer or "s/it" in buffer:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, buffer + rest
    assert "stopped:" in rest and "Traceback" not in rest
    params = vggstyle.read_parameters(out)
    assert 1 <= params["iterations_done"] < 100000
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_help_shows_groups_and_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # ignore line wrapping
    for expected in ("loss weights", "--content-weight X", "(default: 40.0)", "--epochs N",
                     "--steps-per-epoch N", "(default: relu4_2)", "--style-blend-weights", "(default: 512)"):
        assert expected in text, expected


def _bad_inputs(tmp_path, images):
    c, s = images["content"], images["style"]
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    truncated = tmp_path / "half.jpg"
    Image.open(c).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(big)
    out = tmp_path / "out.png"
    return {
        "missing file": ([tmp_path / "nope.jpg", s], "file not found"),
        "directory": ([tmp_path, s], "is a directory"),
        "not an image": ([c, text], "not an image"),
        "truncated jpeg": ([truncated, s], "damaged or truncated"),
        "zero-size file": ([empty, s], "the file is empty"),
        "1-pixel image": ([c, tiny], "too small"),
        "pixel limit": ([big, s, "--max-input-pixels", "1000"], "over the limit"),
        "unknown layer": ([c, s, "--style-layers", "relu1_1,relu9_1"], "unknown VGG19 layer 'relu9_1': did you mean"),
        "negative weight": ([c, s, "--style-weight", "-1"], "--style-weight must be a finite number from 0 to 1e+09"),
        "nan weight": ([c, s, "--content-weight", "nan"], "--content-weight must be a finite number from 0 to 1e+09"),
        "zero iterations": ([c, s, "--num-iterations", "0"], "--num-iterations must be a whole number from 1 to 1,000,000"),
        "unwritable output": ([c, s, "-o", "/proc/out.png"], "not writable"),
        "missing output folder": ([c, s, "-o", tmp_path / "no" / "o.png"], "does not exist"),
        "bad output extension": ([c, s, "-o", tmp_path / "o.gif"], "unknown extension"),
        "unknown weights source": ([c, s, "--weights-source", "imagenet"], "invalid choice: 'imagenet'"),
        "missing weights file": ([c, s, "--weights", tmp_path / "w.pth"], "weights file not found"),
        "not a number": ([c, s, "--image-size", "big"], "'big' is not a whole number"),
        "blend count": ([c, s, "--style-blend-weights", "1,2"], "2 values for 1 style"),
        "fp16 on cpu": ([c, s, "--precision", "fp16", "--device", "cpu"], "fp16 is for CUDA"),
        "no style": ([c], "the following arguments are required"),
        "huge seed": ([c, s, "--seed", "9" * 40], "--seed must be a whole number from 0 to"),
        "huge style scale": ([c, s, "--style-scale", "1e6"], "--style-scale must be a finite number above 0 and at most 100"),
        # Numbers whose derived values overflowed (issue #20, 3): bounded where they are parsed.
        "infinite scale": ([c, s, "--scales", "1e400"], "--scales must be whole numbers from 16 to 16,384, got inf"),
        "nan scale": ([c, s, "--scales", "nan"], "--scales must be whole numbers from 16 to 16,384, got nan"),
        "huge coarse factor": ([c, s, "--scales", "16,32", "--coarse-iterations-factor", "1e200"],
                               "--coarse-iterations-factor must be a finite number from 0.01 to 100"),
        "huge scale steps": ([c, s, "--scale-steps", "10000000"], "--scale-steps must be a whole number from 1 to 32"),
        "huge save-every": ([c, s, "--save-every", "9" * 30], "--save-every must be a whole number from 0 to"),
    }, out


def test_every_bad_input_is_one_line_exit_2_no_file(small_images, tmp_path, capsys):
    cases, out = _bad_inputs(tmp_path, small_images)
    for name, (args, message) in cases.items():
        argv = [str(a) for a in args]
        if "-o" not in argv:
            argv += ["-o", str(out)]
        try:
            code = main(argv + FAST[:2])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, f"{name}: exit {code}, stderr {err!r}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("vggstyle: error:"), (name, err)
        assert not out.exists(), name


@pytest.mark.slow

@pytest.mark.parametrize("size", ["1" + "0" * 400, "9" * 20, "16385"])
def test_huge_image_sizes_are_one_line_naming_image_size(small_images, tmp_path, capsys, size):
    out = tmp_path / "out.png"
    code = main([str(small_images["content"]), str(small_images["style"]), "-o", str(out), "--image-size", size])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and not out.exists()
    assert lines[0].startswith("vggstyle: error: --image-size must be a whole number from 16 to 16,384, got ")

def test_bad_input_in_a_real_process_has_no_traceback(small_images, tmp_path):
    truncated = tmp_path / "half.png"
    data = small_images["content"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    proc = run_cli(truncated, small_images["style"], "-o", tmp_path / "o.png")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "damaged or truncated" in proc.stderr
    assert not (tmp_path / "o.png").exists()


def test_parser_is_built_from_the_config():
    from vggstyle.config import config_fields
    flags = {a.dest for a in build_parser()._actions}
    assert {f.name for f in config_fields()} <= flags


@pytest.mark.skipif(not kernels.winograd_available(), reason="no NNPACK here: nothing to calibrate")
def test_a_first_runs_calibration_is_announced_once(small_images, tmp_path, monkeypatch, capsys):
    """The pause before the first float32 run on a machine (the kernels measured, ~12 s) says what it
    is, on stderr, once; the measurement itself is shortened here."""
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    real = kernels.measure_model
    monkeypatch.setattr(kernels, "measure_model", lambda **kw: real(sizes=((32, 32), (64, 64)), rounds=1))
    args = [small_images["content"], small_images["style"], *FAST, "--precision", "fp32", "--winograd", "auto"]
    engine.network.cache_clear()  # as in a new process: the network (and its plan) built anew
    assert main([*map(str, args), "-o", str(tmp_path / "a.png")]) == 0
    first = capsys.readouterr().err
    engine.network.cache_clear()  # the next process: the plan's timings come from the disk cache
    assert main([*map(str, args), "-o", str(tmp_path / "b.png")]) == 0
    second = capsys.readouterr().err
    engine.network.cache_clear()
    note = "vggstyle: measuring this CPU's convolution kernels, once"
    assert first.count(note) == 1 and str(tmp_path / "cache") in first
    assert note not in second
