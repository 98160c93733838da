#!/usr/bin/env bash
# The paper's studies in miniature on the mini world (docs/studies.md): Table I (students at matched
# cost), Table II (SV-Mixer module ablations), Table III (backends), Table IV (teachers) and Fig. 5
# (EER against size at several depths). A thin driver over the mini recipe (recipes/mini/run.sh): its
# stages 0-1 build the world and its shared stages 2-5 cache, train, extract and score every system
# the selected studies need, on one experiment dir per teacher; a system that several studies share
# is trained once. Paths are relative to the directory you run it from.
#   recipes/mini_studies/run.sh                                 # every study (hours on 2 CPU cores)
#   recipes/mini_studies/run.sh --studies "students ablations"  # some of them
#   recipes/mini_studies/run.sh --nj 4 --seeds 0,1,2            # 4 systems at a time, three seeds each
#   recipes/mini_studies/run.sh --stage 5                       # the tables again from what is on disk
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

stage=0
stop_stage=5
nj=2                                # systems trained at once; also the processes of caching and extraction
seed=0                              # the world, augmentation and the small teacher (the mini recipe's --seed)
seeds=0                             # student training seeds (train.seed), comma-separated
input=fbank                         # the students' input: fbank (log-mel filterbanks, as the default recipe's
                                    # students) or waveform (each config's own CNN on the waveform, as the paper)
studies="students ablations backends teachers depth"
depths="2 4 6 8"                    # the depth study's layer counts: $model_conf_dir/<student>_<L>l.yaml (4: <student>.yaml)
data=data/mini_world                # the mini world (built by stage 0 where missing)
test_sets="test test_noisy"
augment_dir=data/augment
exp=exp/studies
teacher=""                          # the main teacher (default: $root/teachers/mini_world, the shipped one)
small_teacher_config=$root/conf/teacher_mini.yaml   # Table IV's second teacher (svmix-train-teacher --config)
train_config=$root/conf/train_mini.yaml              # one training config for every system
model_conf_dir=$root/conf/model
corpus_opts=""                      # extra options for local/make_mini_world.py (tests: a tiny world)
augment_opts=""                     # extra options for svmix-prepare-augment
teacher_opts=""                     # extra options for svmix-train-teacher (the small teacher)
train_opts=""                       # extra options for svmix-train
extract_opts=""                     # extra options for svmix-extract

recipe_options="stage stop_stage nj seed seeds input studies depths data test_sets augment_dir exp teacher
  small_teacher_config train_config model_conf_dir corpus_opts augment_opts teacher_opts train_opts extract_opts"
help_message="Usage: $0 [--studies \"students ablations backends teachers depth\"] [--name value ...]
Stages:
  0  the mini world and augmentation lists (recipes/mini/run.sh stages 0-1; skipped where done)
  1  with the teachers study: the small teacher (svmix-train-teacher --config \$small_teacher_config on
     \$data/train), and both teachers measured without training (local/studies.py teacher-eval)
  2  teacher feature caches, one per teacher (recipes/mini/run.sh stage 2)
  3  training, and 4 extraction, of every system the studies need, --nj systems at a time
     (recipes/mini/run.sh stages 2-4, one run per system; logs in \$exp/<teacher>_teacher/logs/)
  5  scoring (recipes/mini/run.sh stages 4-5 per teacher: the floor, metrics, its RESULTS.md), then
     \$exp/RESULTS.md with one table per study and \$exp/depth.png
Input: --input fbank (default) trains every system on log-mel filterbanks (model.frontend.name=fbank_projected,
the default recipe's students); --input waveform keeps each config's waveform CNN (the paper's students).
Layout: \$exp/main_teacher/<system>/seed<k>/ (the main teacher, --teacher) and \$exp/small_teacher/
(the small teacher in teacher/, and its systems), each with its own RESULTS.md; \$exp/world/ holds the
logs of stage 0; \$exp/run_times.tsv the wall time of every step.
Time (estimated): 7-10 minutes per system and seed on 2 free CPU cores (4-5 minutes of training with
conf/train_mini.yaml, then extraction and scoring of the two test sets). All studies with the default
depths are 21 systems: 2.5-3.5 hours for one seed (more on a shared machine; --seeds 0,1,2 triples it).
RESULTS.md states what each study took.
Finished work is kept: no stage retrains (the mini recipe's --stage 3 does). To retrain a system, remove
\$exp/<teacher>_teacher/<system>/ and its done-markers \$exp/<teacher>_teacher/.done/*_<system>_seed*.done."
. "$root/tools/stage_lib.sh"
. "$root/tools/parse_options.sh" "$@"
. "$root/tools/setup_venv.sh"

teacher=${teacher:-$root/teachers/mini_world}
[ -e "$teacher" ] || recipe_error "--teacher $teacher: not found"
recipe_check_int nj 1
case "$input" in
  fbank) input_opts="--override model.frontend.name=fbank_projected" ;;  # docs/method.md §Frontend
  waveform) input_opts="" ;;
  *) recipe_error "--input must be fbank or waveform, got '$input'" ;;
esac
for _v in exp data studies seeds test_sets augment_dir train_config model_conf_dir; do
  [ -n "${!_v}" ] || recipe_error "--${_v//_/-} must not be empty"
done
main_exp=$exp/main_teacher
small_exp=$exp/small_teacher
small_teacher=$small_exp/teacher
times_file=$exp/run_times.tsv

# _one_line COMMAND...: COMMAND's output; if it fails, its error as one line of this recipe's.
_one_line() {
  local out status=0
  out="$("$@" 2>&1)" || status=$?
  [ "$status" -eq 0 ] || recipe_error "${out##*: error: }"
  printf '%s\n' "$out"
}
# The systems of each teacher (local/studies.py checks --studies, --depths and that every config exists).
main_systems="$(_one_line python "$root/local/studies.py" systems --studies "$studies" --depths "$depths" \
  --teacher main --model-conf-dir "$model_conf_dir")"
small_systems="$(_one_line python "$root/local/studies.py" systems --studies "$studies" --depths "$depths" \
  --teacher small --model-conf-dir "$model_conf_dir")"

mini=(bash "$root/recipes/mini/run.sh" --train-nj 1 --data "$data" --augment-dir "$augment_dir" --seed "$seed" --seeds "$seeds"
  --nj "$nj" --test-sets "$test_sets" --train-config "$train_config" --model-conf-dir "$model_conf_dir"
  --corpus-opts "$corpus_opts" --augment-opts "$augment_opts" --train-opts "$input_opts $train_opts" --extract-opts "$extract_opts")
# _mini EXP TEACHER ARGS...: the mini recipe on one teacher's experiment dir.
_mini() { local e="$1" t="$2"; shift 2; "${mini[@]}" --exp "$e" --teacher "$t" "$@"; }

# The mini recipe checks the rest (seeds, test sets, configs, the main teacher) before anything runs, and
# says what the test sets are.
mini_options="$(_one_line _mini "$main_exp" "$teacher" --students "$main_systems" --print-options)"
test_notes="$(sed -n 's/^test_notes=//p' <<< "$mini_options")"
if [ -n "$small_systems" ]; then
  if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    [ -f "$small_teacher_config" ] || recipe_error "--small-teacher-config $small_teacher_config: file not found"
  elif [ "$stop_stage" -ge 2 ] && [ ! -e "$small_teacher/config.json" ]; then
    recipe_error "the small teacher $small_teacher is not trained yet (stage 1 trains it)"
  fi
fi
recipe_start "$recipe_options input_opts main_systems small_systems main_exp small_exp small_teacher test_notes" "$@"
trap 'printf "run\t%s\n" "$SECONDS" >> "$times_file"' EXIT

# _timed KEY COMMAND...: run COMMAND and append its wall time to $times_file (RESULTS.md sums them).
_timed() {
  local key="$1" start=$SECONDS status=0
  shift
  "$@" || status=$?
  printf '%s\t%s\n' "$key" "$((SECONDS - start))" >> "$times_file"
  return "$status"
}
# The teachers with systems to train: key, experiment dir, teacher, systems.
_teachers() {
  printf '%s\t%s\t%s\t%s\n' main "$main_exp" "$teacher" "$main_systems"
  if [ -n "$small_systems" ]; then printf '%s\t%s\t%s\t%s\n' small "$small_exp" "$small_teacher" "$small_systems"; fi
}
test_dirs=()
for _v in $test_sets; do test_dirs+=("$data/$_v"); done

if in_stage 0; then
  svmix_log "stage 0: the mini world and augmentation lists (recipes/mini/run.sh stages 0-1)"
  _timed world _mini "$exp/world" "$teacher" --stage 0 --stop-stage 1
fi

if in_stage 1 && [ -n "$small_systems" ]; then
  svmix_log "stage 1: the small teacher, and both teachers measured"
  # shellcheck disable=SC2086
  _timed small_teacher run_step small_teacher "$data/train" "$small_teacher_config" -- \
    svmix-train-teacher --data "$data/train" --config "$small_teacher_config" --out "$small_teacher" \
      --seed "$seed" $teacher_opts
  data_args=()
  for _v in "${test_dirs[@]}"; do data_args+=(--data "$_v"); done
  mkdir -p "$main_exp" "$small_exp"
  _timed teacher_eval/main run_step teacher_eval_main "$teacher" "${test_dirs[@]}" -- \
    python "$root/local/studies.py" teacher-eval --teacher "$teacher" "${data_args[@]}" \
      --out "$main_exp/teacher_eval.json"
  _timed teacher_eval/small run_step teacher_eval_small "$small_teacher" "${test_dirs[@]}" -- \
    python "$root/local/studies.py" teacher-eval --teacher "$small_teacher" "${data_args[@]}" \
      --what "speaker classification from scratch on $data/train ($(basename "$small_teacher_config"), seed $seed)" \
      --out "$small_exp/teacher_eval.json"
fi

# Stage 2 of the mini recipe once per teacher, before systems run side by side (they share the cache).
_caches() {
  local key e t systems
  while IFS=$'\t' read -r key e t systems; do
    _timed "cache/$key" _mini "$e" "$t" --students "$systems" --stage 2 --stop-stage 2 --floor false
  done < <(_teachers)
}
if in_stage 2; then
  svmix_log "stage 2: teacher feature caches"
  _caches
fi

# _job KEY EXP TEACHER SYSTEM FIRST LAST: stages FIRST..LAST of the mini recipe for one system.
_job() { _timed "job/$1/$4" _mini "$2" "$3" --students "$4" --stage "$5" --stop-stage "$6" --floor false; }
if in_stage 3 || in_stage 4; then
  first=2 last=4  # the mini recipe's stages: 2 (the cache, done above) to 4, or 4 alone for --stage 4
  if [ "$stage" -ge 4 ]; then first=4; fi
  if [ "$stop_stage" -lt 4 ]; then last=$stop_stage; fi
  svmix_log "stages 3-4: training and extraction, $nj system(s) at a time"
  if [ "$first" -eq 2 ] && ! in_stage 2; then _caches; fi  # a quick check when done; never two at once
  # One system per step (tools/stage_lib.sh step_pool_run), its output in <teacher exp>/logs/<system>.log.
  step_pool_begin "$nj"
  while IFS=$'\t' read -r key e t systems; do
    for s in $systems; do step_pool_run "$key/$s" "$e/logs/$s.log" _job "$key" "$e" "$t" "$s" "$first" "$last"; done
  done < <(_teachers)
  step_pool_end || { svmix_log "stopped: a system failed (its log is named above)"; exit 1; }
fi

if in_stage 5; then
  svmix_log "stage 5: scoring, and the studies' RESULTS.md"
  while IFS=$'\t' read -r key e t systems; do
    floor=false
    [ "$key" = main ] && floor=true  # the floor needs no teacher: once
    _timed "score/$key" _mini "$e" "$t" --students "$systems" --stage 4 --stop-stage 5 --floor "$floor"
  done < <(_teachers)
  report_args=(--studies "$studies" --depths "$depths" --seeds "$seeds" --model-conf-dir "$model_conf_dir"
    --main-exp "$main_exp" --times "$times_file" --out "$exp/RESULTS.md")
  [ -n "$small_systems" ] && report_args+=(--small-exp "$small_exp")
  for _v in "${test_dirs[@]}"; do report_args+=(--test-data "$_v"); done
  IFS=';' read -r -a _notes <<< "$test_notes"
  for _v in ${_notes[@]+"${_notes[@]}"}; do  # the notes of the test sets reported
    [[ " $test_sets " == *" ${_v%%=*} "* ]] && report_args+=(--note "$_v")
  done
  python "$root/local/studies.py" report "${report_args[@]}" --elapsed "$SECONDS"
  sed -n '/^## Run time/,$p' "$exp/RESULTS.md"
  echo "(every table: $exp/RESULTS.md)"
fi
svmix_log "done in $SECONDS s"
