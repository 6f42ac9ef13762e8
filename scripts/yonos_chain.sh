#!/usr/bin/env bash
# The YONOS-SR chain at CPU scale, as run for docs/yonos.md: two lanes, one CPU thread each, run side by side.
#   lane a: x2 teacher -> x2->x4 scale distillation -> x4->x8 scale distillation -> x8 decoder fine-tuning
#           (-> x4 decoder fine-tuning of the x2->x4 student)
#   lane b: direct x8 -> its decoder fine-tuning -> x8 student distilled from the built-in model's x4 UNet
#           (the built-in's fine-tuned decoder refiner is removed first, so the student starts from the plain
#           direct x4 model, with no decoder tuned for x4 outputs) -> its control: the same start trained
#           at x8 on the ground truth instead of the teacher
#   lanes c and d: the last two runs of lane b again with training seed 1 (data order, noise and timesteps), to
#           see how far a second seed moves the distilled-vs-control comparison; run c and d side by side
# Usage: bash scripts/yonos_chain.sh a|b|c|d   (logs in runs/<name>.out; a killed run resumes from its checkpoint,
# a finished one is skipped). Step counts fit one 3-hour session on the 2-core machine (see docs/yonos.md).
set -euo pipefail
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
run() {  # run <kind> <config> <output_dir> <max_steps> [extra --set ...]
  local kind=$1 config=$2 out=$3 steps=$4; shift 4
  mkdir -p runs
  turbosr -v train "$kind" --config "$config" --set run.num_threads=1 --set run.output_dir="$out" \
    --set run.max_steps="$steps" "$@" >>"$out.out" 2>&1
}
without_refiner() {  # without_refiner <model folder> <new folder>: the same model, plain linear patch decoder
  python - "$1" "$2" <<'PY'
import dataclasses, sys
from turbosr.pipeline import SRPipeline
pipeline = SRPipeline.from_pretrained(sys.argv[1])
config = dataclasses.replace(pipeline.config, refine_channels=0)
SRPipeline(pipeline.denoiser, pipeline.autoencoder.without_refiner(), config).save_pretrained(sys.argv[2])
PY
}
case "${1:?lane a, b, c or d}" in
  a)
    run teacher configs/teacher-x2-small.yaml runs/teacher-x2-small 4000
    run scale-distill configs/distill-x2-x4-small.yaml runs/distill-x2-x4-small 2000
    run scale-distill configs/distill-x4-x8-small.yaml runs/distill-x4-x8-small 3000
    run decoder configs/decoder-x8-small.yaml runs/decoder-x8-small 2000
    run decoder configs/decoder-x4-small.yaml runs/decoder-x4-small 2500  # x4 distilled + decoder, for the FID table
    ;;
  b)
    run teacher configs/direct-x8-small.yaml runs/direct-x8-small 10000
    run decoder configs/decoder-x8-small.yaml runs/decoder-direct-x8-small 2000 \
      --set init_from=runs/direct-x8-small/checkpoint-latest/model
    [ -d runs/direct-x4-builtin ] || without_refiner src/turbosr/weights/x4 runs/direct-x4-builtin
    run scale-distill configs/distill-x4-x8-small.yaml runs/distill-direct-x4-x8-small 1500 \
      --set teacher=runs/direct-x4-builtin --set init_from=runs/direct-x4-builtin
    # control: same start, optimiser and steps as the line above, ground-truth target instead of the teacher's
    run teacher configs/direct-x8-from-x4-small.yaml runs/direct-x8-from-x4-small 1500
    ;;
  c)
    run scale-distill configs/distill-x4-x8-small.yaml runs/distill-direct-x4-x8-small-seed1 1500 \
      --set teacher=runs/direct-x4-builtin --set init_from=runs/direct-x4-builtin --set run.seed=1
    ;;
  d)
    run teacher configs/direct-x8-from-x4-small.yaml runs/direct-x8-from-x4-small-seed1 1500 --set run.seed=1
    ;;
  *) echo "usage: $0 a|b|c|d" >&2; exit 2 ;;
esac
