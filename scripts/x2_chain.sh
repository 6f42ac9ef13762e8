#!/usr/bin/env bash
# Candidates for a built-in x2 model (docs/yonos.md, "An x2 built-in?"), two lanes side by side, 1 thread each:
#   lane a: the bicubic x2 teacher of the YONOS chain fine-tuned on the blind (Real-ESRGAN) degradation (its
#           residual std re-measured for that degradation), then its decoder fine-tuned on the same degradation
#   lane b: decoder fine-tuning of the bicubic x2 teacher as it is
#   lane c: like lane a on the "mixed" degradation (each training image bicubic or blind, 50/50), 2 threads
# Usage: bash scripts/x2_chain.sh a|b|c   (needs runs/teacher-x2-small from `bash scripts/yonos_chain.sh a`;
# logs in runs/<name>.out; a killed run resumes from its checkpoint, a finished one is skipped)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1
run() {  # run <kind> <config> <output_dir> <max_steps> [extra --set ...]
  local kind=$1 config=$2 out=$3 steps=$4; shift 4
  mkdir -p runs
  turbosr -v train "$kind" --config "$config" --set run.num_threads=1 --set run.output_dir="$out" \
    --set run.max_steps="$steps" "$@" >>"$out.out" 2>&1
}
case "${1:?lane a, b or c}" in
  a)
    run teacher configs/teacher-x2-small.yaml runs/teacher-x2-blind 3000 \
      --set init_from=runs/teacher-x2-small/checkpoint-latest/model --set data.degradation=realesrgan \
      --set optim.warmup_steps=100 --set refit_residual_scale=true
    run decoder configs/decoder-x4-small.yaml runs/decoder-x2-blind 2000 --set model.scale=2 \
      --set init_from=runs/teacher-x2-blind/checkpoint-latest/model --set data.degradation=realesrgan
    ;;
  b)
    run decoder configs/decoder-x4-small.yaml runs/decoder-x2-small 2500 --set model.scale=2 \
      --set init_from=runs/teacher-x2-small/checkpoint-latest/model
    ;;
  c)
    run teacher configs/teacher-x2-small.yaml runs/teacher-x2-mixed 3000 \
      --set init_from=runs/teacher-x2-small/checkpoint-latest/model --set data.degradation=mixed \
      --set optim.warmup_steps=100 --set refit_residual_scale=true --set run.num_threads=2
    run decoder configs/decoder-x4-small.yaml runs/decoder-x2-mixed 2000 --set model.scale=2 \
      --set init_from=runs/teacher-x2-mixed/checkpoint-latest/model --set data.degradation=mixed --set run.num_threads=2
    ;;
  *) echo "usage: $0 a|b|c" >&2; exit 2 ;;
esac
