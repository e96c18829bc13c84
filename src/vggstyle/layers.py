"""The VGG19 layer vocabulary, without torch.

Kept apart from ``vgg.py`` so that the config, the CLI parser and the web form
can validate layer names without importing torch (which costs about a second).
"""

from __future__ import annotations

import difflib

# Output channels of the 16 convolutions, block by block (Simonyan & Zisserman, config E).
VGG19_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256, 256),
    (512, 512, 512, 512),
    (512, 512, 512, 512),
)


def _layer_names() -> tuple[str, ...]:
    names = []
    for block, convs in enumerate(VGG19_BLOCKS, start=1):
        for i in range(1, len(convs) + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


# conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ... relu5_4, pool5: 37 names in
# forward order. Their index is also the index in torchvision's ``vgg19().features``.
LAYER_NAMES: tuple[str, ...] = _layer_names()
LAYER_INDEX: dict[str, int] = {name: i for i, name in enumerate(LAYER_NAMES)}


def pools_before(name: str) -> int:
    """How many 2x poolings precede this layer: its feature map is 1/2**n of the input."""
    return sum(1 for n in LAYER_NAMES[: LAYER_INDEX[name]] if n.startswith("pool"))


def deepest(layer_names) -> str:
    """The layer furthest into the network among these names."""
    return max(layer_names, key=LAYER_INDEX.__getitem__)


def min_side(layer_names) -> int:
    """The smallest image side, in px, that still gives every one of these layers a feature map of
    at least 1x1: each 2x pooling up to the deepest layer (a pool layer included) halves the side."""
    name = deepest(layer_names)
    return 2 ** (pools_before(name) + name.startswith("pool"))


def unknown_layer_message(name: str) -> str:
    close = difflib.get_close_matches(name, LAYER_NAMES, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else "names look like relu4_2 or conv1_1"
    return f"unknown VGG19 layer '{name}': {hint}"


def parse_layer_weights(spec) -> dict[str, float]:
    """Read 'relu1_1,relu2_1:0.5' (weight 1 where none is given) or a list/dict into {name: weight}.

    Raises ValueError with a one-line message; the config turns it into a ConfigError.
    """
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        if isinstance(spec, str):
            parts = [p.strip() for p in spec.split(",") if p.strip()]
        else:
            parts = [str(p).strip() for p in spec]
        items = []
        for part in parts:
            name, sep, weight = part.partition(":")
            if sep:
                try:
                    value = float(weight)
                except ValueError:
                    raise ValueError(f"layer weight '{weight}' for {name} is not a number") from None
            else:
                value = 1.0
            items.append((name.strip(), value))
    if not items:
        raise ValueError("no layers given: name at least one, e.g. relu4_2")
    out: dict[str, float] = {}
    for name, weight in items:
        if name not in LAYER_INDEX:
            raise ValueError(unknown_layer_message(name))
        weight = float(weight)
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"layer weight for {name} must be a finite number >= 0, got {weight}")
        out[name] = weight
    return out


def format_layer_weights(layers: dict[str, float]) -> str:
    return ",".join(name if w == 1.0 else f"{name}:{w:g}" for name, w in layers.items())
