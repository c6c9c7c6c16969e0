#!/usr/bin/env bash
# One GPU, the paper's shapes, bf16, random weights: our stage-1 and stage-2 steps (from the cache)
# next to the authors' (GenHancer reference code), then the lmms-eval model on a tiny llava-hf
# checkpoint on cuda.
#
#   bash benchmarks/gpu_check.sh --ref-src /tmp/genhancer_ref [--peak-tflops 989] [--batch 16]
#   bash benchmarks/gpu_check.sh --smoke         # CPU, tiny shapes, in seconds (CI)
#
# Shapes (benchmarks/shapes.py `paper`): OpenAI CLIP ViT-L/14 @224, the FLUX.1 autoencoder config,
# the 1.31 B DiT (3072 wide, 24 heads, 2+4 blocks, context 4096), batch 16 per GPU as the paper.
# Prints per stage: s/step, images/s, peak memory over the import baseline (allocated), GFLOP/s
# and MFU against the GPU's dense bf16 peak (H100/H200 SXM 989 TFLOP/s, A100 312; other GPUs:
# pass --peak-tflops). Without --ref-src (or $GENHANCER_SRC) only our side runs.
# Get the reference: git --git-dir=<GenHancer mirror> archive HEAD | tar -x -C /tmp/genhancer_ref
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
smoke=0 ref=${GENHANCER_SRC:-} peak="" batch=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --ref-src) ref=$2; shift ;;
    --peak-tflops) peak=$2; shift ;;
    --batch) batch="--batch $2"; shift ;;
    *) echo "error: unknown argument $1 (use --smoke, --ref-src DIR, --peak-tflops N, --batch N)" >&2
       exit 2 ;;
  esac
  shift
done
sides=(--ours-only)
[ -n "$ref" ] && sides=(--ref-src "$ref")
[ -z "$ref" ] && echo "[gpu_check] no --ref-src / GENHANCER_SRC: the reference side is left out"

if [ "$smoke" = 1 ]; then
  echo "[gpu_check] smoke: CPU, tiny shapes, fp32"
  OMP_NUM_THREADS=1 "$PY" -m benchmarks.side_by_side "${sides[@]}" --shapes tiny --device cpu \
    --dtype fp32 --rounds 1 --steps 1 --warmup 0 --in-process
  OMP_NUM_THREADS=1 "$PY" -m benchmarks.lmms_check --device cpu --dtype float32
  echo "[gpu_check] smoke passed"
  exit 0
fi

if ! command -v nvidia-smi >/dev/null || ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "error: no NVIDIA GPU visible to torch here; run on a GPU machine, or pass --smoke" >&2
  exit 2
fi
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if [ -z "$peak" ]; then
  case "$gpu" in
    *H100*|*H200*|*GH200*) peak=989 ;;
    *A100*) peak=312 ;;
    *L40S*) peak=362 ;;
    *) echo "error: unknown bf16 peak for '$gpu'; pass --peak-tflops N" >&2; exit 2 ;;
  esac
fi
echo "[gpu_check] $gpu, dense bf16 peak $peak TFLOP/s"
"$PY" -m benchmarks.side_by_side "${sides[@]}" --shapes paper --device cuda --dtype bf16 \
  --rounds 2 --steps 5 --warmup 2 --threads 0 --peak-tflops "$peak" $batch \
  --json "${GPU_CHECK_JSON:-gpu_check.json}"
"$PY" -m benchmarks.lmms_check --device cuda --dtype bfloat16
echo "[gpu_check] done"
