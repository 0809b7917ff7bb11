"""LatentSync pipeline on CPU with tiny RANDOM models (UNet, VAE, Whisper): behaviour, not quality.

Nothing here is the real model: the generated mouths are noise. The tests check frame counts,
what is left untouched, determinism, the still fast path, streaming and bounded memory.
"""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch

from lipsync.latentsync.align import FaceAligner
from lipsync.latentsync.config import tiny_unet_config
from lipsync.latentsync.pipeline import (LatentSyncPipeline, PipelineOptions, SamplingOptions,
                                         plan_groups, sampling_for_quality)
from lipsync.latentsync.unet import build_unet
from lipsync.latentsync.vae import LatentVAE, load_vae, tiny_vae
from lipsync.latentsync.whisper import WhisperEncoderDims, load_whisper_encoder

SR = 16000
H, W = 120, 160
# Five landmarks (eyes, nose, mouth corners) of a face in the middle of the frame.
MARKS = np.array([[65.0, 50.0], [95.0, 50.0], [80.0, 68.0], [68.0, 85.0], [92.0, 85.0]])
FAST = SamplingOptions(steps=2, guidance_scale=1.5, deepcache=False, seed=7)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    unet = build_unet(tiny_unet_config())  # random; resolution 64 -> latents 8x8
    vae = tiny_vae(seed=0)
    whisper = load_whisper_encoder(None, tiny_config=WhisperEncoderDims(n_audio_state=64, n_audio_head=2,
                                                                        n_audio_layer=1))
    return unet, vae, whisper


def make_pipeline(models, **options) -> LatentSyncPipeline:
    unet, vae, whisper = models
    return LatentSyncPipeline(unet, vae, whisper, options=PipelineOptions(**options))


def portrait(shift: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    xx = xx + shift
    rgb = [128 + 60 * np.sin(xx / 13) * np.cos(yy / 17), 128 + 50 * np.cos(xx / 9 + yy / 11),
           128 + 40 * np.sin((xx + yy) / 21)]
    return np.stack(rgb, -1).astype(np.uint8)


def voice(seconds: float) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.4 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def run_still(pipe, seconds, sampling=FAST, image=None):
    image = portrait() if image is None else image
    out: list[np.ndarray] = []
    stats = pipe(voice(seconds), (image for _ in range(10_000)), MARKS[None], out.append, still=True,
                 sampling=sampling)
    return out, stats, image


def test_plan_groups_balances_full_chunks_and_keeps_the_tail_alone():
    assert plan_groups(250, 4) == [(0, 4, 16), (64, 4, 16), (128, 4, 16), (192, 3, 16), (240, 1, 10)]
    assert plan_groups(33, 1) == [(0, 1, 16), (16, 1, 16), (32, 1, 1)]
    assert plan_groups(48, 8) == [(0, 3, 16)]
    for n, g in ((1, 1), (17, 2), (250, 5), (1000, 7)):
        assert sum(b * f for _, b, f in plan_groups(n, g)) == n


@pytest.mark.parametrize("seconds, expected", [(1.32, 33), (0.7, 18)])
def test_frame_count_covers_the_audio_without_cutting_to_16(models, seconds, expected):
    out, stats, image = run_still(make_pipeline(models), seconds)
    assert expected == math.ceil(seconds * 25 - 1e-9)
    assert len(out) == stats.frames == expected
    assert all(f.shape == image.shape and f.dtype == np.uint8 for f in out)
    assert stats.face_frames == expected and stats.padded_source_frames == 0
    assert stats.unet_calls == FAST.steps * math.ceil(expected / 16)
    assert stats.affines.shape == (expected, 2, 3) and np.isfinite(stats.affines).all()


def test_pixels_outside_the_feathered_face_are_byte_identical(models):
    out, stats, image = run_still(make_pipeline(models), 0.7)
    soft = FaceAligner(64).soft_mask((H, W), stats.affines[0])
    outside = soft == 0
    assert outside.sum() > 0.3 * outside.size  # the check covers a large part of the frame
    changed_inside = 0
    for frame in out:
        np.testing.assert_array_equal(frame[outside], image[outside])
        changed_inside += int((frame[~outside] != image[~outside]).any(axis=-1).sum())
    assert changed_inside > 0.2 * (~outside).sum() * len(out)


def test_same_seed_same_frames_other_seed_other_frames(models):
    pipe = make_pipeline(models)
    a, _, _ = run_still(pipe, 0.7)
    b, _, _ = run_still(pipe, 0.7)
    c, _, _ = run_still(pipe, 0.7, SamplingOptions(steps=2, deepcache=False, seed=8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sum(int(np.abs(x.astype(int) - z).sum()) for x, z in zip(a, c)) > 1000


def _count_encodes(vae: LatentVAE, monkeypatch) -> list[int]:
    batches: list[int] = []
    original = vae.model.encode

    def counting(x, *args, **kwargs):
        batches.append(int(x.shape[0]))
        return original(x, *args, **kwargs)

    monkeypatch.setattr(vae.model, "encode", counting)
    return batches


def test_still_encodes_once_per_clip_video_once_per_chunk(models, monkeypatch):
    pipe = make_pipeline(models)
    batches = _count_encodes(models[1], monkeypatch)
    out, stats, _ = run_still(pipe, 1.6)  # 40 frames = 3 chunks
    assert stats.chunks == 3 and len(out) == 40
    assert batches == [2]  # one masked + one reference image for the whole clip

    batches.clear()
    frames = [portrait(shift=k) for k in range(40)]
    marks = np.stack([MARKS + [0.5 * k, 0.0] for k in range(40)])
    stats = pipe(voice(1.6), iter(frames), marks, lambda f: None, still=False, sampling=FAST)
    assert batches == [32, 32, 16]  # per chunk: its masked frames and its references in one call
    # Per-frame alignment: the crop follows the moving face.
    assert not np.allclose(stats.affines[0], stats.affines[-1])


class _LoggingUNet:
    """Forwards to the UNet and logs every call into a shared event list."""

    def __init__(self, unet, events):
        self.unet, self.events, self.config = unet, events, unet.config

    @property
    def dtype(self):
        return self.unet.dtype

    def __call__(self, *args, **kwargs):
        self.events.append("unet")
        return self.unet(*args, **kwargs)

    def forward_and_cache(self, *args, **kwargs):
        self.events.append("unet")
        return self.unet.forward_and_cache(*args, **kwargs)

    def forward_cached(self, *args, **kwargs):
        self.events.append("unet")
        return self.unet.forward_cached(*args, **kwargs)


@pytest.mark.parametrize("overlap, chunks_ahead", [(False, 1), (True, 2)])
def test_frames_stream_out_before_later_chunks_are_computed(models, overlap, chunks_ahead):
    unet, vae, whisper = models
    events: list[str] = []
    pipe = LatentSyncPipeline(_LoggingUNet(unet, events), vae, whisper, options=PipelineOptions(overlap=overlap))
    image = portrait()
    stats = pipe(voice(1.92), (image for _ in range(48)), MARKS[None], lambda f: events.append("write"),
                 still=True, sampling=FAST)
    assert stats.chunks == 3 and events.count("write") == 48
    sixteenth_write = [i for i, e in enumerate(events) if e == "write"][15]
    unet_before = events[:sixteenth_write].count("unet")
    # Chunk 1 is fully written before chunk 1 + chunks_ahead starts denoising.
    assert unet_before <= chunks_ahead * FAST.steps
    assert events.count("unet") == 3 * FAST.steps


def test_memory_does_not_grow_with_audio_length(models):
    pipe = make_pipeline(models)
    image = portrait()
    sampling = SamplingOptions(steps=1, guidance_scale=1.0, deepcache=False)
    checksums: list[int] = []

    def peak(seconds: float) -> int:
        audio = voice(seconds)  # the input itself is the caller's, made before tracing
        tracemalloc.start()
        try:
            pipe(audio, (image for _ in range(10_000)), MARKS[None],
                 lambda f: checksums.append(int(f[60, 80, 0])), still=True, sampling=sampling)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(1.0)  # warm caches (mask, paste geometry) outside the comparison
    p4, p8 = peak(4.0), peak(8.0)
    frame_bytes = image.nbytes
    assert len(checksums) == 25 + 100 + 200
    assert p8 < 1.3 * p4, (p4, p8)
    assert p8 < 0.5 * 200 * frame_bytes, (p8, 200 * frame_bytes)  # the frames are not kept


def test_video_frame_without_face_passes_through_untouched(models):
    pipe = make_pipeline(models)
    frames = [portrait(shift=k) for k in range(20)]
    marks = np.stack([MARKS] * 20)
    marks[5] = np.nan
    out: list[np.ndarray] = []
    stats = pipe(voice(0.8), iter(frames), marks, out.append, still=False, sampling=FAST)
    assert len(out) == 20 and stats.face_frames == 19
    np.testing.assert_array_equal(out[5], frames[5])
    assert np.isnan(stats.affines[5]).all() and np.isfinite(np.delete(stats.affines, 5, axis=0)).all()
    for k in (4, 6, 19):
        assert (out[k] != frames[k]).any()


def test_short_source_repeats_its_last_frame(models):
    pipe = make_pipeline(models)
    frames = [portrait(shift=k) for k in range(10)]
    out: list[np.ndarray] = []
    stats = pipe(voice(0.6), iter(frames), MARKS[None], out.append, still=False, sampling=FAST)
    assert len(out) == 15 and stats.padded_source_frames == 5


def test_quality_presets_record_what_ran(models):
    assert sampling_for_quality("draft") == SamplingOptions(steps=10, deepcache=True)
    assert sampling_for_quality("standard") == SamplingOptions(steps=20, deepcache=True)
    assert sampling_for_quality("premium").deepcache is False
    with pytest.raises(ValueError, match="unknown quality"):
        sampling_for_quality("ultra")
    out, stats, _ = run_still(make_pipeline(models), 0.5, sampling_for_quality("draft", seed=3))
    assert len(out) == 13 and stats.sampling.steps == 10 and stats.sampling.deepcache
    assert stats.unet_calls == 10


def test_still_shares_the_first_unconditional_step_and_keeps_the_frames(models):
    """A still image's later chunks reuse step 0's unconditional branch (sampling.SharedStart): same
    frames as recomputing it, and never for a video (its chunks start from different pictures)."""
    seconds = 2.6  # 65 frames: groups of 2 chunks (0-31, 32-63) and a 1-frame tail
    shared_out, shared, _ = run_still(make_pipeline(models, chunks_per_call=2), seconds)
    plain_out, plain, _ = run_still(make_pipeline(models, chunks_per_call=2, share_first_step=False), seconds)
    assert shared.shared_start_chunks == 2 and plain.shared_start_chunks == 0
    assert len(shared_out) == len(plain_out) == 65
    diff = np.stack([a.astype(int) - b for a, b in zip(shared_out, plain_out)])
    assert np.abs(diff).max() <= 1 and (diff != 0).mean() < 1e-3
    # ...and the mouths are not all the same picture: later chunks still follow their own audio
    assert not np.array_equal(shared_out[40], shared_out[8])

    frames = [portrait(shift=k) for k in range(40)]
    marks = np.stack([MARKS + [0.5 * k, 0.0] for k in range(40)])
    video = make_pipeline(models, chunks_per_call=2)(voice(1.6), iter(frames), marks, lambda f: None,
                                                     still=False, sampling=FAST)
    assert video.shared_start_chunks == 0


def test_vae_folder_round_trip_and_scaled_latents(tmp_path):
    vae = tiny_vae(seed=3)
    vae.model.save_pretrained(tmp_path)
    loaded = load_vae(tmp_path)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    z1 = vae.encode(x, torch.Generator().manual_seed(1))
    z2 = loaded.encode(x, torch.Generator().manual_seed(1))
    assert z1.shape == (2, 4, 8, 8)
    torch.testing.assert_close(z1, z2)
    # encode = (posterior sample) x 0.18215
    posterior = vae.model.encode(x).latent_dist
    torch.testing.assert_close(z1, posterior.sample(torch.Generator().manual_seed(1)) * 0.18215)
    torch.testing.assert_close(vae.decode(z1), vae.model.decode(z1 / 0.18215).sample)
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        load_vae(tmp_path)


def test_faster_presets_never_do_more_model_work(models, monkeypatch):
    """Issue 20: fast (draft) <= standard <= high (premium) in what each render asks of the
    models: UNet frames (a DeepCache shallow forward counted as a whole one, an upper bound), and
    the same VAE encodes and decodes at every preset (no preset falls off the still fast path)."""
    from media.presets import ALIASES

    def work(quality: str) -> tuple[int, int, int]:
        pipe = make_pipeline(models, chunks_per_call=2)
        seen = {"unet": 0, "encode": 0, "decode": 0}
        unet = pipe.unet

        class Counting:
            def __getattr__(self, name):
                return getattr(unet, name)

            def _count(self, fn, sample, *a, **k):
                seen["unet"] += sample.shape[0] * sample.shape[2]
                return fn(sample, *a, **k)

            def __call__(self, sample, *a, **k):
                return self._count(unet, sample, *a, **k)

            def forward_and_cache(self, sample, *a, **k):
                return self._count(unet.forward_and_cache, sample, *a, **k)

            def forward_cached(self, sample, *a, **k):
                return self._count(unet.forward_cached, sample, *a, **k)

        pipe.unet = Counting()
        for name in ("encode", "decode"):
            real = getattr(pipe.vae, name)
            monkeypatch.setattr(pipe.vae, name, lambda x, *a, _r=real, _n=name, **k: (
                seen.__setitem__(_n, seen[_n] + x.shape[0]), _r(x, *a, **k))[1])
        preset = ALIASES.get(quality, quality)
        out, stats, _ = run_still(pipe, 1.5, sampling_for_quality(preset, seed=3))
        assert len(out) == stats.frames == 38
        return seen["unet"], seen["encode"], seen["decode"]

    fast, standard, high = (work(q) for q in ("fast", "standard", "high"))
    assert fast[0] < standard[0] <= high[0], (fast, standard, high)
    # one encode of the still (masked + reference) and a decode per frame, whatever the preset
    assert fast[1:] == standard[1:] == high[1:] == (2, 38)
