#!/usr/bin/env bash
# The benchmark's extra peers, kept out of scripts/deps.sh so that the test suite's setup (.ci/run) stays lean:
# ONNX Runtime and OpenVINO from PyPI, and onnx for ONNX Runtime's quantiser, in the project's .venv (made by
# scripts/deps.sh first). numpy stays at the version Debian's torch was built against. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if ! .venv/bin/python -c "import onnxruntime, openvino, onnx" 2>/dev/null; then
  numpy_version=$(.venv/bin/python -c "import numpy; print(numpy.__version__)")
  .venv/bin/pip install -q --disable-pip-version-check "numpy==$numpy_version" \
    onnxruntime==1.32.0 openvino==2026.4.1 onnx==1.23.2
fi
