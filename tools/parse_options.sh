#!/usr/bin/env bash
# Kaldi-style option parsing for recipes. Source it after tools/stage_lib.sh, once the recipe has
# defined its variables and listed their names in $recipe_options (separated by any whitespace,
# newlines included):
#   --name value or --name=value sets $name (dashes or underscores in the name) if it is listed;
#   an unknown option, or an option without a value, is an error (the first lists the known ones);
#   --help prints $help_message and every option with its default, and exits;
#   --stage and --stop-stage must be integers;
#   --print-options makes recipe_begin (tools/recipe_stages.sh) print the resolved variables and
#   exit before any work.
# The options given on the command line are listed in $svmix_given_options.
svmix_given_options=""
svmix_print_options=false
read -r -d '' -a svmix_option_names <<< "$recipe_options" || true
for _v in "${svmix_option_names[@]}"; do
  [ -n "${!_v+set}" ] || recipe_error "recipe_options lists '$_v', which the recipe does not define"
done

_svmix_is_option() {
  local v
  for v in "${svmix_option_names[@]}"; do [ "$v" = "$1" ] && return 0; done
  return 1
}

_svmix_known() { local v; for v in "${svmix_option_names[@]}"; do printf ' --%s' "${v//_/-}"; done; }

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      printf '%s\n\nOptions (default):\n' "$help_message"
      for _v in "${svmix_option_names[@]}"; do printf '  --%-22s %s\n' "${_v//_/-}" "${!_v:-\"\"}"; done
      printf '  --%-22s %s\n' print-options "print every resolved variable and exit (no work is done)"
      exit 0 ;;
    --print-options|--print_options) svmix_print_options=true; shift; continue ;;
    --*=*) _name="${1%%=*}"; _value="${1#*=}"; shift ;;
    --*)
      _name="$1"
      [ $# -ge 2 ] || recipe_error "option $1 needs a value"
      _value="$2"; shift 2 ;;
    *) recipe_error "unexpected argument '$1' (options are --name value; see --help)" ;;
  esac
  _name="${_name#--}"; _name="${_name//-/_}"
  _svmix_is_option "$_name" || recipe_error "unknown option --${_name//_/-}; known options:$(_svmix_known)"
  printf -v "$_name" '%s' "$_value"
  svmix_given_options+=" $_name"
done
# Stage numbers are compared as integers by in_stage (tools/stage_lib.sh) everywhere.
for _v in stage stop_stage; do [ -z "${!_v+set}" ] || recipe_check_int "$_v"; done
unset _name _value _v
