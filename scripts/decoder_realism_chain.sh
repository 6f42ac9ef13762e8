#!/usr/bin/env bash
# The record of how the decoder and realism runs were first made, lane by lane. To rerun an experiment, use
# python scripts/experiment.py experiments/FOLDER (the arms as recipe overlays, the tables from their records).
# The learned decoder (YONOS decoder fine-tuning + StableSR CFW inside it) and one-step realism training, as run
# for docs/realism.md and the built-in x4 / x4-real of 2026-12-01. Every step is a committed command.
#   unet:     the UNet alone, continued (teacher loss, terminal fraction 0.5) from the shipped x4: one arm of
#             "which pays per CPU-hour"
#   decoder:  the learned decoder + CFW on the frozen x4 UNet (experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-learned.yaml): the second arm
#   joint:    the decoder and the UNet together as a one-step model (experiments/2026-12-01-x4-learned-decoder-and-joint-unet/one-step-x4-joint.yaml): the third
#   realism:  one-step adversarial training on the blind degradation against the Inception critic, from the joint
#             run at 2,000 steps (experiments/2026-12-02-x4-real-rounds/one-step-x4-real-adversarial.yaml; snapshot: runs/joint-x4-snap2000)
#   realism3: the same, fidelity terms kept strong, critic weight 0.01, no feature matching, from the joint run at
#             5,000 steps (experiments/2026-12-02-x4-real-rounds/one-step-x4-real-balanced.yaml; snapshot: runs/joint-x4-snap5000)
#   realism4: the blind fidelity model: round 3 without its critic (experiments/2026-12-02-x4-real-rounds/one-step-x4-real-fidelity.yaml)
#   realism5: round 4 run to 4,000 steps from the built-in x4 (configs/one-step-x4-real-long.yaml)
#   select-real5 | rules5 | pictures5: round 5 (UNet stored int8 and float16) and the shipped x4 and x4-real on the
#             val pairs (bicubic and blind; experiments/2026-12-02-x4-real-rounds/tables/x4_real_round5_val-*), the x4-real rule applied to them
#             (experiments/2026-12-02-x4-real-rounds/tables/x4_real_round5_rule.md), and crops of the external photos (docs/img/x4_real_round5.png)
#   real5-int8: round 5's decoder fine-tuned on its frozen int8 UNet (configs/decoder-x4-real-int8.yaml)
#             (REAL5_INT8=1 adds it to select-real5 and rules5; the rows already measured are reused)
#   critics:  the three critics (patchgan, inception, teacher) from the same start for the same minutes each
#             (2026-12-02: inception and teacher ran side by side, patchgan beside another run a session earlier)
#   arms:     the arms' validation curves as a table (experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/decoder_arms_val.md)
#   int8:     the shipped x4's decoder + CFW fine-tuned on its frozen int8 UNet (experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-int8.yaml;
#             2026-12-02, fifth session: the decoder had been trained on the float UNet before quantisation)
#   select-int8: the shipped x4 and that run on the bicubic val pairs, both as they ship (@storage=int8), at w = 0
#             and 1 (experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_int8_val-x4.md; the x4 rule of docs/realism.md decides)
#   package-x4-int8: that run as the built-in x4 (the previous card's baselines reused from runs/releases/x4-42820ab1156bfbed,
#             a copy of the previous built-in taken from git)
#   pictures-int8: crops of the external photos: the previous and the new x4 beside SPAN, Real-ESRGAN and HR
#   select:   every candidate on the val pairs (bicubic and blind), for the default rule of docs/realism.md
#             (ROUND3=1 adds round 3's snapshot at 1,176 steps (runs/realism3-snaps: copies of its checkpoints, the
#             later ones show a stamped texture) and round 4; rows already measured are reused)
#   select-real: rounds 3 and 4 on the val pairs (tables of their own)
#   rules:    docs/realism.md's rules applied to those tables (experiments/2026-12-01-default-model/tables/default_rule.md)
#   package-x4: the chosen x4 as the built-in (its card measured on test and the external photos)
#   package-x4-real: the chosen x4-real as the built-in (MODEL, SUMMARY, FACT1-3 [FACT4], COMMAND [COMMAND2], STORAGE (default int8) from the caller)
#   pictures: the crops in docs/img (x4 old vs new; the x4-real rounds)
#   fit-check: #26, the x4 against bicubic and SPAN on train-split and val-split crops (under- or over-fitting?)
#   compare-x4-real: the x4-real of 2026-11-26 (from git) against the shipped one, blind test and external pairs
#   compare-x4: the previous x4 (from git) against the new one on test and the external photos
#   lr-probe: #26, the joint x4 fine-tune at UNet learning rates 2e-5 and 1e-4, then 256-px crops (1,000 steps each)
#   lr-probe-long: the 1e-4 arm (LR: another) for up to 6,000 steps (MAX_STEPS), 65 minutes (MINUTES; resumable);
#             DECAY=N: the learning rates fall linearly to zero over the last N of MAX_STEPS
#   probe-select: those arms and their start on the val pairs (bicubic, one step); LONG=1 adds the long arms
#             (the 3e-4 arm by its snapshots at 5,860 and 13,500 steps: its run folder went on training)
#   x4-refit: SRC (a model folder) stored int8 as runs/x4-TAG-int8, then its decoder + CFW fine-tuned on that frozen
#             int8 UNet (experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-refit.yaml; runs/decoder-x4-TAG-int8)
#   select-3e-4: the shipped x4 and the refitted 3e-4 candidates on the bicubic val pairs as they ship (x4 rule of
#             docs/realism.md; experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_3e-4_val-x4.md); FINAL=TAG adds runs/decoder-x4-TAG-int8
#   pictures-3e-4: crops of the external photos: the shipped x4 and the 3e-4 candidate TAG beside SPAN and HR
#   package-x4-3e-4: the 3e-4 candidate TAG (runs/decoder-x4-TAG-int8) as the built-in x4 (baselines reused from
#             runs/releases/x4-4279a646c100bb3f, the fourth built-in from the repository history; STEPS: its UNet's steps, for the card)
#   knob:     #26, a realism end for the x4's fidelity knob: its decoder trunk (w = 0) fine-tuned for realism on
#             the frozen int8 UNet, CFW (w = 1) for fidelity; two arms side by side (experiments/2026-12-03-x4-realism-end/decoder-x4-gan-end.yaml
#             "gan", experiments/2026-12-03-x4-realism-end/decoder-x4-perceptual-end.yaml "perceptual"; runs/x4-realism-end-{gan,perceptual})
#   knob-cfw: an arm (ARM) then its CFW branch alone for 1,500 steps on its frozen trunk (runs/x4-knob-ARM-cfw)
#   select-knob: the shipped x4 and both arms (with and without the CFW-only phase), as they ship, at w = 0 and 1 on the bicubic val pairs
#             (a table without the lattice figure, added 2026-12-03, is measured again)
#             (experiments/2026-12-03-x4-realism-end/tables/x4_knob_val_*), and the knob rule of docs/realism.md (experiments/2026-12-03-x4-realism-end/tables/x4_knob_rule.md)
#   knob3:    round 3, round 2 continued 800 steps with the lattice loss (experiments/2026-12-03-x4-realism-end/decoder-x4-perceptual-lattice-end.yaml);
#             ROUND3=1 ... select-knob adds it to the candidates
#   knob4:    round 4, round 2 continued 800 steps with the absolute lattice loss on w = 0 only
#             (configs/decoder-x4-perceptual-lattice2-end.yaml); ROUND4=1 ... select-knob adds it
#   knob2 | select-knob2: round 2, the perceptual arm with the grid term at 0.3 (configs/decoder-x4-perceptual-grid-end.yaml),
#             and the knob rule over all candidates (select-knob2 is select-knob: each measures what is not yet measured)
#   pictures-knob: crops of the external photos: the shipped x4, an arm (ARM) at w = 0 and 1, Real-ESRGAN, HR
#   package-x4-knob: the chosen candidate (ARM: gan, perceptual, gan-cfw or perceptual-cfw) as the built-in x4, its default --fidelity 1 (baselines reused from
#             runs/releases/x4-b8ed37b1a3081566, the fifth built-in from the repository history)
#   real-knob: #22, the same realism end for x4-real (experiments/2026-12-03-x4-real-realism-end/decoder-x4-real-perceptual-end.yaml)
#   select-real-knob: the shipped x4-real and that run (w = 0 and 1), as they ship, on the blind and bicubic val
#             pairs (experiments/2026-12-03-x4-real-realism-end/tables/x4_real_knob_val-*), and the x4-real rule (experiments/2026-12-03-x4-real-realism-end/tables/x4_real_knob_rule.md)
#   real-knob2: round 2 of that realism end, with the Inception critic and the lattice loss
#             (experiments/2026-12-03-x4-real-realism-end/decoder-x4-real-critic-lattice-end.yaml); ROUND2=1 ... select-real-knob adds it
#   select-next: the second joint fine-tune cycle (runs/x4-next-3e-4, refitted by TAG=next-3e-4 ... x4-refit) beside the
#             fifth built-in's refitted decoder and the shipped x4 on the bicubic val pairs (experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_next_val-x4)
#   knob-next: the sixth built-in's knob recipe (round 2, then round 4 from it) on the second cycle's refitted model
#             (runs/x4-next-realism-end-perceptual-grid, runs/x4-next-realism-end-perceptual-lattice2)
#   select-knob-next: the knob rule over knob-next's two runs (as they ship), the sixth built-in (default w = 1) the model to
#             match (experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_next_knob_rule.md)
#   pictures-real-knob2: crops of the external photos (blind degradation): x4-real, round 2 at w = 0 and 1, Real-ESRGAN, HR
#   test:     the chosen models on the test pairs (published numbers)
# Usage: bash scripts/decoder_realism_chain.sh unet|decoder|joint|realism|realism3|realism4|realism5|select-real5|rules5|pictures5|real5-int8|critics|arms|select|select-real|rules|package-x4|package-x4-real|pictures|compare-x4|compare-x4-real|fit-check|int8|select-int8|package-x4-int8|pictures-int8|lr-probe|lr-probe-long|probe-select|x4-refit|select-3e-4|pictures-3e-4|package-x4-3e-4|knob|knob-cfw|select-knob|knob2|select-knob2|knob3|knob4|pictures-knob|package-x4-knob|real-knob|real-knob2|select-real-knob|pictures-real-knob2|select-next|knob-next|select-knob-next|test
# A killed run resumes from runs/<name>/checkpoint-latest. One CPU thread per run; two runs at a time at most.
set -euo pipefail
# a recipe (configs/) or an experiment overlay (experiments/*/) by name
# an earlier built-in by its digest, written once from the repository history (turbosr release)
release() { [ -d "runs/releases/$1-$2" ] || turbosr release "$1" "$2" -o "runs/releases/$1-$2"; }
recipe() { for f in configs/"$1".yaml experiments/*/"$1".yaml; do [ -e "$f" ] && { echo "$f"; return 0; }; done; return 1; }
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
latest=checkpoint-latest/model
CRITIC_MINUTES=${CRITIC_MINUTES:-15}
# the crops of the external photos every pictures lane shows (faces, sky, a roof edge, foliage)
crops="matplotlib__grace_hopper@180,170 scikit-learn__china@30,20 scikit-learn__china@510,280 scikit-image__coffee@300,60"
# the pair sets, metrics and baselines of every x4 card (package_builtin.py arguments)
x4_card=(--pairs 'test split, bicubic=data/test-x4' --pairs 'test split, Real-ESRGAN degradation=data/test-x4-blind'
  --pairs 'external photos, bicubic=data/external-x4'
  --pairs 'external photos, Real-ESRGAN degradation=data/external-x4-blind'
  --metrics psnr_y ssim_y niqe grid lattice patch_kid --baselines bicubic span_x4 realesrgan_x4plus)
as_shipped() {  # as_shipped <model folder> <new folder> <storage>: the model stored as a built-in would be, loaded back
  [ -d "$2" ] || python -c "import sys; from turbosr.pipeline import SRPipeline
SRPipeline.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2], storage=sys.argv[3])" "$@"
}
knob_run() {  # knob_run <candidate>: the run folder of a knob candidate (an arm, or an arm's CFW-only phase)
  case "$1" in *-cfw) echo runs/x4-knob-$1 ;; *) echo runs/x4-realism-end-$1 ;; esac
}
case "${1:?unet, decoder, joint, realism, realism3, realism4, realism5, select-real5, rules5, pictures5, real5-int8, critics, arms, select, select-real, rules, package-x4, package-x4-real, pictures, compare-x4, compare-x4-real, fit-check, int8, select-int8, package-x4-int8, pictures-int8, lr-probe, lr-probe-long, probe-select, x4-refit, select-3e-4, pictures-3e-4, package-x4-3e-4, knob, knob-cfw, select-knob, knob2, select-knob2, knob3, knob4, pictures-knob, package-x4-knob, real-knob, real-knob2, select-real-knob, pictures-real-knob2, select-next, knob-next, select-knob-next or test}" in
  unet)
    turbosr train teacher --config configs/teacher-x4-small.yaml --set init_from=src/turbosr/weights/x4 \
      --set terminal_fraction=0.5 --set run.max_steps=8000 --set optim.warmup_steps=100 --set run.num_threads=1 \
      --set run.output_dir=runs/x4-unet-cont ;;
  decoder) turbosr train decoder --config experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-learned.yaml ;;
  joint) turbosr train one-step --config experiments/2026-12-01-x4-learned-decoder-and-joint-unet/one-step-x4-joint.yaml ;;
  realism)
    [ -d runs/joint-x4-snap2000 ] || { echo "runs/joint-x4-snap2000: copy runs/joint-x4-learned/$latest at step 2000"; exit 1; }
    turbosr train one-step --config experiments/2026-12-02-x4-real-rounds/one-step-x4-real-adversarial.yaml ;;
  realism3)
    [ -d runs/joint-x4-snap5000 ] || { echo "runs/joint-x4-snap5000: copy runs/joint-x4-learned/$latest at step 5000"; exit 1; }
    turbosr train one-step --config experiments/2026-12-02-x4-real-rounds/one-step-x4-real-balanced.yaml ;;
  realism4)
    turbosr train one-step --config experiments/2026-12-02-x4-real-rounds/one-step-x4-real-fidelity.yaml ;;
  realism5)
    turbosr train one-step --config configs/one-step-x4-real-long.yaml ;;
  select-real5)
    for pairs in val-x4-blind val-x4; do
      degradation=bicubic; [ $pairs = val-x4 ] || degradation=realesrgan
      [ -f data/$pairs/manifest.json ] || turbosr data make-pairs data/corpus/manifest.json data/$pairs --scale 4 \
        --crop 256 --split val --degradation $degradation
      python benchmarks/quality_vs_steps.py --lq data/$pairs/lq --ref data/$pairs/hq --scale 4 --crop-border 4 \
        --threads "${EVAL_THREADS:-1}" --baselines bicubic realesrgan_x4plus \
        --model "x4 (shipped)=src/turbosr/weights/x4" --model "x4-real (shipped)=src/turbosr/weights/x4-real" \
        --model "round 5, int8=runs/realism-x4-real-long/$latest@storage=int8" \
        --model "round 5, float16=runs/realism-x4-real-long/$latest@storage=float16" \
        ${REAL5_INT8:+--model "round 5, decoder on its int8 UNet=runs/decoder-x4-real-int8/$latest@storage=int8"} \
        --steps 1 --metrics psnr_y ssim_y grid niqe patch_fid patch_kid --out experiments/2026-12-02-x4-real-rounds/tables/x4_real_round5_$pairs --resume
    done ;;
  rules5)
    python scripts/apply_rules.py --bicubic experiments/2026-12-02-x4-real-rounds/tables/x4_real_round5_val-x4.json \
      --blind experiments/2026-12-02-x4-real-rounds/tables/x4_real_round5_val-x4-blind.json --x4 "x4 (shipped)" \
      --x4-real "x4-real (shipped)" "round 5, int8" "round 5, float16" \
      ${REAL5_INT8:+"round 5, decoder on its int8 UNet"} > experiments/2026-12-02-x4-real-rounds/tables/x4_real_round5_rule.md ;;
  pictures5)
    for storage in int8 float16; do
      as_shipped runs/realism-x4-real-long/$latest runs/realism-x4-real-long-$storage $storage
    done
    [ -z "${REAL5_INT8:-}" ] || as_shipped runs/decoder-x4-real-int8/$latest runs/decoder-x4-real-int8-stored int8
    python scripts/side_by_side.py data/external-x4-blind --names $crops scikit-image__astronaut@170,30 \
      scikit-learn__flower@230,110 --column LQ=lq --column bicubic=bicubic \
      --column "Real-ESRGAN=baseline:realesrgan_x4plus" --column "x4-real (shipped)=model:x4-real" \
      --column "x4=model:x4" --column "round 5, int8=model:runs/realism-x4-real-long-int8" \
      --column "round 5, float16=model:runs/realism-x4-real-long-float16" \
      ${REAL5_INT8:+--column "round 5, int8 decoder=model:runs/decoder-x4-real-int8-stored"} --column HR=hr \
      --out docs/img/x4_real_round5.png ;;
  real5-int8)
    as_shipped runs/realism-x4-real-long/$latest runs/realism-x4-real-long-int8 int8
    turbosr train decoder --config configs/decoder-x4-real-int8.yaml ;;
  critics)
    for critic in patchgan inception teacher; do
      turbosr train one-step --config experiments/2026-12-02-x4-real-rounds/one-step-x4-real-adversarial.yaml --set adversarial.critic=$critic \
        --set run.max_minutes="$CRITIC_MINUTES" --set run.max_steps=100000 --set run.output_dir=runs/critic-$critic \
        --set adversarial.feature_matching=0 --set run.validate_every_steps=0
    done
    python benchmarks/quality_vs_steps.py --lq data/val-x4-blind/lq --ref data/val-x4-blind/hq --scale 4 \
      --crop-border 4 --threads 2 --baselines bicubic realesrgan_x4plus \
      --model "critic patchgan=runs/critic-patchgan/$latest" --model "critic inception=runs/critic-inception/$latest" \
      --model "critic teacher=runs/critic-teacher/$latest" --model "start (joint x4, 2,000 steps)=runs/joint-x4-snap2000" \
      --steps 1 --metrics psnr_y ssim_y grid niqe patch_fid patch_kid --out experiments/2026-12-02-x4-real-rounds/tables/critics_val ;;
  arms)
    { echo "# Which pays per CPU-minute: the UNet alone, the learned decoder alone, or both (one-step, val)"; echo
      echo "Validation during training: one-step PSNR-Y on 21 fixed 128-px val crops (bicubic x4) and the grid"
      echo "figure beside the HR crops' own. Minutes are training minutes on one CPU thread, each run sharing the"
      echo "2 cores with another job; the shipped x4, where every arm starts, is the row at 0 minutes. Command:"
      echo "\`bash scripts/decoder_realism_chain.sh arms\`"; echo
      python scripts/run_summary.py --curve runs/x4-unet-cont runs/decoder-x4-learned runs/joint-x4-learned
      python - <<'PY'
from turbosr.config import load_config
from turbosr.pipeline import SRPipeline
from turbosr.train.decoder import DecoderConfig
from turbosr.train.reporting import RunLog
from turbosr.train.validation import validate, validation_crops

data = load_config(DecoderConfig, "experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-learned.yaml").data
r = validate(SRPipeline.from_pretrained("src/turbosr/weights/x4"), validation_crops(data, 4, 21), data, 0,
             RunLog("runs", enabled=False))
print(f"| shipped x4 (the start) | 0 | 0.0 | {r['val_psnr_y']:.3f} | {r['val_grid']:.3f} (HR {r['val_grid_hr']:.3f}) |")
print(f"| bicubic | - | - | {r['val_psnr_y_bicubic']:.3f} | - |")
PY
    } > experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/decoder_arms_val.md ;;
  select)
    for pairs in val-x4 val-x4-blind; do
      python benchmarks/quality_vs_steps.py --lq data/$pairs/lq --ref data/$pairs/hq --scale 4 --crop-border 4 \
        --threads 1 --baselines bicubic realesrgan_x4plus --model "x4 (shipped)=src/turbosr/weights/x4" \
        --model "x4-real (shipped)=src/turbosr/weights/x4-real" --model "joint x4 (5,000 steps)=runs/joint-x4-snap5000" \
        --model "decoder x4 (3,500 steps)=runs/decoder-x4-learned/$latest" \
        --model "realism round 2 (1,775 steps)=runs/realism-x4-real/$latest" ${ROUND3:+--model "realism round 3 (1,176 steps)=runs/realism3-snaps/step-1176"} \
        ${ROUND3:+--model "realism round 4 (fidelity)=runs/realism-x4-real-fidelity/$latest"} \
        --steps 1 --metrics psnr_y ssim_y grid niqe patch_fid patch_kid --out experiments/2026-12-01-default-model/tables/default_rule_$pairs --resume
    done ;;
  select-real)
    # the realism rounds 3 and 4 on the val pairs of `select`, in tables of their own (the rows of select stay as
    # measured: the built-ins they name have since been replaced); experiments/2026-12-01-default-model/tables/default_rule.md reads both
    for pairs in val-x4 val-x4-blind; do
      python benchmarks/quality_vs_steps.py --lq data/$pairs/lq --ref data/$pairs/hq --scale 4 --crop-border 4 \
        --threads 1 --baselines --model "realism round 3 (1,176 steps)=runs/realism3-snaps/step-1176" \
        --model "realism round 4 (fidelity)=runs/realism-x4-real-fidelity/$latest" \
        --steps 1 --metrics psnr_y ssim_y grid niqe patch_fid patch_kid --out experiments/2026-12-01-default-model/tables/default_rule_$pairs-rounds34
    done ;;
  rules)
    python scripts/apply_rules.py --bicubic experiments/2026-12-01-default-model/tables/default_rule_val-x4.json \
      experiments/2026-12-01-default-model/tables/default_rule_val-x4-rounds34.json --blind experiments/2026-12-01-default-model/tables/default_rule_val-x4-blind.json \
      experiments/2026-12-01-default-model/tables/default_rule_val-x4-blind-rounds34.json \
      --x4 "x4 (shipped)" "joint x4 (5,000 steps)" "decoder x4 (3,500 steps)" \
      --x4-real "x4-real (shipped)" "realism round 2 (1,775 steps)" "realism round 3 (1,176 steps)" \
      "realism round 4 (fidelity)" > experiments/2026-12-01-default-model/tables/default_rule.md ;;
  package-x4)
    # the candidate the x4 rule of docs/realism.md picked on val (experiments/2026-12-01-default-model/tables/default_rule_val-x4.md)
    python scripts/package_builtin.py package runs/joint-x4-snap5000 --name x4 --storage int8 --threads 1 \
      "${x4_card[@]}" \
      ${REUSE:+--reuse-baselines "$REUSE"} \
      --summary "A small latent diffusion SR model trained by this project on 2 CPU cores, for clean or bicubic-style inputs (third built-in x4, 2026-12-02): the x4 UNet of 2026-11-26 and a new learned latent decoder with StableSR's CFW inside it, fine-tuned together as a one-step model. --fidelity W in [0, 1] weights the decoder's fusion of the input's features (0 or left out: the model's own output; 1: closest to the input)." \
      --fact "Start: the built-in x4 of 2026-11-26 (its UNet; its RGB refiner is replaced)." \
      --fact "Decoder: a convolutional decoder of the patch latent (models/decoders.py: 4 residual blocks of 128 channels at the latent resolution, one x8 sub-pixel convolution to RGB, added to the linear patch decode whose residual it learns; last layer zero at the start), and CFW inside it (a 64-channel encoder of the LQ image fused into the trunk through zero-initialised convolutions, scaled by w)." \
      --fact "Joint one-step fine-tune (turbosr train decoder, train_denoiser true): the UNet run once from t = T - 1 (learning rate 2e-5) and the decoder (2e-4) trained end to end on the decoded image with L1 + 0.2 SSIM + 0.5 Sobel-edge + 0.03 phase-profile grid term at w = 0; CFW trained at w = 1 on the same losses with the decoder trunk held fixed. 5,000 steps of batch 8, 128-px crops of the train split, bicubic x4, bf16 autocast, 85 training minutes on 1 CPU thread beside another run; denoiser stored int8 per channel." \
      --fact "Chosen on the val split by the x4 rule written in docs/realism.md before measuring (artifact figure within 0.03 of HR's on bicubic val, then highest PSNR-Y) over the previous x4 and the decoder-only fine-tune: experiments/2026-12-01-default-model/tables/default_rule_val-x4.md." \
      --training-command "turbosr train one-step --config experiments/2026-12-01-x4-learned-decoder-and-joint-unet/one-step-x4-joint.yaml   # stopped at step 5,000; runs/joint-x4-snap5000 is a copy of that checkpoint's model folder" ;;
  package-x4-real)
    # the x4-real candidate the rule picked on val (experiments/2026-12-01-default-model/tables/default_rule.md); baselines reused from x4's card
    python scripts/package_builtin.py package "${MODEL:?the chosen model folder}" --name x4-real \
      --storage "${STORAGE:-int8}" --threads 1 --reuse-baselines src/turbosr/weights/x4 \
      --pairs 'test split, bicubic=data/test-x4' --pairs 'test split, Real-ESRGAN degradation=data/test-x4-blind' \
      --pairs 'external photos, Real-ESRGAN degradation=data/external-x4-blind' \
      --metrics psnr_y ssim_y niqe grid patch_kid --baselines bicubic span_x4 realesrgan_x4plus \
      --summary "${SUMMARY:?one paragraph}" --fact "${FACT1:?}" --fact "${FACT2:?}" --fact "${FACT3:?}" \
      ${FACT4:+--fact "$FACT4"} --training-command "${COMMAND:?}" ${COMMAND2:+--training-command "$COMMAND2"} ;;
  pictures)
    # crops of the external photos (faces, sky, foliage, edges) beside Real-ESRGAN and HR
    python scripts/side_by_side.py data/external-x4 --names $crops scikit-image__astronaut@170,30 \
      scikit-learn__flower@230,110 --column bicubic=bicubic \
      --column "x4 of 2026-11-26=model:runs/releases/x4-a4d53aaa6352dfa0" --column "x4 (2026-12-02)=model:x4" \
      --column "SPAN x4=baseline:span_x4" --column "Real-ESRGAN=baseline:realesrgan_x4plus" --column HR=hr \
      --out docs/img/x4_side_by_side.png
    python scripts/side_by_side.py data/external-x4-blind --names $crops --column LQ=lq \
      --column "Real-ESRGAN=baseline:realesrgan_x4plus" --column "x4-real (11-26)=model:x4-real" \
      --column "round 2=model:runs/realism-x4-real/$latest" --column "round 3, 1,176=model:runs/realism3-snaps/step-1176" \
      --column "round 3, 2,500=model:runs/realism3-snaps/step-2500" \
      --column "round 4=model:runs/realism-x4-real-fidelity/$latest" --column HR=hr --out docs/img/x4_real_rounds.png ;;
  compare-x4)
    # the x4 of 2026-11-26 (from git) against today's, on the test pairs and the external photos (PSNR, grid)
    release x4 a4d53aaa6352dfa0  # the built-in of commit 806c5f5
    for pairs in test-x4 test-x4-blind external-x4 external-x4-blind; do
      python benchmarks/quality_vs_steps.py --lq data/$pairs/lq --ref data/$pairs/hq --scale 4 --crop-border 4 \
        --threads 1 --baselines bicubic --model "x4 of 2026-11-26=runs/releases/x4-a4d53aaa6352dfa0" \
        --model "x4 of 2026-12-02=src/turbosr/weights/x4" --model "x4 of 2026-12-02, --fidelity 1=src/turbosr/weights/x4@fidelity=1" \
        --steps 1 --metrics psnr_y ssim_y grid --out docs/benchmarks/x4_old_vs_new_$pairs --resume
    done ;;
  fit-check)
    # #26: is the x4 short of SPAN because it under-fits or because it over-fits? The same measurement on centre
    # crops of the train split (which it was trained on) and of the val split
    for split in train val; do
      [ -f data/$split-x4/manifest.json ] || turbosr data make-pairs data/corpus/manifest.json data/$split-x4 \
        --scale 4 --crop 256 --split $split
      python benchmarks/quality_vs_steps.py --lq data/$split-x4/lq --ref data/$split-x4/hq --scale 4 --crop-border 4 \
        --threads "${EVAL_THREADS:-1}" --baselines bicubic span_x4 --model "x4 (shipped)=src/turbosr/weights/x4" \
        --steps 1 --metrics psnr_y ssim_y --out experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_fit_check_$split-x4 --resume
    done ;;
  compare-x4-real)
    # the x4-real of 2026-11-26 (from git) against its replacement on the blind test pairs and external photos
    release x4-real 9c9c5129f9af69a7  # the built-in of commit 7ed92cb
    for pairs in test-x4-blind external-x4-blind; do
      python benchmarks/quality_vs_steps.py --lq data/$pairs/lq --ref data/$pairs/hq --scale 4 --crop-border 4 \
        --threads 1 --model "x4-real of 2026-11-26=runs/releases/x4-real-9c9c5129f9af69a7" \
        --model "x4-real of 2026-12-03=src/turbosr/weights/x4-real" --steps 1 \
        --metrics psnr_y ssim_y grid niqe patch_kid --out docs/benchmarks/x4_real_old_vs_new_$pairs --resume
    done ;;
  int8) turbosr train decoder --config experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-int8.yaml ;;
  lr-probe)
    # #26: the joint x4 fine-tune at two UNet learning rates, 1,000 steps each from the built-in x4
    for lr in 2e-5 1e-4; do
      turbosr train one-step --config experiments/2026-12-01-x4-learned-decoder-and-joint-unet/one-step-x4-joint-probe.yaml --set denoiser_learning_rate=$lr \
        --set run.output_dir=runs/x4-lr-probe-$lr
    done
    # and 256-px crops (32² latents, the test crops' size) at batch 2: the same pixels per step as 8 x 128²
    turbosr train one-step --config experiments/2026-12-01-x4-learned-decoder-and-joint-unet/one-step-x4-joint-probe.yaml --set data.crop_size=256 \
      --set run.batch_size=2 --set run.output_dir=runs/x4-crop-probe-256 ;;
  lr-probe-long)
    # the UNet learning rate 1e-4 arm, run on (the best of the three probes, still climbing at 1,000 steps): does it
    # keep climbing? 65 minutes per call; a second call resumes it from runs/x4-lr-probe-long
    # LR=3e-4 runs a faster arm beside it (runs/x4-lr-probe-long-3e-4)
    turbosr train one-step --config experiments/2026-12-01-x4-learned-decoder-and-joint-unet/one-step-x4-joint-probe.yaml --set denoiser_learning_rate=${LR:-1e-4} \
      --set run.max_steps=${MAX_STEPS:-6000} --set run.max_minutes=${MINUTES:-65} --set run.validate_every_steps=500 \
      --set run.checkpoint_every_steps=500 --set run.output_dir=runs/x4-lr-probe-long${LR:+-$LR} \
      ${DECAY:+--set optim.decay_steps=$DECAY} ;;
  probe-select)
    # the lr-probe arms and their start on the same val pairs (the runs' own validation crops differ in size)
    python benchmarks/quality_vs_steps.py --lq data/val-x4/lq --ref data/val-x4/hq --scale 4 --crop-border 4 \
      --threads "${EVAL_THREADS:-1}" --baselines bicubic --model "start: x4 (shipped), as float=src/turbosr/weights/x4" \
      --model "UNet lr 2e-5, 1,000 steps=runs/x4-lr-probe-2e-5/$latest" \
      --model "UNet lr 1e-4, 1,000 steps=runs/x4-lr-probe-1e-4/$latest" \
      --model "256-px crops, batch 2, 1,000 steps=runs/x4-crop-probe-256/$latest" \
      ${LONG:+--model "UNet lr 1e-4, 6,000 steps (62 min)=runs/x4-lr-probe-long/$latest"} \
      ${LONG:+--model "UNet lr 3e-4, 5,860 steps (60 min)=runs/x4-lr-probe-long-3e-4-step5860"} \
      ${LONG:+--model "UNet lr 3e-4, 13,500 steps (the last 4,000 decaying)=runs/x4-lr-probe-long-3e-4-step13500"} \
      ${LONG:+--model "UNet lr 1e-3, 1,500 steps (stopped)=runs/x4-lr-probe-long-1e-3/$latest"} \
      --steps 1 --metrics psnr_y ssim_y grid --out experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_probes_val-x4 --resume ;;
  select-int8)
    python benchmarks/quality_vs_steps.py --lq data/val-x4/lq --ref data/val-x4/hq --scale 4 --crop-border 4 \
      --threads 1 --baselines bicubic --model "x4 (shipped)=src/turbosr/weights/x4@storage=int8" \
      --model "x4 (shipped), --fidelity 1=src/turbosr/weights/x4@storage=int8@fidelity=1" \
      --model "decoder on the int8 UNet (4,000 steps)=runs/decoder-x4-int8/$latest@storage=int8" \
      --model "decoder on the int8 UNet (4,000 steps), --fidelity 1=runs/decoder-x4-int8/$latest@storage=int8@fidelity=1" \
      --steps 1 --metrics psnr_y ssim_y grid --out experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_int8_val-x4 --resume ;;
  package-x4-int8)
    release x4 42820ab1156bfbed  # the built-in of commit bcf0501
    python scripts/package_builtin.py package runs/decoder-x4-int8/$latest --name x4 --storage int8 --threads 1 \
      "${x4_card[@]}" \
      --reuse-baselines runs/releases/x4-42820ab1156bfbed \
      --summary "A small latent diffusion SR model trained by this project on 2 CPU cores, for clean or bicubic-style inputs (fourth built-in x4, 2026-12-02): the one-step x4 UNet of the third built-in, stored as int8, and its learned latent decoder with StableSR's CFW inside it, fine-tuned again on that frozen int8 UNet. --fidelity W in [0, 1] weights the decoder's fusion of the input's features (0 or left out: the model's own output; 1: closest to the input)." \
      --fact "Start: the built-in x4 of 2026-12-02 (third built-in): a one-step UNet fine-tuned jointly with a learned latent decoder, its UNet stored as int8 per output channel; its decoder had been trained on the float UNet's latents, and on the int8 UNet's latents it printed the latent's 8-px pattern (docs/realism.md)." \
      --fact "Decoder: a convolutional decoder of the patch latent (models/decoders.py: 4 residual blocks of 128 channels at the latent resolution, one x8 sub-pixel convolution to RGB, added to the linear patch decode whose residual it learns), and CFW inside it (a 64-channel encoder of the LQ condition latent fused into the trunk through zero-initialised convolutions, scaled by w)." \
      --fact "Decoder fine-tuning on the frozen int8 UNet (turbosr train decoder, experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-int8.yaml): the trunk at w = 0 with L1 + 0.2 SSIM + 0.5 Sobel-edge + 0.03 phase-profile grid term, CFW at w = 1 on the same losses with the trunk held fixed; 4,000 steps of batch 8, 128-px crops of the train split, bicubic x4, learning rate 1e-4, bf16 autocast, one CPU thread beside another run. The UNet's stored int8 weights are unchanged; the decoder is stored in float16." \
      --fact "Chosen on the val split, measured as it ships, by the x4 rule of docs/realism.md written before measuring (artifact figure within 0.03 of HR's on bicubic val, then highest PSNR-Y): experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_int8_val-x4.md." \
      --training-command "turbosr train one-step --config experiments/2026-12-01-x4-learned-decoder-and-joint-unet/one-step-x4-joint.yaml   # the third built-in x4 (stopped at step 5,000), stored with --storage int8" \
      --training-command "turbosr train decoder --config experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-int8.yaml" ;;
  pictures-int8)
    python scripts/side_by_side.py data/external-x4 --names $crops scikit-image__astronaut@170,30 \
      scikit-learn__flower@230,110 --column bicubic=bicubic \
      --column "x4 (third, int8)=model:runs/releases/x4-42820ab1156bfbed" --column "x4 (fourth)=model:x4" \
      --column "SPAN x4=baseline:span_x4" --column "Real-ESRGAN=baseline:realesrgan_x4plus" --column HR=hr \
      --out docs/img/x4_int8_side_by_side.png ;;
  x4-refit)
    as_shipped "${SRC:?model folder}" runs/x4-${TAG:?name}-int8 int8
    turbosr train decoder --config experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-refit.yaml --set init_from=runs/x4-$TAG-int8 \
      --set run.output_dir=runs/decoder-x4-$TAG-int8 ;;
  select-3e-4)
    python benchmarks/quality_vs_steps.py --lq data/val-x4/lq --ref data/val-x4/hq --scale 4 --crop-border 4 \
      --threads 1 --baselines bicubic --model "x4 (shipped)=src/turbosr/weights/x4@storage=int8" \
      --model "3e-4 step 5,860, int8, decoder refitted=runs/decoder-x4-3e-4-step5860-int8/$latest@storage=int8" \
      --model "3e-4 step 5,860, int8, decoder refitted, --fidelity 1=runs/decoder-x4-3e-4-step5860-int8/$latest@storage=int8@fidelity=1" \
      ${FINAL:+--model "3e-4 ${FINAL#3e-4-}, int8, decoder refitted=runs/decoder-x4-$FINAL-int8/$latest@storage=int8"} \
      ${FINAL:+--model "3e-4 ${FINAL#3e-4-}, int8, decoder refitted, --fidelity 1=runs/decoder-x4-$FINAL-int8/$latest@storage=int8@fidelity=1"} \
      --steps 1 --metrics psnr_y ssim_y grid --out experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_3e-4_val-x4 --resume ;;
  pictures-3e-4)
    as_shipped runs/decoder-x4-${TAG:?name}-int8/$latest runs/decoder-x4-$TAG-int8-stored int8
    python scripts/side_by_side.py data/external-x4 --names $crops scikit-image__astronaut@170,30 \
      scikit-learn__flower@230,110 --column bicubic=bicubic --column "x4 (shipped)=model:x4" \
      --column "x4, $TAG (int8, decoder refitted)=model:runs/decoder-x4-$TAG-int8-stored" \
      --column "SPAN x4=baseline:span_x4" --column "Real-ESRGAN=baseline:realesrgan_x4plus" --column HR=hr \
      --out docs/img/x4_3e-4_side_by_side.png ;;
  package-x4-3e-4)
    release x4 4279a646c100bb3f  # the built-in of commit 1331629
    python scripts/package_builtin.py package runs/decoder-x4-${TAG:?name}-int8/$latest --name x4 --storage int8 --threads 1 \
      "${x4_card[@]}" \
      --reuse-baselines runs/releases/x4-4279a646c100bb3f \
      --summary "A small latent diffusion SR model trained by this project on 2 CPU cores, for clean or bicubic-style inputs (fifth built-in x4, 2026-12-03): the fourth built-in's one-step UNet and learned latent decoder (StableSR's CFW inside it) fine-tuned together for ${STEPS:?UNet steps} more steps at a higher UNet learning rate, the UNet stored as int8 and the decoder fine-tuned again on that frozen int8 UNet. --fidelity W in [0, 1] weights the decoder's fusion of the input's features (0 or left out: the model's own output; 1: closest to the input)." \
      --fact "Start: the built-in x4 of 2026-12-02 (fourth built-in, weights digest 4279a646c100bb3f), UNet as float from its int8 storage." \
      --fact "Joint one-step fine-tune (turbosr train one-step, experiments/2026-12-01-x4-learned-decoder-and-joint-unet/one-step-x4-joint-probe.yaml with the UNet learning rate 3e-4, 128-px crops, batch 8, bicubic x4, L1 + 0.2 SSIM + 0.5 Sobel-edge + 0.03 grid term at w = 0, CFW at w = 1 on the same losses; decoder learning rate 1e-4; EMA 0.999; bf16 autocast, one CPU thread): $STEPS steps${DECAY_NOTE:+, $DECAY_NOTE}." \
      --fact "Decoder: a convolutional decoder of the patch latent (models/decoders.py: 4 residual blocks of 128 channels at the latent resolution, one x8 sub-pixel convolution to RGB, added to the linear patch decode whose residual it learns), and CFW inside it (a 64-channel encoder of the LQ condition latent fused into the trunk through zero-initialised convolutions, scaled by w)." \
      --fact "Decoder fine-tuning on the frozen int8 UNet (experiments/2026-12-01-x4-learned-decoder-and-joint-unet/decoder-x4-refit.yaml): the same losses, 3,000 steps, learning rate 1e-4; the UNet's stored int8 weights are unchanged, the decoder is stored in float16." \
      --fact "Chosen on the val split, measured as it ships, by the rule of docs/realism.md written before measuring (artifact figure within 0.03 of HR's on bicubic val, then highest PSNR-Y): experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_3e-4_val-x4.md." \
      --training-command "${COMMAND:?the joint fine-tune command}" \
      --training-command "SRC=<that run>/checkpoint-latest/model TAG=$TAG bash scripts/decoder_realism_chain.sh x4-refit" ;;
  knob)
    for arm in gan perceptual; do
      OMP_NUM_THREADS=1 turbosr train decoder --config "$(recipe decoder-x4-$arm-end)" > runs/x4-$arm-end.out 2>&1 &
    done
    wait ;;
  knob-cfw)
    OMP_NUM_THREADS=1 turbosr train decoder --config "$(recipe decoder-x4-${ARM:?gan or perceptual}-end)" \
      --set init_from=runs/x4-realism-end-$ARM/$latest --set loss.l1=0 --set loss.grid=0 \
      --set adversarial.weight=0 --set adversarial.feature_matching=0 --set run.max_steps=1500 \
      --set optim.decay_steps=500 --set run.output_dir=runs/x4-knob-$ARM-cfw ;;
  select-knob|select-knob2)  # every candidate measured once (tables kept), then the rule over all of them
    measured() { grep -q '"lattice"' "experiments/2026-12-03-x4-realism-end/tables/x4_knob_val_$1.json" 2>/dev/null; }  # with every clause's figure
    measured shipped || python benchmarks/fidelity_curve.py --model src/turbosr/weights/x4 \
      --pairs data/val-x4 --weights 0 1 --baselines bicubic --threads 1 --out experiments/2026-12-03-x4-realism-end/tables/x4_knob_val_shipped
    candidates=()
    for tag in perceptual-grid ${ROUND3:+perceptual-lattice} ${ROUND4:+perceptual-lattice2} gan gan-cfw perceptual perceptual-cfw; do
      if ! measured $tag; then
        as_shipped "$(knob_run $tag)/$latest" runs/x4-knob-$tag-stored int8
        python benchmarks/fidelity_curve.py --model runs/x4-knob-$tag-stored --pairs data/val-x4 --weights 0 1 \
          --threads 1 --out experiments/2026-12-03-x4-realism-end/tables/x4_knob_val_$tag
      fi
      candidates+=(--candidate "$tag=experiments/2026-12-03-x4-realism-end/tables/x4_knob_val_$tag.json")
    done
    python scripts/knob_rule.py --shipped experiments/2026-12-03-x4-realism-end/tables/x4_knob_val_shipped.json "${candidates[@]}" \
      > experiments/2026-12-03-x4-realism-end/tables/x4_knob_rule.md ;;
  knob2)
    OMP_NUM_THREADS=1 turbosr train decoder --config configs/decoder-x4-perceptual-grid-end.yaml ;;
  knob3)  # round 3: round 2 continued with the lattice loss (its w = 0 missed the lattice clause)
    OMP_NUM_THREADS=1 turbosr train decoder --config experiments/2026-12-03-x4-realism-end/decoder-x4-perceptual-lattice-end.yaml ;;
  knob4)  # round 4: the same from round 2 with the absolute lattice loss, on the w = 0 end only
    OMP_NUM_THREADS=1 turbosr train decoder --config configs/decoder-x4-perceptual-lattice2-end.yaml ;;
  pictures-knob)
    as_shipped "$(knob_run "${ARM:?a knob candidate}")/$latest" runs/x4-knob-$ARM-stored int8
    python scripts/side_by_side.py data/external-x4 --names $crops scikit-image__astronaut@170,30 \
      scikit-learn__flower@230,110 --column bicubic=bicubic --column "x4 (shipped)=model:x4" \
      --column "$ARM at w 0=model:runs/x4-knob-$ARM-stored@fidelity=0" \
      --column "$ARM at w 1=model:runs/x4-knob-$ARM-stored@fidelity=1" \
      --column "Real-ESRGAN=baseline:realesrgan_x4plus" --column HR=hr --out docs/img/x4_knob_$ARM.png ;;
  package-x4-knob)  # ARM: the candidate the knob rule chose
    release x4 b8ed37b1a3081566  # the built-in of commit 6dd77cf
    arm=${ARM%-cfw}; src=$(knob_run "$ARM")/$latest
    fm="L1 x 0.5 + feature matching on the frozen InceptionV3's mid-level features x 1"  # every arm's w = 0 start
    case "${arm:?gan, perceptual, perceptual-grid, perceptual-lattice, perceptual-lattice2, gan-cfw or perceptual-cfw}" in
      gan) w0_loss="$fm + a PatchGAN hinge term x 0.05 from step 200 + the grid term x 0.1" ;;
      perceptual) w0_loss="$fm + the grid term x 0.1 (no critic)" ;;
      perceptual-grid) w0_loss="$fm + the grid term x 0.3 (no critic)" ;;
      perceptual-lattice2) w0_loss="$fm + the grid term x 0.3 (no critic), then 800 more steps with the lattice term (power on the latent lattice's frequencies above the HR crop's) x 0.3 added, learning rate 5e-5 falling linearly to zero over the last 400" ;;
      perceptual-lattice) w0_loss="$fm + the grid term x 0.3 (no critic), then 800 more steps with the lattice term x 0.3 added (x 0.1 on the CFW end), learning rate 5e-5 falling linearly to zero over the last 400" ;;
    esac
    schedule="3,000 steps, 128-px crops, batch 8, bicubic x4, learning rate 1e-4 falling linearly to zero over the last 1,000 steps"
    case "$arm" in perceptual-grid|perceptual-lattice*) schedule="2,500 steps, 128-px crops, batch 8, bicubic x4, learning rate 1e-4 falling linearly to zero over the last 800 steps" ;; esac
    config=$(recipe decoder-x4-$arm-end)
    cfw_fact=(); cfw_command=(); start_command=(); config_text=$config
    case "$arm" in perceptual-lattice*)  # rounds 3 and 4 continue round 2's run
      start_command=(--training-command "turbosr train decoder --config configs/decoder-x4-perceptual-grid-end.yaml   # round 2, the start")
      config_text="configs/decoder-x4-perceptual-grid-end.yaml, then $config" ;; esac
    if [ "$arm" != "$ARM" ]; then
      cfw_fact=(--fact "Then CFW alone on that frozen trunk: 1,500 steps, the same CFW loss, learning rate 1e-4 falling linearly to zero over the last 500 steps (the w = 0 terms off).")
      cfw_command=(--training-command "ARM=$arm bash scripts/decoder_realism_chain.sh knob-cfw")
    fi
    python scripts/package_builtin.py package $src --name x4 --storage int8 --threads 1 \
      --default-fidelity 1 "${x4_card[@]}" --reuse-baselines runs/releases/x4-b8ed37b1a3081566 \
      --summary "A small latent diffusion SR model trained by this project on 2 CPU cores, for clean or bicubic-style inputs (sixth built-in x4, $(date +%Y-%m-%d)): the fifth built-in's one-step int8 UNet, unchanged, with its learned latent decoder given a realism end. --fidelity W in [0, 1] is StableSR's knob: 1 (the default, also when left out) fuses the input's features into the decoder for the most faithful output; 0 is the decoder's own output, trained for perceptual realism (sharper texture, less faithful); values between blend the two." \
      --fact "Start: the built-in x4 of 2026-12-03 (fifth built-in, weights digest b8ed37b1a3081566); its int8 UNet frozen as stored." \
      --fact "Decoder: a convolutional decoder of the patch latent (models/decoders.py: 4 residual blocks of 128 channels at the latent resolution, one x8 sub-pixel convolution to RGB, added to the linear patch decode whose residual it learns), and CFW inside it (a 64-channel encoder of the LQ condition latent fused into the trunk through zero-initialised convolutions, scaled by w)." \
      --fact "Decoder fine-tuning ($config_text, $schedule, bf16 autocast, one CPU thread): the trunk (w = 0) on $w0_loss; CFW (w = 1) on L1 + 0.2 SSIM + 0.5 Sobel-edge + 0.03 grid term with the trunk held fixed, as StableSR trains CFW on a fixed decoder." \
      "${cfw_fact[@]}" \
      --fact "Chosen on the val split, measured as it ships, by the knob rule of docs/realism.md written before measuring (default output within 0.05 dB of the fifth built-in's, the knob spanning at least 0.3 dB, grid within 0.03 of HR's and the lattice figure at most HR's + 3 dB at both ends, w = 0's patch KID below w = 1's): experiments/2026-12-03-x4-realism-end/tables/x4_knob_rule.md." \
      "${start_command[@]}" \
      --training-command "turbosr train decoder --config $config   # the chain's knob lane runs gan and perceptual, knob2 perceptual-grid, knob4 perceptual-lattice2" \
      "${cfw_command[@]}" ;;
  real-knob)
    OMP_NUM_THREADS=1 turbosr train decoder --config experiments/2026-12-03-x4-real-realism-end/decoder-x4-real-perceptual-end.yaml ;;
  real-knob2)
    OMP_NUM_THREADS=1 turbosr train decoder --config experiments/2026-12-03-x4-real-realism-end/decoder-x4-real-critic-lattice-end.yaml ;;
  select-next)
    python benchmarks/quality_vs_steps.py --lq data/val-x4/lq --ref data/val-x4/hq --scale 4 --crop-border 4 \
      --threads 1 --baselines bicubic --model "x4 (shipped) at w 1=src/turbosr/weights/x4@fidelity=1" \
      --model "fifth built-in, refitted, w 0=runs/decoder-x4-3e-4-step13500-int8/$latest@storage=int8@fidelity=0" \
      --model "fifth built-in, refitted, w 1=runs/decoder-x4-3e-4-step13500-int8/$latest@storage=int8@fidelity=1" \
      --model "second cycle, int8, refitted, w 0=runs/decoder-x4-next-3e-4-int8/$latest@storage=int8@fidelity=0" \
      --model "second cycle, int8, refitted, w 1=runs/decoder-x4-next-3e-4-int8/$latest@storage=int8@fidelity=1" \
      --steps 1 --metrics psnr_y ssim_y grid lattice --out experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_next_val-x4 --resume ;;
  knob-next)  # THREADS=2 when it runs alone
    threads=(--set run.num_threads=${THREADS:-1})
    turbosr train decoder --config configs/decoder-x4-perceptual-grid-end.yaml "${threads[@]}" \
      --set init_from=runs/decoder-x4-next-3e-4-int8/$latest --set run.output_dir=runs/x4-next-realism-end-perceptual-grid
    turbosr train decoder --config configs/decoder-x4-perceptual-lattice2-end.yaml "${threads[@]}" \
      --set init_from=runs/x4-next-realism-end-perceptual-grid/$latest \
      --set run.output_dir=runs/x4-next-realism-end-perceptual-lattice2 ;;
  select-knob-next)
    [ -f experiments/2026-12-03-x4-realism-end/tables/x4_knob_val_sixth.json ] || python benchmarks/fidelity_curve.py \
      --model src/turbosr/weights/x4 --pairs data/val-x4 --weights 0 1 --baselines bicubic --threads 1 \
      --out experiments/2026-12-03-x4-realism-end/tables/x4_knob_val_sixth
    candidates=()
    for tag in perceptual-grid perceptual-lattice2; do
      [ -f experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_next_knob_val_$tag.json ] || {
        as_shipped runs/x4-next-realism-end-$tag/$latest runs/x4-next-knob-$tag-stored int8
        python benchmarks/fidelity_curve.py --model runs/x4-next-knob-$tag-stored --pairs data/val-x4 --weights 0 1 \
          --threads 1 --out experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_next_knob_val_$tag; }
      candidates+=(--candidate "next-$tag=experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_next_knob_val_$tag.json")
    done
    python scripts/knob_rule.py --shipped experiments/2026-12-03-x4-realism-end/tables/x4_knob_val_sixth.json --shipped-default 1 \
      "${candidates[@]}" > experiments/2026-12-01-x4-learned-decoder-and-joint-unet/tables/x4_next_knob_rule.md ;;
  pictures-real-knob2)
    as_shipped runs/x4-real-critic-lattice-end/$latest runs/x4-real-knob2-stored int8
    python scripts/side_by_side.py data/external-x4-blind --names $crops scikit-image__astronaut@170,30 \
      scikit-learn__flower@230,110 --column LQ=lq --column "x4-real (shipped)=model:x4-real" \
      --column "round 2 at w 0=model:runs/x4-real-knob2-stored@fidelity=0" \
      --column "round 2 at w 1=model:runs/x4-real-knob2-stored@fidelity=1" \
      --column "Real-ESRGAN=baseline:realesrgan_x4plus" --column HR=hr --out docs/img/x4_real_knob2.png ;;
  select-real-knob)  # ROUND2=1: round 2 (real-knob2) joins the candidates
    as_shipped runs/x4-real-perceptual-end/$latest runs/x4-real-knob-stored int8
    round2=() round2_names=()
    if [ "${ROUND2:-0}" = 1 ]; then
      as_shipped runs/x4-real-critic-lattice-end/$latest runs/x4-real-knob2-stored int8
      round2=(--model "round 2 at w 0=runs/x4-real-knob2-stored@fidelity=0"
        --model "round 2 at w 1=runs/x4-real-knob2-stored@fidelity=1")
      round2_names=("round 2 at w 0" "round 2 at w 1")
    fi
    for pairs in val-x4-blind val-x4; do
      python benchmarks/quality_vs_steps.py --lq data/$pairs/lq --ref data/$pairs/hq --scale 4 --crop-border 4 \
        --threads 1 --baselines bicubic realesrgan_x4plus --model "x4 (built-in)=src/turbosr/weights/x4" \
        --model "x4-real (shipped)=src/turbosr/weights/x4-real" \
        --model "realism end at w 0=runs/x4-real-knob-stored@fidelity=0" \
        --model "realism end at w 1=runs/x4-real-knob-stored@fidelity=1" "${round2[@]}" --steps 1 \
        --metrics psnr_y ssim_y grid lattice niqe patch_kid --out experiments/2026-12-03-x4-real-realism-end/tables/x4_real_knob_$pairs --resume
    done
    python scripts/apply_rules.py --bicubic experiments/2026-12-03-x4-real-realism-end/tables/x4_real_knob_val-x4.json \
      --blind experiments/2026-12-03-x4-real-realism-end/tables/x4_real_knob_val-x4-blind.json --x4 "x4 (built-in)" \
      --x4-real "x4-real (shipped)" "realism end at w 0" "realism end at w 1" "${round2_names[@]}" \
      > experiments/2026-12-03-x4-real-realism-end/tables/x4_real_knob_rule.md ;;
  test)
    for pairs in test-x4 test-x4-blind; do
      python benchmarks/quality_vs_steps.py --lq data/$pairs/lq --ref data/$pairs/hq --scale 4 --crop-border 4 \
        --threads 1 --baselines bicubic realesrgan_x4plus span_x4 --model "x4=src/turbosr/weights/x4" \
        --model "x4-real=src/turbosr/weights/x4-real" --steps 1 \
        --metrics psnr_y ssim_y grid lattice niqe patch_fid patch_kid --out docs/benchmarks/builtins_$pairs --resume
    done ;;
esac
