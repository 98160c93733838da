#!/usr/bin/env bash
# The default svmix recipe: distil a teacher into SV-Mixer and Transformer students on the embedded
# mini corpus (synthetic espeak-ng speakers), offline, on a CPU, end to end. Paths are relative to
# the directory you run it from; ./run.sh at the repository top runs it from there (data/, exp/).
#   recipes/mini/run.sh           # everything (sets up .venv/ on first use); ./run.sh at the top: the same
#   recipes/mini/run.sh --stage 3 # rerun from distillation with what is on disk
#   recipes/mini/run.sh --help    # stages and options
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

stage=0
stop_stage=6
nj=2                                # parallel jobs for synthesis, caching and extraction
ngpu=0                              # >1: distillation with torchrun on that many GPUs
seed=0
data=data/mini                      # mini corpus: train/ val/ test/ Kaldi data dirs
augment_dir=data/augment            # stage 1: noise / music / babble / RIR lists
exp=exp                             # experiment root; RESULTS.md goes to $exp/RESULTS.md
teacher_config=$root/conf/teacher_mini.yaml
teacher=""                          # mini WavLM-architecture teacher, HF layout (default: $exp/teacher)
teacher_layers=""                   # teacher layers to cache and distil (default: the last of --teacher-config)
cache=""                            # teacher feature cache (default: $exp/teacher_cache)
train_config=$root/conf/train_mini.yaml
model_conf_dir=$root/conf/model
students="svmixer_mini transformer_mini"   # $model_conf_dir/<name>.yaml, identical training settings
corpus_opts=""                      # extra options for local/make_mini_corpus.py (tests: a tiny corpus)
augment_opts=""                     # extra options for svmix-prepare-augment
teacher_opts=""                     # extra options for svmix-train-teacher
train_opts=""                       # extra options for svmix-train (e.g. "--max-steps 20")
extract_opts=""                     # extra options for svmix-extract

recipe_options="stage stop_stage nj ngpu seed data augment_dir exp teacher_config teacher teacher_layers
  cache train_config model_conf_dir students corpus_opts augment_opts teacher_opts train_opts extract_opts"
help_message="Usage: $0 [--stage N] [--stop-stage M] [--name value ...]
Stages:
  0  data preparation: synthesize the mini corpus (Kaldi data dirs + trials) and validate it
  1  augmentation resources (synthetic noise / music / RIR lists) and the mini teacher
  2  teacher feature caching
  3  distillation training of every student in --students
  4  embedding extraction (test set)
  5  scoring and metrics (EER, minDCF, DET plot, RESULTS.md)
  6  export for deployment (ONNX / TorchScript) and efficiency report (params, GMACs, CPU RTF)
Paths are relative to the directory you run from (./run.sh at the top: data/mini, data/augment, exp/).
--teacher-layers defaults to the last layer of the teacher --teacher-config describes."
. "$root/tools/stage_lib.sh"
. "$root/tools/parse_options.sh" "$@"
. "$root/tools/setup_venv.sh"
. "$root/tools/recipe_stages.sh"

teacher=${teacher:-$exp/teacher}
teacher_layers=${teacher_layers:-$(teacher_last_layer --mini-config "$teacher_config")}
cache=${cache:-$exp/teacher_cache}
train_data=$data/train
val_data=$data/val
test_data=$data/test
trials_names=trials
teacher_eval=$teacher
recipe_begin "$@"

if in_stage 0; then
  svmix_log "stage 0: data preparation"
  # shellcheck disable=SC2086
  run_step mini_corpus "$root/local/make_mini_corpus.py" -- \
    python "$root/local/make_mini_corpus.py" --out "$data" --seed "$seed" --nj "$nj" $corpus_opts
  for part in train val test; do
    run_step "validate_$part" "$data/$part" -- svmix-validate-data "$data/$part"
  done
fi

if in_stage 1; then
  svmix_log "stage 1: augmentation resources and the mini teacher"
  # shellcheck disable=SC2086
  run_step augment "$train_data/wav.scp" -- svmix-prepare-augment --out "$augment_dir" --synthetic \
    --babble-data "$train_data" --seed "$seed" $augment_opts
  # shellcheck disable=SC2086
  run_step teacher "$train_data" "$teacher_config" -- \
    svmix-train-teacher --data "$train_data" --config "$teacher_config" --out "$teacher" \
      --trials-data "$test_data" --seed "$seed" $teacher_opts
fi

run_shared_stages "$exp/RESULTS.md"
