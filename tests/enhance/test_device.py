"""The GPU memory cap is applied once per process and GPU (the share itself comes from the
replica, tests/deployments/test_common.py)."""
from __future__ import annotations

import logging

import torch

from enhance import device
from enhance.device import CONTEXT_RESERVE_BYTES, allocator_fraction, cap_process_memory

GIB = 1024**3


def test_cap_is_applied_once_per_process_and_gpu(monkeypatch, caplog):
    applied = []
    monkeypatch.setattr(device, "_process_caps", {})
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, i: applied.append((f, i)))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: type("Props", (), {"total_memory": 80 * GIB})())
    assert cap_process_memory(0, 0.25) == 0.25
    assert cap_process_memory(0, 0.25) == 0.25  # a second model of the replica: nothing new
    with caplog.at_level(logging.WARNING, logger="personaforge.enhance"):
        assert cap_process_memory(0, 0.5) == 0.25  # the first cap stays
    assert "already capped at 0.250" in caplog.text
    assert cap_process_memory(1, 0.5) == 0.5
    assert applied == [(allocator_fraction(0.25, 80 * GIB), 0), (allocator_fraction(0.5, 80 * GIB), 1)]


def test_the_allocator_cap_leaves_room_for_the_context_inside_the_share():
    for total in (24 * GIB, 48 * GIB, 80 * GIB, 141 * GIB):
        for share in (0.25, 0.5):
            cap = allocator_fraction(share, total)
            # allocator + context fit the share, and the allocator keeps most of it
            assert cap * total + CONTEXT_RESERVE_BYTES <= share * total + 1
            assert cap >= share / 2 and share - cap < 0.04
    assert allocator_fraction(1.0, 80 * GIB) == 1.0       # a whole card: nothing to share
    assert allocator_fraction(0.01, 24 * GIB) == 0.005    # a tiny share keeps half, not nothing
