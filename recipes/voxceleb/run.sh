#!/usr/bin/env bash
# SV-Mixer on VoxCeleb, the paper's setup: train on VoxCeleb2-dev (5,994 speakers) with MUSAN and
# RIRS_NOISES augmentation, distil WavLM-Large, test on VoxCeleb1-O/E/H (cleaned lists) and, where
# their corpora are present, VoxSRC-23 validation, VCMix and VOiCES (the paper's six columns).
# Paths are relative to the directory you run it from (default outputs: data/voxceleb/, exp/voxceleb/).
#   recipes/voxceleb/run.sh --ngpu 2              # everything; corpus locations in db.sh
#   recipes/voxceleb/run.sh --stage 3 --ngpu 8    # distillation onwards
set -euo pipefail
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$recipe_dir/../.." && pwd)"
. "$recipe_dir/db.sh"

stage=0
stop_stage=6
nj=16                               # CPU jobs for conversion, caching and extraction
ngpu=2                              # distillation GPUs (torchrun); the paper used 2× A6000
train_nj=1                          # stage 3: trainings at once (>1 only with --ngpu 0 or 1)
voxceleb1=$VOXCELEB1
voxceleb2_dev=$VOXCELEB2_DEV
data=data/voxceleb                  # Kaldi data dirs voxceleb2_dev/, voxceleb1/ and augment/
voxceleb2_wav=""                    # m4a → wav conversion output, ~6× the m4a size (default: $data/voxceleb2_wav)
voxsrc23=$VOXSRC23                  # VoxSRC-23 validation folder (missing: skipped with a warning)
vcmix=$VCMIX                        # VCMix folder (missing: skipped with a warning)
voices=$VOICES                      # VOiCES 2019 challenge release (missing: skipped with a warning)
voices_part=dev                     # VOiCES part: dev, or eval (with the post-evaluation keys)
musan=$MUSAN
rirs_noises=$RIRS_NOISES
exp=exp/voxceleb
teacher=WAVLM_LARGE                 # torchaudio bundle (downloaded by torchaudio) or a local HF dir
teacher_mode=cache                  # cache: stage 2 stores teacher layers (~0.85 TB/layer fp16); online: no cache
kd=mse                              # mse: the last layer (Tables I-IV) | distilhubert: 3 layers (Fig. 5)
teacher_layers=""                   # layers to cache and distil (default: from --kd and the teacher)
train_config=$root/conf/train_paper.yaml
model_conf_dir=$root/conf/model
students="svmixer_paper transformer_paper"
seeds=0                             # training seeds (train.seed), comma-separated: one run of every system each
nokd_students=""                    # students trained again with train.kd.lambda=0 (system <name>_nokd)
baselines=""                        # $model_conf_dir/<name>.yaml trained without a teacher (train.kd.name=null)
floor=true                          # true: the MFCC-mean cosine floor (svmix-floor) on VoxCeleb1
train_opts=""
extract_opts=""

recipe_options="stage stop_stage nj ngpu train_nj voxceleb1 voxceleb2_dev data voxceleb2_wav voxsrc23 vcmix voices voices_part
  musan rirs_noises exp
  teacher teacher_mode kd teacher_layers train_config model_conf_dir students seeds nokd_students baselines floor
  train_opts extract_opts"
help_message="Usage: $0 [--stage N] [--stop-stage M] [--name value ...]   (corpus paths: db.sh)
Stages:
  0  data preparation: VoxCeleb2-dev (m4a → wav with ffmpeg), VoxCeleb1 with trials_o/e/h, and the
     VoxSRC-23 validation, VCMix and VOiCES sets whose folders exist (each with its trials)
  1  augmentation resources: MUSAN noise/music/speech and RIRS_NOISES lists
  2  teacher feature caching (skipped with --teacher-mode online)
  3  training (torchrun on --ngpu GPUs): every system once per seed of --seeds
  4  embedding extraction (VoxCeleb1) and the MFCC-mean floor
  5  scoring and metrics on Vox1-O/E/H and the other sets, \$exp/RESULTS.md (it lists the sets skipped)
  6  export for deployment (ONNX / TorchScript; a one-pass student: torch.export .pt2)
Paths are relative to the directory you run from.
--teacher-layers defaults to what --kd distils: mse the teacher's last layer (24 for WavLM-Large),
distilhubert three evenly spaced layers ending at the last (8,16,24 for WavLM-Large)."
. "$root/tools/stage_lib.sh"
. "$root/tools/parse_options.sh" "$@"
. "$root/tools/setup_venv.sh"
. "$root/tools/recipe_stages.sh"

case "$kd" in
  mse) teacher_layers=${teacher_layers:-$(teacher_last_layer --teacher "$teacher")} ;;
  distilhubert)
    teacher_layers=${teacher_layers:-$(teacher_last_layer --teacher "$teacher" --split 3)}
    train_opts="--override train.kd.name=distilhubert${train_opts:+ $train_opts}" ;;
  *) recipe_error "--kd must be mse or distilhubert, got '$kd'" ;;
esac
voxceleb2_wav=${voxceleb2_wav:-$data/voxceleb2_wav}
train_data=$data/voxceleb2_dev
val_data=$data/voxceleb1           # validation on Vox1-O (its `trials`), as in the authors' code
test_root=$data
test_data=$test_root/voxceleb1
trials_names="trials_o trials_e trials_h"
# The other test conditions: each one list, "trials", in $data/<set>; a set whose corpus folder is
# missing (and that no earlier run prepared) is skipped with a one-line warning, in RESULTS.md too.
case "$voices_part" in dev|eval) ;; *) recipe_error "--voices-part must be dev or eval, got '$voices_part'" ;; esac
test_sets=voxceleb1
test_trials=""
test_missing=""
declare -A extra_src=([voxsrc23]="$voxsrc23" [vcmix]="$vcmix" [voices]="$voices")
declare -A extra_option=([voxsrc23]=VOXSRC23 [vcmix]=VCMIX [voices]=VOICES)
for set in voxsrc23 vcmix voices; do
  if [ -d "${extra_src[$set]}" ] || [ -f "$test_root/$set/trials" ]; then
    test_sets+=" $set"
    test_trials+="${test_trials:+;}$set=trials"
  else
    test_missing+="${test_missing:+;}$set=corpus folder '${extra_src[$set]}' not found (--${set}, ${extra_option[$set]} in db.sh)"
  fi
done
test_notes="voxsrc23=VoxSRC-23 validation;vcmix=VCMix: VoxConverse segments with VoxCeleb1-O;voices=VOiCES $voices_part: far-field rooms and distractors"
augment_dir=$data/augment
cache=$exp/teacher_cache
recipe_begin "$@"
IFS=';' read -r -a skipped <<< "$test_missing"
for why in "${skipped[@]}"; do svmix_log "warning: ${why%%=*}: ${why#*=}; not tested"; done

if in_stage 0; then
  svmix_log "stage 0: data preparation"
  run_step prep_vox2 -- python "$root/local/voxceleb.py" vox2 --src "$voxceleb2_dev" --out "$train_data" \
    --wav-dir "$voxceleb2_wav" --nj "$nj"
  run_step prep_vox1 -- python "$root/local/voxceleb.py" vox1 --src "$voxceleb1" --out "$test_data" --nj "$nj"
  run_step validate_vox2 "$train_data" -- svmix-validate-data "$train_data"
  run_step validate_vox1 "$test_data" -- svmix-validate-data "$test_data"
  for set in voxsrc23 vcmix voices; do
    [[ " $test_sets " == *" $set "* ]] && [ -d "${extra_src[$set]}" ] || continue
    case "$set" in
      voices) run_step prep_voices -- python "$root/local/voxceleb.py" voices --src "$voices" --part "$voices_part" \
                --out "$test_root/voices" --nj "$nj" ;;
      *) run_step "prep_$set" -- python "$root/local/voxceleb.py" list --name "$set" --src "${extra_src[$set]}" \
           --audio "$voxceleb1" --out "$test_root/$set" --nj "$nj" ;;
    esac
    run_step "validate_$set" "$test_root/$set" -- svmix-validate-data "$test_root/$set"
  done
fi

if in_stage 1; then
  svmix_log "stage 1: augmentation resources"
  run_step augment -- svmix-prepare-augment --out "$augment_dir" --musan "$musan" --rirs "$rirs_noises"
fi

run_shared_stages "$exp/RESULTS.md"
