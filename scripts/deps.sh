#!/usr/bin/env bash
# Installs what sqasam needs to build and test on Debian 12 / Ubuntu 22.04+. Idempotent: a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config
          libopencv-dev libdnnl-dev libzip-dev nlohmann-json3-dev libcli11-dev
          libgtest-dev libbenchmark-dev
          python3-torch python3-torchvision python3-numpy python3-scipy python3-skimage python3-venv
          libjemalloc2 chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The official implementation, for differential tests and the benchmark peer: PyPI's segment-anything on
# Debian's torch (a venv that sees the system packages).
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import segment_anything" 2>/dev/null; then
  /usr/bin/python3 -m venv --system-site-packages .venv
  .venv/bin/pip install -q --disable-pip-version-check segment-anything==1.0
fi
