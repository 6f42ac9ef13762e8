#!/usr/bin/env bash
# Which prediction type and schedule for one-step sampling from the last timestep (docs/yonos.md)?
# Four x4 models trained identically from scratch (configs/teacher-x4-small.yaml, 1,000 steps, 1 thread each)
# except for model.prediction_type and model.schedule.zero_terminal_snr, then scored at 1 and 4 steps on the
# held-out crops. Usage: bash scripts/prediction_types.sh 1|2|eval   (lanes 1 and 2 side by side, then eval)
set -euo pipefail
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
run() {  # run <name> <prediction_type> <zero_terminal_snr>
  turbosr -v train teacher --config configs/teacher-x4-small.yaml --set run.num_threads=1 --set run.max_steps=1000 \
    --set run.output_dir="runs/pred-$1" --set model.prediction_type="$2" --set model.schedule.zero_terminal_snr="$3" \
    >>"runs/pred-$1.out" 2>&1
}
case "${1:?lane 1, 2 or eval}" in
  1) run v-ztsnr v true; run sample-ztsnr sample true ;;
  2) run epsilon-scaled-linear epsilon false; run v-scaled-linear v false ;;
  eval)
    python benchmarks/quality_vs_steps.py --lq data/heldout-x4/lq --ref data/heldout-x4/hq --scale 4 --crop-border 4 \
      --threads 2 --baselines bicubic \
      --model "v, zero terminal SNR=runs/pred-v-ztsnr/checkpoint-latest/model" \
      --model "sample (x0), zero terminal SNR=runs/pred-sample-ztsnr/checkpoint-latest/model" \
      --model "v, scaled-linear=runs/pred-v-scaled-linear/checkpoint-latest/model" \
      --model "epsilon, scaled-linear=runs/pred-epsilon-scaled-linear/checkpoint-latest/model" \
      --steps 1 4 --metrics psnr_y ssim_y niqe --out docs/benchmarks/prediction_types_x4
    ;;
  *) echo "usage: $0 1|2|eval" >&2; exit 2 ;;
esac
