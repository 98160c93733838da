#!/usr/bin/env bash
# Create (once) and activate the project's virtual environment in .venv/.
# Idempotent: reinstalls only when setup.cfg or the pinned versions below change.
# Source it: `. tools/setup_venv.sh`.
SVMIX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# What CI and the quick start use; users may install any torch>=2.1 themselves.
SVMIX_TORCH_PINS="torch==2.14.1 torchaudio==2.11.0"
_svmix_venv="$SVMIX_ROOT/.venv"
_svmix_stamp="$_svmix_venv/.svmix-install-stamp"
_svmix_want="$(cat "$SVMIX_ROOT/setup.cfg" "$SVMIX_ROOT/pyproject.toml" | sha256sum | cut -c1-16) $SVMIX_TORCH_PINS"
if [ ! -f "$_svmix_stamp" ] || [ "$(cat "$_svmix_stamp")" != "$_svmix_want" ]; then
  echo "[setup] preparing $_svmix_venv (first run takes about two minutes)" >&2
  if [ ! -x "$_svmix_venv/bin/python" ]; then
    # torch's CUDA build with its libraries takes about 6.1 GB in the venv (measured); fail before it.
    _svmix_free_kb="$(df -Pk "$SVMIX_ROOT" | awk 'NR==2 {print $4}')"
    if [ -n "$_svmix_free_kb" ] && [ "$_svmix_free_kb" -lt 7000000 ]; then
      echo "[setup] $((_svmix_free_kb / 1024)) MB free on the filesystem of $SVMIX_ROOT; the install needs about 7 GB" >&2
      return 1 2>/dev/null || exit 1
    fi
    python3 -m venv "$_svmix_venv" || return 1 2>/dev/null || exit 1
  fi
  _svmix_log="$_svmix_venv/install.log"
  { "$_svmix_venv/bin/python" -m pip install --disable-pip-version-check --no-cache-dir $SVMIX_TORCH_PINS \
      && "$_svmix_venv/bin/python" -m pip install --disable-pip-version-check --no-cache-dir -e "$SVMIX_ROOT[test]"; } \
    > "$_svmix_log" 2>&1 \
    && echo "$_svmix_want" > "$_svmix_stamp" \
    || { tail -n 20 "$_svmix_log" >&2; echo "[setup] installation failed; see $_svmix_log" >&2
         return 1 2>/dev/null || exit 1; }
fi
# shellcheck disable=SC1091
. "$_svmix_venv/bin/activate"
export PYTHONUNBUFFERED=1
