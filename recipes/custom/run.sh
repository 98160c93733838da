#!/usr/bin/env bash
# The smallest complete recipe for your own corpus: any directory laid out as speaker/*.wav (or
# .flac, found recursively). Some speakers are held out for testing and trials are generated.
#   ./run.sh --corpus /path/to/speakers                       # pretrained WavLM Base+ teacher (downloaded)
#   ./run.sh --corpus /path/to/speakers --teacher mini        # offline: train a small teacher first
# Copy this directory to start a recipe of your own (see ../README.md).
set -euo pipefail
cd "$(dirname "$0")"
root=../..

stage=0
stop_stage=6
nj=2
ngpu=0
seed=0
corpus=""                           # required: root with one folder per speaker
test_speakers=8                     # speakers held out for the test set (validation uses it too)
num_trials=10000
musan=""                            # optional MUSAN / RIRS_NOISES roots; synthetic resources otherwise
rirs_noises=""
exp=exp
teacher=WAVLM_BASE_PLUS             # bundle name, local HF dir, or "mini" (trained here, offline)
teacher_layers=12                   # HF indexing: 12 = WavLM Base+'s last layer (4 for "mini")
teacher_config=$root/conf/teacher_mini.yaml
train_config=$root/conf/train_mini.yaml
model_conf_dir=$root/conf/model
students="svmixer_mini"
train_opts=""
extract_opts=""

recipe_options="stage stop_stage nj ngpu seed corpus test_speakers num_trials musan rirs_noises exp teacher
  teacher_layers teacher_config train_config model_conf_dir students train_opts extract_opts"
help_message="Usage: $0 --corpus DIR [--stage N] [--stop-stage M] [--name value ...]
Stages:
  0  data preparation: DIR/speaker/*.wav → data/train, data/test (+ trials)
  1  augmentation resources (MUSAN / RIRS_NOISES lists, or synthetic) and, with --teacher mini, the teacher
  2  teacher feature caching
  3  distillation
  4  embedding extraction
  5  scoring and metrics, RESULTS.md
  6  export for deployment (ONNX / TorchScript)"
. $root/tools/parse_options.sh "$@"
. $root/tools/setup_venv.sh
. $root/tools/stage_lib.sh
. $root/tools/recipe_stages.sh

train_data=data/train
val_data=data/test
test_data=data/test
trials_names=trials
augment_dir=data/augment
cache=$exp/teacher_cache
if [ "$teacher" = mini ]; then teacher=$exp/teacher; teacher_eval=$teacher; train_teacher=true; else train_teacher=false; fi
recipe_begin "$@"

if in_stage 0; then
  [ -n "$corpus" ] || { echo "$0: --corpus DIR is required (a folder per speaker)" >&2; exit 2; }
  svmix_log "stage 0: data preparation"
  run_step prep "$corpus" -- python $root/local/speaker_folders.py --src "$corpus" --out data \
    --test-speakers "$test_speakers" --num-trials "$num_trials" --seed "$seed"
  run_step validate_train "$train_data" -- svmix-validate-data "$train_data"
  run_step validate_test "$test_data" -- svmix-validate-data "$test_data"
fi

if in_stage 1; then
  svmix_log "stage 1: augmentation resources"
  augment_args=(--synthetic --babble-data "$train_data" --seed "$seed")
  [ -n "$musan" ] && augment_args+=(--musan "$musan")
  [ -n "$rirs_noises" ] && augment_args+=(--rirs "$rirs_noises")
  run_step augment "$train_data/wav.scp" -- svmix-prepare-augment --out "$augment_dir" "${augment_args[@]}"
  if $train_teacher; then
    run_step teacher "$train_data" "$teacher_config" -- svmix-train-teacher --data "$train_data" \
      --config "$teacher_config" --out "$teacher" --trials-data "$test_data" --seed "$seed"
  fi
fi

run_shared_stages RESULTS.md
