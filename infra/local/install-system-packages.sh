#!/usr/bin/env bash
# Debian packages chorus needs at run/test time, installed only where missing.
#   libfluidsynth3: FluidSynth, which renders the demo corpus (pyfluidsynth loads it).
#   postgresql (with --services or --test): the MLflow tracking server's database (make services-up).
#   chromium (with --test): the headless browser the report and UI tests drive.
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q 'libfluidsynth.so.3' || need+=(libfluidsynth3)
case "${1:-}" in
  --test)
    command -v chromium >/dev/null || need+=(chromium)
    ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
    ;;
  --services)
    ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
    ;;
esac
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
