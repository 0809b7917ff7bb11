"""The registry's invariants, selection rules, and the stage-facing lookups."""
from __future__ import annotations

import pytest

from weights import registry
from weights.download import sha256_file


def test_registry_is_well_formed():
    registry.validate()  # https URLs, unique names/paths, relative normalised paths, hash format
    downloadable = [w for w in registry.REGISTRY if not w.bundled]
    assert all(s.url.startswith("https://") for w in downloadable for s in w.sources)
    paths = [w.path for w in registry.REGISTRY]
    assert len(paths) == len(set(paths))


def test_validate_rejects_bad_entries():
    good = registry.get("realesrgan-x4plus")
    from dataclasses import replace
    bad_cases = [
        replace(good, sources=(registry.Source("http://github.com/x.pth"),)),
        replace(good, path="../escape.pth"),
        replace(good, sources=(registry.Source(good.sources[0].url, sha256="ABC"),)),
    ]
    for bad in bad_cases:
        with pytest.raises(ValueError):
            registry.validate([bad])
    with pytest.raises(ValueError, match="duplicate"):
        registry.validate([good, replace(good, name="other")])


def test_non_commercial_excluded_unless_asked():
    default = registry.select()
    assert default and all(w.commercial_ok for w in default)
    names = {w.name for w in registry.select(non_commercial=True)}
    assert {"insightface-det-10g", "insightface-2d106det"} <= names
    nc = [w for w in registry.REGISTRY if not w.commercial_ok]
    assert {w.name for w in nc} == {"insightface-det-10g", "insightface-2d106det"}
    assert all(w.sources[0].url.endswith("/v0.7/buffalo_l.zip") for w in nc)


def test_groups_and_versions():
    lipsync_16 = {w.name for w in registry.select("lipsync", "1.6")}
    assert lipsync_16 == {"latentsync-1.6-unet", "whisper-tiny", "sd-vae-ft-mse-config", "sd-vae-ft-mse"}
    assert {w.name for w in registry.select("upscale")} == {
        "realesrgan-x4plus", "realesr-general-x4v3", "realesrgan-x2plus"}
    assert {w.name for w in registry.select("restore")} == {"gfpgan-v1.4"}
    assert {w.name for w in registry.select("takes")} == set(registry.liveportrait_names()) == {
        "liveportrait-appearance", "liveportrait-motion", "liveportrait-warping",
        "liveportrait-spade", "liveportrait-stitching"}
    assert set(registry.GROUPS) == {"lipsync", "restore", "upscale", "takes"}
    both = {w.name for w in registry.select("lipsync")}
    assert {"latentsync-1.5-unet", "latentsync-1.6-unet"} <= both
    with pytest.raises(ValueError):
        registry.select("everything")
    with pytest.raises(ValueError):
        registry.select("all", "2.0")


def test_whisper_primary_is_openai_with_published_hash():
    w = registry.get("whisper-tiny")
    primary, mirror = w.sources
    digest = "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9"
    assert primary.url == f"https://openaipublic.azureedge.net/main/whisper/models/{digest}/tiny.pt"
    assert primary.sha256 == digest and w.sha256 == digest
    assert mirror.url == "https://huggingface.co/ByteDance/LatentSync-1.6/resolve/main/whisper/tiny.pt"
    assert mirror.sha256 is None


def test_bundled_mtcnn_matches_registry(tmp_path):
    for name in ("mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"):
        w = registry.get(name)
        path = registry.model_path(tmp_path, name)  # bundled: independent of the models dir
        assert path == registry.REPO_ROOT / w.path
        assert sha256_file(path) == w.sha256 and path.stat().st_size == w.size_bytes
        assert registry.present(tmp_path, name)


def test_model_path_and_present(tmp_path):
    assert registry.model_path(tmp_path, "gfpgan-v1.4") == tmp_path / "gfpgan/GFPGANv1.4.pth"
    assert not registry.present(tmp_path, "gfpgan-v1.4")
    target = registry.model_path(tmp_path, "gfpgan-v1.4")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")
    assert not registry.present(tmp_path, "gfpgan-v1.4")  # empty file is not a model
    target.write_bytes(b"weights")
    assert registry.present(tmp_path, "gfpgan-v1.4")
    names = registry.latentsync_names("1.5")
    assert not registry.all_present(tmp_path, names)
    for n in names:
        p = registry.model_path(tmp_path, n)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert registry.all_present(tmp_path, names)
    with pytest.raises(ValueError, match="unknown weight file"):
        registry.model_path(tmp_path, "codeformer")


def test_liveportrait_entries_are_the_files_the_loader_reads(tmp_path):
    from personas.liveportrait.checkpoint import LIVEPORTRAIT_FILES, find_liveportrait

    entries = [registry.get(n) for n in registry.liveportrait_names()]
    assert sorted(w.path for w in entries) == sorted(LIVEPORTRAIT_FILES.values())
    for w in entries:
        # the HF model repo holds the files at the same relative paths as our models dir
        assert w.sources[0].url == f"https://huggingface.co/KwaiVGI/LivePortrait/resolve/main/{w.path}"
        assert w.commercial_ok and "#193" in w.licence and "#548" in w.licence
        assert "no InsightFace" in w.notes and w.approx_mb
    # the five files present -> the loader's presence check agrees with the registry's
    assert not find_liveportrait(tmp_path)
    for w in entries:
        p = registry.model_path(tmp_path, w.name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert registry.all_present(tmp_path, registry.liveportrait_names())
    assert find_liveportrait(tmp_path)
    # the whole set is about the official release's size (F+M+W+G+S, fp32)
    assert 480 < sum(w.approx_mb for w in entries) < 560
