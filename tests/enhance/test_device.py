"""The GPU memory cap is applied once per process and GPU (the share itself comes from the
replica, tests/deployments/test_common.py)."""
from __future__ import annotations

import logging

import torch

from enhance import device
from enhance.device import cap_process_memory


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
