#!/usr/bin/env bash
# Runs `sqasam bench` and its peers back to back on the same image, prompts, weights and repeats, prints a
# side-by-side table and writes bench/results/<date>_<time>.json. See bench/NOTES.md.
#
#   bench/run.sh [--checkpoint CKPT] [--image IMG] [--prompts N] [--repeat R] [--threads T]
#                [--model-type vit_b|vit_l|vit_h|vit_t] [--rounds K] [--precision fp32,bf16]
#                [--peers pytorch,onnxruntime-fp32,onnxruntime-int8,openvino,openvino-f32]
#
# Peers: the official PyTorch code (bench/peer_pytorch.py; vit_t is MobileSAM's official mobile_sam package), and
# the same weights exported to ONNX (bench/export_onnx.py, once per checkpoint) on ONNX Runtime (fp32, and its
# dynamically quantised int8) and OpenVINO (its default precision on this CPU, and f32) through
# bench/peer_onnx.py; bash bench/deps.sh installs those two runtimes. --precision lists our encoder's precisions,
# each run every round. --rounds K runs every program K times, alternately, and reports medians over the rounds
# (for a busy machine). Without --checkpoint it uses (and first makes, with the official code) a random-weight
# checkpoint of the model type in the build folder: no pretrained weights can be downloaded here, and the timings
# do not depend on the weights' values. The sqasam binary is taken from $SQASAM_BUILD_DIR (default: build).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$repo" && realpath -m "${SQASAM_BUILD_DIR:-build}")
python="$repo/.venv/bin/python"
shared="${SQASAM_SHARED_DIR:-$repo/../shared}"

checkpoint="" model_type=vit_b prompts=8 repeat=3 threads=2 rounds=1 precision=fp32
peers=pytorch,onnxruntime-fp32,onnxruntime-int8,openvino,openvino-f32
image="$shared/data/polyp_polypgen_test/images/10_endocv2021_positive_1087.jpg"  # 1920x1080, CC BY 4.0
while (($#)); do
  case "$1" in
    --checkpoint) checkpoint=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --prompts) prompts=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --model-type) model_type=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --peers) peers=$2; shift 2 ;;
    *) echo "bench/run.sh: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done

case "$model_type" in  # the model types with an official peer (OFFICIAL_PACKAGES in bench/peer_pytorch.py)
  vit_b | vit_l | vit_h | vit_t) ;;
  *) echo "bench/run.sh: no official PyTorch peer for --model-type '$model_type' (vit_b, vit_l, vit_h, vit_t)" >&2
     exit 2 ;;
esac
IFS=, read -ra precisions <<<"$precision"
for p in "${precisions[@]}"; do
  case "$p" in
    fp32 | bf16) ;;
    *) echo "bench/run.sh: --precision wants fp32 and/or bf16 (comma-separated), got '$p'" >&2; exit 2 ;;
  esac
done
IFS=, read -ra peer_list <<<"$peers"
onnx_peers=false
for peer in "${peer_list[@]}"; do
  case "$peer" in
    pytorch) ;;
    onnxruntime-fp32 | onnxruntime-int8 | openvino | openvino-f32) onnx_peers=true ;;
    *) echo "bench/run.sh: unknown peer '$peer' (pytorch, onnxruntime-fp32, onnxruntime-int8, openvino, openvino-f32)" >&2
       exit 2 ;;
  esac
done
if $onnx_peers && ! "$python" -c "import onnxruntime, openvino, onnx" 2>/dev/null; then
  echo "bench/run.sh: ONNX Runtime / OpenVINO missing from .venv: run bash bench/deps.sh (or --peers pytorch)" >&2
  exit 1
fi
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "bench/run.sh: --rounds wants a positive integer, got '$rounds'" >&2; exit 2; }
sqasam="$build/sqasam"
[ -x "$sqasam" ] || { echo "bench/run.sh: $sqasam not built (cmake --build $build --target sqasam)" >&2; exit 1; }
[ -f "$image" ] || { echo "bench/run.sh: image $image not found" >&2; exit 1; }
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp
[ -d "$openblas" ] || { echo "bench/run.sh: $openblas missing (bash scripts/deps.sh installs it)" >&2; exit 1; }
# OpenBLAS picks its kernels by CPU model, and Debian 12's 0.3.21 does not know newer ones (Intel Xeon model 207
# here): it falls back to its generic SSE3 kernels, "Prescott", 4x slower for the encoder's Linear layers
# (bench/NOTES.md). There the peer gets the AVX-512 kernels (SkylakeX) or the AVX2 ones (Haswell) that the CPU runs.
openblas_core=$("$python" -c "import ctypes; blas = ctypes.CDLL('$openblas/libopenblas.so.0')
blas.openblas_get_corename.restype = ctypes.c_char_p; print(blas.openblas_get_corename().decode())")
openblas_env=(-u OPENBLAS_CORETYPE)
if [ "$openblas_core" = Prescott ]; then
  if grep -qw avx512bw /proc/cpuinfo; then openblas_env=(OPENBLAS_CORETYPE=SkylakeX)
  elif grep -qw avx2 /proc/cpuinfo; then openblas_env=(OPENBLAS_CORETYPE=Haswell)
  fi
fi
random_weights=false
if [ -z "$checkpoint" ]; then
  checkpoint="$build/bench/${model_type}_random_seed0.pth"
  random_weights=true
  if [ ! -f "$checkpoint" ]; then
    mkdir -p "$(dirname "$checkpoint")"
    "$python" "$repo/bench/peer_pytorch.py" --write-random-checkpoint "$checkpoint" --model-type "$model_type"
  fi
fi

if $onnx_peers; then  # the peers' models, exported once per checkpoint (and image size: the crop is traced)
  size=$("$python" -c "from PIL import Image; import sys; print(*Image.open(sys.argv[1]).size)" "$image")
  onnx_dir="$build/bench/onnx/$(basename "${checkpoint%.*}")_${size/ /x}"
  if [ ! -f "$onnx_dir/decoder_network.int8.onnx" ]; then  # (export_onnx.py keeps the files it finds)
    "$python" "$repo/bench/export_onnx.py" --checkpoint "$checkpoint" --model-type "$model_type" --image-size $size \
      --out "$onnx_dir"
  fi
fi

load() { cut -d' ' -f1 /proc/loadavg; }
busy=$(awk -v l="$(load)" -v n="$(nproc)" 'BEGIN { print (l > 0.5 * n) ? 1 : 0 }')
((busy)) && echo "bench/run.sh: warning: load average $(load) on $(nproc) cores; timings will be noisy" >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--checkpoint "$checkpoint" --image "$image" --prompts "$prompts" --repeat "$repeat" --threads "$threads")

loads=() results=() masks=()
run_peer() {  # name, command...: one program's round, its JSON kept for compare.py
  local name=$1; shift
  echo "== round $round/$rounds: $name" >&2
  "$@" | tee "$work/$name.$round.json" >&2
  results+=(--result "$name=$work/$name.$round.json")
}
for ((round = 1; round <= rounds; round++)); do
  loads+=("$(load)")
  for p in "${precisions[@]}"; do
    run_peer "sqasam-$p" "$sqasam" bench "${common[@]}" --model-type "$model_type" --precision "$p"
  done
  for peer in "${peer_list[@]}"; do
    loads+=("$(load)")
    case "$peer" in
      # The official code under its best conditions (bench/NOTES.md has the measurements): OpenBLAS's OpenMP
      # build, which shares torch's OpenMP threads (the pthread build oversubscribes the cores), left to pick its
      # own kernels unless it knows no better than generic ones (above); jemalloc with decay off (freed pages stay
      # mapped for the next pass).
      pytorch)
        run_peer pytorch env "${openblas_env[@]}" LD_LIBRARY_PATH="$openblas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
          LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 \
          "$python" "$repo/bench/peer_pytorch.py" "${common[@]}" --model-type "$model_type" --masks-out "$work/$peer.npz" ;;
      *)
        runtime=${peer%%-*} peer_precision=default
        [[ "$peer" == *-* ]] && peer_precision=${peer#*-}
        run_peer "$peer" "$python" "$repo/bench/peer_onnx.py" "${common[@]}" --model-type "$model_type" \
          --runtime "$runtime" --precision "$peer_precision" --onnx-dir "$onnx_dir" --masks-out "$work/$peer.npz" ;;
    esac
    ((round == rounds)) && masks+=(--masks "$peer=$work/$peer.npz")
  done
done
loads+=("$(load)")

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$repo" diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
"$python" - "$work/conditions.json" "$commit" "$checkpoint" "$random_weights" "${loads[@]}" <<'EOF'
import datetime, json, os, platform, sys
out, commit, checkpoint, random_weights, *loads = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
conditions = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": commit,
              "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "checkpoint": checkpoint,
              "random_weights": random_weights == "true",
              # 1-minute load average at the start of each round, before each peer, and at the end
              "load_average": [float(load) for load in loads]}
json.dump(conditions, open(out, "w"), indent=2)
EOF
mkdir -p "$repo/bench/results"
"$python" "$repo/bench/compare.py" "${results[@]}" "${masks[@]}" \
  --conditions "$work/conditions.json" --out "$repo/bench/results/$(date +%Y-%m-%d_%H%M).json"
