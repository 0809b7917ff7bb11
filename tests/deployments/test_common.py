"""The per-replica GPU memory cap: a Serve replica's fractional GPU reservation under Ray, the
setting elsewhere, and stage_setup hands it to the stage. No GPU needed: Ray is told it has
two."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings
from deployments.common import replica_gpu_fraction, stage_setup


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


def test_stage_setup_hands_the_share_to_the_stage(ray_env, monkeypatch, tmp_path):
    import ray

    monkeypatch.setenv("PF_HOME", str(tmp_path))
    monkeypatch.setenv("PF_GPU_MEMORY_FRACTION", "0.9")

    @ray.remote
    class Replica:
        def fraction(self):
            settings, _ = stage_setup({"storage_dir": str(tmp_path / "store")})
            return settings.gpu_memory_fraction

    ray.init(address="local", num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        got = ray.get(Replica.options(num_gpus=0.25, num_cpus=0).remote().fraction.remote(),
                      timeout=120)
    finally:
        ray.shutdown()
    assert got == 0.25
    assert stage_setup({"storage_dir": str(tmp_path / "store")})[0].gpu_memory_fraction == 0.9
