#!/usr/bin/env bash
# Stages 2-6, shared by every recipe (stage numbers in docs/conventions.md §Stages). A recipe defines
# stages 0-1 (its corpus) and the variables in $svmix_stage_variables, then calls recipe_begin and
# run_shared_stages. teacher_mode=online (optional) skips stage 2: the teacher runs during training.
# Every step goes through run_step (tools/stage_lib.sh): done-markers, resumable tools.
#
# Systems and layout (every system is trained once per seed of $seeds, with train.seed=<k>):
#   $students              distilled from the teacher            $exp/<student>/seed<k>/
#   $nokd_students         the same student, train.kd.lambda=0   $exp/<student>_nokd/seed<k>/
#   $baselines             no distillation (train.kd.name=null)  $exp/<baseline>/seed<k>/
#   $lmft                  large-margin fine-tuning ($lmft_config)  $exp/<system>_lmft/seed<k>/
#                          of a system above, from its seed<k>
#   the floor              svmix-floor (MFCC-mean cosine)        $exp/floor/
# In each: emb_<set>/ per test set, scores_<set>_<trials> and metrics_<set>_<trials>.json per
# test set and trials list; $exp/det_<set>_<trials>.png overlays every system and seed; beside it, of
# each trained system's first seed, tsne_<system>_seed<k>_<set>.png and hist_<system>_seed<k>_<set>_<trials>.png.
svmix_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# What the shared stages read; recipe_begin fails naming the first one the recipe left unset.
# test_sets: names of data dirs under $test_root, each holding every trials list of $trials_names
# (or of its entry in $test_trials).
svmix_stage_variables="stage stop_stage exp nj ngpu seeds teacher teacher_layers train_data val_data test_root
  test_sets trials_names augment_dir train_config model_conf_dir students"
# Read too, but may be empty: cache (required with teacher_mode=cache), teacher_eval (the teacher's
# line in RESULTS.md), nokd_students and baselines (systems above), floor (true: the floor row;
# default true), test_notes (RESULTS.md: "set=what it is" entries separated by ';'), train_opts and
# extract_opts (extra options for svmix-train and svmix-extract).
# test_trials ("set=name name;..."): a test set's own trials lists instead of $trials_names;
# test_missing ("set=why;..."): test sets the recipe could not prepare (listed in RESULTS.md).
# backends (words of asnorm calibration qmf fusion): score back-ends reported before → after, which
# need dev_data, a data dir with labelled trials that is no test set (AS-norm cohort, calibration fit);
# test_dev ("set=dir;..."): a test set's own development set instead (its condition's: a calibration
# holds for the condition it was fitted on).
# train_nj (default 1): trainings run at once in stage 3 (CPU: pin train.threads in the config).
# lmft (names of systems above) with lmft_config (an svmix-train config for --init-from): each is
# fine-tuned once more per seed as <system>_lmft, reported before → after in RESULTS.md.
svmix_optional_stage_variables="teacher_mode cache teacher_eval nokd_students baselines floor test_notes
  train_opts extract_opts test_trials test_missing backends dev_data test_dev lmft lmft_config train_nj"

# teacher_last_layer --teacher SPEC | --mini-config FILE | --pretrain-config FILE: the teacher's last
# layer (HF indexing), read from its configuration without loading weights (local/teacher_layers.py).
teacher_last_layer() { python "$svmix_root/local/teacher_layers.py" "$@"; }

# Every trained system, in RESULTS.md order; _svmix_base_systems: those not fine-tuned by --lmft.
_svmix_base_systems() {
  local s
  for s in $students; do echo "$s"; done
  for s in $nokd_students; do echo "${s}_nokd"; done
  for s in $baselines; do echo "$s"; done
}
_svmix_systems() {
  local s
  _svmix_base_systems
  for s in ${lmft:-}; do echo "${s}_lmft"; done
}
_svmix_seed_list() { echo "${seeds//,/ }"; }

# _svmix_entry_of MAP SET DEFAULT: the value of SET in MAP ("set=value;..."), else DEFAULT.
_svmix_entry_of() {
  local entry IFS=';'
  for entry in $1; do
    if [ "${entry%%=*}" = "$2" ]; then echo "${entry#*=}"; return; fi
  done
  echo "$3"
}
# _svmix_trials_of SET: the trials lists of test set SET ($test_trials, else $trials_names).
_svmix_trials_of() { _svmix_entry_of "${test_trials:-}" "$1" "$trials_names"; }
# _svmix_dev_of SET: the development set of test set SET ($test_dev, else $dev_data); _svmix_dev_sets:
# each development set a test set uses, once, in test-set order. A development set's files carry
# its dir's name: emb_dev_<name>/, scores_dev_<name>, calibration_<name>.json, qmf_<name>.json and
# $exp/fusion/seed<k>/fusion_<name>.json.
_svmix_dev_of() { _svmix_entry_of "${test_dev:-}" "$1" "$dev_data"; }
_svmix_dev_sets() {
  local set
  for set in $test_sets; do _svmix_dev_of "$set"; done | awk '!seen[$0]++'
}

# _svmix_model_fact CONF frontend|one_pass: what a model config selects, its includes followed: the
# frontend registry name (empty: the default), or "true"/"false" for an encoder that embeds whole
# utterances in one pass. A bad config: a one-line error naming CONF and a failed status.
_svmix_model_fact() {
  python -c 'import sys
from svmix.errors import SvmixError
from svmix.yaml_config import read_model_config
try:
    config = read_model_config(sys.argv[1])
    if sys.argv[2] == "frontend":
        print((config.get("frontend") or {}).get("name") or "")
    else:
        from svmix.models.speaker_model import one_pass, resolve_model_config
        print(str(one_pass(resolve_model_config(config))).lower())
except SvmixError as e:
    sys.exit(f"{sys.argv[1]}: {e}")' "$1" "$2"
}

stage_cache() {
  svmix_log "stage 2: teacher feature caching"
  local inputs=("$train_data/wav.scp")
  [ -e "$teacher" ] && inputs+=("$teacher")
  run_step cache "${inputs[@]}" -- \
    svmix-cache-teacher --teacher "$teacher" --data "$train_data" --layers "$teacher_layers" \
      --out "$cache" --nj "$nj"
}

# svmix-train's command words; on several GPUs torchrun, one process per GPU.
_svmix_train_launcher() {
  if [ "${ngpu:-0}" -gt 1 ]; then echo "torchrun --standalone --nproc_per_node $ngpu -m svmix.bin.train"
  else echo svmix-train; fi
}

# _svmix_train SYSTEM MODEL_CONF SEED KIND: KIND kd (the teacher's targets), nokd (the same, with
# lambda 0: identical data, crops and teacher reads) or none (no teacher at all).
_svmix_train() {
  local system="$1" conf="$2" seed="$3" kind="$4" dir="$exp/$1/seed$3"
  local teacher_args=() inputs=() kd_args=() launcher
  if [ "$kind" != none ]; then
    # The KD targets are the layers the recipe caches ($teacher_layers): stated once, in the recipe.
    kd_args=(--override "train.kd.layers=[$teacher_layers]")
    if [ "${teacher_mode:-cache}" = online ]; then teacher_args=(--teacher "$teacher")
    else teacher_args=(--teacher-cache "$cache"); inputs=("$cache/manifest.json"); fi
  fi
  case "$kind" in
    nokd) kd_args+=(--override train.kd.lambda=0) ;;
    none) kd_args=(--override train.kd.name=null --override train.kd.lambda=0) ;;
  esac
  # A "teacher + backend" system (frontend: teacher) freezes the recipe's teacher, whatever path its
  # config names: the shipped one, or the one --train-teacher true pretrained.
  if [ "$(_svmix_model_fact "$conf" frontend)" = teacher ]; then
    kd_args+=(--override "model.frontend.path=$teacher"); inputs+=("$teacher")
  fi
  read -r -a launcher <<< "$(_svmix_train_launcher)"
  # shellcheck disable=SC2086
  run_step --fresh "$dir" "train_${system}_seed$seed" "$train_config" "$conf" "${inputs[@]}" -- \
    "${launcher[@]}" --config "$train_config" --model-config "$conf" \
      --data "$train_data" --val-data "$val_data" "${teacher_args[@]}" "${kd_args[@]}" \
      --override "train.seed=$seed" --augment-dir "$augment_dir" --exp "$dir" $train_opts
}

# Up to $train_nj trainings at a time (each with its train.threads): first every system of every
# seed, then the fine-tuning runs of --lmft, each from its finished system. Output of a training
# run in the background: $exp/logs/<step>.log (and its own train.log).
stage_train() {
  svmix_log "stage 3: training (seeds ${seeds}; at most ${train_nj} at a time)"
  local s k logs="$exp/logs"
  step_pool_begin "$train_nj"
  for k in $(_svmix_seed_list); do
    for s in $students; do
      step_pool_run "$s/seed$k" "$logs/train_${s}_seed$k.log" _svmix_train "$s" "$model_conf_dir/$s.yaml" "$k" kd
    done
    for s in $nokd_students; do
      step_pool_run "${s}_nokd/seed$k" "$logs/train_${s}_nokd_seed$k.log" \
        _svmix_train "${s}_nokd" "$model_conf_dir/$s.yaml" "$k" nokd
    done
    for s in $baselines; do
      step_pool_run "$s/seed$k" "$logs/train_${s}_seed$k.log" _svmix_train "$s" "$model_conf_dir/$s.yaml" "$k" none
    done
  done
  step_pool_end
  for k in $(_svmix_seed_list); do
    for s in ${lmft:-}; do step_pool_run "${s}_lmft/seed$k" "$logs/lmft_${s}_seed$k.log" _svmix_lmft "$s" "$k"; done
  done
  step_pool_end
}

# _svmix_lmft SYSTEM SEED: large-margin fine-tuning of SYSTEM's seed SEED (its model and AAM head,
# svmix-train --init-from) with $lmft_config, in $exp/SYSTEM_lmft/seedSEED.
_svmix_lmft() {
  local from="$exp/$1/seed$2" dir="$exp/$1_lmft/seed$2" launcher
  read -r -a launcher <<< "$(_svmix_train_launcher)"
  # shellcheck disable=SC2086
  run_step --fresh "$dir" "lmft_$1_seed$2" "$lmft_config" "$from/model.pt" -- \
    "${launcher[@]}" --config "$lmft_config" --init-from "$from" --data "$train_data" --val-data "$val_data" \
      --override "train.seed=$2" --exp "$dir" $train_opts
}

# _svmix_extract_all NAME DATA: every system's and seed's embeddings of DATA in <run>/emb_NAME.
_svmix_extract_all() {
  local name="$1" data="$2" s k dir
  for s in $(_svmix_systems); do
    for k in $(_svmix_seed_list); do
      dir="$exp/$s/seed$k"
      # shellcheck disable=SC2086
      run_step "extract_${s}_seed${k}_$name" "$dir/model.pt" "$data/wav.scp" -- \
        svmix-extract --model "$dir" --data "$data" --out "$dir/emb_$name" --nj "$nj" $extract_opts
    done
  done
}

stage_extract() {
  svmix_log "stage 4: embedding extraction (${test_sets})"
  local set
  for set in $test_sets; do
    _svmix_extract_all "$set" "$test_root/$set"
    if [ "${floor:-true}" = true ]; then
      run_step "floor_$set" "$test_root/$set/wav.scp" -- \
        svmix-floor --data "$test_root/$set" --out "$exp/floor/emb_$set"
    fi
  done
  # the development sets: cohort and calibration data of the back-ends
  local dev devs=()
  if [ -n "${backends:-}" ]; then
    mapfile -t devs < <(_svmix_dev_sets)
    for dev in "${devs[@]}"; do _svmix_extract_all "dev_${dev##*/}" "$dev"; done
  fi
}

# _svmix_score NAME DIR SET TRIALS: scores and metrics (EER with its speaker-bootstrap 95% CI).
_svmix_score() {
  local data="$test_root/$3"
  run_step "score_${1}_${3}_$4" "$2/emb_$3/xvector.scp" "$data/$4" "$data/utt2spk" -- \
    svmix-score --trials "$data/$4" --embeddings "$2/emb_$3/xvector.scp" --utt2spk "$data/utt2spk" \
      --output "$2/scores_${3}_$4" --metrics-json "$2/metrics_${3}_$4.json"
}

stage_score() {
  svmix_log "stage 5: scoring and metrics"
  local s k set t plot_args labels
  for set in $test_sets; do
    for t in $(_svmix_trials_of "$set"); do
      plot_args=()
      for s in $(_svmix_systems); do
        for k in $(_svmix_seed_list); do
          _svmix_score "${s}_seed$k" "$exp/$s/seed$k" "$set" "$t"
          labels="$s"; [ "$seeds" = "$k" ] || labels="$s seed$k"
          plot_args+=(--scores "$exp/$s/seed$k/scores_${set}_$t" --label "$labels")
        done
      done
      if [ "${floor:-true}" = true ]; then
        _svmix_score floor "$exp/floor" "$set" "$t"
        plot_args+=(--scores "$exp/floor/scores_${set}_$t" --label "MFCC-mean cosine (floor)")
      fi
      # The DET plot only: the metrics (and their intervals) are in each metrics_<set>_<trials>.json.
      svmix-metrics "${plot_args[@]}" --trials "$test_root/$set/$t" --bootstrap 0 --det-plot "$exp/det_${set}_$t.png"
    done
    _svmix_pictures "$set"
  done
  if [ -n "${backends:-}" ]; then _svmix_backends; fi
}

_svmix_has_backend() { [[ " $backends " == *" $1 "* ]]; }

# The score back-ends of every system and seed, fitted on (or taking their cohort from) the
# development set of each test set (_svmix_dev_of), reported by svmix-report before → after:
# metrics_<set>_<trials>_{asnorm,cal,qmf}.json beside the cosine ones, and the fusion of the distilled
# students in $exp/fusion/seed<k>/.
_svmix_backends() {
  svmix_log "stage 5: score back-ends ($backends), fitted on the trials of $(_svmix_dev_sets | paste -sd ';')"
  local s k set t dir data key fused dev d devs=()
  mapfile -t devs < <(_svmix_dev_sets)
  for s in $(_svmix_systems); do
    for k in $(_svmix_seed_list); do
      dir="$exp/$s/seed$k"
      for dev in "${devs[@]}"; do
        d="${dev##*/}"
        run_step "score_${s}_seed${k}_dev_$d" "$dir/emb_dev_$d/xvector.scp" "$dev/trials" -- \
          svmix-score --trials "$dev/trials" --embeddings "$dir/emb_dev_$d/xvector.scp" \
            --output "$dir/scores_dev_$d" --bootstrap 0
        if _svmix_has_backend calibration; then
          run_step "cal_${s}_seed${k}_$d" "$dir/scores_dev_$d" -- svmix-calibrate --scores "$dir/scores_dev_$d" \
            --trials "$dev/trials" --operating-point min-dcf --p-target 0.05 --out "$dir/calibration_$d.json"
        fi
        if _svmix_has_backend qmf; then
          run_step "qmf_${s}_seed${k}_$d" "$dir/scores_dev_$d" "$dir/emb_dev_$d" -- svmix-calibrate \
            --scores "$dir/scores_dev_$d" --trials "$dev/trials" --quality "$dir/emb_dev_$d" \
            --operating-point min-dcf --p-target 0.05 --out "$dir/qmf_$d.json"
        fi
      done
      for set in $test_sets; do
        data="$test_root/$set"
        dev="$(_svmix_dev_of "$set")"
        d="${dev##*/}"
        for t in $(_svmix_trials_of "$set"); do
          key="${set}_$t"
          if _svmix_has_backend asnorm; then
            run_step "asnorm_${s}_seed${k}_$key" "$dir/emb_$set/xvector.scp" "$dir/emb_dev_$d/xvector.scp" \
              "$data/$t" -- \
              svmix-score --trials "$data/$t" --embeddings "$dir/emb_$set/xvector.scp" --utt2spk "$data/utt2spk" \
                --norm asnorm --cohort "$dir/emb_dev_$d/xvector.scp" --top-n 100 --output "$dir/scores_${key}_asnorm" \
                --metrics-json "$dir/metrics_${key}_asnorm.json"
          fi
          for cal in calibration:cal qmf:qmf; do
            _svmix_has_backend "${cal%%:*}" || continue
            run_step "${cal#*:}_${s}_seed${k}_$key" "$dir/${cal%%:*}_$d.json" "$dir/emb_$set/xvector.scp" "$data/$t" -- \
              svmix-score --trials "$data/$t" --embeddings "$dir/emb_$set/xvector.scp" --utt2spk "$data/utt2spk" \
                --calibration "$dir/${cal%%:*}_$d.json" --output "$dir/scores_${key}_${cal#*:}" \
                --metrics-json "$dir/metrics_${key}_${cal#*:}.json"
          done
        done
      done
    done
  done
  local students_list
  read -r -a students_list <<< "$students"
  if _svmix_has_backend fusion && [ "${#students_list[@]}" -ge 2 ]; then
    for k in $(_svmix_seed_list); do
      fused="$exp/fusion/seed$k"
      mkdir -p "$fused"
      for dev in "${devs[@]}"; do
        d="${dev##*/}"
        local dev_scores=() inputs=()
        for s in $students; do
          dev_scores+=(--scores "$exp/$s/seed$k/scores_dev_$d"); inputs+=("$exp/$s/seed$k/scores_dev_$d")
        done
        run_step "fusion_seed${k}_$d" "${inputs[@]}" -- svmix-calibrate "${dev_scores[@]}" --trials "$dev/trials" \
          --operating-point min-dcf --p-target 0.05 --out "$fused/fusion_$d.json"
      done
      for set in $test_sets; do
        data="$test_root/$set"
        dev="$(_svmix_dev_of "$set")"
        d="${dev##*/}"
        for t in $(_svmix_trials_of "$set"); do
          key="${set}_$t"
          local test_scores=() test_inputs=("$fused/fusion_$d.json")
          for s in $students; do test_scores+=(--scores "$exp/$s/seed$k/scores_$key"); test_inputs+=("$exp/$s/seed$k/scores_$key"); done
          run_step "fusion_seed${k}_$key" "${test_inputs[@]}" "$data/$t" -- \
            svmix-calibrate --apply "$fused/fusion_$d.json" "${test_scores[@]}" --output "$fused/scores_$key"
          run_step "fusion_metrics_seed${k}_$key" "$fused/scores_$key" "$data/$t" -- \
            svmix-metrics --scores "$fused/scores_$key" --trials "$data/$t" --utt2spk "$data/utt2spk" \
              --json "$fused/metrics_$key.json"
        done
      done
    done
  fi
}

# _svmix_pictures SET: beside the DET plots, per trained system (its first seed), a t-SNE of the
# embeddings of SET coloured by speaker and, per trials list, the histogram of its cosine scores with
# the minDCF(0.05) threshold of those trials (names: svmix/report.py, det_plot_name and the others).
_svmix_pictures() {
  local set="$1" s t k dir data="$test_root/$1"
  k="${seeds%%,*}"
  for s in $(_svmix_systems); do
    dir="$exp/$s/seed$k"
    run_step "tsne_${s}_seed${k}_$set" "$dir/emb_$set/xvector.scp" "$data/utt2spk" -- \
      svmix-plot --tsne "$exp/tsne_${s}_seed${k}_$set.png" --embeddings "$dir/emb_$set/xvector.scp" \
        --utt2spk "$data/utt2spk" --title "$s seed$k, $set (t-SNE)"
    for t in $(_svmix_trials_of "$set"); do
      run_step "hist_${s}_seed${k}_${set}_$t" "$dir/scores_${set}_$t" "$data/$t" -- \
        svmix-plot --histogram "$exp/hist_${s}_seed${k}_${set}_$t.png" --scores "$dir/scores_${set}_$t" \
          --trials "$data/$t" --threshold min-dcf --p-target 0.05 --title "$s seed$k, $set/$t: cosine scores"
    done
  done
}

# Every student of every seed as ONNX and TorchScript (model.onnx, model.ts); a one-pass student
# (e.g. svmixer_anylen) as a torch.export program (model.pt2), the one format with a dynamic length.
stage_export() {
  svmix_log "stage 6: export for deployment"
  local s k dir fmt formats one_pass
  for s in $students; do
    one_pass="$(_svmix_model_fact "$model_conf_dir/$s.yaml" one_pass)"  # (an assignment alone: set -e stops on failure)
    formats="onnx:onnx torchscript:ts"
    if [ "$one_pass" = true ]; then formats="pt2:pt2"; fi
    for k in $(_svmix_seed_list); do
      dir="$exp/$s/seed$k"
      for fmt in $formats; do
        run_step "export_${s}_seed${k}_${fmt%%:*}" "$dir/model.pt" -- \
          svmix-export --model "$dir" --format "${fmt%%:*}" --out "$dir/model.${fmt#*:}"
      done
    done
  done
}

# RESULTS.md at $1 (and RESULTS_per_seed.md beside it): every system on every test set and trials
# list, mean ± std over the seeds, with params, GMACs and CPU RTF.
stage_report() {
  local out="$1" s set t note args=(--seeds "$seeds")
  for s in $(_svmix_systems); do args+=(--system "$exp/$s"); done
  for set in $test_sets; do args+=(--test-data "$test_root/$set"); done
  for t in $trials_names; do args+=(--trials-name "$t"); done
  local own defaults
  read -r -a defaults <<< "$trials_names"
  for set in $test_sets; do
    read -r -a own <<< "$(_svmix_trials_of "$set")"
    [ "${own[*]}" = "${defaults[*]}" ] || args+=(--trials-of "$set=$(IFS=,; echo "${own[*]}")")
  done
  if [ "${floor:-true}" = true ]; then args+=(--floor "$exp/floor"); fi
  [ -n "${teacher_eval:-}" ] && args+=(--teacher "$teacher_eval")
  local IFS=';'
  for note in ${test_notes:-}; do  # the notes of the test sets reported
    [[ " $test_sets " == *" ${note%%=*} "* ]] && args+=(--note "$note")
  done
  for note in ${test_missing:-}; do args+=(--missing "$note"); done
  unset IFS
  if [ -d "$exp/fusion" ] && [[ " ${backends:-} " == *" fusion "* ]]; then args+=(--fusion "$exp/fusion"); fi
  svmix-report "${args[@]}" --commands "$commands_log" --plots "$exp" --out "$out"
  # The accuracy table on the terminal and in run.log; sizes, timing and commands are in the file.
  sed -n '1p;/^## Accuracy/,/^## /{/^## /!p;/^## Accuracy/p}' "$out"
  echo "(sizes, timing and commands: $out)"
}

# _svmix_check_names OPTION VALUE...: each VALUE must be a plain name (it becomes a directory).
_svmix_check_names() {
  local option="$1" v; shift
  for v in "$@"; do
    [[ "$v" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || recipe_error "--$option: '$v' is not a plain name (letters, digits, _ . -)"
  done
}

# Checks the variables the shared stages need (one line naming the first bad one) and, with
# --print-options, prints every recipe option and stage variable as name=value (the values the run
# would use) and exits. Otherwise starts the run (recipe_start, tools/stage_lib.sh).
recipe_begin() {
  local v names
  read -r -d '' -a names <<< "$svmix_stage_variables" || true
  for v in "${names[@]}"; do
    [ -n "${!v:-}" ] && continue
    [[ " $svmix_given_options " == *" $v "* ]] && recipe_error "--${v//_/-} must not be empty"
    recipe_error "the recipe does not set \$$v (the shared stages in tools/recipe_stages.sh need it)"
  done
  recipe_check_int nj 1
  recipe_check_int ngpu 0
  : "${train_nj:=1}"
  recipe_check_int train_nj 1
  if [ "$train_nj" -gt 1 ] && [ "$ngpu" -gt 1 ] && [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    recipe_error "--train-nj $train_nj with --ngpu $ngpu: each training takes every GPU (torchrun); use --train-nj 1"
  fi
  : "${nokd_students:=}" "${baselines:=}" "${test_notes:=}" "${test_trials:=}" "${test_missing:=}"
  case "${teacher_mode:=cache}" in
    cache) [ -n "${cache:-}" ] || recipe_error "the recipe does not set \$cache (needed with teacher_mode=cache)" ;;
    online) ;;
    *) recipe_error "--teacher-mode must be cache or online, got '$teacher_mode'" ;;
  esac
  case "${floor:=true}" in true|false) ;; *) recipe_error "--floor must be true or false, got '$floor'" ;; esac
  : "${backends:=}" "${dev_data:=}" "${test_dev:=}"
  for v in $backends; do
    case "$v" in asnorm|calibration|qmf|fusion) ;;
      *) recipe_error "--backends: '$v' is not one of asnorm calibration qmf fusion" ;; esac
  done
  if [ -n "$backends" ]; then
    local dev devs=() names=()
    for v in $test_sets; do
      [ -n "$(_svmix_dev_of "$v")" ] \
        || recipe_error "--backends needs development trials for test set $v (\$dev_data): the recipe sets none"
    done
    mapfile -t devs < <(_svmix_dev_sets)
    for dev in "${devs[@]}"; do
      for v in $test_sets; do
        [ "$dev" != "$test_root/$v" ] || recipe_error "--backends: the development set $dev is a test set"
      done
      for v in "${names[@]}"; do
        [ "$v" != "${dev##*/}" ] \
          || recipe_error "--backends: two development sets are named '$v' (their files take the dir's name)"
      done
      names+=("${dev##*/}")
    done
  fi
  [[ "$teacher_layers" =~ ^[0-9]+(,[0-9]+)*$ ]] \
    || recipe_error "--teacher-layers must be comma-separated layer numbers (e.g. 8,16,24), got '$teacher_layers'"
  [[ "$seeds" =~ ^(0|[1-9][0-9]{0,8})(,(0|[1-9][0-9]{0,8}))*$ ]] \
    || recipe_error "--seeds must be comma-separated non-negative integers without leading zeros (e.g. 1,2,3), got '$seeds'"
  [ -z "$(tr ',' '\n' <<< "$seeds" | sort | uniq -d)" ] || recipe_error "--seeds lists a seed twice: '$seeds'"
  # shellcheck disable=SC2086
  _svmix_check_names test-sets $test_sets
  # shellcheck disable=SC2086
  _svmix_check_names trials-names $trials_names
  # shellcheck disable=SC2086
  _svmix_check_names students $students $nokd_students $baselines
  : "${lmft:=}" "${lmft_config:=}"
  local base_systems
  base_systems="$(_svmix_base_systems | paste -sd ' ')"
  for v in $lmft; do
    [[ " $base_systems " == *" $v "* ]] \
      || recipe_error "--lmft: '$v' is not a trained system of this run (one of: $base_systems)"
  done
  if [ -n "$lmft" ] && [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    [ -f "$lmft_config" ] || recipe_error "--lmft-config ${lmft_config:-(empty)}: file not found"
  fi
  local systems duplicate
  systems="$(_svmix_systems; if [ "$floor" = true ]; then echo floor; fi)"
  duplicate="$(sort <<< "$systems" | uniq -d | head -1)"
  [ -z "$duplicate" ] || recipe_error "two systems are named '$duplicate' (--students, --nokd-students, --baselines, --lmft; 'floor' is the floor's)"
  duplicate="$(tr ' ' '\n' <<< "$test_sets" | sed '/^$/d' | sort | uniq -d | head -1)"
  [ -z "$duplicate" ] || recipe_error "--test-sets lists '$duplicate' twice"
  if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    [ -f "$train_config" ] || recipe_error "--train-config $train_config: file not found"
    for v in $students $nokd_students; do
      [ -f "$model_conf_dir/$v.yaml" ] || recipe_error "--students: $model_conf_dir/$v.yaml not found"
    done
    for v in $baselines; do
      [ -f "$model_conf_dir/$v.yaml" ] || recipe_error "--baselines: $model_conf_dir/$v.yaml not found"
    done
  fi
  recipe_start "$recipe_options $svmix_stage_variables $svmix_optional_stage_variables" "$@"
}

# Stages 2-6 within --stage..--stop-stage, then RESULTS.md at $1. (`if`, not `&&`: bash ignores
# `set -e` inside functions called from an && list.) Caching only when some system distils.
run_shared_stages() {
  if in_stage 2 && [ "${teacher_mode:-cache}" = cache ] && [ -n "$students$nokd_students" ]; then stage_cache; fi
  if in_stage 3; then stage_train; fi
  if in_stage 4; then stage_extract; fi
  if in_stage 5; then stage_score; fi
  if in_stage 6; then stage_export; fi
  if [ "$stop_stage" -ge 5 ]; then stage_report "$1"; fi
  svmix_log "done"
}
