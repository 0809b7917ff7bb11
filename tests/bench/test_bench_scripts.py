"""Every bench script still imports and builds its command line (they run by hand, on a GPU for
most, so nothing else would notice one that rotted when a module it uses moved)."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


def test_the_scripts_are_found():
    assert {"e2e", "serve_load", "finish", "liveportrait"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_bench_script_imports_and_answers_help(name):
    importlib.import_module(f"bench.{name}")
    out = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
