#!/usr/bin/env bash
# `make hub`: the class's JupyterHub in the foreground (as root), on the shared install that
# hub/setup.sh made. Ctrl-C (or SIGTERM) stops it, and with it every student's server and
# kernel (cleanup_servers + AulaSpawner.stop).
#
#   hub/run.sh     environment: AULA_HUB_PORT (8000), AULA_HUB_CLASSLIST, AULA_HUB_IDLE, ...
#                  (see hub/jupyterhub_config.py)
set -euo pipefail
prefix=${AULA_HUB_PREFIX:-/opt/aula-hub}
export AULA_HUB_PREFIX=$prefix
export AULA_HUB_STATE=${AULA_HUB_STATE:-$prefix/state}
export AULA_HUB_CLASSLIST=${AULA_HUB_CLASSLIST:-$prefix/src/hub/classlist.txt}
[ "$(id -u)" = 0 ] || { echo "hub: run as root (each student's server runs as their Unix user)" >&2; exit 1; }
[ -x "$prefix/venv/bin/jupyterhub" ] || { echo "hub: no install in $prefix; run \`make hub-setup\`" >&2; exit 1; }
mkdir -p "$AULA_HUB_STATE"
chmod 700 "$AULA_HUB_STATE"
cd "$AULA_HUB_STATE"
echo "hub: http://$(hostname -f 2>/dev/null || hostname):${AULA_HUB_PORT:-8000}/ — students log in with their name from $AULA_HUB_CLASSLIST;"
echo "hub: the first login sets the password. Ctrl-C stops the hub and every server."
exec "$prefix/venv/bin/jupyterhub" -f "$prefix/src/hub/jupyterhub_config.py"
