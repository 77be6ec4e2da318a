#!/usr/bin/env bash
# Installs dependencies, builds everything and runs the whole test suite (unit, differential against the official
# PyTorch implementation on random weights, CLI end to end). Usage: bash scripts/test.sh [extra ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
build=${SQASAM_BUILD_DIR:-build}
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSQASAM_PYTHON="$PWD/.venv/bin/python" >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
# 2 jobs: the reference generators (PyTorch) and our tests overlap; each is single- or dual-threaded.
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} ctest --output-on-failure -j2 "$@"
