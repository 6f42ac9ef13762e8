#!/usr/bin/env bash
# StableSR's time-aware encoder claim (paper, Figure 3) at CPU scale, as run for docs/stablesr.md: SFT conditioning
# of the same frozen prior (the built-in x4's diffusion model, trained on bicubic inputs only) on the blind "mixed"
# degradation, with and without the timestep embedding in the encoder, for the same number of steps.
#   aware | agnostic: one training run each (STEPS, default 3000); run them side by side, one CPU thread each
#   eval: both, and the prior alone, on the blind-degraded test crops at 1 and 4 steps
# SFT placement (issue 23): the released code modulates every ResBlock of the down, middle and up blocks; the
# first turbosr version only middle and up. Same prior (PLACEMENT_PRIOR, today's built-in x4), time-aware encoder,
# seed, data order and step count; only model.sft_down differs:
#   placement-all | placement-mid-up: one training run each; run them side by side, one CPU thread each
#   eval-placement: both and the prior alone on the blind-degraded test crops at 1 and 4 steps
# Usage: bash scripts/stablesr_ablation.sh aware|agnostic|eval|placement-all|placement-mid-up|eval-placement
#   (logs in runs/<name>.out; a killed run resumes)
set -euo pipefail
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
PRIOR=${PRIOR:-runs/x4-new-int8}
PLACEMENT_PRIOR=${PLACEMENT_PRIOR:-src/turbosr/weights/x4}
STEPS=${STEPS:-3000}
sft() {  # sft <output_dir> <time_aware> [prior] [sft_down]
  mkdir -p runs
  turbosr -v train stablesr --config configs/stablesr-x4-small.yaml --set prior="${3:-$PRIOR}" \
    --set model.sft_time_aware="$2" --set model.sft_down="${4:-false}" \
    --set run.output_dir="$1" --set run.max_steps="$STEPS" \
    --set run.num_threads=1 --set run.batch_size=8 --set run.validate_every_steps=1000 >>"$1.out" 2>&1
}
latest=checkpoint-latest/model
case "${1:?lane: aware|agnostic|eval|placement-all|placement-mid-up|eval-placement}" in
  aware) sft runs/sft-time-aware true ;;
  agnostic) sft runs/sft-time-agnostic false ;;
  placement-all) sft runs/sft-place-all true "$PLACEMENT_PRIOR" true ;;
  placement-mid-up) sft runs/sft-place-mid-up true "$PLACEMENT_PRIOR" false ;;
  eval-placement)
    python benchmarks/quality_vs_steps.py --lq data/test-x4-blind/lq --ref data/test-x4-blind/hq --scale 4 \
      --crop-border 4 --threads 2 --baselines bicubic \
      --model "prior (no SFT)=$PLACEMENT_PRIOR" --model "SFT in down, mid, up blocks=runs/sft-place-all/$latest" \
      --model "SFT in mid, up blocks=runs/sft-place-mid-up/$latest" --steps 1 4 \
      --metrics psnr_y ssim_y niqe grid --out docs/benchmarks/stablesr_sft_placement_x4 --resume
    ;;
  eval)
    python benchmarks/quality_vs_steps.py --lq data/test-x4-blind/lq --ref data/test-x4-blind/hq --scale 4 \
      --crop-border 4 --threads 2 --baselines bicubic \
      --model "prior (no SFT)=$PRIOR" --model "time-aware SFT=runs/sft-time-aware/$latest" \
      --model "time-agnostic SFT=runs/sft-time-agnostic/$latest" --steps 1 4 \
      --metrics psnr_y ssim_y niqe --out docs/benchmarks/stablesr_time_aware_x4 --resume
    ;;
  *) echo "usage: $0 aware|agnostic|eval|placement-all|placement-mid-up|eval-placement" >&2; exit 2 ;;
esac
