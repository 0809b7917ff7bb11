"""Whisper audio encoder that returns LatentSync's stacked hidden states.

LatentSync conditions its UNet on every hidden state of the Whisper encoder *before* `ln_post`:
the block-1 input (conv1 → GELU → conv2 (stride 2) → GELU → + sinusoidal positions) and the output
of each residual block, stacked to (positions, n_layer + 1, width). This module is our own encoder
with the parameter names of OpenAI's checkpoint format, so the official `whisper/tiny.pt`
(`{"dims": {...}, "model_state_dict": {...}}`) loads with a prefix strip and nothing else. The
decoder half of the checkpoint is ignored.

Half precision follows OpenAI's recipe: matmuls and convs run in the module dtype, LayerNorm and
the attention softmax in float32.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_PREFIXES = ("whisper.encoder.", "model.encoder.", "encoder.")  # longest first


@dataclass(frozen=True)
class WhisperEncoderDims:
    """Encoder half of OpenAI's `ModelDimensions` (defaults: whisper tiny)."""

    n_mels: int = 80
    n_audio_ctx: int = 1500  # positions per 30 s window (3000 mel frames / conv2 stride 2)
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4

    @classmethod
    def from_mapping(cls, dims: Mapping[str, int]) -> "WhisperEncoderDims":
        return cls(**{k: int(dims[k]) for k in asdict(cls()).keys()})


WHISPER_TINY = WhisperEncoderDims()


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positional table: [sin | cos] halves, geometric timescales."""
    if channels % 2:
        raise ValueError(f"positional width must be even, got {channels}")
    step = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-step * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class _LayerNorm(nn.LayerNorm):
    # float32 statistics whatever the module dtype (fp16 LayerNorm loses too much).
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class _SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)  # OpenAI's key projection has no bias
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (p(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
                   for p in (self.query, self.key, self.value))
        # softmax(q k^T / sqrt(d)) v; OpenAI scales q and k by d^-1/4 each, the same thing.
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = _SelfAttention(width, heads)
        self.attn_ln = _LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.mlp_ln = _LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperAudioEncoder(nn.Module):
    """Whisper encoder; `forward(mel)` returns the stacked pre-`ln_post` hidden states.

    Input (B, n_mels, 2 * n_audio_ctx) log-mel windows; output (B, n_audio_ctx, n_layer + 1, width).
    `ln_post` is kept only so that checkpoints load strictly; LatentSync never uses it.
    """

    def __init__(self, dims: WhisperEncoderDims = WHISPER_TINY):
        super().__init__()
        self.dims = dims
        d = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_audio_ctx, d))
        self.blocks = nn.ModuleList(_Block(d, dims.n_audio_head) for _ in range(dims.n_audio_layer))
        self.ln_post = _LayerNorm(d)

    @property
    def window_mel_frames(self) -> int:
        return 2 * self.dims.n_audio_ctx

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 3 or mel.shape[1:] != (self.dims.n_mels, self.window_mel_frames):
            raise ValueError(f"expected mel windows (B, {self.dims.n_mels}, {self.window_mel_frames}), "
                             f"got {tuple(mel.shape)}")
        dtype = self.conv1.weight.dtype
        x = F.gelu(self.conv1(mel.to(dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = (x + self.positional_embedding).to(dtype)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states, dim=2)


def encoder_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the encoder entries of a Whisper state dict, with the encoder prefix removed.

    Accepts OpenAI's `encoder.*` keys (the decoder's `decoder.*` keys are dropped) and the
    `whisper.encoder.*` keys of our parity fixture.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ENCODER_PREFIXES:
            if key.startswith(prefix):
                out[key[len(prefix):]] = value
                break
    if not out:
        raise ValueError("no Whisper encoder weights found (expected keys starting with 'encoder.')")
    return out


def build_whisper_encoder(state: Mapping[str, torch.Tensor] | None, dims: WhisperEncoderDims,
                          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                          seed: int = 0) -> WhisperAudioEncoder:
    """Build an encoder from a (prefixed or bare) state dict, or randomly (seeded) when None."""
    if state is None:
        # Random weights are for tests and CI only: they produce features of the right shape,
        # never meaningful ones.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = WhisperAudioEncoder(dims)
    else:
        encoder = WhisperAudioEncoder(dims)
        prefixed = any(k.startswith(ENCODER_PREFIXES) for k in state)
        bare = encoder_state_dict(state) if prefixed else dict(state)
        missing, unexpected = encoder.load_state_dict(bare, strict=False)
        if missing or unexpected:
            raise ValueError(f"Whisper encoder weights do not match dims {dims}: "
                             f"missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    return encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_whisper_encoder(path: str | os.PathLike | None, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float32,
                         tiny_config: WhisperEncoderDims | None = None) -> WhisperAudioEncoder:
    """Load the encoder of an OpenAI-format Whisper checkpoint (LatentSync's `whisper/tiny.pt`).

    Args:
        path: `.pt` file holding `{"dims": ..., "model_state_dict": ...}`; None builds a seeded
            random encoder with `tiny_config` (tests only).
        device, dtype: where and in which precision the encoder runs (fp16 on CUDA is what the
            official pipeline uses).
        tiny_config: dims for the random encoder, or an override for checkpoints without "dims".
    """
    if path is None:
        return build_whisper_encoder(None, tiny_config or WHISPER_TINY, device, dtype)
    ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if isinstance(ckpt, Mapping) and "model_state_dict" in ckpt:
        state = ckpt["model_state_dict"]
        dims = tiny_config or WhisperEncoderDims.from_mapping(ckpt["dims"])
    elif isinstance(ckpt, Mapping) and tiny_config is not None:
        state, dims = ckpt, tiny_config
    else:
        raise ValueError(f"{os.fspath(path)} is not an OpenAI Whisper checkpoint "
                         "({'dims', 'model_state_dict'}); pass tiny_config for a bare state dict")
    return build_whisper_encoder(state, dims, device, dtype)
