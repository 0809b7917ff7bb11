"""The fused path's switch on a machine without CUDA: it must refuse and leave the model alone."""
from __future__ import annotations

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
