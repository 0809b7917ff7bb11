#!/usr/bin/env bash
# System packages the project needs: ffmpeg/ffprobe (libx264, libass), libomp (ncnn), and the
# fallback fonts libass reaches through fontconfig for caption glyphs our DejaVu lacks:
# fonts-droid-fallback (CJK; Apache-2.0) and fonts-symbola (emoji and symbols, one colour;
# "free for any use"). Installs what is missing with apt when running as root; otherwise says
# what to install.
set -euo pipefail
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
if command -v ldconfig >/dev/null 2>&1 && ! ldconfig -p | grep -q 'libomp\.so'; then
  missing+=(libomp5-14)
fi
fonts=$(fc-list 2>/dev/null || true)
grep -q "Droid Sans Fallback" <<<"$fonts" || missing+=(fonts-droid-fallback)
grep -q "Symbola" <<<"$fonts" || missing+=(fonts-symbola)
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
else
  echo "missing system packages: $pkgs (install them with your package manager)" >&2
  exit 1
fi
