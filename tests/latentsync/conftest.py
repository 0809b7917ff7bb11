"""The tiny official-code goldens shared by the UNet and sampling parity tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "latentsync"
GOLDEN = FIXTURES / "latentsync_tiny_parity.safetensors"
FRAMES = 16  # frames per chunk in the goldens

torch.set_num_threads(1)  # 2 threads on this shared 2-core box ran ~10x slower


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN)
