"""Which engine renders persona takes: LivePortrait when its weights are on the models volume and
a GPU is there (or CPU takes are allowed), else the embedded reframer with the reason; weights
that are present but unloadable stop the stage at start-up."""
from __future__ import annotations

import pytest
import torch

from core.storage import open_storage
from personas.liveportrait.checkpoint import LIVEPORTRAIT_FILES, CheckpointError
from personas.liveportrait.engine import LivePortraitEngine
from personas.take_engine import LIVEPORTRAIT, NO_GPU, NO_WEIGHTS, REFRAMER, choose_take_engine
from stages.lipsync import LipSyncStage
from tests.personas.liveportrait.tiny_models import write_tiny_checkpoints


def stage_for(settings, **changes) -> LipSyncStage:
    s = settings.model_copy(update=changes)
    return LipSyncStage(s, open_storage(s))


@pytest.fixture
def no_gpu(monkeypatch):
    # The rules must hold on a CI box with or without a GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_rules(tmp_path):
    choice = choose_take_engine(tmp_path, "auto", cuda_available=True, allow_cpu_takes=True)
    assert (choice.engine, choice.liveportrait) == (REFRAMER, False)
    assert choice.reason.startswith(NO_WEIGHTS) and "missing 5 of 5" in choice.reason
    assert choice.label == f"{REFRAMER} (CPU; {choice.reason})"
    for rel in LIVEPORTRAIT_FILES.values():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    gpu = choose_take_engine(tmp_path, "auto", cuda_available=True, allow_cpu_takes=False)
    assert (gpu.engine, gpu.device, gpu.label) == (LIVEPORTRAIT, "cuda", "liveportrait")
    off = choose_take_engine(tmp_path, "auto", cuda_available=False, allow_cpu_takes=False)
    assert (off.engine, off.reason) == (REFRAMER, NO_GPU)
    assert "PF_ALLOW_CPU_TAKES" in off.label
    on = choose_take_engine(tmp_path, "auto", cuda_available=False, allow_cpu_takes=True)
    assert (on.engine, on.device) == (LIVEPORTRAIT, "cpu")
    # PF_DEVICE=cpu on a GPU host counts as no GPU
    forced = choose_take_engine(tmp_path, "cpu", cuda_available=True, allow_cpu_takes=False)
    assert (forced.engine, forced.reason) == (REFRAMER, NO_GPU)


def test_stage_without_weights_uses_the_reframer(settings, no_gpu):
    stage = stage_for(settings, allow_cpu_takes=True)
    assert stage.take_engine is None
    assert stage.describe()["takes"].startswith(f"{REFRAMER} (CPU; {NO_WEIGHTS}")


def test_stage_with_weights_needs_a_gpu_or_the_flag(settings, no_gpu):
    write_tiny_checkpoints(settings.models_dir)
    off = stage_for(settings, allow_cpu_takes=False)
    assert off.take_engine is None and off.take_choice.reason == NO_GPU
    on = stage_for(settings, allow_cpu_takes=True)
    assert isinstance(on.take_engine, LivePortraitEngine)
    assert on.describe()["takes"] == LIVEPORTRAIT and on.take_engine.device.type == "cpu"


def test_flag_comes_from_the_environment(monkeypatch):
    from core.settings import Settings

    assert Settings.from_env().allow_cpu_takes is False
    monkeypatch.setenv("PF_ALLOW_CPU_TAKES", "1")
    assert Settings.from_env().allow_cpu_takes is True


def test_unloadable_weights_fail_at_start_up(settings, no_gpu):
    write_tiny_checkpoints(settings.models_dir)
    # The stitching file without its three MLPs: present, so never a silent fallback.
    torch.save({"retarget_shoulder": {}}, settings.models_dir / LIVEPORTRAIT_FILES["S"])
    with pytest.raises(CheckpointError, match="stitching_retargeting_module"):
        stage_for(settings, allow_cpu_takes=True)
