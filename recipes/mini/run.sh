#!/usr/bin/env bash
# The default svmix recipe: distil the shipped mini-world teacher into SV-Mixer and Transformer
# students on the mini world (hundreds of synthetic espeak-ng speakers, docs/mini-world.md),
# offline, on a CPU, end to end, and test them on clean and noisy trials. Paths are relative to the
# directory you run it from; ./run.sh at the repository top runs it from there (data/, exp/).
#   recipes/mini/run.sh                       # everything (sets up .venv/ on first use); ./run.sh: the same
#   recipes/mini/run.sh --seeds 1,2,3         # every system three times; RESULTS.md: mean ± std
#   recipes/mini/run.sh --train-teacher true  # reproduce the teacher too (pretraining pool, hours on a CPU)
#   recipes/mini/run.sh --stage 3             # rerun from training with what is on disk
#   recipes/mini/run.sh --help                # stages and options
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

stage=0
stop_stage=6
nj=2                                # parallel jobs for synthesis, caching and extraction
ngpu=0                              # >1: training with torchrun on that many GPUs
train_nj=2                          # stage 3: trainings at once (each on train.threads CPU threads: 1 here)
seed=0                              # the world's sentences, prosody, degradations and trials; augmentation; the teacher
seeds=0                             # student training seeds (train.seed), comma-separated: one run of every system each
data=data/mini_world                # mini world: train/ val/ test/ test_noisy/ (+ pool/ with --train-teacher true)
test_sets="test test_noisy"         # test conditions: data dirs under $data, each with its trials
augment_dir=data/augment            # stage 1: noise / music / babble / RIR lists
exp=exp                             # experiment root; RESULTS.md goes to $exp/RESULTS.md
train_teacher=false                 # true: pretrain the teacher on $data/pool instead of using the shipped one
teacher=""                          # HF-layout teacher (default: $root/teachers/mini_world, or $exp/teacher with --train-teacher true)
teacher_config=$root/conf/teacher_pretrain.yaml   # svmix-train-teacher --pretrain config (--train-teacher true)
teacher_layers=""                   # teacher layers to cache and distil (default: the teacher's last)
cache=""                            # teacher feature cache (default: $exp/teacher_cache)
train_config=$root/conf/train_mini.yaml
model_conf_dir=$root/conf/model
students="svmixer_mini_fbank transformer_mini_fbank"   # $model_conf_dir/<name>.yaml, distilled alike (waveform: svmixer_mini transformer_mini)
nokd_students=""                    # students trained again with train.kd.lambda=0 (system <name>_nokd)
baselines=""                        # $model_conf_dir/<name>.yaml trained without a teacher (train.kd.name=null)
floor=true                          # true: the MFCC-mean cosine floor (svmix-floor) on every test set
lmft=""                             # systems to large-margin fine-tune after stage 3 (system <name>_lmft), before → after in RESULTS.md
lmft_config=$root/conf/lmft_mini.yaml   # svmix-train config of that fine-tuning (--init-from the system's seed)
backends=""                         # score back-ends, before → after in RESULTS.md: any of asnorm calibration qmf fusion (fitted on val_clean for test, val for test_noisy)
corpus_opts=""                      # extra options for local/make_mini_world.py (tests: a tiny world)
augment_opts=""                     # extra options for svmix-prepare-augment
teacher_opts=""                     # extra options for svmix-train-teacher (--train-teacher true)
train_opts=""                       # extra options for svmix-train (e.g. "--max-steps 20")
extract_opts=""                     # extra options for svmix-extract

recipe_options="stage stop_stage nj ngpu train_nj seed seeds data test_sets augment_dir exp train_teacher teacher
  teacher_config teacher_layers cache train_config model_conf_dir students nokd_students baselines floor
  lmft lmft_config backends corpus_opts augment_opts teacher_opts train_opts extract_opts"
help_message="Usage: $0 [--stage N] [--stop-stage M] [--name value ...]
Stages:
  0  data preparation: synthesize the mini world (Kaldi data dirs + trials; the pool with --train-teacher true)
  1  augmentation resources (synthetic noise / music / RIR lists); with --train-teacher true, teacher pretraining
  2  teacher feature caching
  3  training of every system (--students distilled, --nokd-students, --baselines), once per seed of --seeds,
     --train-nj at a time (output of each: \$exp/logs/);
     then large-margin fine-tuning of the systems of --lmft (<name>_lmft, from the same seed)
  4  embedding extraction (every test set of --test-sets) and the MFCC-mean floor
  5  scoring and metrics (EER with 95% CI, minDCF, DET plots, t-SNE and score histograms, RESULTS.md);
     with --backends, AS-norm / calibration / QMF / fusion fitted on each test condition's development set
     (test: val_clean, the val utterances before reverberation and noise; other sets: val; their embeddings
     extracted in stage 4)
  6  export of the students for deployment (ONNX / TorchScript; a one-pass student: torch.export .pt2)
Paths are relative to the directory you run from (./run.sh at the top: data/mini_world, data/augment, exp/).
Layout: \$exp/<system>/seed<k>/ per system and seed (<student>_nokd for --nokd-students, <system>_lmft
for --lmft), \$exp/floor/, \$exp/RESULTS.md (mean ± std over the seeds) and \$exp/RESULTS_per_seed.md.
--teacher-layers defaults to the teacher's last layer (its config.json; with --train-teacher true,
that of the teacher --teacher-config describes)."
. "$root/tools/stage_lib.sh"
. "$root/tools/parse_options.sh" "$@"
. "$root/tools/setup_venv.sh"
. "$root/tools/recipe_stages.sh"

case "$train_teacher" in
  true)
    teacher=${teacher:-$exp/teacher}
    teacher_layers=${teacher_layers:-$(teacher_last_layer --pretrain-config "$teacher_config")} ;;
  false)
    teacher=${teacher:-$root/teachers/mini_world}
    if [ -z "$teacher_layers" ] || { [ "$stage" -le 3 ] && [ "$stop_stage" -ge 2 ]; }; then
      [ -e "$teacher" ] || recipe_error "--teacher $teacher: not found (the shipped mini-world teacher;" \
        "--train-teacher true pretrains one into \$exp/teacher)"
    fi
    teacher_layers=${teacher_layers:-$(teacher_last_layer --teacher "$teacher")} ;;
  *) recipe_error "--train-teacher must be true or false, got '$train_teacher'" ;;
esac
cache=${cache:-$exp/teacher_cache}
train_data=$data/train
val_data=$data/val
dev_data=$data/val                  # the back-ends' development trials: unseen voices, never a test list
test_dev="test=$data/val_clean"     # the clean test's: the val utterances before reverberation and noise
test_root=$data
trials_names=trials
test_notes="test=clean speech, each utterance through its own random microphone-and-room channel (±6 dB);test_noisy=the test utterances reverberated (p=0.5) and noised at 5-20 dB SNR"
teacher_eval=$teacher               # its eval.json, when it has one, becomes a line of RESULTS.md
world_args=(--out "$data" --seed "$seed" --nj "$nj")
parts="train val val_clean test test_noisy"
if [ "$train_teacher" = true ]; then world_args+=(--with-pool); parts+=" pool"; fi
recipe_begin "$@"

if in_stage 0; then
  svmix_log "stage 0: data preparation"
  # shellcheck disable=SC2086
  run_step mini_world "$root/local/make_mini_world.py" -- \
    python "$root/local/make_mini_world.py" "${world_args[@]}" $corpus_opts
  for part in $parts; do
    run_step "validate_$part" "$data/$part" -- svmix-validate-data "$data/$part"
  done
fi

if in_stage 1; then
  svmix_log "stage 1: augmentation resources"
  # shellcheck disable=SC2086
  run_step augment "$train_data/wav.scp" -- svmix-prepare-augment --out "$augment_dir" --synthetic \
    --babble-data "$train_data" --seed "$seed" $augment_opts
  if [ "$train_teacher" = true ]; then
    # shellcheck disable=SC2086
    run_step teacher "$data/pool" "$teacher_config" -- \
      svmix-train-teacher --pretrain --data "$data/pool" --config "$teacher_config" --out "$teacher" \
        --seed "$seed" $teacher_opts
  fi
fi

run_shared_stages "$exp/RESULTS.md"
