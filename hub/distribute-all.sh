#!/usr/bin/env bash
# `make hub-distribute` (root): the notebooks of the shared install (hub/setup.sh snapshots
# this checkout's notebooks/) to every student in the class list, now, as each student (their
# files stay theirs). An edited notebook is never overwritten: the new version goes beside it
# as NAME.nuevo.ipynb (hub/distribute.py). Servers that start later do the same by themselves.
set -euo pipefail
prefix=${AULA_HUB_PREFIX:-/opt/aula-hub}
classlist=${AULA_HUB_CLASSLIST:-$prefix/src/hub/classlist.txt}
python=$prefix/venv/bin/python
users=$("$python" -c 'import sys; sys.path.insert(0, sys.argv[1]); import classlist; print(*classlist.read(sys.argv[2])[0])' \
  "$prefix/src/hub" "$classlist")
for u in $users; do
  home=$(getent passwd "$u" | cut -d: -f6)
  [ -n "$home" ] || { echo "hub-distribute: no Unix user $u (run \`make hub-setup\`)" >&2; continue; }
  echo "hub-distribute: $u"
  runuser -u "$u" -- "$python" "$prefix/src/hub/distribute.py" "$prefix/src/notebooks" "$home/notebooks"
done
