"""Fixtures of the LatentSync tests: the tiny goldens, and one torch thread while they run (two
threads on a shared 2-core box ran ~10x slower); the count is put back after each test."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.lipsync.latentsync.goldens import GOLDEN


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN)
