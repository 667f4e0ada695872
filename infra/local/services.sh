#!/usr/bin/env bash
# The local services, as real processes: `services.sh up|down|status` (make services-up / services-down).
# Extra arguments go to chorus before the command, e.g. `services.sh up --state-dir /srv/chorus`.
set -euo pipefail
cd "$(dirname "$0")/../.."
action="${1:?usage: services.sh up|down|status [chorus options]}"
shift
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false GX_ANALYTICS_ENABLED=false
exec .venv/bin/chorus "$@" services "$action"
