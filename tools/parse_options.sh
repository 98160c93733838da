#!/usr/bin/env bash
# Kaldi-style option parsing for recipes. Source it after defining the recipe's variables:
#   --name value sets $name (dashes become underscores) if the recipe defined it;
#   an unknown option is an error that lists the known ones; --help prints $help_message.
# The known options are the variables the recipe lists in $recipe_options; the ones given on the
# command line are listed in $svmix_given_options.
svmix_given_options=""
_svmix_known() { local v; for v in $recipe_options; do printf ' --%s' "${v//_/-}"; done; }
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      printf '%s\n\nOptions (current value):\n' "$help_message"
      for _v in $recipe_options; do printf '  --%-22s %s\n' "${_v//_/-}" "${!_v}"; done
      exit 0 ;;
    --*=*) _name="${1%%=*}"; _value="${1#*=}"; shift ;;
    --*)
      _name="$1"
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 2; fi
      _value="$2"; shift 2 ;;
    *) echo "$0: unexpected argument '$1' (options are --name value; see --help)" >&2; exit 2 ;;
  esac
  _name="${_name#--}"; _name="${_name//-/_}"
  case " $recipe_options " in
    *" $_name "*) printf -v "$_name" '%s' "$_value"; svmix_given_options+=" $_name" ;;
    *) echo "$0: unknown option --${_name//_/-}; known options:$(_svmix_known)" >&2; exit 2 ;;
  esac
done
unset _name _value _v
