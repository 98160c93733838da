#!/usr/bin/env bash
# Stages 2-6, shared by every recipe (stage numbers in docs/conventions.md §Stages). A recipe defines
# stages 0-1 (its corpus) and the variables in $svmix_stage_variables, then calls recipe_begin and
# run_shared_stages. teacher_mode=online (optional) skips stage 2: the teacher runs during training.
# Every step goes through run_step (tools/stage_lib.sh): done-markers, resumable tools.
svmix_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# What the shared stages read; recipe_begin fails naming the first one the recipe left unset.
svmix_stage_variables="stage stop_stage exp nj ngpu teacher teacher_layers train_data val_data test_data
  trials_names augment_dir train_config model_conf_dir students"
# Read too, but may be empty: cache (required with teacher_mode=cache), teacher_eval (the teacher's
# row in RESULTS.md), train_opts and extract_opts (extra options for svmix-train and svmix-extract).
svmix_optional_stage_variables="teacher_mode cache teacher_eval train_opts extract_opts"

# teacher_last_layer --teacher SPEC | --mini-config FILE: the teacher's last layer (HF indexing),
# read from its configuration without loading weights (local/teacher_layers.py).
teacher_last_layer() { python "$svmix_root/local/teacher_layers.py" "$@"; }

stage_cache() {
  svmix_log "stage 2: teacher feature caching"
  local inputs=("$train_data/wav.scp")
  [ -e "$teacher" ] && inputs+=("$teacher")
  run_step cache "${inputs[@]}" -- \
    svmix-cache-teacher --teacher "$teacher" --data "$train_data" --layers "$teacher_layers" \
      --out "$cache" --nj "$nj"
}

stage_train() {
  svmix_log "stage 3: distillation"
  # The KD targets are the layers the recipe caches ($teacher_layers): stated once, in the recipe.
  local s teacher_args=(--teacher-cache "$cache") inputs=("$cache/manifest.json") launcher=(svmix-train)
  if [ "${teacher_mode:-cache}" = online ]; then teacher_args=(--teacher "$teacher"); inputs=(); fi
  # On several GPUs: torchrun, one process per GPU.
  if [ "${ngpu:-0}" -gt 1 ]; then launcher=(torchrun --standalone --nproc_per_node "$ngpu" -m svmix.bin.train); fi
  for s in $students; do
    # shellcheck disable=SC2086
    run_step --fresh "$exp/$s" "train_$s" "$train_config" "$model_conf_dir/$s.yaml" "${inputs[@]}" -- \
      "${launcher[@]}" --config "$train_config" --model-config "$model_conf_dir/$s.yaml" \
        --data "$train_data" --val-data "$val_data" "${teacher_args[@]}" \
        --override "train.kd.layers=[$teacher_layers]" --augment-dir "$augment_dir" --exp "$exp/$s" $train_opts
  done
}

stage_extract() {
  svmix_log "stage 4: embedding extraction"
  local s name
  name=$(basename "$test_data")
  for s in $students; do
    # shellcheck disable=SC2086
    run_step "extract_${s}_$name" "$exp/$s/model.pt" "$test_data/wav.scp" -- \
      svmix-extract --model "$exp/$s" --data "$test_data" --out "$exp/$s/emb_$name" --nj "$nj" $extract_opts
  done
}

stage_score() {
  svmix_log "stage 5: scoring and metrics"
  local s t name plot_args
  name=$(basename "$test_data")
  for t in $trials_names; do
    plot_args=()
    for s in $students; do
      run_step "score_${s}_$t" "$exp/$s/emb_$name/xvector.scp" "$test_data/$t" -- \
        svmix-score --trials "$test_data/$t" --embeddings "$exp/$s/emb_$name/xvector.scp" \
          --output "$exp/$s/scores_$t" --metrics-json "$exp/$s/metrics_$t.json"
      plot_args+=(--scores "$exp/$s/scores_$t" --label "$s")
    done
    svmix-metrics "${plot_args[@]}" --trials "$test_data/$t" --det-plot "$exp/det_$t.png"
  done
}

stage_export() {
  svmix_log "stage 6: export for deployment"
  local s
  for s in $students; do
    run_step "export_${s}_onnx" "$exp/$s/model.pt" -- \
      svmix-export --model "$exp/$s" --format onnx --out "$exp/$s/model.onnx"
    run_step "export_${s}_torchscript" "$exp/$s/model.pt" -- \
      svmix-export --model "$exp/$s" --format torchscript --out "$exp/$s/model.ts"
  done
}

# RESULTS.md: every system on every trials list, with params, GMACs and CPU RTF.
stage_report() {
  local out="$1" s t args=()
  for s in $students; do args+=(--system "$exp/$s"); done
  for t in $trials_names; do args+=(--trials-name "$t"); done
  [ -n "${teacher_eval:-}" ] && args+=(--teacher "$teacher_eval")
  svmix-report "${args[@]}" --emb-name "$(basename "$test_data")" --commands "$commands_log" --out "$out"
  cat "$out"
}

# Checks the variables the shared stages need (one line naming the first bad one) and, with
# --print-options, prints every recipe option and stage variable as name=value (the values the run
# would use) and exits. Otherwise starts the run: done-markers and the command log in $exp,
# everything also to $exp/run.log.
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
  case "${teacher_mode:=cache}" in
    cache) [ -n "${cache:-}" ] || recipe_error "the recipe does not set \$cache (needed with teacher_mode=cache)" ;;
    online) ;;
    *) recipe_error "--teacher-mode must be cache or online, got '$teacher_mode'" ;;
  esac
  [[ "$teacher_layers" =~ ^[0-9]+(,[0-9]+)*$ ]] \
    || recipe_error "--teacher-layers must be comma-separated layer numbers (e.g. 8,16,24), got '$teacher_layers'"
  if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    [ -f "$train_config" ] || recipe_error "--train-config $train_config: file not found"
    for v in $students; do
      [ -f "$model_conf_dir/$v.yaml" ] || recipe_error "--students: $model_conf_dir/$v.yaml not found"
    done
  fi
  if $svmix_print_options; then
    local printed=" "
    read -r -d '' -a names <<< "$recipe_options $svmix_stage_variables $svmix_optional_stage_variables" || true
    for v in "${names[@]}"; do
      [[ "$printed" == *" $v "* ]] && continue
      printed+="$v "
      printf '%s=%s\n' "$v" "${!v:-}"
    done
    exit 0
  fi
  done_dir=$exp/.done
  commands_log=$exp/commands.log
  mkdir -p "$exp"
  exec > >(tee -a "$exp/run.log") 2>&1
  svmix_log "$0 $* (stages $stage..$stop_stage)"
}

# Stages 2-6 within --stage..--stop-stage, then RESULTS.md at $1. (`if`, not `&&`: bash ignores
# `set -e` inside functions called from an && list.)
run_shared_stages() {
  if in_stage 2 && [ "${teacher_mode:-cache}" = cache ]; then stage_cache; fi
  if in_stage 3; then stage_train; fi
  if in_stage 4; then stage_extract; fi
  if in_stage 5; then stage_score; fi
  if in_stage 6; then stage_export; fi
  if [ "$stop_stage" -ge 5 ]; then stage_report "$1"; fi
  svmix_log "done"
}
