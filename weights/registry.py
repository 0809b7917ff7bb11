"""Every model-weight file PersonaForge can use: where it lives under the models dir, where it comes
from, what it hashes to when upstream publishes that, its licence, and which engine needs it.

Stages call `present(models_dir, name)` / `all_present(...)` at start-up to choose between the real
model and their fallback; `download_models.py` fills the models dir from `select(...)`.

Facts were checked against the upstream repos/pages (see each entry's `notes`). A `sha256` is set
only where upstream publishes one for the bytes at that URL; everything else is trust-on-first-use
through `models.lock.json` (weights/download.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # bundled weights live in the repo (assets/)
GROUPS = ("lipsync", "restore", "upscale", "takes")
VERSIONS = ("1.5", "1.6")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Source:
    """One place to get a file from."""

    url: str
    sha256: str | None = None  # published hash of the bytes at this URL (archive: of the archive)
    member: str | None = None  # set when `url` is a zip archive: base name of the file inside it
    note: str = ""


@dataclass(frozen=True)
class WeightFile:
    """One file of the models dir (or, when `bundled`, of the repo)."""

    name: str                       # registry key used by stages and the CLI
    path: str                       # POSIX path relative to the models dir (bundled: to the repo root)
    engine: str                     # latentsync | whisper | vae | gfpgan | realesrgan | insightface | mtcnn | liveportrait
    group: str                      # lipsync | restore | upscale | takes (`--only`)
    licence: str
    commercial_ok: bool
    sources: tuple[Source, ...] = ()  # tried in order: the first is the primary, the rest mirrors
    size_bytes: int | None = None   # exact size where known (checked after download)
    approx_mb: float | None = None  # for listings / disk-space warnings only
    versions: tuple[str, ...] = VERSIONS  # LatentSync versions that need this file
    bundled: bool = False           # ships inside the repo; never downloaded
    notes: str = ""

    @property
    def sha256(self) -> str | None:
        """The published hash of the final file, if any source publishes one for a plain file."""
        return next((s.sha256 for s in self.sources if s.sha256 and s.member is None), None)


def _hf(repo: str, path: str) -> str:
    return f"https://huggingface.co/{repo}/resolve/main/{path}"


_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_BUFFALO_L = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
_WHISPER_TINY_SHA = "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9"
_OPENRAIL = ("CreativeML OpenRAIL++-M (HF model card); commercial use allowed under the licence's "
             "use-based restrictions. Code: Apache-2.0.")
_NO_HASH = "No sha256 published upstream: the first download is recorded in models.lock.json (TOFU)."
_INSIGHTFACE = ("InsightFace: 'pretrained models ... available for non-commercial research purposes "
                "only' (python-package README). Library code is MIT.")
_MTCNN = "MIT (facenet-pytorch 2.6.0 wheel; text in assets/mtcnn/LICENSE)"
_LIVEPORTRAIT = ("Code MIT (KwaiVGI/LivePortrait LICENSE). Weights: the maintainers state 'the code "
                 "and models of LivePortrait are under MIT license' except InsightFace's (issue "
                 "#193, also #79); a written confirmation for commercial redistribution was "
                 "requested in issue #548 and is not answered yet.")
_LP_NOTES = ("Official layout of the HF model repo KwaiVGI/LivePortrait. Size approximate, from the "
             "parameter count (fp32). Takes need no InsightFace: the crop comes from our MTCNN "
             "landmarks (or a client face_box), so buffalo_l and landmark.onnx are not used. "
             + _NO_HASH)

REGISTRY: tuple[WeightFile, ...] = (
    # --- lip-sync: LatentSync UNet (one per version), Whisper tiny, SD VAE ---
    WeightFile(
        name="latentsync-1.5-unet", path="latentsync-1.5/latentsync_unet.pt",
        engine="latentsync", group="lipsync", licence=_OPENRAIL, commercial_ok=True,
        sources=(Source(_hf("ByteDance/LatentSync-1.5", "latentsync_unet.pt")),),
        approx_mb=5070, versions=("1.5",),
        notes="Size is an estimate from the schema (fp32). " + _NO_HASH),
    WeightFile(
        name="latentsync-1.6-unet", path="latentsync-1.6/latentsync_unet.pt",
        engine="latentsync", group="lipsync", licence=_OPENRAIL, commercial_ok=True,
        sources=(Source(_hf("ByteDance/LatentSync-1.6", "latentsync_unet.pt")),),
        approx_mb=5070, versions=("1.6",),
        notes="Size is an estimate from the schema (fp32). " + _NO_HASH),
    WeightFile(
        name="whisper-tiny", path="whisper/tiny.pt",
        engine="whisper", group="lipsync", licence="MIT (openai/whisper)", commercial_ok=True,
        sources=(
            Source(f"https://openaipublic.azureedge.net/main/whisper/models/{_WHISPER_TINY_SHA}/tiny.pt",
                   sha256=_WHISPER_TINY_SHA,
                   note="OpenAI's URL; the hash is the one in openai/whisper's _MODELS table"),
            Source(_hf("ByteDance/LatentSync-1.6", "whisper/tiny.pt"),
                   note="LatentSync's copy: byte-identity with OpenAI's file is likely but unverified"),
        ),
        approx_mb=75.6,
        notes="Mirror downloads are accepted without a published hash and recorded (TOFU)."),
    WeightFile(
        name="sd-vae-ft-mse-config", path="sd-vae-ft-mse/config.json",
        engine="vae", group="lipsync", licence="MIT (HF model card)", commercial_ok=True,
        sources=(Source(_hf("stabilityai/sd-vae-ft-mse", "config.json")),),
        approx_mb=0.001, notes="Small git file: HF publishes no sha256. " + _NO_HASH),
    WeightFile(
        name="sd-vae-ft-mse", path="sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
        engine="vae", group="lipsync", licence="MIT (HF model card)", commercial_ok=True,
        sources=(Source(_hf("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors"),
                        sha256="a1d993488569e928462932c8c38a0760b874d166399b14414135bd9c42df5815",
                        note="Git LFS SHA256 shown on the HF file page"),),
        approx_mb=335),
    # --- face detection for the lip-sync crop ---
    WeightFile(
        name="insightface-det-10g", path="insightface/buffalo_l/det_10g.onnx",
        engine="insightface", group="lipsync", licence=_INSIGHTFACE, commercial_ok=False,
        sources=(Source(_BUFFALO_L, member="det_10g.onnx"),),
        approx_mb=16.9,
        notes=("SCRFD-10G detector (official-parity chain). The whole buffalo_l.zip (it also holds "
               "models we do not use) is fetched once for both members, then removed. " + _NO_HASH)),
    WeightFile(
        name="insightface-2d106det", path="insightface/buffalo_l/2d106det.onnx",
        engine="insightface", group="lipsync", licence=_INSIGHTFACE, commercial_ok=False,
        sources=(Source(_BUFFALO_L, member="2d106det.onnx"),),
        approx_mb=5.0, notes="106-point 2D landmarks (official-parity chain). " + _NO_HASH),
    WeightFile(
        name="mtcnn-pnet", path="assets/mtcnn/pnet.pt", engine="mtcnn", group="lipsync",
        licence=_MTCNN, commercial_ok=True, bundled=True, size_bytes=28570,
        sources=(Source("bundled:assets/mtcnn/pnet.pt",
                        sha256="a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),),
        notes="Commercial-safe default face detector; ships in the repo."),
    WeightFile(
        name="mtcnn-rnet", path="assets/mtcnn/rnet.pt", engine="mtcnn", group="lipsync",
        licence=_MTCNN, commercial_ok=True, bundled=True, size_bytes=403147,
        sources=(Source("bundled:assets/mtcnn/rnet.pt",
                        sha256="bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),)),
    WeightFile(
        name="mtcnn-onet", path="assets/mtcnn/onet.pt", engine="mtcnn", group="lipsync",
        licence=_MTCNN, commercial_ok=True, bundled=True, size_bytes=1559269,
        sources=(Source("bundled:assets/mtcnn/onet.pt",
                        sha256="165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),)),
    # --- face restoration ---
    WeightFile(
        name="gfpgan-v1.4", path="gfpgan/GFPGANv1.4.pth",
        engine="gfpgan", group="restore", commercial_ok=True,
        licence=("Apache-2.0 (License_GFPGAN.txt; its third-party section lists NVIDIA StyleGAN2 / "
                 "DFDNet code under non-commercial terms: code, not these weights)"),
        sources=(Source("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"),),
        approx_mb=348.6, notes="v1.4 is an asset of the v1.3.0 release (inference_gfpgan.py). " + _NO_HASH),
    # --- upscaling ---
    WeightFile(
        name="realesrgan-x4plus", path="realesrgan/RealESRGAN_x4plus.pth",
        engine="realesrgan", group="upscale", licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        commercial_ok=True, sources=(Source(f"{_ESRGAN}/v0.1.0/RealESRGAN_x4plus.pth"),),
        approx_mb=67.0, notes="Release tag from inference_realesrgan.py. " + _NO_HASH),
    WeightFile(
        name="realesr-general-x4v3", path="realesrgan/realesr-general-x4v3.pth",
        engine="realesrgan", group="upscale", licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        commercial_ok=True, sources=(Source(f"{_ESRGAN}/v0.2.5.0/realesr-general-x4v3.pth"),),
        approx_mb=4.9,
        notes=("Release tag from inference_realesrgan.py (which also pulls realesr-general-wdn-x4v3.pth "
               "for denoise blending; not listed here). " + _NO_HASH)),
    WeightFile(
        name="realesrgan-x2plus", path="realesrgan/RealESRGAN_x2plus.pth",
        engine="realesrgan", group="upscale", licence="BSD-3-Clause (xinntao/Real-ESRGAN)",
        commercial_ok=True, sources=(Source(f"{_ESRGAN}/v0.2.1/RealESRGAN_x2plus.pth"),),
        approx_mb=67.0, notes="Release tag from inference_realesrgan.py. " + _NO_HASH),
    # --- persona takes: LivePortrait's five networks (F, M, W, G, S) ---
    *(WeightFile(
        name=f"liveportrait-{name}", path=f"liveportrait/{path}", engine="liveportrait",
        group="takes", licence=_LIVEPORTRAIT, commercial_ok=True,
        sources=(Source(_hf("KwaiVGI/LivePortrait", f"liveportrait/{path}")),),
        approx_mb=mb, notes=_LP_NOTES)
      for name, path, mb in (
          ("appearance", "base_models/appearance_feature_extractor.pth", 3.4),
          ("motion", "base_models/motion_extractor.pth", 112.5),
          ("warping", "base_models/warping_module.pth", 182.2),
          ("spade", "base_models/spade_generator.pth", 221.5),
          ("stitching", "retargeting_models/stitching_retargeting_module.pth", 0.9))),
)

_BY_NAME = {w.name: w for w in REGISTRY}


def names() -> tuple[str, ...]:
    return tuple(w.name for w in REGISTRY)


def get(name: str) -> WeightFile:
    """The registry entry called `name` (ValueError listing the known names otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown weight file {name!r}; known: {', '.join(_BY_NAME)}") from None


def model_path(models_dir: str | Path, name: str) -> Path:
    """Absolute path where the file `name` lives (repo path for bundled files)."""
    entry = get(name)
    root = REPO_ROOT if entry.bundled else Path(models_dir)
    return root / entry.path


def present(models_dir: str | Path, name: str) -> bool:
    """True when the file is in place (non-empty, exact size where known). Cheap: no hashing.

    Downloads land under a `.part` name and are renamed only once verified, so a file at its
    final path is complete."""
    entry = get(name)
    path = model_path(models_dir, name)
    try:
        size = path.stat().st_size if path.is_file() else -1
    except OSError:
        return False
    return size > 0 and (entry.size_bytes is None or size == entry.size_bytes)


def all_present(models_dir: str | Path, wanted: tuple[str, ...] | list[str]) -> bool:
    return all(present(models_dir, n) for n in wanted)


def latentsync_names(version: str) -> tuple[str, ...]:
    """The files LatentSync `version` needs (UNet, Whisper tiny, VAE config + weights)."""
    if version not in VERSIONS:
        raise ValueError(f"LatentSync version must be one of {VERSIONS}, got {version!r}")
    return (f"latentsync-{version}-unet", "whisper-tiny", "sd-vae-ft-mse-config", "sd-vae-ft-mse")


def liveportrait_names() -> tuple[str, ...]:
    """The five files of the LivePortrait take engine (group "takes")."""
    return tuple(w.name for w in REGISTRY if w.engine == "liveportrait")


def select(only: str = "all", version: str = "both", non_commercial: bool = False,
           include_bundled: bool = False) -> list[WeightFile]:
    """Entries for `--only` (lipsync | restore | upscale | takes | all) and `--version` (1.5 | 1.6 | both).

    Entries with `commercial_ok=False` are left out unless `non_commercial` is True."""
    if only != "all" and only not in GROUPS:
        raise ValueError(f"--only must be one of {GROUPS + ('all',)}, got {only!r}")
    if version != "both" and version not in VERSIONS:
        raise ValueError(f"--version must be one of {VERSIONS + ('both',)}, got {version!r}")
    wanted_versions = VERSIONS if version == "both" else (version,)
    return [
        w for w in REGISTRY
        if (only == "all" or w.group == only)
        and any(v in w.versions for v in wanted_versions)
        and (w.commercial_ok or non_commercial)
        and (include_bundled or not w.bundled)
    ]


def validate(entries: tuple[WeightFile, ...] | list[WeightFile] = REGISTRY,
             allow_http_localhost: bool = False) -> None:
    """Raise ValueError on a malformed registry (bad paths, URLs, hashes, duplicates).
    `allow_http_localhost` admits http://127.0.0.1 sources (tests only)."""
    seen_names: set[str] = set()
    seen_paths: set[str] = set()
    for w in entries:
        where = f"weight {w.name!r}"
        if w.name in seen_names or w.path in seen_paths:
            raise ValueError(f"{where}: duplicate name or path {w.path!r}")
        seen_names.add(w.name)
        seen_paths.add(w.path)
        parts = w.path.split("/")
        if w.path.startswith("/") or "\\" in w.path or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{where}: path must be relative and normalised, got {w.path!r}")
        if w.group not in GROUPS or not set(w.versions) <= set(VERSIONS):
            raise ValueError(f"{where}: bad group {w.group!r} or versions {w.versions!r}")
        if not w.sources:
            raise ValueError(f"{where}: no source")
        for s in w.sources:
            if s.sha256 is not None and not _SHA256.match(s.sha256):
                raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits, got {s.sha256!r}")
            local = allow_http_localhost and s.url.startswith("http://127.0.0.1")
            if not w.bundled and not s.url.startswith("https://") and not local:
                raise ValueError(f"{where}: source URL must be https (only https is fetched), got {s.url!r}")
