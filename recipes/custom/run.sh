#!/usr/bin/env bash
# The smallest complete recipe for your own corpus: any directory laid out as speaker/*.wav (or
# .flac, found recursively). Some speakers are held out for testing and trials are generated.
# Paths are relative to the directory you run it from (default outputs: data/custom/, exp/custom/).
#   recipes/custom/run.sh --corpus /path/to/speakers                  # pretrained WavLM Base+ teacher (downloaded)
#   recipes/custom/run.sh --corpus /path/to/speakers --teacher mini   # offline: train a small teacher first
# Copy this directory to start a recipe of your own (see ../README.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

stage=0
stop_stage=6
nj=2
ngpu=0
train_nj=2                          # stage 3: trainings at once (each on train.threads CPU threads)
seed=0
corpus=""                           # required: root with one folder per speaker
data=data/custom                    # stage 0 writes $data/train, $data/test; stage 1 $data/augment
test_speakers=8                     # speakers held out for the test set (validation uses it too)
num_trials=""                       # test trials (default: 10000, or as many as the test speakers give)
target_ratio=0.5                    # share of target trials
musan=""                            # optional MUSAN / RIRS_NOISES roots; synthetic resources otherwise
rirs_noises=""
exp=exp/custom
teacher=WAVLM_BASE_PLUS             # bundle name, local HF dir, or "mini" (trained here, offline)
teacher_layers=""                   # layers to cache and distil (HF indexing; default: the teacher's last)
teacher_config=$root/conf/teacher_mini.yaml   # the mini teacher (--teacher mini)
train_config=$root/conf/train_mini.yaml
model_conf_dir=$root/conf/model
students="svmixer_mini"
seeds=0                             # training seeds (train.seed), comma-separated: one run of every system each
nokd_students=""                    # students trained again with train.kd.lambda=0 (system <name>_nokd)
baselines=""                        # $model_conf_dir/<name>.yaml trained without a teacher (train.kd.name=null)
floor=true                          # true: the MFCC-mean cosine floor (svmix-floor) on the test set
augment_opts=""                     # extra options for svmix-prepare-augment
teacher_opts=""                     # extra options for svmix-train-teacher (--teacher mini)
train_opts=""
extract_opts=""

recipe_options="stage stop_stage nj ngpu train_nj seed corpus data test_speakers num_trials target_ratio musan
  rirs_noises exp teacher teacher_layers teacher_config train_config model_conf_dir students seeds
  nokd_students baselines floor augment_opts teacher_opts train_opts extract_opts"
help_message="Usage: $0 --corpus DIR [--stage N] [--stop-stage M] [--name value ...]
Stages:
  0  data preparation: DIR/speaker/*.wav → \$data/train, \$data/test (+ trials)
  1  augmentation resources (MUSAN / RIRS_NOISES lists, or synthetic) and, with --teacher mini, the teacher
  2  teacher feature caching
  3  training: every system once per seed of --seeds
  4  embedding extraction and the MFCC-mean floor
  5  scoring and metrics, \$exp/RESULTS.md
  6  export for deployment (ONNX / TorchScript; a one-pass student: torch.export .pt2)
Paths are relative to the directory you run from.
--teacher-layers defaults to the teacher's last layer (12 for WAVLM_BASE_PLUS; for --teacher mini,
the last layer of the teacher --teacher-config describes).
Test trials are pairs of the test speakers' utterances, --target-ratio of them target pairs. By
default 10000, or as many as the test speakers give at that ratio if fewer (stage 0 logs how many
and why). An explicit --num-trials N gives exactly N trials, or stage 0 stops before writing
anything and names the maximum: lower --num-trials or raise --test-speakers."
. "$root/tools/stage_lib.sh"
. "$root/tools/parse_options.sh" "$@"
. "$root/tools/setup_venv.sh"
. "$root/tools/recipe_stages.sh"

recipe_check_int test_speakers 1
if in_stage 0; then
  [ -n "$corpus" ] || recipe_error "--corpus DIR is required (a folder per speaker)"
  [ -d "$corpus" ] || recipe_error "--corpus $corpus: directory not found"
fi
trial_args=()
if [ -n "$num_trials" ]; then recipe_check_int num_trials 1; trial_args=(--num-trials "$num_trials"); fi
train_data=$data/train
val_data=$data/test
test_root=$data
test_sets=test
test_data=$test_root/$test_sets
trials_names=trials
augment_dir=$data/augment
cache=$exp/teacher_cache
if [ "$teacher" = mini ]; then
  teacher=$exp/teacher
  teacher_eval=$teacher
  train_teacher=true
  teacher_layers=${teacher_layers:-$(teacher_last_layer --mini-config "$teacher_config")}
else
  teacher_eval=""
  train_teacher=false
  teacher_layers=${teacher_layers:-$(teacher_last_layer --teacher "$teacher")}
fi
recipe_begin "$@"

if in_stage 0; then
  svmix_log "stage 0: data preparation"
  run_step prep "$corpus" -- python "$root/local/speaker_folders.py" --src "$corpus" --out "$data" \
    --test-speakers "$test_speakers" "${trial_args[@]}" --target-ratio "$target_ratio" --seed "$seed"
  run_step validate_train "$train_data" -- svmix-validate-data "$train_data"
  run_step validate_test "$test_data" -- svmix-validate-data "$test_data"
fi

if in_stage 1; then
  svmix_log "stage 1: augmentation resources"
  augment_args=(--synthetic --babble-data "$train_data" --seed "$seed")
  [ -n "$musan" ] && augment_args+=(--musan "$musan")
  [ -n "$rirs_noises" ] && augment_args+=(--rirs "$rirs_noises")
  # shellcheck disable=SC2086
  run_step augment "$train_data/wav.scp" -- svmix-prepare-augment --out "$augment_dir" "${augment_args[@]}" $augment_opts
  if $train_teacher; then
    # shellcheck disable=SC2086
    run_step teacher "$train_data" "$teacher_config" -- svmix-train-teacher --data "$train_data" \
      --config "$teacher_config" --out "$teacher" --trials-data "$test_data" --seed "$seed" $teacher_opts
  fi
fi

run_shared_stages "$exp/RESULTS.md"
