#!/usr/bin/env bash
# Builds sqasam and scores the demo data in examples/ (8 polyp images with synthetic predictions) into demo-out/.
# Uses a real SAM checkpoint when there is one: $SQASAM_CHECKPOINT, else models/sam_vit_b_01ec64.pth. Without one
# it runs on a small random-weight test model: that checks the pipeline, but its scores mean nothing.
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
checkpoint=${SQASAM_CHECKPOINT:-models/sam_vit_b_01ec64.pth}
if [ -f "$checkpoint" ]; then
  echo "Using the SAM checkpoint $checkpoint"
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

"$sqasam" score --checkpoint "$checkpoint" \
  --images examples/images --pred examples/pred --gt examples/gt --out "$out"

echo
if [ "$meaningless" = 1 ]; then
  echo "NOTE: these scores come from a random-weight test model: they check the pipeline only and mean nothing."
fi
echo "Report: $PWD/$out/report.html (tables: $out/images.csv, $out/objects.csv, $out/summary.json)"
