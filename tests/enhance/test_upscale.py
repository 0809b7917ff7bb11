"""Upscaler: tiled == untiled, exact sizes, Lanczos engine, dtype and memory-derived tiling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from enhance.device import CPU_BUDGET_BYTES, pick_dtype
from enhance.ncnn_convert import load_ncnn_model
from enhance.upscale import LANCZOS_ENGINE, UpscaleOptions, Upscaler, axis_tiles, resize_lanczos
from tests.enhance.goldens import golden_model
from tests.support.portrait import portrait_patch


def max_level_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize("length, tile, overlap, context, multiple", [
    (100, 40, 16, 8, 1), (117, 32, 8, 0, 1), (64, 64, 16, 8, 1), (130, 48, 16, 16, 2), (300, 96, 16, 32, 4)])
def test_axis_tiles_cover_every_pixel_with_equal_windows(length, tile, overlap, context, multiple):
    tiles = axis_tiles(length, tile, overlap, context, multiple)
    covered = np.zeros(length, int)
    for t in tiles:
        covered[t.keep0:t.keep1] += 1
        assert t.in0 <= t.keep0 < t.keep1 <= t.in1 <= length
        assert t.keep0 % multiple == 0 and t.in0 % multiple == 0
    assert covered.min() >= 1
    assert len({t.in1 - t.in0 for t in tiles}) == 1  # equal windows: tiles can share a batch
    for a, b in zip(tiles, tiles[1:]):
        assert a.keep1 - b.keep0 >= overlap and a.ramp_hi == b.ramp_lo == a.keep1 - b.keep0


@pytest.mark.parametrize("name", ["rrdbnet", "rrdbnet_x2"])
def test_tiled_equals_untiled_tiny_official_weights(name):
    image = portrait_patch(60, 150, 96)
    net = golden_model(name)
    whole = Upscaler(net, name, "cpu", UpscaleOptions(tile=0)).upscale(image)
    tiled_upscaler = Upscaler(net, name, "cpu", UpscaleOptions(tile=40, overlap=16, context=8, tile_batch=3))
    tiled = tiled_upscaler.upscale(image)
    assert whole.shape == tiled.shape == (96 * net.scale, 96 * net.scale, 3)
    assert max_level_diff(whole, tiled) <= 1
    # the split really happened: 96 + 2*10 border px in 40 px tiles -> 5 x 5 tiles
    assert len(axis_tiles(116, tiled_upscaler.tile, 16, 8, net.size_multiple)) == 5


def test_tiled_equals_untiled_real_weights():
    image = portrait_patch(60, 150, 96)
    net = load_ncnn_model("realesr-animevideov3-x4")  # official weights (ncnn package)
    whole = Upscaler(net, "x4", "cpu", UpscaleOptions(tile=0)).upscale(image)
    tiled = Upscaler(net, "x4", "cpu", UpscaleOptions(tile=48, overlap=16)).upscale(image)
    assert max_level_diff(whole, tiled) <= 1
    # without context or cross-fading the seams show: the test can tell
    seamy = Upscaler(net, "x4", "cpu", UpscaleOptions(tile=48, overlap=0, context=0)).upscale(image)
    assert max_level_diff(whole, seamy) > 1


def test_upscale_to_runs_model_once_then_resamples_to_exact_size():
    net = golden_model("rrdbnet")
    upscaler = Upscaler(net, "tiny", "cpu", UpscaleOptions(tile=0))
    image = portrait_patch(0, 0, 30)[:, :24]
    out, runs = upscaler.upscale_to(image, 150, 100)  # 24x30 -> x4 = 96x120 -> Lanczos to 150x100
    assert out.shape == (100, 150, 3) and out.dtype == np.uint8
    assert runs == 1 and upscaler.model_runs == 1
    expected = resize_lanczos(upscaler.upscale(image), 150, 100)
    assert np.array_equal(out, expected) and upscaler.model_runs == 2
    # shrinking never runs the model
    small, runs = upscaler.upscale_to(image, 12, 15)
    assert np.array_equal(small, resize_lanczos(image, 12, 15))
    assert runs == 0 and upscaler.model_runs == 2


def test_a_tiled_picture_counts_as_one_model_run():
    net = golden_model("rrdbnet")
    upscaler = Upscaler(net, "tiny", "cpu", UpscaleOptions(tile=32, overlap=8, context=8, tile_batch=2))
    forwards = []
    net.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[0]))
    _, runs = upscaler.upscale_to(portrait_patch(0, 0, 64), 256, 256)
    assert runs == 1 and upscaler.model_runs == 1
    assert len(forwards) > 1 and sum(forwards) == len(axis_tiles(84, 32, 8, 8)) ** 2  # 64 + 2 * 10 border px


def test_lanczos_engine_is_a_real_resampler():
    image = portrait_patch(100, 100, 64)
    upscaler = Upscaler(None, LANCZOS_ENGINE, "cpu", scale=4)
    big = upscaler.upscale(image)
    assert upscaler.engine == "lanczos-resample" and big.shape == (256, 256, 3)
    # down again: close to the original (a nearest-neighbour or broken resampler would not be)
    back = resize_lanczos(big, 64, 64)
    assert np.abs(back.astype(float) - image).mean() < 2.0
    with pytest.raises(ValueError, match="RGB uint8"):
        upscaler.upscale(image.astype(np.float32))
    resized, runs = upscaler.upscale_to(image, 200, 120)
    assert resized.shape == (120, 200, 3) and runs == 0 and upscaler.model_runs == 0


def test_dtype_and_memory_driven_tile_plan_on_cpu():
    assert pick_dtype(torch.device("cpu"), "fp16") == torch.float32  # CPU always fp32
    assert pick_dtype(torch.device("cuda"), None) == torch.float16
    assert pick_dtype(torch.device("cuda"), "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        pick_dtype(torch.device("cuda"), "int8")
    net = load_ncnn_model("realesr-animevideov3-x4")
    auto = Upscaler(net, "x4", "cpu")
    assert auto.dtype == torch.float32 and 32 <= auto.tile <= 1024 and auto.tile % 8 == 0
    from enhance.upscale import activation_bytes_per_px
    window = auto.tile + 2 * auto.context
    assert window * window * activation_bytes_per_px(net, torch.float32) <= CPU_BUDGET_BYTES
    with pytest.raises(ValueError, match="memory_fraction"):
        Upscaler(net, "x4", "cpu", UpscaleOptions(memory_fraction=1.5))


@pytest.mark.requires_cuda
def test_gpu_half_precision_close_to_fp32_and_memory_cap():
    torch.cuda.empty_cache()  # the peak below is this test's own, whatever ran before it
    torch.cuda.reset_peak_memory_stats()
    image = portrait_patch(60, 150, 96)
    net = load_ncnn_model("realesrgan-x4plus")
    ref = Upscaler(net, "x4", "cpu", UpscaleOptions(tile=0)).upscale(image)
    for precision in ("fp16", "bf16"):
        up = Upscaler(load_ncnn_model("realesrgan-x4plus"), "x4", "cuda",
                      UpscaleOptions(precision=precision, memory_fraction=0.2))
        assert up.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        out = up.upscale(image)
        assert np.abs(out.astype(float) - ref).mean() < (0.5 if precision == "fp16" else 2.0)
    total = torch.cuda.get_device_properties(0).total_memory
    assert torch.cuda.max_memory_reserved() <= 0.2 * total


@pytest.mark.requires_cuda
def test_tiled_equals_untiled_real_x4plus_weights(monkeypatch):
    """RRDBNet x4plus sees far: its default context must keep tiles within 1/255 of one whole pass.
    Real weights (ncnn package), fp32 without TF32 (the tiling is under test, not the precision);
    a CUDA test because the tiles cost many times a whole pass, minutes on a small CPU.
    (bench/upscale_context.py sweeps the context: on this image 32 px left 7 levels, 64 px 3.)"""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    image = portrait_patch(0, 0, 512)
    net = load_ncnn_model("realesrgan-x4plus")
    whole = Upscaler(net, "x4plus", "cuda", UpscaleOptions(tile=0, precision="fp32")).upscale(image)
    tiled_upscaler = Upscaler(net, "x4plus", "cuda", UpscaleOptions(tile=128, precision="fp32"))
    tiled = tiled_upscaler.upscale(image)
    assert whole.shape == tiled.shape == (2048, 2048, 3)
    assert max_level_diff(whole, tiled) <= 1
    # 512 + 2*10 border px in 128 px tiles: 5 x 5 tiles, each seeing 128 + 2*96 px (< the image)
    assert tiled_upscaler.context == 96
    assert len(axis_tiles(532, 128, 16, tiled_upscaler.context)) == 5 and 128 + 2 * 96 < 532
    seamy = Upscaler(net, "x4plus", "cuda", UpscaleOptions(tile=128, overlap=0, context=0, precision="fp32"))
    assert max_level_diff(whole, seamy.upscale(image)) > 1
