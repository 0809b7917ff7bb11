"""The UNet's state dict equals the official schema, and the loader is strict and readable."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lipsync.latentsync.checkpoint import (CheckpointMismatchError, check_state_dict, load_unet,
                                           read_state_dict)
from lipsync.latentsync.config import UNetConfig, tiny_unet_config, unet_config
from lipsync.latentsync.unet import build_unet
from tests.lipsync.latentsync.goldens import FIXTURES

GOLDEN = FIXTURES / "latentsync_tiny_parity.safetensors"



def read_schema(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    assert rows[0] == ["key", "shape", "dtype"]
    return {
        key: (tuple(int(n) for n in shape.strip("()").split(",") if n.strip()), dtype) for key, shape, dtype in rows[1:]
    }


def model_schema(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("version, tsv", [("1.5", "latentsync_unet_v15_schema.tsv"), ("1.6", "latentsync_unet_v16_schema.tsv")])
def test_full_size_state_dict_equals_official_schema(version: str, tsv: str) -> None:
    expected = read_schema(FIXTURES / tsv)
    got = model_schema(build_unet(unet_config(version), device="meta"))
    assert len(expected) == 1246
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}
    # The header's element count, as a cross-check of the parser.
    assert sum(torch.Size(shape).numel() for shape, _ in expected.values()) == 1_267_944_644


def test_tiny_config_is_the_golden_config() -> None:
    official = json.loads((FIXTURES / "latentsync_tiny_parity.json").read_text())["tiny_config"]
    assert UNetConfig.from_official(official, resolution=64) == tiny_unet_config()


def test_from_official_refuses_options_we_do_not_implement() -> None:
    official = json.loads((FIXTURES / "latentsync_tiny_parity.json").read_text())["tiny_config"]
    with pytest.raises(ValueError, match="use_linear_projection"):
        UNetConfig.from_official({**official, "use_linear_projection": True})
    kwargs = {**official["motion_module_kwargs"], "num_transformer_block": 2}
    with pytest.raises(ValueError, match="num_transformer_block"):
        UNetConfig.from_official({**official, "motion_module_kwargs": kwargs})


def test_tiny_state_dict_equals_golden_weights_schema() -> None:
    golden = read_state_dict(GOLDEN, key_prefix="unet.")
    assert len(golden) == 774
    expected = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in golden.items()}
    assert model_schema(build_unet(tiny_unet_config(), device="meta")) == expected


def _save_official(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"global_step": 12345, "state_dict": state}, path)
    return path


def _random_tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {k: v.clone() for k, v in build_unet(tiny_unet_config()).state_dict().items()}


def test_official_format_checkpoint_loads_strict(tmp_path: Path) -> None:
    state = _random_tiny_state()
    path = _save_official(tmp_path / "latentsync_unet.pt", state)
    model = load_unet(path, tiny_unet_config(), device="cpu", dtype=torch.bfloat16)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert loaded[key].dtype == torch.bfloat16
        torch.testing.assert_close(loaded[key], value.to(torch.bfloat16), rtol=0, atol=0)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s.pop("conv_in.weight"), r"1 missing keys: conv_in\.weight"),
        (lambda s: s.__setitem__("mid_block.extra.weight", torch.zeros(3)), r"1 unexpected keys: mid_block\.extra\.weight"),
        (
            lambda s: s.__setitem__("conv_in.weight", torch.zeros(32, 9, 3, 3)),
            r"1 shape mismatches: conv_in\.weight: checkpoint \(32, 9, 3, 3\) vs model \(32, 13, 3, 3\)",
        ),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_mismatched_checkpoint_fails_naming_the_keys(tmp_path: Path, mutate, expected: str) -> None:
    state = _random_tiny_state()
    mutate(state)
    path = _save_official(tmp_path / "bad.pt", state)
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_unet(path, tiny_unet_config())


def test_mismatch_message_counts_and_truncates_long_lists() -> None:
    model = build_unet(tiny_unet_config(), device="meta")
    state = {k: v for k, v in model.state_dict().items() if ".motion_modules." not in k}
    with pytest.raises(CheckpointMismatchError) as info:
        check_state_dict(model, state)
    dropped = len(model.state_dict()) - len(state)
    assert f"{dropped} missing keys: " in str(info.value)
    assert f"(+{dropped - 5} more)" in str(info.value)


def test_full_size_checkpoint_for_the_wrong_width_is_refused() -> None:
    # A cross_attention_dim 768 model (Whisper-small audio) must not load into the 384-wide 1.6 UNet.
    wrong = build_unet(replace(unet_config("1.6"), cross_attention_dim=768), device="meta").state_dict()
    with pytest.raises(CheckpointMismatchError, match=r"32 shape mismatches: .*attn2\.to_k\.weight"):
        check_state_dict(build_unet(unet_config("1.6"), device="meta"), wrong)


class NotATensor:
    """A picklable object that weights_only loading must refuse."""


def test_pickled_objects_are_refused_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"global_step": 1, "state_dict": _random_tiny_state(), "extra": NotATensor()}, path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        read_state_dict(path)
    assert len(read_state_dict(path, allow_pickle=True)) == 774


def test_ddp_prefix_is_stripped(tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in _random_tiny_state().items()}
    path = _save_official(tmp_path / "ddp.pt", state)
    assert read_state_dict(path).keys() == build_unet(tiny_unet_config(), device="meta").state_dict().keys()
