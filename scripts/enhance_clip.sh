#!/usr/bin/env bash
# Usage: enhance_clip.sh --preset NAME [flags] [key=value ...]: trains ANY shipped encoder, CLIP,
# MetaCLIP and SigLIP alike (e.g. --preset siglip-so400m-384); the name is the one first asked for.
# The two-stage GenHancer enhancement: stage 1, stage 2 and export, each stage launched with
# `accelerate launch` on DeepSpeed ZeRO (launch configs shipped in the package,
# genhancer_llava/train/launch_configs/zero{2,3}.yaml).
#
#   bash scripts/enhance_clip.sh --preset openai-clip-l14-224 --num_processes 8 --zero 2 \
#       encoder.path=/models/clip-vit-large-patch14 target.path=/models/flux-vae \
#       data.path=/data/cc3m run.output_dir=runs/clip-l14-224
#
# Flags: --preset NAME | --config FILE, --num_processes N, --zero 2|3, --output DIR,
#        --overwrite, --resume latest, --accelerate_config FILE; then key.sub=value overrides.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python=python3
exec "$python" -m genhancer_llava.cli enhance "$@"
