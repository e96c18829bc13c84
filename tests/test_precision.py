"""The precision policy: auto picks bf16 only where the CPU has it, and bf16 stays close to float32."""

import pytest
import torch

import vggstyle
from conftest import EXAMPLES, needs_bf16
from vggstyle import device as device_module
from vggstyle.config import StyleConfig
from vggstyle.device import resolve_policy
from vggstyle.errors import ConfigError
from vggstyle.inputs import load_inputs
from vggstyle.engine import build_objective, network_for

CONTENT = EXAMPLES / "content" / "tubingen.jpg"
STYLE = EXAMPLES / "style" / "starry_night.jpg"


def test_auto_is_bf16_channels_last_with_native_bf16(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_runs_bf16", lambda: True)
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    policy = resolve_policy("cpu", "auto")
    assert policy.autocast_dtype == torch.bfloat16 and policy.channels_last
    assert resolve_policy("cpu", "auto", "on").precision == "fp32"  # Winograd is float32 only
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_policy("cpu", "auto").autocast_dtype is None
    assert resolve_policy("cpu", "bf16").autocast_dtype == torch.bfloat16  # asked for explicitly: emulated AVX-512
    assert resolve_policy("cpu", "fp32").precision == "fp32"


def test_bf16_on_a_cpu_without_it_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_runs_bf16", lambda: False)
    monkeypatch.setattr(device_module, "_cpu_flags", lambda: {"avx2", "fma", "avx512_bf16"})  # flags can lie
    assert resolve_policy("cpu", "auto").precision == "fp32"
    with pytest.raises(ConfigError, match=r"^--precision bf16: this CPU cannot run bf16 convolutions .*fp32"):
        resolve_policy("cpu", "bf16")
    monkeypatch.setattr(device_module, "cpu_runs_bf16", lambda: True)
    with pytest.raises(ConfigError, match="--winograd on runs float32"):
        resolve_policy("cpu", "bf16", "on")


def test_the_cli_says_so_in_one_line_and_exits_2(monkeypatch, small_images, tmp_path, capsys):
    from vggstyle.cli import main
    monkeypatch.setattr(device_module, "cpu_runs_bf16", lambda: False)
    output = tmp_path / "o.png"
    code = main([str(small_images["content"]), str(small_images["style"]), "--precision", "bf16", "-o", str(output),
                 "--image-size", "32", "--num-iterations", "1", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not output.exists()
    assert len(err) == 1 and "cannot run bf16 convolutions" in err[0] and "Traceback" not in err[0], err


def test_cuda_requests_fail_clearly_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; this checks the message on machines without one")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_policy("cuda", "auto")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only: needs a GPU (run benchmarks/gpu.sh on one)")
def test_cuda_auto_policy_and_a_short_run(small_images):
    policy = resolve_policy("cuda", "auto")
    assert policy.device.type == "cuda" and policy.autocast_dtype in (torch.bfloat16, torch.float16)
    benchmark = torch.backends.cudnn.benchmark
    out = vggstyle.stylize(small_images["content"], small_images["style"], device="cuda", image_size=64,
                           num_iterations=10)
    assert out.info["vggstyle"]["precision_used"] in ("bf16", "fp16")
    assert torch.backends.cudnn.benchmark == benchmark  # set for the call only


def _loss_and_grad(precision, image_size=128):
    config = StyleConfig(image_size=image_size, precision=precision, init="random", seed=0)
    inputs = load_inputs(CONTENT, STYLE, config)
    net = network_for(config, resolve_policy("cpu", precision))
    objective = build_objective(net, config, inputs.at(image_size))
    image = inputs.start(image_size, torch.Generator().manual_seed(0)).requires_grad_(True)
    loss = objective(image)["total"]
    loss.backward()
    return loss.item(), image.grad.flatten()


@needs_bf16
def test_bf16_loss_and_gradient_agree_with_float32():
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build")
    loss32, grad32 = _loss_and_grad("fp32")
    loss16, grad16 = _loss_and_grad("bf16")
    # Stated tolerance (README): loss within 2%, input gradient cosine > 0.95, relative L2 error < 0.25.
    assert abs(loss16 - loss32) / loss32 < 0.02
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0).item()
    assert cosine > 0.95
    assert ((grad16 - grad32).norm() / grad32.norm()).item() < 0.25


@pytest.mark.slow
@needs_bf16
def test_a_short_bf16_run_ends_within_a_few_percent_of_float32(small_images):
    finals = {}
    for precision in ("fp32", "bf16"):
        history = []
        vggstyle.stylize(small_images["content"], small_images["style"], image_size=96, num_iterations=40,
                         single_scale=True, precision=precision, on_step=lambda p: history.append(p.losses["total"]))
        finals[precision] = history[-1]
    assert abs(finals["bf16"] - finals["fp32"]) / finals["fp32"] < 0.05, finals
