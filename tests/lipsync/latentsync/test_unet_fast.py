"""The fused CUDA path (unet_fast + kernels) against the official goldens and the reference path.

GPU only (requires_cuda): the kernels are Triton. On the tiny official golden, in float32, the fused
UNet must meet the same bounds as the reference path (forward 1e-4 * max, 20-step loops 1e-3
relative); each kernel is checked on full-size LatentSync shapes against plain PyTorch; in bf16 the
fused full-size UNet must stay as close to a float32 reference as the bf16 reference path does.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lipsync.latentsync import kernels
from lipsync.latentsync.checkpoint import load_unet
from lipsync.latentsync.config import tiny_unet_config, unet_config
from lipsync.latentsync.engine import CudaGraphUNet
from lipsync.latentsync.sampling import LATENTSYNC_DEEPCACHE, denoise
from lipsync.latentsync.unet import build_unet
from lipsync.latentsync.unet_fast import disable_fast_path, enable_fast_path
from tests.lipsync.latentsync.goldens import FRAMES, GOLDEN

pytestmark = pytest.mark.requires_cuda
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.fixture(scope="module")
def fast_unet():
    unet = load_unet(GOLDEN, tiny_unet_config(), CUDA, torch.float32, key_prefix="unet.")
    assert enable_fast_path(unet) and unet.fast_path
    return unet


def _golden_cuda(golden):
    return {k: v.to(CUDA) for k, v in golden.items()}


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return (out.float() - ref.float()).abs().max().item() / ref.float().abs().max().item()


def _pooled_group_norm_ref(x, groups, weight, bias, eps, frames, add=None, silu=False):
    n, c, h, w = x.shape
    x = x.float() + (add.float().repeat_interleave(frames, 0)[:, :, None, None] if add is not None else 0)
    video = x.reshape(n // frames, frames, c, h * w).transpose(1, 2)
    out = F.group_norm(video, groups, weight.float(), bias.float(), eps).transpose(1, 2).reshape(n, c, h, w)
    return F.silu(out) if silu else out


@torch.no_grad()
def test_fused_forward_matches_official_golden(fast_unet, golden):
    g = _golden_cuda(golden)
    out = fast_unet(g["input.sample"], g["input.timestep"].reshape(()), g["input.encoder_hidden_states"])
    ref = g["output.sample"]
    assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
    single = fast_unet(g["input.sample"][1:], g["input.timestep"], g["input.encoder_hidden_states"][FRAMES:])
    ref = g["output.sample_nocfg_batch"]
    assert (single - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


@torch.no_grad()
@pytest.mark.parametrize("key, guidance, deepcache", [("cfg1.5", 1.5, None), ("cfg1.5_deepcache", 1.5, LATENTSYNC_DEEPCACHE)])
def test_fused_twenty_step_loops_match_official(fast_unet, golden, key, guidance, deepcache):
    g = _golden_cuda(golden)
    sample = g["input.sample"][0:1]
    out = denoise(fast_unet, sample[:, 0:4], sample[:, 4:5], sample[:, 5:9], sample[:, 9:13],
                  g["input.encoder_hidden_states"][FRAMES:], steps=20, guidance_scale=guidance, deepcache=deepcache)
    ref = g[f"loop.final_latents_{key}"]
    assert (out - ref).abs().max().item() <= 1e-3 * ref.abs().max().item()


@torch.no_grad()
def test_cuda_graphs_replay_the_fused_path(fast_unet, golden):
    g = _golden_cuda(golden)
    args = (g["input.sample"], torch.tensor(501, device=CUDA), g["input.encoder_hidden_states"])
    eager, feature = fast_unet.forward_and_cache(*args)
    runner = CudaGraphUNet(fast_unet)
    for _ in range(2):  # capture, then replay
        graphed, graphed_feature = runner.forward_and_cache(*args)
        assert runner.failed is None
        torch.testing.assert_close(graphed, eager, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(runner.forward_cached(*args, graphed_feature.clone()),
                                   fast_unet.forward_cached(*args, feature), rtol=1e-5, atol=1e-5)


def _cfg_pair_inputs(sample, audio):
    """denoise's CFG batch: the first sample twice, zero audio for the first half."""
    frames = sample.shape[2]
    one = audio[:frames]
    return torch.cat([sample[:1], sample[:1]]), torch.cat([torch.zeros_like(one), one])


@torch.no_grad()
def test_cfg_pair_shares_the_prefix_and_skips_zero_audio(fast_unet, golden):
    """cfg_pair=True (shared prefix computed once, zero-audio cross-attention = to_out bias) gives the
    full computation's result, in all three forwards and under CUDA graphs; float32, within the forward
    parity bound (1e-4 * max: the halves run as GEMMs of other sizes, so sums round differently)."""
    g = _golden_cuda(golden)
    sample, audio = _cfg_pair_inputs(g["input.sample"], g["input.encoder_hidden_states"])
    t = torch.tensor(501, device=CUDA)
    full, feature = fast_unet.forward_and_cache(sample, t, audio)
    pair, pair_feature = fast_unet.forward_and_cache(sample, t, audio, cfg_pair=True)
    scale = full.abs().max().item()
    assert (pair - full).abs().max().item() <= 1e-4 * scale
    assert (pair_feature - feature).abs().max().item() <= 1e-4 * feature.abs().max().item()
    assert (fast_unet(sample, t, audio, cfg_pair=True) - full).abs().max().item() <= 1e-4 * scale
    cached = fast_unet.forward_cached(sample, t, audio, feature)
    pair_cached = fast_unet.forward_cached(sample, t, audio, feature, cfg_pair=True)
    assert (pair_cached - cached).abs().max().item() <= 1e-4 * cached.abs().max().item()
    runner = CudaGraphUNet(fast_unet)
    for _ in range(2):  # capture, then replay
        torch.testing.assert_close(runner(sample, t, audio, cfg_pair=True), pair, rtol=1e-5, atol=1e-5)
    assert runner.failed is None
    with pytest.raises(ValueError, match="cfg_pair"):
        fast_unet(sample[:1], t, audio[:FRAMES], cfg_pair=True)


@torch.no_grad()
def test_cfg_pair_with_audio_that_matters():
    """The golden's tiny weights give the zero-audio half the same output as the audio half; with
    random weights the halves differ, and cfg_pair still gives the full computation's result."""
    torch.manual_seed(7)
    unet = build_unet(tiny_unet_config(), CUDA, torch.float32)
    for p in unet.parameters():
        p.normal_(0, 0.2)
    assert enable_fast_path(unet)
    gen = torch.Generator(device=CUDA).manual_seed(8)
    sample = torch.randn(1, 13, FRAMES, 8, 8, device=CUDA, generator=gen)
    audio = torch.randn(FRAMES, 50, unet.config.cross_attention_dim, device=CUDA, generator=gen)
    sample, audio = _cfg_pair_inputs(sample, audio)
    t = torch.tensor(301, device=CUDA)
    full, feature = unet.forward_and_cache(sample, t, audio)
    scale = full.abs().max().item()
    assert (full[0] - full[1]).abs().max().item() > 1e-2 * scale  # audio matters here
    pair, pair_feature = unet.forward_and_cache(sample, t, audio, cfg_pair=True)
    assert (pair - full).abs().max().item() <= 1e-4 * scale
    cached = unet.forward_cached(sample, t, audio, feature)
    assert (unet.forward_cached(sample, t, audio, feature, cfg_pair=True) - cached).abs().max().item() \
        <= 1e-4 * cached.abs().max().item()


@torch.no_grad()
def test_disable_restores_the_reference_path(golden):
    unet = load_unet(GOLDEN, tiny_unet_config(), CUDA, torch.float32, key_prefix="unet.")
    g = _golden_cuda(golden)
    args = (g["input.sample"], 501, g["input.encoder_hidden_states"])
    before = unet(*args)
    schema = {k: (v.shape, v.dtype) for k, v in unet.state_dict().items()}
    enable_fast_path(unet)
    # the fused path adds no state: the checkpoint schema is untouched
    assert {k: (v.shape, v.dtype) for k, v in unet.state_dict().items()} == schema
    fused = unet(*args)
    disable_fast_path(unet)
    assert not unet.fast_path and "forward" not in unet.mid_block.resnets[0].__dict__
    torch.testing.assert_close(unet(*args), before, rtol=0, atol=0)
    assert 0 < (fused - before).abs().max().item() <= 1e-4 * before.abs().max().item()


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n, c, hw, frames, with_add, silu", [
    (64, 320, 64, 16, True, True),  # v1.6 top level, frame-pooled resnet norm + time offset
    (128, 640, 16, 1, False, False),  # per-frame transformer norm
    (32, 2560, 8, 16, False, True),  # widest up-block concat, fewer positions than a tile
])
def test_group_norm_kernel(dtype, n, c, hw, frames, with_add, silu):
    gen = torch.Generator(device=CUDA).manual_seed(0)
    x = (torch.randn(n, c, hw, hw, device=CUDA, generator=gen) * 2 + 3).to(dtype)
    weight = torch.randn(c, device=CUDA, generator=gen).to(dtype)
    bias = torch.randn(c, device=CUDA, generator=gen).to(dtype)
    add = torch.randn(n // frames, c, device=CUDA, generator=gen).to(dtype) if with_add else None
    out = kernels.group_norm(x, 32, weight, bias, 1e-5, frames=frames, add=add, silu=silu)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    ref = _pooled_group_norm_ref(x, 32, weight, bias, 1e-5, frames, add, silu)
    # float32: exact up to summation order; bf16: one rounding of the output
    assert (out.float() - ref).abs().max().item() <= (2e-5 if dtype == torch.float32 else 2e-2) * ref.abs().max().item()


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n, c1, c2, hw, frames, with_add", [
    (32, 320, 320, 32, 16, False),  # an up layer at 1.5's top level: x and its skip
    (32, 1280, 640, 8, 16, True),  # unequal halves
    (6, 32, 96, 5, 3, True),  # 32 channels: 32-wide channel blocks (the tiny golden's widths)
])
def test_group_norm_of_a_concatenation(dtype, n, c1, c2, hw, frames, with_add):
    """group_norm(x, x2=skip) is the GroupNorm of torch.cat([x, skip], 1), the concatenation never
    written: the same numbers as the one-tensor kernel on the concatenated input."""
    gen = torch.Generator(device=CUDA).manual_seed(0)
    x = (torch.randn(n, c1, hw, hw, device=CUDA, generator=gen) * 2 + 3).to(dtype).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(n, c2, hw, hw, device=CUDA, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    c = c1 + c2
    weight = torch.randn(c, device=CUDA, generator=gen).to(dtype)
    bias = torch.randn(c, device=CUDA, generator=gen).to(dtype)
    add = torch.randn(n // frames, c, device=CUDA, generator=gen).to(dtype) if with_add else None
    out = kernels.group_norm(x, 32, weight, bias, 1e-5, frames=frames, add=add, silu=True, x2=skip)
    one = kernels.group_norm(torch.cat([x, skip], 1), 32, weight, bias, 1e-5, frames=frames, add=add, silu=True)
    assert out.shape == one.shape and out.is_contiguous(memory_format=torch.channels_last)
    if c1 % kernels.GN_BLOCK_C == 0:  # the same channel blocks as the one-tensor kernel: the same sums
        assert torch.equal(out, one)
    ref = _pooled_group_norm_ref(torch.cat([x, skip], 1), 32, weight, bias, 1e-5, frames, add, True)
    assert (out.float() - ref).abs().max().item() <= (2e-5 if dtype == torch.float32 else 2e-2) * ref.abs().max().item()
    with pytest.raises(ValueError, match="concatenation"):
        kernels.group_norm(x[:, :24], 8, weight[:c - c1 + 24], bias[:c - c1 + 24], 1e-5, x2=skip)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n, c_in, c, h, w, with_bias", [
    (6, 640, 640, 32, 32, True),  # a v1.6 UNet up-sampler (output channels a multiple of the 128-wide block)
    (4, 256, 256, 24, 40, True),  # a VAE decoder up-sampler, 256 channels, a non-square image
    (3, 48, 80, 7, 9, False),  # odd sizes, channels not a power of two, no bias
])
def test_phase_interleave_kernel(monkeypatch, dtype, n, c_in, c, h, w, with_bias):
    """nearest2x_conv's one-pass interleave (kernels.phase_interleave) gives the same bits as the four
    strided torch copies / adds it replaces, and both are nearest 2x + the 3x3 convolution."""
    from lipsync.latentsync import unet_fast
    gen = torch.Generator(device=CUDA).manual_seed(0)
    conv = torch.nn.Conv2d(c_in, c, 3, padding=1, bias=with_bias).to(CUDA, dtype)
    x = torch.randn(n, c_in, h, w, device=CUDA, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    phases = unet_fast.nearest2x_conv_weights(conv)
    out = unet_fast.nearest2x_conv(x, phases, conv.bias)
    monkeypatch.setattr(unet_fast, "PHASE_INTERLEAVE_KERNEL", False)
    torch_way = unet_fast.nearest2x_conv(x, phases, conv.bias)
    assert out.shape == (n, c, 2 * h, 2 * w) and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, torch_way)
    ref = conv(F.interpolate(x.float(), scale_factor=2.0, mode="nearest").to(dtype)).float()
    assert (out.float() - ref).abs().max().item() <= (1e-4 if dtype == torch.float32 else 3e-2) * ref.abs().max().item()
    with pytest.raises(ValueError, match="phase_interleave"):
        kernels.phase_interleave(torch.zeros(n, h + 1, w + 1, 3, c, device=CUDA, dtype=dtype), None)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_geglu_kernel(dtype):
    h = torch.randn(4096 + 7, 2 * 1280, device=CUDA).to(dtype)
    value, gate = h.float().chunk(2, dim=-1)
    ref = value * F.gelu(gate)
    out = kernels.geglu(h)
    assert out.shape == (4096 + 7, 1280) and out.dtype == dtype
    assert _rel(out, ref) <= (1e-6 if dtype == torch.float32 else 1e-2)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows, k, inner", [(4096 + 7, 320, 1280), (2048, 640, 2560), (300, 1280, 5120)])
def test_ff_geglu_kernel(rows, k, inner, dtype):
    """The feed-forward GEMM with GEGLU in its epilogue: as close to the float32 result as cuBLAS + the
    separate GEGLU pass (it rounds once, not twice), on the three UNet widths and a row count that is
    not a multiple of the tile."""
    torch.manual_seed(0)
    x = torch.randn(rows, k, device=CUDA).to(dtype)
    w = (torch.randn(2 * inner, k, device=CUDA) / k ** 0.5).to(dtype)
    b = (0.1 * torch.randn(2 * inner, device=CUDA)).to(dtype)
    if torch.cuda.get_device_capability()[0] < 9:  # no TMA: the fast path keeps the two passes
        assert not kernels.ff_geglu_supported(x, w)
        with pytest.raises(ValueError, match="ff_geglu"):
            kernels.ff_geglu(x, w, b)
        return
    h = F.linear(x.float(), w.float(), b.float())
    ref = h[:, :inner] * F.gelu(h[:, inner:])
    out = kernels.ff_geglu(x, w, b)  # the weight as nn.Linear holds it
    assert out.shape == (rows, inner) and out.dtype == dtype
    two_pass = kernels.geglu(F.linear(x, w, b))
    assert _rel(out, ref) <= 1.25 * _rel(two_pass, ref) + 1e-4
    assert _rel(out, ref) <= 1e-2
    paired = kernels.ff_geglu(x, w, b, kernels.ff_geglu_pair_rows(w))  # its copy in tile order: same sums
    assert _rel(paired, out) <= 1e-6
    # Unsupported inputs are refused, not miscomputed: float32, an inner width off the tile.
    assert not kernels.ff_geglu_supported(x.float(), w.float())
    with pytest.raises(ValueError, match="ff_geglu"):
        kernels.ff_geglu(x, w[: 2 * inner - 64], b[: 2 * inner - 64])


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch, frames, hw, channels, heads", [
    (4, 16, 1024, 320, 8), (2, 16, 256, 640, 8), (2, 11, 64, 1280, 8),  # the 1.5 widths; 11 = a tail chunk
    (1, 16, 64, 512, 8), (2, 5, 9, 64, 8),  # a power-of-two head (64), a head under 16 columns (8)
])
def test_temporal_attention_kernel(dtype, batch, frames, hw, channels, heads):
    gen = torch.Generator(device=CUDA).manual_seed(1)
    qkv = torch.randn(batch * frames * hw, 3 * channels, device=CUDA, generator=gen).to(dtype)
    out = kernels.temporal_attention(qkv, frames, hw, heads)
    t = qkv.float().view(batch, frames, hw, 3 * channels).permute(0, 2, 1, 3)
    t = t.reshape(batch * hw, frames, 3, heads, channels // heads)
    q, k, v = (t[:, :, i].transpose(1, 2) for i in range(3))
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, hw, frames, channels)
    ref = ref.permute(0, 2, 1, 3).reshape(-1, channels)
    assert _rel(out, ref) <= (1e-5 if dtype == torch.float32 else 2e-2)


def test_head_split():
    assert [kernels.head_split(d) for d in (40, 80, 160, 64, 8, 16, 24)] == \
        [(32, 16), (64, 16), (128, 32), (64, 0), (16, 0), (16, 0), (16, 16)]


@torch.no_grad()
@pytest.mark.parametrize("version", ["1.5", "1.6"])
def test_full_size_bf16_fused_as_close_to_fp32_as_reference(version):
    """Random full-size weights: the fused bf16 call must be no further from the float32 reference
    than the reference bf16 call is (+25%), so the fused path loses nothing beyond bf16 itself."""
    config = unet_config(version)
    torch.manual_seed(0)
    unet = build_unet(config, CUDA, torch.float32)
    lat = config.latent_size
    gen = torch.Generator(device=CUDA).manual_seed(2)
    sample = torch.randn(2, config.in_channels, FRAMES, lat, lat, device=CUDA, generator=gen)
    audio = torch.randn(2 * FRAMES, 50, config.cross_attention_dim, device=CUDA, generator=gen)
    t = torch.tensor(501, device=CUDA)
    ref = unet(sample, t, audio)
    unet.to(torch.bfloat16)
    ref_bf16 = unet(sample, t, audio)
    enable_fast_path(unet)
    fused = unet(sample, t, audio)
    err_ref, err_fused = _rel(ref_bf16, ref), _rel(fused, ref)
    assert err_fused <= 1.25 * err_ref + 1e-3, (err_fused, err_ref)
    # the CFG-pair layout (denoise's batch) on full-size shapes: same result as the plain bf16 call
    pair_sample, pair_audio = _cfg_pair_inputs(sample, audio)
    plain = unet(pair_sample, t, pair_audio)
    assert _rel(unet(pair_sample, t, pair_audio, cfg_pair=True), plain) <= 0.25 * err_ref + 1e-3


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows, channels", [(65536 + 3, 320), (4099, 1280)])
def test_layer_norm_kernels(dtype, rows, channels):
    gen = torch.Generator(device=CUDA).manual_seed(3)
    x = (torch.randn(rows, channels, device=CUDA, generator=gen) * 3 + 2).to(dtype)
    y = torch.randn(rows, channels, device=CUDA, generator=gen).to(dtype)
    weight = torch.randn(channels, device=CUDA, generator=gen).to(dtype)
    bias = torch.randn(channels, device=CUDA, generator=gen).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    ref = F.layer_norm(x.float(), (channels,), weight.float(), bias.float(), 1e-5)
    assert _rel(kernels.layer_norm(x, weight, bias, 1e-5), ref) <= tol
    # A residual stream with pending biases: LayerNorm of x + shift (float32), x left as it was.
    shift = y[0].float() * 4
    before = x.clone()
    ref = F.layer_norm(x.float() + shift, (channels,), weight.float(), bias.float(), 1e-5)
    assert _rel(kernels.layer_norm(x, weight, bias, 1e-5, shift=shift), ref) <= tol
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="shift must be"):
        kernels.layer_norm(x, weight, bias, 1e-5, shift=shift[:-1])


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("frames, hw", [(16, 64), (11, 9)])
def test_layer_norm_adds_frame_positions(dtype, frames, hw):
    """The motion modules' frame-position encoding rides on the LayerNorm: rows ordered (sample, frame,
    position), row of frame f gets pe[f] after the norm (as the reference adds it to the normed tokens)."""
    gen = torch.Generator(device=CUDA).manual_seed(4)
    channels, samples = 320, 3
    x = torch.randn(samples * frames * hw, channels, device=CUDA, generator=gen).to(dtype)
    y = torch.randn_like(x)
    weight, bias = (torch.randn(channels, device=CUDA, generator=gen).to(dtype) for _ in range(2))
    pe = torch.randn(frames, channels, device=CUDA, generator=gen).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    norm = F.layer_norm(x.float(), (channels,), weight.float(), bias.float(), 1e-5)
    ref = (norm.view(samples, frames, hw, channels) + pe.float()[None, :, None]).view_as(norm)
    assert _rel(kernels.layer_norm(x, weight, bias, 1e-5, pe=pe, hw=hw), ref) <= tol
    shift = y[0].float()
    norm = F.layer_norm(x.float() + shift, (channels,), weight.float(), bias.float(), 1e-5)
    ref = (norm.view(samples, frames, hw, channels) + pe.float()[None, :, None]).view_as(norm)
    assert _rel(kernels.layer_norm(x, weight, bias, 1e-5, shift=shift, pe=pe, hw=hw), ref) <= tol
    with pytest.raises(ValueError, match="does not fit"):
        kernels.layer_norm(x[:-1], weight, bias, 1e-5, pe=pe, hw=hw)



@torch.no_grad()
@pytest.mark.parametrize("resolution", [256, 512])
def test_fused_vae_as_close_to_fp32_as_reference(resolution):
    """sd-vae-ft-mse architecture, random weights: the fused bf16 encoder and decoder are no further
    from float32 than diffusers' bf16 ones are (+25%), and disable restores diffusers' forwards."""
    from lipsync.latentsync.vae import SD_VAE_FT_MSE_CONFIG, build_vae
    from lipsync.latentsync.vae_fast import disable_fast_vae, enable_fast_vae

    vae = build_vae(SD_VAE_FT_MSE_CONFIG, CUDA, torch.float32)
    gen = torch.Generator(device=CUDA).manual_seed(4)
    z = torch.randn(2, 4, resolution // 8, resolution // 8, device=CUDA, generator=gen)
    pixels = torch.rand(2, 3, resolution, resolution, device=CUDA, generator=gen) * 2 - 1

    def run():  # decoded faces, and the encoder's posterior mean (LatentVAE.encode adds sampled noise)
        return vae.decode(z), vae.model.encode(pixels.to(vae.dtype)).latent_dist.mean.float()

    refs = run()
    vae.model.to(torch.bfloat16)
    refs_bf16 = run()
    assert enable_fast_vae(vae) and vae.channels_last and vae.fast
    for fused, ref, ref_bf16 in zip(run(), refs, refs_bf16):
        err_ref, err_fused = _rel(ref_bf16, ref), _rel(fused, ref)
        assert err_fused <= 1.25 * err_ref + 1e-3, (err_fused, err_ref)
    disable_fast_vae(vae)
    assert not vae.fast and "forward" not in vae.model.decoder.__dict__ and "forward" not in vae.model.encoder.__dict__
    for out, ref_bf16, ref in zip(run(), refs_bf16, refs):  # diffusers' forwards again (channels-last weights)
        assert _rel(out, ref) <= 1.25 * _rel(ref_bf16, ref) + 1e-3
