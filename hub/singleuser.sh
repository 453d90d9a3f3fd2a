#!/usr/bin/env bash
# Each student's server: the spawner (hub/aula_spawner.py) runs this as the student, in
# their memory cgroup. Brings their notebooks and kernel home up to date, then starts
# JupyterLab (jupyterhub-singleuser) in their home.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hub/env.sh
source "$here/env.sh"
shared_cache=$AULA_HUB_PREFIX/cache
cd "$HOME"
umask 077   # what the student writes is theirs alone

# 1. Their copy of the notebooks: new versions distributed without overwriting their edits.
python3 "$here/distribute.py" "$AULA_HUB_PREFIX/src/notebooks" "$HOME/notebooks"

# 2. aula's cache: the shared weights (read-only, a link), the shared feature files (a link
#    per file, so that features the student extracts anew land in their own folder), the CPU
#    calibration (a copy: aula may rewrite it).
mkdir -p "$AULA_CACHE/features" "$AULA_CACHE/precision"
ln -sfn "$shared_cache/weights" "$AULA_CACHE/weights"
for f in "$shared_cache"/features/*; do
  [ -e "$f" ] && ln -sfn "$f" "$AULA_CACHE/features/$(basename "$f")"
done
for f in "$shared_cache"/precision/*.json; do
  [ -e "$f" ] && cp -n "$f" "$AULA_CACHE/precision/"
done

# 3. Their kernel home: a private copy of the shared template (first time: a few seconds).
shared_home=$(cat "$AULA_HUB_PREFIX/kernel-home")
"$here/kernel-launch.sh" --prepare "$shared_home"

# 4. A warm kernel for the notebooks folder, started now at nice 19 (kernel/README.md, "Why
#    a pool"), when the hub gives this server a pool (AULA_KERNEL_POOL, from the measured
#    kernel RSS and the machine's memory; see jupyterhub_config.py).
if [ "${AULA_KERNEL_POOL:-0}" != 0 ]; then
  (cd "$HOME/notebooks" && "$AULA_HUB_PREFIX/src/kernel/launch.sh" --prewarm "$AULA_CACHE/kernel/hub") || true
fi

exec jupyterhub-singleuser --ServerApp.root_dir="$HOME" "$@"
