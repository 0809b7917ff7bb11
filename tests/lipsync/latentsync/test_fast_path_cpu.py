"""The fused path's switch on a machine without CUDA: it must refuse and leave the model alone."""
from __future__ import annotations

import pytest
import torch

from lipsync.latentsync import kernels
from lipsync.latentsync.checkpoint import load_unet
from lipsync.latentsync.config import tiny_unet_config
from lipsync.latentsync.unet_fast import enable_fast_path, fast_path_supported
from tests.lipsync.latentsync.goldens import GOLDEN


@torch.no_grad()
def test_cpu_model_keeps_the_reference_path(golden):
    unet = load_unet(GOLDEN, tiny_unet_config(), key_prefix="unet.")
    args = (golden["input.sample"], 501, golden["input.encoder_hidden_states"])
    before = unet(*args)
    assert not fast_path_supported(unet)
    assert enable_fast_path(unet) is False and unet.fast_path is False
    assert all("forward" not in m.__dict__ for m in unet.modules())
    assert unet.conv_in.weight.is_contiguous()  # not switched to channels-last
    assert torch.equal(unet(*args), before)


def test_kernels_report_unavailable_without_cuda():
    assert kernels.available() == (kernels.triton is not None and torch.cuda.is_available())
    if not torch.cuda.is_available():
        assert not kernels.available()


@torch.no_grad()
def test_cpu_vae_keeps_diffusers_forwards():
    from lipsync.latentsync.vae import tiny_vae
    from lipsync.latentsync.vae_fast import enable_fast_vae

    vae = tiny_vae()
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    before = vae.decode(z)
    assert enable_fast_vae(vae) is False and vae.fast is False and not vae.channels_last
    assert all("forward" not in m.__dict__ for m in vae.model.modules())
    assert torch.equal(vae.decode(z), before)


@torch.no_grad()
def test_reference_path_takes_cfg_pair_and_checks_it(golden):
    """The reference path computes both CFG halves in full whatever cfg_pair says (same result), and
    refuses a batch that cannot be a pair."""
    unet = load_unet(GOLDEN, tiny_unet_config(), key_prefix="unet.")
    sample, audio = golden["input.sample"], golden["input.encoder_hidden_states"]
    assert torch.equal(unet(sample, 501, audio, cfg_pair=True), unet(sample, 501, audio))
    with pytest.raises(ValueError, match="cfg_pair needs an even batch"):
        unet(sample[:1], 501, audio[: sample.shape[2]], cfg_pair=True)
    with pytest.raises(ValueError, match="one time step"):
        unet(sample, torch.tensor([501, 401]), audio, cfg_pair=True)


@torch.no_grad()
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("c_in, c_out, h, w, bias", [(8, 8, 5, 7, True), (6, 4, 4, 4, False), (3, 5, 1, 2, True)])
def test_nearest2x_conv_is_the_upsampler(dtype, tol, c_in, c_out, h, w, bias):
    """The fused up-sampler (one 2x2 convolution with four output phases) against nearest 2x + 3x3 conv,
    borders included; pure PyTorch, so it is checked here on the CPU."""
    from lipsync.latentsync.unet_fast import nearest2x_conv, nearest2x_conv_weights

    gen = torch.Generator().manual_seed(c_in * 10 + h)
    conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias).to(dtype)
    torch.nn.init.normal_(conv.weight, generator=gen)
    x = torch.randn(2, c_in, h, w, dtype=dtype, generator=gen)
    ref = conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    out = nearest2x_conv(x, nearest2x_conv_weights(conv), conv.bias)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert (out - ref).abs().max() <= tol * ref.abs().max()


@torch.no_grad()
def test_unet_upsampler_fast_forward_falls_back_for_odd_sizes():
    import types

    from lipsync.latentsync.unet_fast import _upsample_forward, nearest2x_conv_weights
    from lipsync.latentsync.unet_layers import Upsample

    up = Upsample(4).double()
    reference = up.forward
    up._fast_phases = nearest2x_conv_weights(up.conv)
    up.forward = types.MethodType(_upsample_forward, up)
    x = torch.randn(1, 4, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for size in ((6, 10), (7, 9)):  # 2x (phases) and an odd skip size (the reference way)
        assert torch.allclose(up(x, size), reference(x, size), rtol=0, atol=1e-12)


@torch.no_grad()
def test_deferred_bias_constants():
    """The fused path's deferred biases (unet_fast._defer_biases): what each LayerNorm adds, what
    proj_out folds, and what a layer's resnet adds ahead of time and its transformers' GroupNorms take
    off again. Checked on the CPU (the fused forwards themselves need CUDA: GPU tests)."""
    from lipsync.latentsync.unet_fast import _defer_biases
    from lipsync.latentsync.unet_transformers import SpatialTransformer

    torch.manual_seed(0)
    unet = load_unet(GOLDEN, tiny_unet_config(), key_prefix="unet.")
    for p in unet.parameters():
        p.normal_()  # biases far from zero, so a missing one shows
    _defer_biases(unet)
    for block in unet.down_blocks:
        for i in range(block.num_layers):
            spatial = block.attentions[i] if len(block.attentions) else None
            temporal = block.motion_modules[i].temporal_transformer if len(block.motion_modules) else None
            resnet = block.resnets[i]
            later = [m for m in (spatial, temporal) if m is not None]
            pending = sum((m._fast_out_bias for m in later), torch.zeros(resnet.conv2.bias.shape))
            own = resnet.conv2.bias + (resnet.conv_shortcut.bias if resnet.conv_shortcut is not None else 0)
            torch.testing.assert_close(resnet._fast_bias, own + pending)
            if spatial is not None:
                torch.testing.assert_close(spatial._fast_gn_add, -pending)
            if temporal is not None:
                torch.testing.assert_close(temporal._fast_gn_add, -temporal._fast_out_bias)
                tb = temporal.transformer_blocks[0]
                a0, a1 = (a.to_out[0].bias for a in tb.attention_blocks)
                assert temporal._fast_shifts[0] is None
                torch.testing.assert_close(temporal._fast_shifts[1], a0)
                torch.testing.assert_close(temporal._fast_shifts[2], a0 + a1)
                folded = temporal.proj_out.bias + temporal.proj_out.weight @ (a0 + a1 + tb.ff.net[2].bias)
                torch.testing.assert_close(temporal._fast_out_bias, folded)
    spatial = [m for m in unet.modules() if isinstance(m, SpatialTransformer)]
    assert spatial
    for module in spatial:
        block = module.transformer_blocks[0]
        b1, b2, b3 = block.attn1.to_out[0].bias, block.attn2.to_out[0].bias, block.ff.net[2].bias
        assert block._fast_shifts[0] is None
        torch.testing.assert_close(block._fast_shifts[1], b1)
        torch.testing.assert_close(block._fast_shifts[2], b1 + b2)
        folded = module.proj_out.bias + module.proj_out.weight.flatten(1) @ (b1 + b2 + b3)
        torch.testing.assert_close(module._fast_out_bias, folded, rtol=1e-5, atol=1e-4)


def test_ff_geglu_pair_rows_order_and_cpu_refusal():
    """The tile-order copy ff_geglu reads: per tile of HALF outputs, its HALF value rows, then the HALF
    gate rows of the same outputs; and on a CPU weight the fused kernel is refused (two-pass path)."""
    half = kernels.FF_GEGLU_TILES[1] // 2
    inner, k = 3 * half, 8
    weight = torch.arange(2 * inner * k, dtype=torch.float32).view(2 * inner, k)
    paired = kernels.ff_geglu_pair_rows(weight)
    assert paired.shape == weight.shape and paired.is_contiguous()
    for tile in range(inner // half):
        block = paired[2 * half * tile: 2 * half * (tile + 1)]
        assert torch.equal(block[:half], weight[tile * half:(tile + 1) * half])  # value rows
        assert torch.equal(block[half:], weight[inner + tile * half: inner + (tile + 1) * half])  # gate rows
    assert sorted(paired[:, 0].tolist()) == sorted(weight[:, 0].tolist())  # a permutation of the rows
    assert not kernels.ff_geglu_weight_supported(weight.to(torch.bfloat16))
    with pytest.raises(ValueError, match="ff_geglu"):
        kernels.ff_geglu(torch.zeros(4, k, dtype=torch.bfloat16), weight.to(torch.bfloat16),
                         torch.zeros(2 * inner, dtype=torch.bfloat16))
