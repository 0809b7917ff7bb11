"""Checkpoint loading (official layouts, readable errors), the loaders the stages call, and the
paths download_models.py writes being the paths the stages read."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import enhance
from core.settings import Settings
from core.storage import open_storage
from enhance.loaders import build_model, find_weight_file
from enhance.upscale import UpscaleOptions
from enhance.weights import load_weights, read_state_dict
from stages.restore import FaceRestoreStage
from stages.upscale import UpscaleStage
from tests.enhance.goldens import golden_model, goldens, read_schema
from tests.support.portrait import portrait_patch
from weights import registry


def test_reads_params_ema_then_params_then_flat(tmp_path):
    sd = golden_model("srvgg").state_dict()
    other = {k: v + 1 for k, v in sd.items()}
    torch.save({"params": other, "params_ema": sd}, tmp_path / "a.pth")
    torch.save({"params": sd}, tmp_path / "b.pth")
    torch.save(sd, tmp_path / "c.pth")
    for name in ("a.pth", "b.pth", "c.pth"):
        loaded = read_state_dict(tmp_path / name)
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    torch.save({"net_g": sd, "iter": 3}, tmp_path / "d.pth")
    with pytest.raises(ValueError, match="params_ema"):
        read_state_dict(tmp_path / "d.pth")


def test_mismatch_names_missing_unexpected_and_wrong_shape():
    state = dict(golden_model("srvgg").state_dict())
    state.pop("body.0.bias")
    state["body.99.weight"] = torch.zeros(1)
    state["body.2.weight"] = torch.zeros(8, 8, 1, 1)
    target = golden_model("srvgg")
    with pytest.raises(ValueError) as err:
        load_weights(target, state, what="bad.pth")
    text = str(err.value)
    assert "bad.pth" in text and "missing 1: body.0.bias" in text
    assert "unexpected 1: body.99.weight" in text and "wrong shape 1: body.2.weight" in text


def test_load_upscaler_from_models_dir(tmp_path):
    assert enhance.load_upscaler(tmp_path, "realesr-general-x4v3", "cpu") is None  # absent -> None
    torch.manual_seed(0)
    model = build_model("realesr-general-x4v3")
    torch.save({"params": model.state_dict()}, tmp_path / "realesr-general-x4v3.pth")
    upscaler = enhance.load_upscaler(tmp_path, "realesr-general-x4v3", "cpu", UpscaleOptions(tile=0))
    assert upscaler.engine == "realesr-general-x4v3 (torch)" and upscaler.scale == 4
    image = portrait_patch(100, 100, 16)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = model.eval()(torch.nn.functional.pad(x, (10,) * 4, mode="reflect"))[..., 40:-40, 40:-40]
    ref = (ref.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.abs(upscaler.upscale(image).astype(int) - ref).max() <= 1
    with pytest.raises(ValueError, match="unknown upscaler"):
        enhance.load_upscaler(tmp_path, "nope", "cpu")


def test_load_face_restorer_absent_or_wrong_file(tmp_path):
    assert enhance.load_face_restorer(tmp_path, "cpu") is None
    tiny = {k[len("gfpgan.weights."):]: v for k, v in goldens().items() if k.startswith("gfpgan.weights.")}
    torch.save({"params_ema": tiny}, tmp_path / "GFPGANv1.4.pth")  # a 64-px model is not v1.4
    assert find_weight_file(tmp_path, "GFPGANv1.4") == tmp_path / "GFPGANv1.4.pth"
    with pytest.raises(ValueError, match=r"GFPGANv1.4.pth does not fit GFPGANv1Clean: missing \d+: .*wrong shape"):
        enhance.load_face_restorer(tmp_path, "cpu")


def test_embedded_upscaler_uses_real_ncnn_weights_and_resample_fallback():
    upscaler = enhance.embedded_upscaler("cpu")
    assert upscaler.engine == "realesrgan-x4plus (ncnn weights, torch)" and upscaler.scale == 4
    assert upscaler.net is not None
    fallback = enhance.resample_upscaler()
    assert fallback.engine == "lanczos-resample" and fallback.net is None
    resized, runs = fallback.upscale_to(portrait_patch(0, 0, 8), 20, 30)
    assert resized.shape == (30, 20, 3) and runs == 0


def stage_settings(tmp_path) -> Settings:
    return Settings(storage="local", storage_dir=tmp_path / "store", cache_dir=tmp_path / "cache",
                    models_dir=tmp_path / "models", personas_dir=tmp_path / "personas", device="cpu")


@pytest.mark.parametrize("entry", registry.select("restore"), ids=lambda w: w.name)
def test_full_size_official_layout_gfpgan_loads_strict_where_download_models_puts_it(tmp_path, entry):
    """A checkpoint laid out like the released GFPGANv1.4.pth (the official key/shape schema,
    87M random float32 values, under 'params_ema'), written at the registry's destination, is
    loaded by the FaceRestore stage strictly and value for value."""
    g = torch.Generator().manual_seed(0)
    state = OrderedDict((k, torch.randn(shape, generator=g))
                        for k, shape in read_schema("gfpgan_v1.4_schema.tsv").items())
    sums = {k: v.double().sum().item() for k, v in state.items()}
    path = registry.model_path(tmp_path / "models", entry.name)
    path.parent.mkdir(parents=True)
    torch.save({"params_ema": state}, path)
    del state  # keep one copy in memory at a time (348 MB)

    settings = stage_settings(tmp_path)
    stage = FaceRestoreStage(settings, open_storage(settings))

    assert stage.engine == f"{path.stem.lower()} (torch)"
    loaded = stage.restorer.net.state_dict()
    assert len(loaded) == len(sums) == 285
    assert {k: v.double().sum().item() for k, v in loaded.items()} == sums


@pytest.mark.parametrize("entry", registry.select("upscale"), ids=lambda w: w.name)
def test_upscale_downloads_are_where_the_upscale_stage_loads_them(tmp_path, entry):
    stem = Path(entry.path).stem  # the release file name
    state = {k: torch.full(v.shape, 0.01) for k, v in build_model(stem, "meta").state_dict().items()}
    path = registry.model_path(tmp_path / "models", entry.name)
    path.parent.mkdir(parents=True)
    torch.save({"params_ema": state}, path)

    settings = stage_settings(tmp_path)
    stage = UpscaleStage(settings, open_storage(settings))

    loaded = [m.engine for m in stage.models.values() if m is not None and m.net is not None]
    assert loaded == [f"{stem} (torch)"]
