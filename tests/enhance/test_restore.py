"""FaceRestorer (batched, weight blend, flicker) and paste_back into frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from enhance.gfpgan import GFPGANv1Clean
from enhance.restore import FaceRestorer, RestoreOptions, feather_mask, paste_back
from enhance.temporal import ResidualStabilizer
from tests.enhance.goldens import golden_model, goldens
from tests.support.portrait import face_crop

# A 512-px GFPGAN small enough for CPU tests (random weights: it is not a face restorer; these
# tests check plumbing, batching, blending and temporal behaviour, not restoration quality).
TINY_512 = dict(out_size=512, num_style_feat=16, channel_multiplier=1, num_mlp=1, narrow=0.0625)


def tiny_gfpgan_512(noise_strength: float = 0.3) -> GFPGANv1Clean:
    torch.manual_seed(0)
    net = GFPGANv1Clean(**TINY_512)
    with torch.no_grad():  # trained GFPGAN has non-zero noise strengths; fresh init has zeros
        for m in net.stylegan_decoder.modules():
            if hasattr(m, "modulated_conv") and hasattr(m, "weight") and m.weight.numel() == 1:
                m.weight.fill_(noise_strength)
    return net


def static_head_clip(frames: int, noise_std: float = 2.0) -> np.ndarray:
    """The same face every frame plus fresh sensor-like noise."""
    rng = np.random.default_rng(0)
    face = face_crop(512).astype(np.float32)
    return np.clip(face + rng.normal(0, noise_std, (frames, 512, 512, 3)), 0, 255).round().astype(np.uint8)


def flicker(clip: np.ndarray) -> float:
    """Mean absolute frame-to-frame change inside the face (central region of the aligned crop)."""
    return float(np.abs(np.diff(clip.astype(np.float32), axis=0))[:, 96:416, 96:416].mean())


def test_restore_matches_the_network_on_golden_weights():
    net = golden_model("gfpgan")  # official-code weights, 64 px
    x = goldens()["gfpgan.input"]
    crops = ((x[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)[None]
    out = FaceRestorer(net, "tiny", "cpu").restore(np.repeat(crops, 3, axis=0))
    with torch.no_grad():
        ref = net(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1).clamp(-1, 1)
    ref = ((ref + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert out.shape == (3, 64, 64, 3) and out.dtype == np.uint8
    assert all(np.abs(o.astype(int) - ref[0]).max() <= 1 for o in out)


def test_batches_and_weight_blend():
    net = golden_model("gfpgan")
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    full = FaceRestorer(net, "tiny", "cpu", RestoreOptions(batch_size=2)).restore(crops, 1.0)
    one_batch = FaceRestorer(net, "tiny", "cpu", RestoreOptions(batch_size=8)).restore(crops, 1.0)
    assert np.abs(full.astype(int) - one_batch).max() <= 1  # batching does not change results
    restorer = FaceRestorer(net, "tiny", "cpu", RestoreOptions(batch_size=2))
    assert np.array_equal(restorer.restore(crops, 0.0), crops)
    half = restorer.restore(crops, 0.5).astype(float)
    assert np.abs(half - (crops + full.astype(float)) / 2).max() <= 1.0
    with pytest.raises(ValueError, match="weight"):
        restorer.restore(crops, 1.5)
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\)"):
        restorer.restore(crops[:, :32], 1.0)


def test_flicker_on_static_head_stays_within_ten_percent_of_input():
    clip = static_head_clip(4)
    net = tiny_gfpgan_512()
    restorer = FaceRestorer(net, "tiny", "cpu", RestoreOptions(batch_size=2))  # 2 calls: state carries over
    stabilised = restorer.restore(clip, weight=0.8, stabilizer=ResidualStabilizer())
    official_style = FaceRestorer(net, "tiny", "cpu", RestoreOptions(batch_size=4, randomize_noise=True))
    unstabilised = official_style.restore(clip, weight=0.8)
    base = flicker(clip)
    assert flicker(unstabilised) > 1.1 * base  # fresh decoder noise per frame does flicker ...
    assert flicker(stabilised) <= 1.1 * base  # ... ours does not
    assert np.abs(stabilised.astype(float) - clip).mean() > 5  # and it did restore (change) the face


def test_feather_mask_ramps_smoothly():
    mask = feather_mask(64, 48, 8.0)
    assert mask.shape == (64, 48)
    assert mask[32, 24] == 1.0 and mask[0, 0] < 0.01
    row = mask[32, :24]
    assert np.all(np.diff(row) >= 0) and row[8] == 1.0
    assert np.array_equal(feather_mask(4, 4, 0), np.ones((4, 4), np.float32))


def test_paste_back_places_crop_by_affine_and_feathers_edges():
    frames = np.full((2, 120, 160, 3), 40, np.uint8)
    crops = np.full((2, 64, 64, 3), 200, np.uint8)
    # crop->frame: scale 0.5, translate to (30, 20); second frame also rotated 90 degrees
    affines = np.array([[[0.5, 0, 30], [0, 0.5, 20]],
                        [[0, -0.5, 100], [0.5, 0, 40]]], np.float64)
    out = paste_back(frames, crops, affines, feather_px=4)
    assert out.shape == frames.shape and not np.shares_memory(out, frames)
    assert (out[0, 36, 46] == 200).all()  # centre of the 32x32 pasted square
    assert (out[0, 5, 5] == 40).all() and (out[0, 60, 100] == 40).all()  # outside untouched
    edge = out[0, 36, 30:40, 0].astype(int)  # left edge: a ramp, not a step
    assert edge[0] < 120 and np.all(np.diff(edge) >= 0) and edge[-1] == 200
    assert (out[1, 56, 84] == 200).all()  # centre of the rotated square: x 68..100, y 40..72
    assert np.array_equal(frames, np.full_like(frames, 40))  # inputs not modified


def test_paste_back_rejects_bad_shapes():
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="one crop per frame"):
        paste_back(frames, np.zeros((1, 16, 16, 3), np.uint8), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="affines"):
        paste_back(frames, np.zeros((2, 16, 16, 3), np.uint8), np.zeros((2, 3, 3)))


@pytest.mark.requires_cuda
def test_gpu_half_precision_restore_close_to_fp32():
    rng = np.random.default_rng(2)
    crops = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    ref = FaceRestorer(golden_model("gfpgan"), "tiny", "cpu").restore(crops)
    for precision in ("fp16", "bf16"):
        restorer = FaceRestorer(golden_model("gfpgan"), "tiny", "cuda",
                                RestoreOptions(precision=precision, memory_fraction=0.2))
        assert restorer.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        out = restorer.restore(crops)
        assert np.abs(out.astype(float) - ref).mean() < (1.0 if precision == "fp16" else 3.0)


@pytest.mark.requires_cuda
def test_cuda_graph_replay_equals_eager_forward():
    """One graph per batch shape (a full batch of 3 and a tail of 1); outputs equal the eager path."""
    crops = np.random.default_rng(3).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    options = dict(precision="fp16", batch_size=3)
    eager = FaceRestorer(golden_model("gfpgan"), "tiny", "cuda", RestoreOptions(**options, cuda_graphs=False))
    graphed = FaceRestorer(golden_model("gfpgan"), "tiny", "cuda", RestoreOptions(**options))
    expected = eager.restore(crops)
    for _ in range(2):  # capture, then replay
        out = graphed.restore(crops)
        assert graphed._graphs is not None and graphed._graphs.failed is None
        assert np.abs(out.astype(int) - expected).max() <= 1
    assert len(graphed._graphs._graphs) == 2 and graphed.forward_passes == 4
    # a different input really changes the replayed output (the static input buffer is refreshed)
    assert np.abs(graphed.restore(crops[::-1]).astype(int) - out[::-1]).max() <= 1
