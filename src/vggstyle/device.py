"""Resolve device, precision and memory layout once, at the edge.

The measured facts behind ``auto`` (docs/measurements.md, 2-core Xeon with AMX):
one forward+backward through VGG19 at 512 px takes ~1.9-2.4 s in float32 and ~0.49 s
in bfloat16 autocast with channels_last (oneDNN's AMX kernels); bf16 without
channels_last only halves the time. The loss stays within ~1% of float32, so bf16 +
channels_last is the default wherever the CPU has native bf16 (AMX or AVX512-BF16).
Only the network runs in reduced precision; the image being optimized, the loss
terms and the optimizer state stay float32.
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .kernels import winograd_available

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ComputePolicy:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: plain float32
    channels_last: bool
    winograd: str = "off"  # CPU convolutions through NNPACK's Winograd: auto (measured per layer), on, off

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def as_float32(self) -> "ComputePolicy":
        return ComputePolicy(self.device, None, self.channels_last, self.winograd)


def cpu_has_native_bf16() -> bool:
    """True where oneDNN has bf16 kernels worth using (AMX-BF16 or AVX512-BF16): what ``auto`` picks."""
    flags = _cpu_flags()
    return ("amx_bf16" in flags or "avx512_bf16" in flags) and cpu_runs_bf16()


def cpu_runs_bf16() -> bool:
    """oneDNN's own check: can its bf16 convolutions run here at all (AVX512-BW/VL/DQ, AVX-NE-CONVERT
    or AMX)? AVX2-only CPUs cannot, and oneDNN raises mid-run there. It also honours a limit set with
    ONEDNN_MAX_CPU_ISA, which the CPU flags do not show."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


BF16_UNSUPPORTED = ("--precision bf16: this CPU cannot run bf16 convolutions (they need AVX512-BW/VL/DQ, "
                    "AVX-NE-CONVERT or AMX); use --precision fp32 or auto")


def _cpu_flags() -> set[str]:
    return set(_cpuinfo_field("flags").split())


def cpu_description() -> str:
    """What CPU speed measurements depend on: the model, its flags, and any limit set on oneDNN's
    instruction set (which changes its speed as much as the CPU does)."""
    flags = " ".join(sorted(_cpu_flags()))
    model = _cpuinfo_field("model name") or platform.processor()
    return f"{model}|{flags}|{os.environ.get('ONEDNN_MAX_CPU_ISA', '')}|{os.environ.get('DNNL_MAX_CPU_ISA', '')}"


def _cpuinfo_field(name: str) -> str:
    """The first CPU's value of this /proc/cpuinfo field ('' where there is none, as off Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is visible to this torch build; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) present")
    return device


def resolve_policy(device_name: str = "auto", precision: str = "auto", winograd: str = "auto") -> ComputePolicy:
    """winograd: for float32 on the CPU, auto (each layer on the kernel measured fastest here, at each
    image size), on (every layer through NNPACK), off (oneDNN only). In bf16, auto puts each layer on
    oneDNN or on our bf16 Winograd (winograd.py), whichever this machine measures faster; NNPACK has
    no bf16 and the conversions to float32 and back cost more than it saves (docs/speed.md). CUDA
    ignores it."""
    device = resolve_device(device_name)
    if device.type == "cuda":
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return ComputePolicy(device, None if precision == "fp32" else _DTYPES[precision], True)
    if winograd == "on" and precision == "bf16":
        raise ConfigError("--winograd on runs float32 convolutions (NNPACK has no bf16): drop --precision bf16, "
                          "or use --winograd auto")
    if precision == "auto":
        precision = "bf16" if cpu_has_native_bf16() and winograd != "on" else "fp32"
    if precision == "fp16":
        raise ConfigError("--precision fp16 is for CUDA GPUs; on the CPU use bf16 or fp32")
    if precision == "bf16" and not cpu_runs_bf16():
        raise ConfigError(BF16_UNSUPPORTED)
    if winograd == "on" and not winograd_available():
        raise ConfigError("--winograd on: this torch build or CPU has no NNPACK (it needs x86-64 with AVX2 or "
                          "ARM NEON); use --winograd auto or off")
    # channels_last helps float32 on the CPU too (~10-20%), and is required for the AMX bf16 kernels.
    # bf16's Winograd is ours (winograd.py) and needs no NNPACK.
    return ComputePolicy(device, None if precision == "fp32" else _DTYPES[precision], True,
                         winograd if winograd_available() or precision == "bf16" else "off")


def physical_cores() -> int:
    """Physical cores available to this process: hyperthread siblings slow convolutions down."""
    try:
        available = os.sched_getaffinity(0)
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in available:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id") as f:
                core = f.read().strip()
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id") as f:
                package = f.read().strip()
            cores.add((package, core))
        except OSError:
            cores.add(("?", cpu))
    return max(1, len(cores))


def set_threads(threads: int | None) -> int:
    n = threads or physical_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
