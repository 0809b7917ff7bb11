"""Where the tiny official-code goldens live (shared by the UNet and sampling parity tests)."""
from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "latentsync"
GOLDEN = FIXTURES / "latentsync_tiny_parity.safetensors"
FRAMES = 16  # frames per chunk in the goldens
