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
# Claim 1 at x4 with two seeds (issue 24; docs/yonos.md), on today's split:
#   x2: the x2 teacher (X2_STEPS, default 3000) in runs/teacher-x2-claims
#   x4-distilled | x4-direct: from that teacher, ARM_STEPS (default 1500) each, training seeds 0 then 1; the
#       distilled student regresses the teacher's predictions, the direct control the ground truth (same start,
#       optimiser, batch, EMA, steps: only the target differs); run the two lanes side by side, one thread each
#   eval-x4: the four models and bicubic on the test split at 1, 4, 16 and 64 steps (PSNR-Y, SSIM-Y, grid;
#       patch KID at the steps in KID_STEPS, default 1 and 16; EVAL_STEPS sets the step counts)
#   x8-distilled | x8-direct | eval-x8: the same one stage up: the distilled x4 of seed 0 teaches (and starts)
#       x8 students, its control trains the same start on the ground truth at x8; seeds 0 then 1; test split x8
# Claim 2 at x4 and x8 (issue 24): decoder fine-tuning on the frozen one-step UNet vs many-step sampling
# (S = 4 or 8):
#   xS-decoder | xS-direct-decoder: the learned decoder with CFW (experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-learned.yaml, at model.scale
#       S; DECODER_STEPS, default 1000) on the frozen one-step UNet of the distilled xS of each seed in SEEDS
#       (here default 0; the decoder run takes the arm's seed), and the same on its direct control
#   xS-direct-equal-time: the direct control of seed 0 continued (from its checkpoint; the learning rate is
#       constant after warm-up, so this equals one longer run) until it has used the distilled arm's CPU time:
#       ARM_STEPS x the ratio of their seconds per step (run_summary.py's wall times), rounded to 100 steps
#   eval-claim2-xS: those models (of each seed in SEEDS, default 0; the equal-time control of seed 0) and bicubic
#       on the test split at one step, the plain UNets also at CLAIM2_STEPS (default 200) steps; with --resume,
#       rows of unchanged model folders are reused; TABLE_TAG (default none) is added to the table's name
#       (docs/benchmarks/yonos_claim2_xS_TAG_test), so that a set of arms trained another way, or one seed's rows
#       computed beside another's (two processes, one thread each), keeps its own table
# SEEDS (default "0 1") picks the training seeds of the arms lanes; THREADS (default 1) the CPU threads of each
# training run, EVAL_THREADS (default 2) those of a claim-2 evaluation; PRECISION overrides the configs'
# run.mixed_precision (bf16): "no" on a CPU without native bf16 (avx512_bf16 or AMX), where autocast is emulated
# and many times slower than float32.
# Usage: bash scripts/yonos_chain.sh a|b|c|d|x2|x4-distilled|x4-direct|eval-x4|x8-distilled|x8-direct|eval-x8|
#   x4-decoder|x4-direct-decoder|x4-direct-equal-time|eval-claim2-x4|x8-decoder|x8-direct-decoder|
#   x8-direct-equal-time|eval-claim2-x8
#   (logs in runs/<name>.out; a killed run resumes from its checkpoint, a finished one is skipped). Lanes a-d fit
#   one 3-hour session on the 2-core machine (see docs/yonos.md); the claim-1 lanes about two hours in all.
set -euo pipefail
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
X2_TEACHER=runs/teacher-x2-claims/checkpoint-latest/model  # claim 1: the x4 stage's teacher and start
X4_TEACHER=runs/x4-distilled-seed0/checkpoint-latest/model   # claim 1: the x8 stage's teacher and start
run() {  # run <kind> <config> <output_dir> <max_steps> [extra --set ...]
  local kind=$1 config=$2 out=$3 steps=$4; shift 4
  mkdir -p runs
  turbosr -v train "$kind" --config "$config" --set run.num_threads="${THREADS:-1}" --set run.output_dir="$out" \
    --set run.max_steps="$steps" ${PRECISION:+--set "run.mixed_precision=\"$PRECISION\""} "$@" >>"$out.out" 2>&1
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
arms() {  # arms distilled|direct <stage> <teacher = start> <config>: training seeds SEEDS, ARM_STEPS each
  local seed
  for seed in ${SEEDS:-0 1}; do
    if [ "$1" = distilled ]; then  # the student regresses the teacher's predictions
      run scale-distill "$4" "runs/$2-distilled-seed$seed" "${ARM_STEPS:-1500}" \
        --set teacher="$3" --set init_from="$3" --set run.seed="$seed"
    else  # the control: the same start on the ground truth
      run teacher "$4" "runs/$2-direct-seed$seed" "${ARM_STEPS:-1500}" --set init_from="$3" --set run.seed="$seed"
    fi
  done
}
evaluate_arms() {  # evaluate_arms <scale>: the four arms of that stage and bicubic on its test split
  local pairs=data/test-x$1 model=() kind seed
  [ -f "$pairs/manifest.json" ] || turbosr data make-pairs data/corpus/manifest.json "$pairs" --scale "$1" \
    --crop 256 --split test
  for kind in distilled direct; do
    for seed in 0 1; do
      model+=(--model "$kind, seed $seed=runs/x$1-$kind-seed$seed/checkpoint-latest/model")
    done
  done
  # shellcheck disable=SC2086
  python benchmarks/quality_vs_steps.py --lq "$pairs/lq" --ref "$pairs/hq" --scale "$1" --crop-border "$1" \
    --threads 2 --baselines bicubic "${model[@]}" --steps ${EVAL_STEPS:-1 4 16 64} --metrics psnr_y ssim_y grid patch_kid \
    --folder-metric-steps ${KID_STEPS:-1 16} --out "docs/benchmarks/yonos_claim1_x$1_test" --resume
}
evaluate_claim2() {  # evaluate_claim2 <scale>: the arms of SEEDS (default 0) with and without the fine-tuned decoder
  local pairs=data/test-x$1 model=() kind seed
  [ -f "$pairs/manifest.json" ] || turbosr data make-pairs data/corpus/manifest.json "$pairs" --scale "$1" \
    --crop 256 --split test
  for seed in ${SEEDS:-0}; do
    for kind in distilled direct; do  # the plain UNets at 1 and CLAIM2_STEPS (200) steps, the decoders at 1
      model+=(--model "$kind, seed $seed=runs/x$1-$kind-seed$seed/checkpoint-latest/model@steps=1,${CLAIM2_STEPS:-200}")
      model+=(--model "$kind + decoder, seed $seed=runs/x$1-$kind-seed$seed-decoder/checkpoint-latest/model@steps=1")
    done
  done
  case " ${SEEDS:-0} " in *" 0 "*)  # the equal-time control exists for seed 0 only
    model+=(--model "direct at the distilled arm's CPU time, seed 0=runs/x$1-direct-seed0-equal-time/checkpoint-latest/model@steps=1") ;;
  esac
  python benchmarks/quality_vs_steps.py --lq "$pairs/lq" --ref "$pairs/hq" --scale "$1" --crop-border "$1" \
    --threads "${EVAL_THREADS:-2}" --baselines bicubic "${model[@]}" --steps 1 --metrics psnr_y ssim_y grid \
    patch_kid --out "docs/benchmarks/yonos_claim2_x$1${TABLE_TAG:+_$TABLE_TAG}_test" --resume
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
    run teacher experiments/yonos-scale-distillation-controls/direct-x8-small.yaml runs/direct-x8-small 10000
    run decoder configs/decoder-x8-small.yaml runs/decoder-direct-x8-small 2000 \
      --set init_from=runs/direct-x8-small/checkpoint-latest/model
    [ -d runs/direct-x4-builtin ] || without_refiner src/turbosr/weights/x4 runs/direct-x4-builtin
    run scale-distill configs/distill-x4-x8-small.yaml runs/distill-direct-x4-x8-small 1500 \
      --set teacher=runs/direct-x4-builtin --set init_from=runs/direct-x4-builtin
    # control: same start, optimiser and steps as the line above, ground-truth target instead of the teacher's
    run teacher experiments/yonos-scale-distillation-controls/direct-x8-from-x4-small.yaml runs/direct-x8-from-x4-small 1500
    ;;
  c)
    run scale-distill configs/distill-x4-x8-small.yaml runs/distill-direct-x4-x8-small-seed1 1500 \
      --set teacher=runs/direct-x4-builtin --set init_from=runs/direct-x4-builtin --set run.seed=1
    ;;
  d)
    run teacher experiments/yonos-scale-distillation-controls/direct-x8-from-x4-small.yaml runs/direct-x8-from-x4-small-seed1 1500 --set run.seed=1
    ;;
  x2) run teacher configs/teacher-x2-small.yaml runs/teacher-x2-claims "${X2_STEPS:-3000}" ;;
  x4-distilled) arms distilled x4 "$X2_TEACHER" configs/distill-x2-x4-small.yaml ;;
  x4-direct) arms direct x4 "$X2_TEACHER" experiments/yonos-scale-distillation-controls/direct-x4-from-x2-small.yaml ;;
  x8-distilled) arms distilled x8 "$X4_TEACHER" configs/distill-x4-x8-small.yaml ;;
  x8-direct) arms direct x8 "$X4_TEACHER" experiments/yonos-scale-distillation-controls/direct-x8-from-x4-small.yaml ;;
  eval-x4) evaluate_arms 4 ;;
  eval-x8) evaluate_arms 8 ;;
  x4-decoder | x4-direct-decoder | x8-decoder | x8-direct-decoder)  # the decoder on the frozen one-step UNet of
    stage=${1%%-*}                                                     # each SEEDS arm, distilled or direct
    kind=$([ "$1" = "$stage-decoder" ] && echo distilled || echo direct)
    for seed in ${SEEDS:-0}; do
      run decoder experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-learned.yaml "runs/$stage-$kind-seed$seed-decoder" "${DECODER_STEPS:-1000}" \
        --set init_from="runs/$stage-$kind-seed$seed/checkpoint-latest/model" --set model.scale="${stage#x}" \
        --set run.seed="$seed"
    done
    ;;
  x4-direct-equal-time | x8-direct-equal-time)
    stage=${1%%-*}
    if [ "$stage" = x4 ]; then start=$X2_TEACHER; else start=$X4_TEACHER; fi
    config=experiments/yonos-scale-distillation-controls/direct-$stage-from-x$((${stage#x} / 2))-small.yaml
    steps=$(python - "runs/$stage-distilled-seed0" "runs/$stage-direct-seed0" "${ARM_STEPS:-1500}" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "scripts")
from run_summary import training_records, wall_seconds  # the wall times docs/runs.md quotes
def seconds_per_step(run):
    train = training_records(Path(run))[1]
    return wall_seconds(train) / train[-1]["step"]
print(round(int(sys.argv[3]) * seconds_per_step(sys.argv[1]) / seconds_per_step(sys.argv[2]) / 100) * 100)
PY
)
    echo "$1: $steps steps" >&2
    [ -d "runs/$stage-direct-seed0-equal-time" ] || cp -r "runs/$stage-direct-seed0" "runs/$stage-direct-seed0-equal-time"
    run teacher "$config" "runs/$stage-direct-seed0-equal-time" "$steps" --set init_from="$start" --set run.seed=0
    ;;
  eval-claim2-x4) evaluate_claim2 4 ;;
  eval-claim2-x8) evaluate_claim2 8 ;;
  *) echo "usage: $0 a|b|c|d|x2|x4-distilled|x4-direct|eval-x4|x8-distilled|x8-direct|eval-x8|x4-decoder|" \
       "x4-direct-decoder|x4-direct-equal-time|eval-claim2-x4|x8-decoder|x8-direct-decoder|x8-direct-equal-time|" \
       "eval-claim2-x8" >&2; exit 2 ;;
esac
