"""LatentSync's audio conditioning: 16 kHz waveform → Whisper features → one token block per frame.

Steps (docs/latentsync.md §3):
1. `log_mel`: OpenAI Whisper log-mel (n_fft 400, hop 160, 80 Slaney mels), floored at the *whole
   clip's* max − 8, scaled (x + 4) / 4; N samples → N // 160 frames (100 per second).
2. `encode_mel` / `encode_audio`: 30 s windows (3000 mel frames, the last one zero-padded in
   normalised units) through the encoder; keep int(valid_frames / 2) positions of each window and
   concatenate → (L, n_layer + 1, width), 50 positions per second, L = N // 320.
3. `frame_windows`: video frame i (25 fps) takes positions 2i − 4 … 2i + 5 (clamped to [0, L − 1]),
   flattened position-major → (n_frames, 10 · (n_layer + 1), width) = (n, 50, 384) for tiny.

Frame counts: the official pipeline generates `official_frame_count(L)` = L // 2 + 2 frames (two
more than the audio lasts); `audio_frame_count(n_samples)` is the video length that exactly covers
the audio (ceil). `frame_windows` accepts any count: indices past the end are clamped, so the tail
of the audio is never dropped and nothing is rounded to a multiple of the 16-frame chunk.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from lipsync.latentsync.whisper import (WHISPER_TINY, WhisperAudioEncoder, WhisperEncoderDims,
                                        load_whisper_encoder)

__all__ = [
    "SAMPLE_RATE", "FEATURE_RATE_HZ", "VIDEO_FPS", "WhisperEncoderDims", "WHISPER_TINY",
    "load_whisper_encoder", "mel_filterbank", "log_mel", "encode_mel", "encode_audio",
    "official_frame_count", "audio_frame_count", "frame_window_indices", "frame_windows",
]

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms → 100 mel frames per second
N_MELS = 80
WINDOW_MEL_FRAMES = 3000  # one 30 s encoder window
FEATURE_RATE_HZ = 50  # encoder positions per second (conv2 has stride 2)
VIDEO_FPS = 25
AUDIO_FEAT_LENGTH = (2, 2)  # official context: 2 frames before, 2 after (in 25 fps frames)
LOG_MEL_DYNAMIC_RANGE = 8.0  # log10 units below the clip's maximum


@functools.lru_cache(maxsize=4)
def _mel_filterbank_cached(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    # Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep,
                        f / f_sp)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney area normalisation
    return weights.astype(np.float32)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters; equals Whisper's `mel_filters.npz`."""
    return _mel_filterbank_cached(sample_rate, n_fft, n_mels).copy()


def log_mel(wave16k: np.ndarray | torch.Tensor, n_mels: int = N_MELS) -> torch.Tensor:
    """Whisper log-mel of a mono 16 kHz waveform → (n_mels, N // 160) float32 on CPU."""
    wave = torch.as_tensor(np.asarray(wave16k, dtype=np.float32) if not torch.is_tensor(wave16k)
                           else wave16k.detach().to("cpu", torch.float32))
    if wave.ndim != 1:
        raise ValueError(f"expected a mono waveform (n_samples,), got shape {tuple(wave.shape)}")
    if wave.numel() < 2 * HOP_LENGTH:
        raise ValueError(f"audio too short: {wave.numel()} samples, need at least {2 * HOP_LENGTH} "
                         f"({2 * HOP_LENGTH / SAMPLE_RATE * 1000:.0f} ms at {SAMPLE_RATE} Hz)")
    spec = torch.stft(wave, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), center=True,
                      pad_mode="reflect", return_complex=True)
    power = spec[:, :-1].abs() ** 2  # the centred STFT has one frame too many
    mel = torch.from_numpy(_mel_filterbank_cached(SAMPLE_RATE, N_FFT, n_mels)) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - LOG_MEL_DYNAMIC_RANGE)
    return (log_spec + 4.0) / 4.0


@torch.no_grad()
def encode_mel(encoder: WhisperAudioEncoder, mel: torch.Tensor, windows_per_batch: int = 4) -> torch.Tensor:
    """Run the encoder over 30 s windows of a whole-clip log-mel → (L, n_layer + 1, width).

    Window k covers mel frames [3000k, 3000k + 3000); the last one is zero-padded (zeros in
    normalised log-mel units, as Whisper's `pad_or_trim`). Only int(valid_frames / 2) positions of
    each window are kept, so L = n_mel_frames // 2 and positions stay at exactly 50 per second.
    Returns the encoder's dtype on the encoder's device.
    """
    window = encoder.window_mel_frames
    n_frames = int(mel.shape[-1])
    if mel.ndim != 2 or mel.shape[0] != encoder.dims.n_mels:
        raise ValueError(f"expected a (n_mels={encoder.dims.n_mels}, frames) log-mel, got {tuple(mel.shape)}")
    if n_frames < 2:
        raise ValueError("log-mel has fewer than 2 frames: nothing to encode")
    device = encoder.conv1.weight.device
    starts = list(range(0, n_frames, window))
    padded = torch.zeros(len(starts), mel.shape[0], window, dtype=torch.float32)
    for k, seek in enumerate(starts):
        piece = mel[:, seek:seek + window]
        padded[k, :, :piece.shape[1]] = piece
    outputs = []
    for b in range(0, len(starts), windows_per_batch):
        outputs.append(encoder(padded[b:b + windows_per_batch].to(device)))
    states = torch.cat(outputs, dim=0)  # (windows, n_ctx, n_layer + 1, width)
    kept = [states[k, : (min(seek + window, n_frames) - seek) // 2] for k, seek in enumerate(starts)]
    return torch.cat(kept, dim=0)


def encode_audio(encoder: WhisperAudioEncoder, wave16k: np.ndarray | torch.Tensor,
                 windows_per_batch: int = 4) -> torch.Tensor:
    """Waveform (mono, 16 kHz) → Whisper features (L = N // 320, n_layer + 1, width)."""
    return encode_mel(encoder, log_mel(wave16k, encoder.dims.n_mels), windows_per_batch)


def official_frame_count(n_positions: int) -> int:
    """Frames the official pipeline generates for L feature positions: L // 2 + 2."""
    # feature2chunks appends frame i, then stops once 2·i > L: frames 0 … L // 2 + 1.
    return int(n_positions) // 2 + 2


def audio_frame_count(n_samples: int, sr: int = SAMPLE_RATE, fps: int = VIDEO_FPS) -> int:
    """Video frames needed to cover `n_samples` of audio at `fps` (the last partial frame counts)."""
    if n_samples <= 0:
        raise ValueError(f"audio has no samples ({n_samples})")
    return -(-int(n_samples) * int(fps) // int(sr))  # exact integer ceil


def frame_window_indices(n_frames: int, n_positions: int, fps: float = VIDEO_FPS,
                         feat_length: tuple[int, int] = AUDIO_FEAT_LENGTH) -> torch.Tensor:
    """(n_frames, 2·(before + after + 1)) feature positions used by each video frame, clamped."""
    if n_positions < 1 or n_frames < 1:
        raise ValueError(f"need at least one frame and one feature position, got {n_frames}, {n_positions}")
    frames = torch.arange(n_frames, dtype=torch.float64)
    centre = torch.floor(frames * FEATURE_RATE_HZ / fps).long()  # int(i · 50 / fps)
    offsets = torch.arange(-2 * feat_length[0], 2 * (feat_length[1] + 1), dtype=torch.long)
    return (centre[:, None] + offsets[None, :]).clamp_(0, n_positions - 1)


def frame_windows(features: torch.Tensor, n_frames: int, fps: float = VIDEO_FPS,
                  feat_length: tuple[int, int] = AUDIO_FEAT_LENGTH) -> torch.Tensor:
    """Per-frame audio tokens: (L, S, D) features → (n_frames, 10 · S, D).

    Token 5j + l of frame i (tiny: S = 5) is layer l at the frame's j-th position, as the UNet's
    cross-attention expects. Stack 16 consecutive rows for one chunk; CFG prepends zeros.
    """
    if features.ndim != 3:
        raise ValueError(f"expected features (L, layers, width), got {tuple(features.shape)}")
    idx = frame_window_indices(n_frames, features.shape[0], fps, feat_length).to(features.device)
    picked = features[idx]  # (n_frames, 10, S, D)
    return picked.reshape(n_frames, -1, features.shape[-1])
