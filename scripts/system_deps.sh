#!/usr/bin/env bash
# System packages the project needs: ffmpeg/ffprobe (libx264, libass) and libomp (ncnn).
# Installs them with apt when missing and running as root; otherwise says what to install.
set -euo pipefail
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
if command -v ldconfig >/dev/null 2>&1 && ! ldconfig -p | grep -q 'libomp\.so'; then
  missing+=(libomp5-14)
fi
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
