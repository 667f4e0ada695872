#!/usr/bin/env bash
# Debian packages chorus needs at run/test time, installed only where missing.
#   libfluidsynth3: FluidSynth, which renders the demo corpus (pyfluidsynth loads it).
#   chromium (with --test): the headless browser the report test opens the HTML report in.
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q 'libfluidsynth.so.3' || need+=(libfluidsynth3)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null || need+=(chromium)
fi
if ((${#need[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "chorus needs: ${need[*]} (no apt-get here: install them with your package manager)" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
