#!/usr/bin/env bash
# SV-Mixer on VoxCeleb, the paper's setup: train on VoxCeleb2-dev (5,994 speakers) with MUSAN and
# RIRS_NOISES augmentation, distil WavLM-Large, test on VoxCeleb1-O/E/H (cleaned lists).
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
voxceleb1=$VOXCELEB1
voxceleb2_dev=$VOXCELEB2_DEV
data=data/voxceleb                  # Kaldi data dirs voxceleb2_dev/, voxceleb1/ and augment/
voxceleb2_wav=""                    # m4a → wav conversion output, ~6× the m4a size (default: $data/voxceleb2_wav)
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

recipe_options="stage stop_stage nj ngpu voxceleb1 voxceleb2_dev data voxceleb2_wav musan rirs_noises exp
  teacher teacher_mode kd teacher_layers train_config model_conf_dir students seeds nokd_students baselines floor
  train_opts extract_opts"
help_message="Usage: $0 [--stage N] [--stop-stage M] [--name value ...]   (corpus paths: db.sh)
Stages:
  0  data preparation: VoxCeleb2-dev (m4a → wav with ffmpeg) and VoxCeleb1 with trials_o/e/h
  1  augmentation resources: MUSAN noise/music/speech and RIRS_NOISES lists
  2  teacher feature caching (skipped with --teacher-mode online)
  3  training (torchrun on --ngpu GPUs): every system once per seed of --seeds
  4  embedding extraction (VoxCeleb1) and the MFCC-mean floor
  5  scoring and metrics on Vox1-O/E/H, \$exp/RESULTS.md
  6  export for deployment (ONNX / TorchScript)
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
test_sets=voxceleb1
test_data=$test_root/$test_sets
trials_names="trials_o trials_e trials_h"
augment_dir=$data/augment
cache=$exp/teacher_cache
recipe_begin "$@"

if in_stage 0; then
  svmix_log "stage 0: data preparation"
  run_step prep_vox2 -- python "$root/local/voxceleb.py" vox2 --src "$voxceleb2_dev" --out "$train_data" \
    --wav-dir "$voxceleb2_wav" --nj "$nj"
  run_step prep_vox1 -- python "$root/local/voxceleb.py" vox1 --src "$voxceleb1" --out "$test_data" --nj "$nj"
  run_step validate_vox2 "$train_data" -- svmix-validate-data "$train_data"
  run_step validate_vox1 "$test_data" -- svmix-validate-data "$test_data"
fi

if in_stage 1; then
  svmix_log "stage 1: augmentation resources"
  run_step augment -- svmix-prepare-augment --out "$augment_dir" --musan "$musan" --rirs "$rirs_noises"
fi

run_shared_stages "$exp/RESULTS.md"
