#!/usr/bin/env bash
# The installed package as a user gets it: `cmake --install` into a fresh prefix (binary, headers, shipped
# calibration), the installed sqasam runs, and a tiny project outside the source tree builds against it with
# find_package(sqasam) and runs.
# Usage: check_install.sh BUILD_DIR SOURCE_DIR WORK_DIR VERSION
set -euo pipefail
build=$1 source=$2 work=$3 version=$4
rm -rf "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -x "$work/prefix/bin/sqasam" || { echo "not installed: bin/sqasam" >&2; exit 1; }
test -f "$work/prefix/include/sqasam/sqa.hpp" || { echo "not installed: include/sqasam/sqa.hpp" >&2; exit 1; }
cmp -s "$source/calibration/lite_medsam.json" "$work/prefix/share/sqasam/calibration/lite_medsam.json" \
  || { echo "not installed (or not the same): share/sqasam/calibration/lite_medsam.json" >&2; exit 1; }
# the libraries go to lib/, lib64/ or lib/<multiarch>/ (GNUInstallDirs)
find "$work/prefix" -path '*/cmake/sqasam/sqasamConfig.cmake' | grep -q . || { echo "not installed: sqasamConfig.cmake" >&2; exit 1; }
reported=$("$work/prefix/bin/sqasam" --version)
[ "$reported" = "sqasam $version" ] || { echo "sqasam --version says '$reported', expected 'sqasam $version'" >&2; exit 1; }
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$source/tests/install/consumer" -B "$work/consumer" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
"$work/consumer/consumer"
