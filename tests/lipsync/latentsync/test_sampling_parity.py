"""20-step DDIM loops (CFG 1.5, no CFG, CFG + DeepCache) against the official tiny goldens."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from lipsync.latentsync.checkpoint import load_unet
from lipsync.latentsync.config import tiny_unet_config
from lipsync.latentsync.sampling import (LATENTSYNC_DDIM, LATENTSYNC_DEEPCACHE, DDIMConfig,
                                         DeepCacheConfig, SharedStart, denoise, initial_latents)
from lipsync.latentsync.unet import LatentSyncUNet
from tests.lipsync.latentsync.goldens import FIXTURES, FRAMES, GOLDEN


@pytest.fixture(scope="module")
def documented() -> dict:
    return json.loads((FIXTURES / "latentsync_tiny_parity.json").read_text())


@pytest.fixture(scope="module")
def unet() -> LatentSyncUNet:
    return load_unet(GOLDEN, tiny_unet_config(), key_prefix="unet.")


def loop_inputs(golden: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The golden's documented loop inputs: channel slices of input.sample's first half + the audio half."""
    sample = golden["input.sample"][0:1]
    return sample[:, 0:4], sample[:, 4:5], sample[:, 5:9], sample[:, 9:13], golden["input.encoder_hidden_states"][FRAMES:]


def test_scheduler_matches_the_official_config(documented: dict) -> None:
    assert DDIMConfig.from_official(documented["scheduler"]) == LATENTSYNC_DDIM
    assert LATENTSYNC_DDIM.timesteps(20) == documented["scheduler_timesteps_20"]
    alphas = LATENTSYNC_DDIM.alphas_cumprod()
    assert alphas[0].item() == pytest.approx(0.99915, abs=1e-7)  # final alpha (set_alpha_to_one false)
    with pytest.raises(ValueError, match="prediction_type"):
        DDIMConfig.from_official({**documented["scheduler"], "prediction_type": "v_prediction"})


@pytest.mark.parametrize(
    "golden_key, guidance, deepcache",
    [
        ("loop.final_latents_cfg1.5", 1.5, None),
        ("loop.final_latents_cfg1.0", 1.0, None),
        ("loop.final_latents_cfg1.5_deepcache", 1.5, LATENTSYNC_DEEPCACHE),
    ],
    ids=["cfg1.5", "nocfg", "cfg1.5-deepcache"],
)
def test_twenty_step_loop_matches_official(
    unet: LatentSyncUNet, golden: dict[str, torch.Tensor], golden_key: str, guidance: float, deepcache
) -> None:
    out = denoise(unet, *loop_inputs(golden), steps=20, guidance_scale=guidance, deepcache=deepcache)
    ref = golden[golden_key]
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert (out - ref).abs().max().item() <= 1e-3 * ref.abs().max().item()


def test_loops_differ_from_each_other(golden: dict[str, torch.Tensor]) -> None:
    # Guards the tolerance above: the three goldens are far apart compared with it.
    a, b, c = (golden[f"loop.final_latents_{k}"] for k in ("cfg1.5", "cfg1.0", "cfg1.5_deepcache"))
    scale = a.abs().max().item()
    assert min((a - b).abs().max().item(), (a - c).abs().max().item()) > 1e-2 * scale


def _count_calls(unet: LatentSyncUNet) -> tuple[Counter, list]:
    """Record, per UNet call, the batch seen by conv_in (every call) and whether the mid block ran (full calls)."""
    seen: Counter = Counter()
    handles = [
        unet.conv_in.register_forward_hook(lambda m, i, o: seen.update({f"conv_in_batch_{i[0].shape[0]}": 1})),
        unet.mid_block.register_forward_hook(lambda m, i, o: seen.update({"full": 1})),
    ]
    return seen, handles


@pytest.mark.parametrize(
    "guidance, deepcache, expected",
    [
        (1.5, None, {"conv_in_batch_32": 20, "full": 20}),  # CFG: both branches in ONE call of batch 2
        (1.0, None, {"conv_in_batch_16": 20, "full": 20}),
        (1.5, DeepCacheConfig(3), {"conv_in_batch_32": 20, "full": 7}),  # full at steps 0,3,...,18
    ],
)
def test_unet_call_pattern(unet: LatentSyncUNet, golden: dict[str, torch.Tensor], guidance, deepcache, expected) -> None:
    seen, handles = _count_calls(unet)
    try:
        denoise(unet, *loop_inputs(golden), steps=20, guidance_scale=guidance, deepcache=deepcache)
    finally:
        for handle in handles:
            handle.remove()
    assert dict(seen) == expected


@pytest.mark.parametrize("deepcache", [None, LATENTSYNC_DEEPCACHE], ids=["full", "deepcache"])
def test_shared_start_reuses_the_unconditional_first_step(
    unet: LatentSyncUNet, golden: dict[str, torch.Tensor], deepcache
) -> None:
    """A still image's chunks all start alike: a later batch of chunks takes step 0's unconditional
    branch from the first chunk's run and gets the same latents as computing it again."""
    latents, mask, masked, ref, audio = loop_inputs(golden)
    two = [t.expand(2, *t.shape[1:]) for t in (latents, mask, masked, ref)]
    audio2 = torch.cat([audio, audio.flip(0)])  # chunk 2: same picture, other voice
    plain = denoise(unet, *two, audio2, steps=20, guidance_scale=1.5, deepcache=deepcache)

    start = SharedStart()
    first = denoise(unet, latents, mask, masked, ref, audio, steps=20, guidance_scale=1.5, deepcache=deepcache,
                    shared_start=start)
    golden_key = "loop.final_latents_cfg1.5" + ("_deepcache" if deepcache else "")
    assert (first - golden[golden_key]).abs().max() <= 1e-3 * golden[golden_key].abs().max()
    assert start.hits == 0
    seen, handles = _count_calls(unet)
    try:
        shared = denoise(unet, *two, audio2, steps=20, guidance_scale=1.5, deepcache=deepcache, shared_start=start)
    finally:
        for handle in handles:
            handle.remove()
    assert start.hits == 2
    # step 0 ran the audio branch alone (2 chunks x 16 frames), every other step the CFG pair
    assert seen["conv_in_batch_32"] == 1 and seen["conv_in_batch_64"] == 19
    assert seen["full"] == (20 if deepcache is None else 7)
    assert (shared - plain).abs().max() <= 1e-5 * plain.abs().max()
    assert (shared[1] - shared[0]).abs().max() > 1e-2 * plain.abs().max()  # the voices still differ

    # Another frame count (a clip's tail chunk) or no CFG never takes the shared entry.
    short = [t[:, :, :10] for t in (latents, mask, masked, ref)]
    denoise(unet, *short, audio[:10], steps=2, guidance_scale=1.5, deepcache=deepcache, shared_start=start)
    denoise(unet, latents, mask, masked, ref, audio, steps=2, guidance_scale=1.0, deepcache=deepcache,
            shared_start=start)
    assert start.hits == 2


def test_initial_latents_repeat_one_seeded_noise_frame() -> None:
    a = initial_latents(12, 8, generator=torch.Generator().manual_seed(1247))
    b = initial_latents(12, 8, generator=torch.Generator().manual_seed(1247))
    c = initial_latents(12, 8, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, 4, 12, 8, 8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 0.1
    torch.testing.assert_close(a, a[:, :, :1].expand_as(a), rtol=0, atol=0)
    assert 0.7 < a[:, :, 0].std().item() < 1.3


def test_mismatched_loop_inputs_are_refused(unet: LatentSyncUNet, golden: dict[str, torch.Tensor]) -> None:
    latents, mask, masked, ref, audio = loop_inputs(golden)
    with pytest.raises(ValueError, match="mask must be"):
        denoise(unet, latents, mask[:, :, :8], masked, ref, audio)
    with pytest.raises(ValueError, match="audio_embeds"):
        denoise(unet, latents, mask, masked, ref, audio[:8])
