#!/usr/bin/env bash
# LLaVA-1.5 on an enhanced encoder: pretrain (projector, ZeRO-2) then finetune (projector + LLM,
# ZeRO-3), through the original LLaVA code with the genhancer tower hook installed.
#
#   bash scripts/llava_finetune.sh --vision_tower genhancer:/models/genhancer-clip-l14-336 \
#       --llm /models/vicuna-7b-v1.5 \
#       --pretrain_data /data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json \
#       --pretrain_images /data/LLaVA-Pretrain/images \
#       --data /data/llava_v1_5_mix665k.json --images /data/llava-finetune-images \
#       --output checkpoints/llava-v1.5-7b-genhancer
#
# Flags: --vision_tower NAME, --llm DIR, --data JSON, --images DIR, --output DIR,
#        --stage pretrain|finetune|both, --preset llava-1.5|tiny, --projector FILE,
#        --nproc_per_node N; flags after `--` go to LLaVA's train() in both stages.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python=python3
exec "$python" -m llava_patches.finetune "$@"
