"""The per-replica GPU memory cap: derived from Ray's reservation under Ray, from Settings
elsewhere, and applied once per process. No GPU needed: Ray is told it has one."""
from __future__ import annotations

import logging

import pytest
import torch
from pydantic import ValidationError

from enhance import device
from enhance.device import cap_process_memory, replica_gpu_fraction
from serve_app.settings import Settings


def test_outside_ray_the_setting_decides_and_defaults_to_no_cap(monkeypatch):
    assert replica_gpu_fraction(None) is None
    assert replica_gpu_fraction(0.3) == 0.3
    monkeypatch.delenv("PF_GPU_MEMORY_FRACTION", raising=False)
    assert Settings.from_env().gpu_memory_fraction is None
    monkeypatch.setenv("PF_GPU_MEMORY_FRACTION", "0.4")
    assert Settings.from_env().gpu_memory_fraction == 0.4
    for bad in ("0", "1.5", "-0.2"):
        monkeypatch.setenv("PF_GPU_MEMORY_FRACTION", bad)
        with pytest.raises(ValidationError, match="gpu_memory_fraction"):
            Settings.from_env()


def test_under_ray_each_replica_caps_at_its_own_gpu_reservation(ray_env):
    import ray

    @ray.remote
    class Replica:
        def fraction(self, configured):
            return replica_gpu_fraction(configured)

    # two declared GPUs: the 0.25 and 0.5 replicas pack onto one, the whole-GPU replica takes the other
    ray.init(address="local", num_cpus=1, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        shares = {gpus: Replica.options(num_gpus=gpus, num_cpus=0).remote() for gpus in (0.25, 0.5, 1, 0)}
        got = {gpus: ray.get(actor.fraction.remote(0.9), timeout=120) for gpus, actor in shares.items()}
        # the driver is not a replica: the setting still decides there
        on_driver = replica_gpu_fraction(0.9)
    finally:
        ray.shutdown()
    assert got == {0.25: 0.25, 0.5: 0.5, 1: None, 0: None}
    assert on_driver == 0.9


def test_cap_is_applied_once_per_process_and_gpu(monkeypatch, caplog):
    applied = []
    monkeypatch.setattr(device, "_process_caps", {})
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, i: applied.append((f, i)))
    assert cap_process_memory(0, 0.25) == 0.25
    assert cap_process_memory(0, 0.25) == 0.25  # a second model of the replica: nothing new
    with caplog.at_level(logging.WARNING, logger="personaforge.enhance"):
        assert cap_process_memory(0, 0.5) == 0.25  # the first cap stays
    assert "already capped at 0.250" in caplog.text
    assert cap_process_memory(1, 0.5) == 0.5
    assert applied == [(0.25, 0), (0.5, 1)]
