"""Our architectures against the official ones: full-size state-dict schemas and tiny-config goldens."""
from __future__ import annotations

import pytest
import torch

from enhance.loaders import build_model
from tests.enhance.goldens import FIXTURES, golden_config, golden_model, goldens, read_schema

SCHEMAS = {
    "GFPGANv1.4": "gfpgan_v1.4_schema.tsv",
    "RealESRGAN_x4plus": "realesrgan_x4plus_schema.tsv",
    "realesr-general-x4v3": "realesr_general_x4v3_schema.tsv",
}


@pytest.mark.parametrize("release", sorted(SCHEMAS))
def test_full_size_state_dict_equals_official_schema(release):
    schema = read_schema(SCHEMAS[release])
    model = build_model(release, "meta")  # no memory, no init cost
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(schema) - set(ours)) == []
    assert sorted(set(ours) - set(schema)) == []
    assert {k: v for k, v in ours.items() if schema[k] != v} == {}
    header = (FIXTURES / SCHEMAS[release]).read_text().splitlines()[1]
    assert f"numel={sum(v.numel() for v in model.state_dict().values())}" in header


@pytest.mark.parametrize("name", ["rrdbnet", "rrdbnet_x2", "srvgg", "gfpgan"])
def test_tiny_forward_matches_official_golden(name):
    model = golden_model(name)
    x, ref = goldens()[f"{name}.input"], goldens()[f"{name}.output"]
    with torch.no_grad():
        out = model(x)  # gfpgan: stored noise, as the golden's randomize_noise=False
    assert list(out.shape) == golden_config()[name]["output_shape"]
    rel = (out - ref).abs().max() / ref.abs().max()
    assert rel < 1e-5, f"{name}: max relative error {rel:.2e}"


def test_gfpgan_random_noise_changes_output_and_fixed_noise_does_not():
    model = golden_model("gfpgan")
    with torch.no_grad():  # the golden has non-zero noise strengths
        for m in model.stylegan_decoder.modules():
            if hasattr(m, "modulated_conv") and hasattr(m, "weight") and m.weight.numel() == 1:
                m.weight.fill_(0.5)
    x = goldens()["gfpgan.input"]
    with torch.no_grad():
        a, b = model(x), model(x)
        c = model(x, randomize_noise=True)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_gfpgan_rejects_wrong_crop_size():
    model = golden_model("gfpgan")
    with pytest.raises(ValueError, match="64x64"):
        model(torch.zeros(1, 3, 32, 32))
