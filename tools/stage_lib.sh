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
