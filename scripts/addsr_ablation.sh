#!/usr/bin/env bash
# AddSR at CPU scale, as run for docs/addsr.md. Each run is the blind teacher's student with one switch changed.
#   teacher: the blind multi-step teacher (configs/teacher-x4-blind-small.yaml)
#   lane a:  the full method, longer (FULL_STEPS) and at the ablations' length, then "without PSR"
#   lane b:  the other ablations (ABLATION_STEPS each)
#   lane c:  reference indexing at FULL_STEPS (after lane b: it was the better indexing at equal length)
#   seed:    AddSR short with another seed, for the run-to-run spread of the ablations
#   select:  the x4-real candidates on the val split (the choice is made there)
#   eval:    the table on the blind-degraded test crops, and the teacher at 50 steps
# Usage: bash scripts/addsr_ablation.sh teacher|a|b|c|seed|select|eval   (logs in runs/<name>.out; a killed run resumes, a
# finished one is skipped). One CPU thread per lane; run a and b side by side after the teacher.
set -euo pipefail
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
FULL=${FULL_STEPS:-1500}  # "AddSR full": the full method, longer; every ablation is compared with "AddSR short"
ABLATION=${ABLATION_STEPS:-600}
train() {  # train <method> <config> <output_dir> <max_steps> [extra --set ...]
  local method=$1 config=$2 out=$3 steps=$4; shift 4
  mkdir -p runs
  turbosr -v train "$method" --config "$config" --set run.num_threads=1 --set run.output_dir="$out" \
    --set run.max_steps="$steps" "$@" >>"$out.out" 2>&1
}
addsr() { train adversarial-distill configs/addsr-x4-small.yaml "$@"; }
latest=checkpoint-latest/model
case "${1:?teacher, a, b, c, seed, select or eval}" in
  teacher) train teacher configs/teacher-x4-blind-small.yaml runs/teacher-x4-blind-small 4000 ;;
  a)
    addsr runs/addsr-full "$FULL"
    addsr runs/addsr-short "$ABLATION"
    addsr runs/addsr-no-psr "$ABLATION" --set psr=false
    ;;
  b)
    addsr runs/addsr-lr-teacher "$ABLATION" --set hr_regulated=false
    addsr runs/addsr-fixed-weights "$ABLATION" --set distill_weighting=fixed
    addsr runs/addsr-no-adversarial "$ABLATION" --set adversarial.weight=0
    addsr runs/addsr-reference-indexing "$ABLATION" --set adaptive_indexing=reference
    ;;
  c)  # the better indexing of lane b at the full length (run as a resume of addsr-reference-indexing's
      # checkpoint copied to runs/addsr-reference-long: resumed == uninterrupted, tests/test_train.py)
    addsr runs/addsr-reference-long "$FULL" --set adaptive_indexing=reference
    ;;
  seed)  # run-to-run spread: AddSR short again with another seed (data order, noise, initial heads)
    addsr runs/addsr-short-seed1 "$ABLATION" --set run.seed=1
    ;;
  select)  # choosing x4-real on the val split (blind-degraded val crops), never on test
    python benchmarks/quality_vs_steps.py --lq data/val-x4-blind/lq --ref data/val-x4-blind/hq --scale 4 \
      --crop-border 4 --threads 2 --baselines bicubic realesrgan_x4plus \
      --model "AddSR full=runs/addsr-full/$latest" --model "reference indexing=runs/addsr-reference-indexing/$latest" \
      --model "reference indexing, full length=runs/addsr-reference-long/$latest" \
      --model "without adversarial loss=runs/addsr-no-adversarial/$latest" \
      --model "time-aware SFT (StableSR)=runs/sft-time-aware/$latest" --steps 1 4 \
      --metrics psnr_y ssim_y niqe --out experiments/2026-11-26-stablesr-ablation/tables/x4_real_selection_val --resume
    ;;
  eval)
    # PSR at inference: the reference code's mix (psr_weight 0.5, the config's) and the pure prediction of training
    rm -rf runs/addsr-full-psr1 && cp -r "runs/addsr-full/$latest" runs/addsr-full-psr1
    python -c "import json, sys; p = sys.argv[1]; c = json.load(open(p)); (c['sampler'] if 'sampler' in c else c['model'])['psr_weight'] = 1.0; \
json.dump(c, open(p, 'w'), indent=2)" runs/addsr-full-psr1/config.json
    python benchmarks/quality_vs_steps.py --lq data/test-x4-blind/lq --ref data/test-x4-blind/hq --scale 4 \
      --crop-border 4 --threads 2 --baselines bicubic realesrgan_x4plus realsr_df2k_x4 \
      --model "AddSR full=runs/addsr-full/$latest" --model "AddSR short=runs/addsr-short/$latest" \
      --model "AddSR full, inference PSR weight 1=runs/addsr-full-psr1" \
      --model "without PSR=runs/addsr-no-psr/$latest" --model "LR-conditioned teacher=runs/addsr-lr-teacher/$latest" \
      --model "fixed loss weights=runs/addsr-fixed-weights/$latest" \
      --model "without adversarial loss=runs/addsr-no-adversarial/$latest" \
      --model "reference indexing=runs/addsr-reference-indexing/$latest" \
      --model "reference indexing, full length=runs/addsr-reference-long/$latest" \
      --model "AddSR short, seed 1=runs/addsr-short-seed1/$latest" \
      --model "blind teacher=runs/teacher-x4-blind-small/$latest" --steps 1 4 \
      --metrics psnr_y ssim_y niqe patch_fid --folder-metric-steps 1 --out docs/benchmarks/addsr_ablation_x4 --resume
    python benchmarks/quality_vs_steps.py --lq data/test-x4-blind/lq --ref data/test-x4-blind/hq --scale 4 \
      --crop-border 4 --threads 2 --baselines --model "blind teacher=runs/teacher-x4-blind-small/$latest" \
      --steps 50 --metrics psnr_y ssim_y niqe patch_fid --out docs/benchmarks/addsr_teacher_x4 --resume
    ;;
esac
