#!/usr/bin/env bash
# SV-Mixer on VoxCeleb, the paper's setup: train on VoxCeleb2-dev (5,994 speakers) with MUSAN and
# RIRS_NOISES augmentation, distil WavLM-Large, test on VoxCeleb1-O/E/H (cleaned lists).
#   ./run.sh --ngpu 2                  # everything; corpus locations in db.sh
#   ./run.sh --stage 3 --ngpu 8        # distillation onwards
set -euo pipefail
cd "$(dirname "$0")"
root=../..
. ./db.sh

stage=0
stop_stage=6
nj=16                               # CPU jobs for conversion, caching and extraction
ngpu=2                              # distillation GPUs (torchrun); the paper used 2× A6000
voxceleb1=$VOXCELEB1
voxceleb2_dev=$VOXCELEB2_DEV
voxceleb2_wav=data/voxceleb2_wav    # where m4a → wav conversion writes (needs ~6× the m4a size)
musan=$MUSAN
rirs_noises=$RIRS_NOISES
exp=exp
teacher=WAVLM_LARGE                 # torchaudio bundle (downloaded by torchaudio) or a local HF dir
teacher_mode=cache                  # cache: stage 2 stores teacher layers (~0.85 TB/layer fp16); online: no cache
kd=mse                              # mse: layer 24 (Tables I-IV) | distilhubert: layers 8,16,24 (Fig. 5)
train_config=$root/conf/train_paper.yaml
model_conf_dir=$root/conf/model
students="svmixer_paper transformer_paper"
train_opts=""
extract_opts=""

recipe_options="stage stop_stage nj ngpu voxceleb1 voxceleb2_dev voxceleb2_wav musan rirs_noises exp teacher
  teacher_mode kd train_config model_conf_dir students train_opts extract_opts"
help_message="Usage: $0 [--stage N] [--stop-stage M] [--name value ...]   (corpus paths: db.sh)
Stages:
  0  data preparation: VoxCeleb2-dev (m4a → wav with ffmpeg) and VoxCeleb1 with trials_o/e/h
  1  augmentation resources: MUSAN noise/music/speech and RIRS_NOISES lists
  2  teacher feature caching (skipped with --teacher-mode online)
  3  distillation (torchrun on --ngpu GPUs)
  4  embedding extraction (VoxCeleb1)
  5  scoring and metrics on Vox1-O/E/H, RESULTS.md
  6  export for deployment (ONNX / TorchScript)"
. $root/tools/parse_options.sh "$@"
. $root/tools/setup_venv.sh
. $root/tools/stage_lib.sh
. $root/tools/recipe_stages.sh

case "$kd" in
  mse) teacher_layers=24 ;;
  distilhubert) teacher_layers=8,16,24; train_opts="--override train.kd.name=distilhubert --override train.kd.layers=[8,16,24] $train_opts" ;;
  *) echo "$0: --kd must be mse or distilhubert" >&2; exit 2 ;;
esac
train_data=data/voxceleb2_dev
val_data=data/voxceleb1            # validation on Vox1-O (its `trials`), as in the authors' code
test_data=data/voxceleb1
trials_names="trials_o trials_e trials_h"
augment_dir=data/augment
cache=$exp/teacher_cache
recipe_begin "$@"

if in_stage 0; then
  svmix_log "stage 0: data preparation"
  run_step prep_vox2 -- python $root/local/voxceleb.py vox2 --src "$voxceleb2_dev" --out "$train_data" \
    --wav-dir "$voxceleb2_wav" --nj "$nj"
  run_step prep_vox1 -- python $root/local/voxceleb.py vox1 --src "$voxceleb1" --out "$test_data" --nj "$nj"
  run_step validate_vox2 "$train_data" -- svmix-validate-data "$train_data"
  run_step validate_vox1 "$test_data" -- svmix-validate-data "$test_data"
fi

if in_stage 1; then
  svmix_log "stage 1: augmentation resources"
  run_step augment -- svmix-prepare-augment --out "$augment_dir" --musan "$musan" --rirs "$rirs_noises"
fi

run_shared_stages RESULTS.md
