"""Shared fixtures. Tests never reach the network except servers they start on 127.0.0.1."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# CPU-only everywhere in tests; no hub downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def ray_env(monkeypatch):
    """An isolated local Ray for one test: auth off, its own RAY_TMPDIR (a short /tmp path:
    Ray's unix socket paths must stay under 108 bytes). PF_KEEP_RAY_LOGS=1 keeps the logs."""
    d = tempfile.mkdtemp(prefix="pfray-", dir="/tmp")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_TMPDIR", d)
    yield d
    if not os.environ.get("PF_KEEP_RAY_LOGS"):
        shutil.rmtree(d, ignore_errors=True)


# ---- figures for the closing note ---------------------------------------------------------

class Figures:
    """Named figures the tests measure (bad inputs tried, faults injected, load counts, status
    latency), printed in one block at the end of the run: pytest swallows a passing test's
    print(). `count` sums over the whole run, part by part; `note` keeps the latest value."""

    def __init__(self):
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.notes: dict[str, str] = {}

    def count(self, figure: str, n: int, part: str) -> None:
        self.counts[figure][part] += n

    def note(self, figure: str, value: str) -> None:
        self.notes[figure] = value

    def lines(self) -> list[str]:
        out = []
        for figure, parts in self.counts.items():
            detail = ", ".join(f"{part} {n}" for part, n in parts.items())
            out.append(f"{figure}: {sum(parts.values())} ({detail})")
        out += [f"{figure}: {value}" for figure, value in self.notes.items()]
        return out


_FIGURES = pytest.StashKey[Figures]()


def pytest_configure(config):
    config.stash[_FIGURES] = Figures()


@pytest.fixture(scope="session")
def figures(pytestconfig) -> Figures:
    return pytestconfig.stash[_FIGURES]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash[_FIGURES].lines() if _FIGURES in config.stash else []
    if lines:
        terminalreporter.write_sep("=", "figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _release_gpu_memory_cap(request):
    """A per-process GPU memory cap (enhance.device.cap_process_memory) set by one CUDA test must
    not shrink the GPU for the tests after it: lift it and forget it after each requires_cuda test."""
    yield
    if request.node.get_closest_marker("requires_cuda") is None:
        return
    import torch

    from enhance import device

    for index in list(device._process_caps):
        torch.cuda.set_per_process_memory_fraction(1.0, index)
        device._process_caps.pop(index)
    torch.cuda.empty_cache()
