#!/usr/bin/env bash
# The default recipe, recipes/mini/run.sh, run from the repository top wherever this is called
# from: its outputs go to data/mini_world, data/augment and exp/ here (exp/RESULTS.md at the end).
#   ./run.sh                      # everything (sets up .venv/ on first use)
#   ./run.sh --help               # stages and options
cd "$(dirname "$0")" && exec bash recipes/mini/run.sh "$@"
