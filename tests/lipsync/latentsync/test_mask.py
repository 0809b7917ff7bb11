"""Official mouth mask at 256/512 and latent size, and the masking around it."""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lipsync.latentsync.mask import (MASK_PATH, composite_in_crop, latent_mask, load_mask,
                                     load_mask_u8, mask_edge_band, mask_faces)
from tests.lipsync.latentsync.goldens import FIXTURES


@pytest.fixture(scope="module")
def goldens() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "latentsync_mask_goldens.safetensors"))


def test_packaged_mask_is_the_official_file():
    ours = hashlib.sha256(MASK_PATH.read_bytes()).hexdigest()
    official = hashlib.sha256((FIXTURES / "latentsync_mask.png").read_bytes()).hexdigest()
    assert ours == official


@pytest.mark.parametrize("resolution", [256, 512])
def test_resized_masks_equal_goldens(goldens, resolution):
    u8 = load_mask_u8(resolution)
    assert np.array_equal(u8, goldens[f"mask_u8_{resolution}"].numpy())
    golden_u8 = goldens[f"mask_u8_{resolution}"].numpy()
    np.testing.assert_array_equal(load_mask(resolution), golden_u8 / np.float32(255))
    lat = latent_mask(resolution)
    assert lat.dtype == np.float32
    assert np.array_equal(lat, goldens[f"latent_mask_{resolution // 8}"].numpy())
    # same as the pipeline's F.interpolate default (nearest)
    ref = F.interpolate(torch.from_numpy(load_mask(resolution))[None, None], size=(resolution // 8,) * 2)
    assert torch.equal(ref[0, 0], torch.from_numpy(lat))


def test_mask_faces_normalises_and_masks(goldens):
    faces = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    mask = load_mask(256)
    pixels, masked, m = mask_faces(faces, mask)
    assert pixels.shape == masked.shape == (2, 3, 256, 256) and m.shape == (2, 1, 256, 256)
    expected = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    assert (pixels - expected).abs().max().item() < 1e-6
    keep = goldens["mask_u8_256"] > 0
    assert torch.equal(masked[:, :, ~keep], torch.zeros_like(masked[:, :, ~keep]))
    assert torch.equal(masked[:, :, keep], pixels[:, :, keep])


def test_composite_keeps_original_pixels_where_mask_keeps():
    mask = torch.from_numpy(load_mask(256))[None, None].expand(2, 1, 256, 256)
    gen = torch.rand(2, 3, 256, 256) * 2 - 1
    orig = torch.rand(2, 3, 256, 256) * 2 - 1
    out = composite_in_crop(gen, orig, mask)
    keep = mask[0, 0] == 1
    assert torch.equal(out[:, :, keep], orig[:, :, keep])
    assert torch.equal(out[:, :, mask[0, 0] == 0], gen[:, :, mask[0, 0] == 0])


def test_composite_colour_match_removes_a_colour_drift():
    rng = np.random.default_rng(3)
    base = cv2.GaussianBlur(rng.uniform(-0.6, 0.6, (256, 256, 3)).astype(np.float32), (0, 0), 6)
    orig = torch.from_numpy(base).permute(2, 0, 1)[None]
    drifted = orig.clone()
    drifted[:, 0] += 0.15  # red cast from the generator
    mask = torch.from_numpy(load_mask(256))[None, None]
    band = torch.from_numpy(mask_edge_band(load_mask(256), 6))
    gen_region = mask[0, 0] == 0
    plain = composite_in_crop(drifted, orig, mask)
    fixed = composite_in_crop(drifted, orig, mask, color_band_px=6)
    err_plain = (plain - orig)[:, :, gen_region & band].abs().mean().item()
    err_fixed = (fixed - orig)[:, :, gen_region & band].abs().mean().item()
    assert err_plain > 0.04 and err_fixed < 0.01  # 0.15 on one of 3 channels


def test_edge_band_hugs_the_mask_edge():
    mask = load_mask(256)
    band = mask_edge_band(mask, 4)
    keep = (mask >= 0.5).astype(np.uint8)
    # distance of every pixel to the other class
    dist_to_gen = cv2.distanceTransform(keep, cv2.DIST_C, 3)
    dist_to_keep = cv2.distanceTransform(1 - keep, cv2.DIST_C, 3)
    dist = np.where(keep > 0, dist_to_gen, dist_to_keep)
    assert band.any() and band[keep > 0].any() and band[keep == 0].any()
    assert dist[band].max() <= 4
    assert not band[dist > 4].any()


def test_bad_resolution_is_rejected():
    with pytest.raises(ValueError, match="multiple of 8"):
        load_mask(100)
