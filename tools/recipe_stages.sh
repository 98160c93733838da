#!/usr/bin/env bash
# Stages 2-6, shared by every recipe (stage numbers in docs/conventions.md §Stages). A recipe defines stages 0-1
# (its corpus) and these variables, then calls the functions below:
#   exp nj ngpu teacher teacher_layers train_data val_data augment_dir cache train_config
#   model_conf_dir students test_data trials_names train_opts extract_opts
# and optionally teacher_mode=online (no stage 2; the teacher runs during training).
# Every step goes through run_step (tools/stage_lib.sh): done-markers, resumable tools.

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
  local s teacher_args=(--teacher-cache "$cache") inputs=("$cache/manifest.json") launcher=(svmix-train)
  if [ "${teacher_mode:-cache}" = online ]; then teacher_args=(--teacher "$teacher"); inputs=(); fi
  # On several GPUs: torchrun, one process per GPU.
  if [ "${ngpu:-0}" -gt 1 ]; then launcher=(torchrun --standalone --nproc_per_node "$ngpu" -m svmix.bin.train); fi
  for s in $students; do
    # shellcheck disable=SC2086
    run_step --fresh "$exp/$s" "train_$s" "$train_config" "$model_conf_dir/$s.yaml" "${inputs[@]}" -- \
      "${launcher[@]}" --config "$train_config" --model-config "$model_conf_dir/$s.yaml" \
        --data "$train_data" --val-data "$val_data" "${teacher_args[@]}" \
        --augment-dir "$augment_dir" --exp "$exp/$s" $train_opts
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

# Start a recipe run: done-markers and the command log in $exp, everything also to $exp/run.log.
recipe_begin() {
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
