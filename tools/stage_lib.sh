#!/usr/bin/env bash
# Stage helpers shared by every recipe.
#   run_step [--fresh DIR] NAME INPUT... -- COMMAND...
# runs COMMAND unless a done-marker for NAME exists whose fingerprint (the command line plus the
# size and modification time of each INPUT file or directory tree) is unchanged. The marker is
# written only after COMMAND succeeds, so a crashed step reruns (and its tool resumes).
# A step given --fresh DIR (training: its result depends on more than its inputs) is also redone,
# even when complete, in the stage named explicitly by --stage N: that is how `./run.sh --stage 3`
# retrains. DIR is moved aside first (DIR.<timestamp>), so nothing finished is lost.
# Each command run is appended to $commands_log when that is set (RESULTS.md lists them).
svmix_log() { echo "[$(date '+%F %T')] $*" >&2; }

# recipe_error MESSAGE: one line on stderr, `<recipe>: error: MESSAGE`, and exit 2.
recipe_error() { echo "$0: error: $*" >&2; exit 2; }

# recipe_check_int NAME MIN: $NAME must be an integer >= MIN (MIN may be omitted), else recipe_error.
recipe_check_int() {
  local value="${!1}"
  [[ "$value" =~ ^-?[0-9]{1,18}$ ]] || recipe_error "--${1//_/-} must be an integer, got '$value'"
  [ -z "${2:-}" ] || [ "$value" -ge "$2" ] || recipe_error "--${1//_/-} must be at least $2, got $value"
}

_svmix_fingerprint() {
  local p
  for p in "$@"; do
    if [ -d "$p" ]; then
      find "$p" -type f ! -name '.*' -printf '%p %s %T@\n' 2>/dev/null | LC_ALL=C sort
    elif [ -e "$p" ]; then
      stat -c '%n %s %Y' "$p"
    else
      echo "missing $p"
    fi
  done | sha256sum | cut -c1-16
}

run_step() {
  local fresh=""
  if [ "$1" = "--fresh" ]; then fresh="$2"; shift 2; fi
  local name="$1"; shift
  local inputs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  local marker_dir="${done_dir:-exp/.done}"
  local marker="$marker_dir/$name.done"
  local fp
  fp="$( { printf '%q ' "$@"; echo; _svmix_fingerprint "${inputs[@]}"; } | sha256sum | cut -c1-16)"
  if [ -f "$marker" ]; then
    if [ -n "$fresh" ] && _svmix_forced_stage; then
      svmix_log "redo $name (stage ${svmix_current_stage} requested with --stage)"
      if [ -e "$fresh" ]; then
        local aside
        aside="$fresh.$(date +%Y%m%d-%H%M%S)"
        svmix_log "moving the finished $fresh aside to $aside"
        mv "$fresh" "$aside"
      fi
    elif [ "$(cat "$marker")" = "$fp" ]; then
      svmix_log "skip $name (done; inputs unchanged)"
      return 0
    fi
  fi
  svmix_log "run  $name: $*"
  [ -n "${commands_log:-}" ] && printf '%s\n' "$*" >> "$commands_log"
  "$@" || { svmix_log "FAILED $name"; return 1; }
  mkdir -p "$marker_dir"
  echo "$fp" > "$marker.tmp" && mv "$marker.tmp" "$marker"
}

# recipe_start VARIABLES ARGS...: with --print-options (tools/parse_options.sh), prints each variable
# named in VARIABLES (any whitespace between names; each once) as name=value, the values the run would
# use, and exits. Otherwise starts the run in $exp: done-markers in $exp/.done, the command log
# $exp/commands.log, everything printed also to $exp/run.log, and a first line with ARGS.
recipe_start() {
  local names v printed=" "
  read -r -d '' -a names <<< "$1" || true
  shift
  if ${svmix_print_options:-false}; then
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

# in_stage N: true when N lies within --stage .. --stop-stage (and makes N the current stage).
in_stage() {
  [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ] || return 1
  svmix_current_stage=$1
}

# True while running the stage that --stage named explicitly on the command line.
_svmix_forced_stage() {
  [ "${svmix_current_stage:-}" = "${stage:-}" ] && [[ " ${svmix_given_options:-} " == *" stage "* ]]
}

# A pool of background steps, at most N at a time (several trainings at once on a CPU):
#   step_pool_begin N; step_pool_run NAME LOG COMMAND...; ...; step_pool_end
# With N = 1, step_pool_run runs COMMAND in the foreground, its output on the terminal. Otherwise
# COMMAND (e.g. a function calling run_step) runs in a background subshell with its output in LOG;
# while the pool is full, a line per running step says how far it is (its LOG's last line) once a
# minute, and each step's end is logged as it comes. A failed step does not stop the others:
# step_pool_end waits for all of them, then names each failed step with its log's last lines and
# returns 1 (what finished keeps its done-markers). Ctrl-C or TERM stops every running step.
step_pool_begin() {
  _svmix_pool_size=$1 _svmix_pool_pids=() _svmix_pool_names=() _svmix_pool_logs=() _svmix_pool_starts=()
  _svmix_pool_failed=()
  trap '_svmix_pool_stop; exit 130' INT
  trap '_svmix_pool_stop; exit 143' TERM
}

# Background jobs of a script ignore Ctrl-C: an interrupted run stops them, and what they started.
_svmix_kill_tree() {
  local c
  for c in $(pgrep -P "$1" 2>/dev/null); do _svmix_kill_tree "$c"; done
  kill "$1" 2>/dev/null || true
}
_svmix_pool_stop() {
  local p
  for p in ${_svmix_pool_pids[@]+"${_svmix_pool_pids[@]}"}; do _svmix_kill_tree "$p"; done
}

# _svmix_step_lines LOG: the recipe's own lines in a background step's output (run, skip, redo, moved
# aside), indented, so the run's log says what each step did.
_svmix_step_lines() {
  grep -E '^\[[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}\] ' "$1" 2>/dev/null | cut -c1-300 | sed 's/^/    /' >&2 || true
}

# _svmix_pool_reap: forget the steps that ended, logging each (a failure is kept for step_pool_end).
_svmix_pool_reap() {
  local i pids=() names=() logs=() starts=()
  for i in ${_svmix_pool_pids[@]+"${!_svmix_pool_pids[@]}"}; do
    if kill -0 "${_svmix_pool_pids[$i]}" 2>/dev/null; then
      pids+=("${_svmix_pool_pids[$i]}") names+=("${_svmix_pool_names[$i]}")
      logs+=("${_svmix_pool_logs[$i]}") starts+=("${_svmix_pool_starts[$i]}")
    elif wait "${_svmix_pool_pids[$i]}"; then
      svmix_log "finished ${_svmix_pool_names[$i]} in $((SECONDS - _svmix_pool_starts[$i])) s"
      _svmix_step_lines "${_svmix_pool_logs[$i]}"
    else
      svmix_log "FAILED ${_svmix_pool_names[$i]} (its output: ${_svmix_pool_logs[$i]})"
      _svmix_step_lines "${_svmix_pool_logs[$i]}"
      _svmix_pool_failed+=("${_svmix_pool_names[$i]}"$'\t'"${_svmix_pool_logs[$i]}")
    fi
  done
  _svmix_pool_pids=(${pids[@]+"${pids[@]}"}) _svmix_pool_names=(${names[@]+"${names[@]}"})
  _svmix_pool_logs=(${logs[@]+"${logs[@]}"}) _svmix_pool_starts=(${starts[@]+"${starts[@]}"})
}

# _svmix_pool_wait_below N: until fewer than N steps run, with a progress line a minute per step.
_svmix_pool_wait_below() {
  local waited=0 i line
  _svmix_pool_reap
  while [ "${#_svmix_pool_pids[@]}" -ge "$1" ] && [ "${#_svmix_pool_pids[@]}" -gt 0 ]; do
    sleep 1
    waited=$((waited + 1))
    if [ $((waited % 60)) -eq 0 ]; then
      for i in "${!_svmix_pool_pids[@]}"; do
        line="$(tr '\r' '\n' < "${_svmix_pool_logs[$i]}" 2>/dev/null | sed '/^[[:space:]]*$/d' | tail -n 1 | cut -c1-160)"
        svmix_log "  running ${_svmix_pool_names[$i]}: ${line:-(no output yet)}"
      done
    fi
    _svmix_pool_reap
  done
}

step_pool_run() {
  local name="$1" log="$2"
  shift 2
  if [ "$_svmix_pool_size" -le 1 ]; then "$@" < /dev/null; return; fi
  _svmix_pool_wait_below "$_svmix_pool_size"
  mkdir -p "$(dirname "$log")"
  svmix_log "start $name in the background (its output: $log)"
  ( "$@" ) > "$log" 2>&1 &
  _svmix_pool_pids+=("$!") _svmix_pool_names+=("$name") _svmix_pool_logs+=("$log") _svmix_pool_starts+=("$SECONDS")
}

step_pool_end() {
  local entry
  _svmix_pool_wait_below 1
  [ "${#_svmix_pool_failed[@]}" -eq 0 ] && return 0
  for entry in "${_svmix_pool_failed[@]}"; do
    svmix_log "FAILED ${entry%%$'\t'*}; the end of ${entry#*$'\t'}:"
    tail -n 5 "${entry#*$'\t'}" | tr '\r' '\n' | sed 's/^/    /' >&2
  done
  svmix_log "${#_svmix_pool_failed[@]} step(s) failed (named above); the others finished"
  _svmix_pool_failed=()
  return 1
}
