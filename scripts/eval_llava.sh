#!/usr/bin/env bash
# lmms-eval (mmvp, cv_bench, pope_full, pope) on a base and an enhanced LLaVA, then the
# paper-faithful report. Thin wrapper: the logic is `--model genhancer_llava` and
# `genhancer eval lmms-report`.
#
#   bash scripts/eval_llava.sh --base /models/llava-1.5-7b-hf \
#       --enhanced runs/llava-1.5-7b-hf-genhancer --output runs/eval/llava
#   # or swap at load time instead of a second checkpoint:
#   bash scripts/eval_llava.sh --base /models/llava-1.5-7b-hf \
#       --vision_tower runs/clip-l14-336/encoder --output runs/eval/llava
#   # any family `genhancer swap` knows, e.g. LLaVA-OneVision with an enhanced SO400M/384:
#   bash scripts/eval_llava.sh --base /models/llava-onevision-qwen2-0.5b-ov-hf \
#       --vision_tower runs/siglip-so400m-384/encoder --output runs/eval/llava-ov
#
# Flags: --base CKPT, --enhanced CKPT, --vision_tower DIR (enhanced = base + this tower),
#        --output DIR, --tasks LIST (default mmvp,cv_bench,pope_full,pope), --device D,
#        --model_args EXTRA (appended to both, e.g. dtype=bfloat16,device_map=auto),
#        --launcher "accelerate launch --num_processes 8" (default: python);
#        anything after `--` goes to lmms-eval (e.g. --limit 8).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python=python3
base="" enhanced="" tower="" output="runs/eval/llava" tasks="mmvp,cv_bench,pope_full,pope"
device="" extra="" launcher="$python"
while [ $# -gt 0 ]; do
    case "$1" in
        --base) base="$2"; shift 2 ;;
        --enhanced) enhanced="$2"; shift 2 ;;
        --vision_tower|--vision-tower) tower="$2"; shift 2 ;;
        --output) output="$2"; shift 2 ;;
        --tasks) tasks="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --model_args) extra=",$2"; shift 2 ;;
        --launcher) launcher="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "error: unknown flag $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
if [ -z "$base" ] || { [ -z "$enhanced" ] && [ -z "$tower" ]; }; then
    echo "error: pass --base CKPT and --enhanced CKPT or --vision_tower DIR" >&2; exit 2
fi
enhanced_args="pretrained=${enhanced:-$base}${tower:+,vision_tower=$tower}"
run() {  # run NAME MODEL_ARGS
    # shellcheck disable=SC2086
    $launcher -m lmms_eval --model genhancer_llava --model_args "$2$extra" --tasks "$tasks" \
        --batch_size 1 ${device:+--device "$device"} --log_samples \
        --output_path "$output/$1" --verbosity "${LMMS_VERBOSITY:-INFO}" "${@:3}"
}
run base "pretrained=$base" "$@"
run enhanced "$enhanced_args" "$@"
exec "$python" -m genhancer_llava.cli eval lmms-report "$output/base" "$output/enhanced" \
    --name base --name enhanced --output "$output/report"
