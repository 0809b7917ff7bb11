"""The fused path's switch on a machine without CUDA: it must refuse and leave the model alone."""
from __future__ import annotations

import pytest
import torch

from lipsync.latentsync import kernels
from lipsync.latentsync.checkpoint import load_unet
from lipsync.latentsync.config import tiny_unet_config
from lipsync.latentsync.unet_fast import enable_fast_path, fast_path_supported
from tests.latentsync.conftest import GOLDEN


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
