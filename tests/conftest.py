"""Fixtures every test folder may use. Shared helpers (media, servers, the service as tests drive
it) are plain modules in tests/support/. Tests never reach the network except servers they start
on 127.0.0.1. Nothing here changes process-wide state for the whole run.
"""
from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.support.servers import start_media_server, stop_media_server

FIXTURES = Path(__file__).parent / "fixtures"

# CPU-only everywhere in tests; no hub downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def pytest_collection_modifyitems(config, items):
    """`requires_cuda` tests skip themselves where there is no CUDA device (CI deselects them
    with -m; a plain `pytest` on a laptop skips them with the reason)."""
    marked = [item for item in items if item.get_closest_marker("requires_cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def s3(tmp_path):
    """A real S3 server (rclone) on 127.0.0.1 over tmp_path/s3, with the bucket BUCKET."""
    from tests.support.s3server import BUCKET, S3Server

    (tmp_path / "s3" / BUCKET).mkdir(parents=True)
    server = S3Server(tmp_path / "s3").start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path):
    """Local settings with every root under the test's own folder. (Imported here, not at the
    top: the GPU machine that runs the requires_cuda tests has torch but no pydantic.)"""
    from core.settings import Settings

    return Settings(storage="local", storage_dir=tmp_path / "store", cache_dir=tmp_path / "cache",
                    models_dir=tmp_path / "models", personas_dir=tmp_path / "personas",
                    public_base_url="http://127.0.0.1:9")


@pytest.fixture
def one_torch_thread():
    """One torch thread for this test (a shared 2-core box runs small models faster so); the
    count is put back afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def server():
    """An HTTP media server on 127.0.0.1 whose routes the test fills in (support.servers)."""
    httpd, local = start_media_server("http")
    yield local
    stop_media_server(httpd, local)


@pytest.fixture
def tls_server(tmp_path):
    """HTTPS on 127.0.0.1 with a self-signed certificate for `media.example.test` only."""
    from tests.support.certs import self_signed

    cert, key = self_signed("media.example.test", tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd, local = start_media_server("https", ctx)
    local.ca_file = str(cert)  # type: ignore[attr-defined]
    yield local
    stop_media_server(httpd, local)


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
