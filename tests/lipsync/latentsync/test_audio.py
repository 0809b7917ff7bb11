"""LatentSync audio path against the official goldens, plus long-audio windowing on a tiny encoder."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lipsync.latentsync.audio import (audio_frame_count, encode_audio, encode_mel,
                                      frame_window_indices, frame_windows, log_mel, mel_filterbank,
                                      official_frame_count)
from lipsync.latentsync.whisper import (WhisperEncoderDims, build_whisper_encoder,
                                        load_whisper_encoder)
from tests.lipsync.latentsync.goldens import FIXTURES

GOLDEN_DIMS = WhisperEncoderDims(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2)
RANDOM_DIMS = WhisperEncoderDims(n_mels=80, n_audio_ctx=1500, n_audio_state=16, n_audio_head=2, n_audio_layer=1)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "latentsync_tiny_parity_audio.safetensors"))


@pytest.fixture(scope="module")
def golden_encoder(golden):
    weights = {k: v for k, v in golden.items() if k.startswith("whisper.encoder.")}
    return build_whisper_encoder(weights, GOLDEN_DIMS)


def test_mel_filterbank_matches_transformers_slaney_filters():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                          sampling_rate=16000, norm="slaney", mel_scale="slaney")
    ours = mel_filterbank()
    assert ours.shape == (80, 201)
    np.testing.assert_allclose(ours, ref.T, rtol=0, atol=1e-8)


def test_log_mel_matches_official_golden(golden):
    mel = log_mel(golden["whisper.waveform"].numpy())
    assert mel.shape == golden["whisper.mel"].shape == (80, 200)
    assert (mel - golden["whisper.mel"]).abs().max().item() < 1e-5


def test_tiny_whisper_features_and_frame_chunks_match_golden(golden, golden_encoder):
    features = encode_audio(golden_encoder, golden["whisper.waveform"])
    assert features.shape == golden["whisper.features"].shape == (100, 3, 64)
    assert (features - golden["whisper.features"]).abs().max().item() < 1e-4

    chunks = frame_windows(features, official_frame_count(features.shape[0]))
    assert chunks.shape == golden["whisper.chunks"].shape == (52, 30, 64)
    assert (chunks - golden["whisper.chunks"]).abs().max().item() < 1e-4


def test_half_precision_encoder_stays_close_to_fp32_golden(golden):
    # the official pipeline runs Whisper in fp16 (LayerNorm in fp32); same recipe here, on CPU
    weights = {k: v for k, v in golden.items() if k.startswith("whisper.encoder.")}
    encoder = build_whisper_encoder(weights, GOLDEN_DIMS, dtype=torch.float16)
    features = encode_audio(encoder, golden["whisper.waveform"])
    assert features.dtype == torch.float16
    assert (features.float() - golden["whisper.features"]).abs().max().item() < 1e-2


def test_frame_windowing_is_exact_against_golden(golden):
    feats = golden["window.feature_array"]
    n = official_frame_count(feats.shape[0])
    assert n == golden["window.chunks"].shape[0]
    assert torch.equal(frame_window_indices(n, feats.shape[0]), golden["window.indices"])
    assert torch.equal(frame_windows(feats, n), golden["window.chunks"])


def test_openai_format_checkpoint_loads_encoder_and_ignores_decoder(golden, tmp_path):
    state = {"encoder." + k[len("whisper.encoder."):]: v.half() for k, v in golden.items()
             if k.startswith("whisper.encoder.")}
    state["decoder.token_embedding.weight"] = torch.zeros(8, 4, dtype=torch.float16)
    dims = {"n_mels": 80, "n_vocab": 8, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2,
            "n_audio_layer": 2, "n_text_ctx": 4, "n_text_state": 4, "n_text_head": 1, "n_text_layer": 1}
    path = tmp_path / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": state}, path)

    encoder = load_whisper_encoder(path, device="cpu", dtype=torch.float32)
    assert encoder.dims == GOLDEN_DIMS
    features = encode_audio(encoder, golden["whisper.waveform"])
    # fp16-rounded weights (as OpenAI ships them) stay close to the fp32 golden
    assert (features - golden["whisper.features"]).abs().max().item() < 2e-2

    del state["encoder.blocks.1.mlp.2.bias"]
    torch.save({"dims": dims, "model_state_dict": state}, path)
    with pytest.raises(ValueError, match="missing"):
        load_whisper_encoder(path)


@pytest.mark.parametrize("seconds", [31.3, 61.07])
def test_long_audio_keeps_tail_and_crosses_30s_windows(seconds):
    n_samples = round(seconds * 16000)
    wave = np.random.default_rng(7).standard_normal(n_samples).astype(np.float32) * 0.1
    encoder = load_whisper_encoder(None, tiny_config=RANDOM_DIMS)  # random: shapes/windowing only
    mel = log_mel(wave)
    features = encode_mel(encoder, mel)

    # 50 positions per second, nothing dropped at the end: L = N // 320
    n_mel = n_samples // 160
    assert mel.shape == (80, n_mel)
    assert features.shape == (n_samples // 320, 2, 16)

    # each 30 s window is the encoder on its own (zero-padded) slice of the whole-clip mel
    for k, seek in enumerate(range(0, n_mel, 3000)):
        piece = torch.zeros(1, 80, 3000)
        valid = min(3000, n_mel - seek)
        piece[0, :, :valid] = mel[:, seek:seek + valid]
        expected = encoder(piece)[0, : valid // 2]
        assert torch.allclose(features[1500 * k: 1500 * k + valid // 2], expected, atol=1e-6)

    # one frame per 40 ms of audio, the last partial frame included, not rounded to 16
    n_frames = audio_frame_count(n_samples)
    assert n_frames == math.ceil(seconds * 25)
    assert n_frames % 16 != 0
    windows = frame_windows(features, n_frames)
    assert windows.shape == (n_frames, 20, 16)

    # frame 750 straddles the first window boundary: positions 1496 … 1505, layer-minor order
    expected = features[1496:1506].reshape(20, 16)
    assert torch.equal(windows[750], expected)
    # the last frame reaches the last feature position (tail kept) and clamps beyond it
    last = frame_window_indices(n_frames, features.shape[0])[-1]
    assert last.max().item() == features.shape[0] - 1
    assert torch.equal(windows[-1], features[last].reshape(20, 16))


def test_frame_counts():
    assert audio_frame_count(16000) == 25
    assert audio_frame_count(16001) == 26
    assert official_frame_count(500) == 252  # 10 s of audio in the official pipeline (spec §3)


def test_bad_audio_is_rejected():
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="too short"):
        log_mel(np.zeros(100, np.float32))
