"""Our five LivePortrait networks against the official checkpoint schema, and the strict loader:
the official layout loads, wrong files fail with messages naming file and keys, S's `module.`
prefixes are tolerated, and configs come from config.json or the checkpoint shapes."""
from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import pytest
import torch

from personas.liveportrait.checkpoint import (
    CONFIG_FILE,
    LIVEPORTRAIT_FILES,
    CheckpointError,
    build_models,
    export_state_dicts,
    find_liveportrait,
    load_liveportrait,
    missing_liveportrait_files,
    write_official_checkpoints,
)
from personas.liveportrait.config import LivePortraitConfig, infer_config

FIXTURES = Path(__file__).parents[2] / "fixtures" / "liveportrait"
FILE_NAMES = {tag: Path(rel).name for tag, rel in LIVEPORTRAIT_FILES.items()}


def tiny_config() -> LivePortraitConfig:
    """The parity fixtures' small config (the json names M's backbone in words)."""
    data = json.loads((FIXTURES / "parity.json").read_text())["tiny"]["config"]
    motion = dict(data["motion_extractor_params"], depths=[1, 1, 2, 1], dims=[8, 16, 32, 64])
    return LivePortraitConfig.from_dict({**data, "motion_extractor_params": motion})


@pytest.fixture
def tiny_payloads(one_torch_thread) -> dict:
    torch.manual_seed(0)
    models = build_models(tiny_config(), "cpu")
    for net in models.networks().values():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.1)
    return export_state_dicts(models)


def _flat_schema(payloads: dict) -> list[tuple[str, str, tuple, str]]:
    rows = []
    for tag, name in FILE_NAMES.items():
        items = ([(f"{k}/{kk}", v) for k, sd in payloads["S"].items() for kk, v in sd.items()]
                 if tag == "S" else list(payloads[tag].items()))
        rows += [(name, k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in items]
    return rows


def test_full_size_state_dicts_equal_official_schema():
    with (FIXTURES / "schema.tsv").open() as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        official = [(r["file"], r["key"], ast.literal_eval(r["shape"]), r["dtype"])
                    for r in reader]
    ours = _flat_schema(export_state_dicts(build_models()))
    assert len(official) == 626
    # Same entries in the same order: keys, shapes and dtypes.
    assert ours == official


def test_parameter_counts_match_official():
    meta = json.loads((FIXTURES / "parity.json").read_text())
    for size, config in (("full", LivePortraitConfig()), ("tiny", tiny_config())):
        models = build_models(config)
        counts = {tag: sum(p.numel() for p in getattr(models, tag).parameters())
                  for tag in ("F", "M", "W", "G")}
        counts.update({f"S.{n}": sum(p.numel() for p in getattr(models.S, n).parameters())
                       for n in ("stitching", "lip", "eye")})
        assert counts == meta[size]["params"], size


def test_config_round_trip_and_defaults():
    cfg = tiny_config()
    assert LivePortraitConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert LivePortraitConfig.from_dict({"model_params": LivePortraitConfig().to_dict()}) \
        == LivePortraitConfig()
    official_full = json.loads((FIXTURES / "parity.json").read_text())["full"]["config"]
    assert LivePortraitConfig.from_dict(official_full) == LivePortraitConfig()
    with pytest.raises(ValueError, match="unknown keys"):
        LivePortraitConfig.from_dict({"spade_generator_params": {"upscale": 2, "typo": 1}})


def test_infer_config_from_shapes():
    full = export_state_dicts(build_models())
    assert infer_config(full) == LivePortraitConfig()
    tiny = infer_config(export_state_dicts(build_models(tiny_config())))
    expected = tiny_config()
    expected.motion.backbone = "custom"  # depths/dims are what count; the name is ours
    assert tiny == expected


def test_official_layout_loads_strict(tmp_path, tiny_payloads):
    assert not find_liveportrait(tmp_path)
    assert missing_liveportrait_files(tmp_path) == list(LIVEPORTRAIT_FILES.values())
    written = write_official_checkpoints(tmp_path, tiny_payloads)
    assert {tag: p.relative_to(tmp_path).as_posix() for tag, p in written.items()} \
        == LIVEPORTRAIT_FILES
    assert find_liveportrait(tmp_path)
    s_file = torch.load(written["S"], weights_only=True)
    assert set(s_file) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}

    models = load_liveportrait(tmp_path)  # no config.json: sizes inferred from the shapes
    assert models.config.appearance == tiny_config().appearance
    loaded = export_state_dicts(models)
    for tag in ("F", "M", "W", "G"):
        for k, v in tiny_payloads[tag].items():
            assert torch.equal(loaded[tag][k], v), (tag, k)
    for k, sd in tiny_payloads["S"].items():
        for kk, v in sd.items():
            assert torch.equal(loaded["S"][k][kk], v), (k, kk)
    assert not any(p.requires_grad for net in models.networks().values()
                   for p in net.parameters())
    assert not models.G.training


def test_config_json_beside_checkpoints_wins(tmp_path, tiny_payloads):
    cfg = tiny_config()
    cfg.spade.max_features = 999  # any cap >= the width is the same network
    write_official_checkpoints(tmp_path, tiny_payloads, config=cfg)
    assert (tmp_path / CONFIG_FILE).is_file()
    assert load_liveportrait(tmp_path).config.spade.max_features == 999


def test_module_prefix_in_s_loads(tmp_path, tiny_payloads):
    prefixed = dict(tiny_payloads)
    prefixed["S"] = {k: {f"module.{kk}": v for kk, v in sd.items()}
                     for k, sd in tiny_payloads["S"].items()}
    write_official_checkpoints(tmp_path, prefixed)
    models = load_liveportrait(tmp_path)
    ref = tiny_payloads["S"]["retarget_eye"]["mlp.10.bias"]
    assert torch.equal(models.S.eye.mlp[10].bias, ref)


def _load_broken(tmp_path, payloads, tag, edit) -> str:
    broken = dict(payloads)
    broken[tag] = edit(dict(payloads[tag]))
    write_official_checkpoints(tmp_path, broken, config=tiny_config())
    with pytest.raises(CheckpointError) as err:
        load_liveportrait(tmp_path)
    return str(err.value)


def test_missing_key_is_named(tmp_path, tiny_payloads):
    def drop(sd):
        del sd["second.bias"]
        return sd
    msg = _load_broken(tmp_path, tiny_payloads, "F", drop)
    assert FILE_NAMES["F"] in msg and "missing 1: second.bias" in msg


def test_unexpected_key_is_named(tmp_path, tiny_payloads):
    def add(sd):
        sd["dense_motion_network.extra.weight"] = torch.zeros(3)
        return sd
    msg = _load_broken(tmp_path, tiny_payloads, "W", add)
    assert FILE_NAMES["W"] in msg
    assert "unexpected 1: dense_motion_network.extra.weight" in msg


def test_wrong_shape_is_named(tmp_path, tiny_payloads):
    def reshape(sd):
        sd["fc.bias"] = torch.zeros(7)
        return sd
    msg = _load_broken(tmp_path, tiny_payloads, "G", reshape)
    assert FILE_NAMES["G"] in msg and "fc.bias (7,) != (64,)" in msg


def test_another_networks_file_is_rejected(tmp_path, tiny_payloads):
    msg = _load_broken(tmp_path, tiny_payloads, "M", lambda _: dict(tiny_payloads["F"]))
    assert FILE_NAMES["M"] in msg
    assert f"missing {len(tiny_payloads['M'])}: detector.downsample_layers.0.0.weight" in msg
    assert f"unexpected {len(tiny_payloads['F'])}: first.conv.weight" in msg


def test_wrong_file_without_config_json_still_names_keys(tmp_path, tiny_payloads):
    broken = dict(tiny_payloads, F=dict(tiny_payloads["G"]))
    write_official_checkpoints(tmp_path, broken)
    with pytest.raises(CheckpointError, match=rf"{FILE_NAMES['F']}.*missing \d+: first\.conv"):
        load_liveportrait(tmp_path)


def test_s_file_without_its_three_mlps_is_rejected(tmp_path, tiny_payloads):
    def drop_eye(s):
        del s["retarget_eye"]
        return s
    msg = _load_broken(tmp_path, tiny_payloads, "S", drop_eye)
    assert FILE_NAMES["S"] in msg and "retarget_eye" in msg


def test_s_mlp_mismatch_names_the_mlp(tmp_path, tiny_payloads):
    def swap(s):
        s["retarget_mouth"] = s["retarget_eye"]
        return s
    msg = _load_broken(tmp_path, tiny_payloads, "S", swap)
    assert f"{FILE_NAMES['S']} [retarget_mouth]" in msg and "mlp.0.weight" in msg
