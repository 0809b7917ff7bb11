"""download_models.py: --list, --dry-run, and a full run against a local server (registry swapped
for test entries), including the exit status on failure."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import download_models
from tests.support.fileserver import payload, sha
from weights import registry
from weights.registry import Source, WeightFile

REPO = Path(__file__).resolve().parents[2]


def test_list_runs_and_shows_every_entry():
    out = subprocess.run([sys.executable, str(REPO / "download_models.py"), "--list"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    for w in registry.REGISTRY:
        assert w.name in out.stdout and w.path in out.stdout
        for s in w.sources:
            assert s.url in out.stdout
    assert "non-commercial research purposes only" in out.stdout
    assert "~5.1 GB" in out.stdout  # LatentSync UNet estimate


def test_dry_run_selects_by_flags(tmp_path, capsys):
    rc = download_models.main(["--models-dir", str(tmp_path / "m"), "--dry-run", "--only", "lipsync",
                               "--version", "1.6"])
    out = capsys.readouterr().out
    assert rc == 0 and not (tmp_path / "m").exists()
    assert "latentsync-1.6-unet" in out and "latentsync-1.5-unet" not in out
    assert "insightface" not in out and "dry run: 4 file(s)" in out
    download_models.main(["--models-dir", str(tmp_path / "m"), "--dry-run", "--non-commercial"])
    assert "insightface-det-10g" in capsys.readouterr().out
    # persona takes: LivePortrait's five files, and no InsightFace with them
    rc = download_models.main(["--models-dir", str(tmp_path / "m"), "--dry-run", "--only", "takes"])
    out = capsys.readouterr().out
    assert rc == 0 and "dry run: 5 file(s)" in out and "liveportrait-spade" in out
    assert "insightface" not in out and "latentsync" not in out


def test_models_dir_defaults_to_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PF_MODELS_DIR", str(tmp_path / "env_models"))
    assert download_models.build_parser().parse_args([]).models_dir == str(tmp_path / "env_models")
    monkeypatch.delenv("PF_MODELS_DIR")
    assert download_models.build_parser().parse_args([]).models_dir == "/workspace/models"


def _swap_registry(monkeypatch, entries):
    monkeypatch.setattr(registry, "REGISTRY", tuple(entries))


def test_full_run_then_failure_exit_status(server, monkeypatch, tmp_path, capsys):
    data = payload(64_000, 21)
    server.files["/v0.1.0/RealESRGAN_x4plus.pth"] = data
    good = WeightFile(name="realesrgan-x4plus", path="realesrgan/RealESRGAN_x4plus.pth", engine="realesrgan",
                      group="upscale", licence="BSD-3-Clause", commercial_ok=True,
                      sources=(Source(server.url("/v0.1.0/RealESRGAN_x4plus.pth"), sha256=sha(data)),))
    _swap_registry(monkeypatch, [good])
    args = ["--models-dir", str(tmp_path), "--allow-http-localhost", "--retries", "1"]
    assert download_models.main(args) == 0
    assert (tmp_path / "realesrgan/RealESRGAN_x4plus.pth").read_bytes() == data
    assert download_models.main(args) == 0 and server.count("/v0.1.0/RealESRGAN_x4plus.pth") == 1

    bad = WeightFile(name="gfpgan-v1.4", path="gfpgan/GFPGANv1.4.pth", engine="gfpgan", group="restore",
                     licence="Apache-2.0", commercial_ok=True,
                     sources=(Source(server.url("/v0.1.0/RealESRGAN_x4plus.pth"), sha256="e" * 64),))
    _swap_registry(monkeypatch, [good, bad])
    capsys.readouterr()
    assert download_models.main(args) == 1
    err = capsys.readouterr().err
    assert "gfpgan-v1.4" in err and "e" * 64 in err and sha(data) in err
    assert not (tmp_path / "gfpgan/GFPGANv1.4.pth").exists()


def test_http_refused_without_test_flag(server, monkeypatch, tmp_path, capsys):
    server.files["/a.pth"] = b"a"
    _swap_registry(monkeypatch, [WeightFile(name="a", path="a.pth", engine="t", group="upscale", licence="t",
                                            commercial_ok=True, sources=(Source(server.url("/a.pth")),))])
    assert download_models.main(["--models-dir", str(tmp_path)]) == 1
    assert "only https" in capsys.readouterr().err and server.requests == []
    assert not (tmp_path / "a.pth").exists()


def test_all_is_the_whole_commercial_safe_set_and_no_flag_matches_by_prefix(tmp_path, capsys):
    """`--all` (the seed's set-up command) selects what the default selects, names it, and
    refuses --only/--version with it; abbreviations are off, so `--allow` cannot reach the
    hidden --allow-http-localhost and `--ver` is not --version."""
    base = ["--models-dir", str(tmp_path / "m"), "--dry-run"]
    assert download_models.main([*base, "--all"]) == 0
    with_all = capsys.readouterr().out
    assert download_models.main(base) == 0
    default = capsys.readouterr().out
    assert with_all == default and "--only all --version both" in with_all
    for name in ("latentsync-1.5-unet", "latentsync-1.6-unet", "gfpgan-v1.4", "realesrgan-x4plus"):
        assert name in with_all
    assert "insightface" not in with_all
    for argv in ([*base, "--all", "--only", "lipsync"], [*base, "--allow"], [*base, "--ver", "1.5"]):
        try:
            download_models.main(argv)
        except SystemExit as e:
            assert e.code == 2, argv
        else:
            raise AssertionError(f"{argv} was accepted")
