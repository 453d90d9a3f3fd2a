#!/usr/bin/env bash
# The hub's "Rust · aula" kernelspec runs this as the student:
#
#   hub/kernel-launch.sh SHARED_HOME CONNECTION_FILE   a kernel (kernel/launch.sh) in the
#                                                      student's own kernel home
#   hub/kernel-launch.sh --prepare SHARED_HOME         only bring that home up to date
#
# SHARED_HOME is the kernel home hub/setup.sh built (root's, read-only). A student's kernel
# cannot work there: kernel/launch.sh gives each kernel a private copy of the template made
# of hard links, and Linux (fs.protected_hardlinks) lets a user hard-link only files they
# own. So each student has ~/.cache/aula/kernel/hub: the configuration, and their own copy of
# the template (cp -a, ≈ 700 MB, a few seconds, once per template version), from which
# their kernels' copies are hard-linked as on a single machine.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hub/env.sh
source "$here/env.sh"

prepare_only=
if [ "${1:-}" = --prepare ]; then prepare_only=1; shift; fi
shared=$1
own=$AULA_CACHE/kernel/hub

[ -f "$shared/template/.complete" ] || { echo "aula kernel: no template in $shared (run \`make hub-setup\` as root)" >&2; exit 1; }
mkdir -p "$own"
exec 6> "$own/.sync.lock"
flock 6
if ! cmp -s "$shared/template.fingerprint" "$own/template.fingerprint" || [ ! -f "$own/template/.complete" ]; then
  t0=$(date +%s%N)
  rm -rf "$own/template.new"
  cp -a "$shared/template" "$own/template.new"
  : >> "$own/template.lock"
  (
    flock -x 8   # kernels copying the old template finish first (kernel/launch.sh)
    rm -rf "$own/template.old"
    [ -d "$own/template" ] && mv "$own/template" "$own/template.old"
    mv "$own/template.new" "$own/template"
  ) 8< "$own/template.lock"
  rm -rf "$own/template.old"
  rm -f "$own/pool/ready/"* 2>/dev/null || true   # spares of the old template retire
  echo "aula kernel: private template copied in $(( ($(date +%s%N) - t0) / 1000000 )) ms → $own/template" >&2
fi
# The configuration every kernel reads (small files; always refreshed).
mkdir -p "$own/config" "$own/.cargo" "$own/run" "$own/pool/ready"
cp "$shared/config/init.evcxr" "$shared/config/prelude.rs" "$own/config/"
cp "$shared/kernel.env" "$shared/build-env" "$own/"
cp "$shared/.cargo/config.toml" "$own/.cargo/config.toml"
cp "$shared/template.fingerprint" "$own/template.fingerprint"
flock -u 6
[ -n "$prepare_only" ] && exit 0
# A warm kernel of this server (singleuser.sh starts one) that is still starting is further
# along than a cold start, and a cold start beside it would halve both: wait for it. (It runs
# at nice 19, which only ranks it among this student's processes: the spawner gives every
# student the same CPU weight.)
if [ "${AULA_KERNEL_POOL:-0}" != 0 ]; then
  key=$("$AULA_HUB_PREFIX/src/kernel/launch.sh" --print-key "$own")
  for spare in "$own"/pool/s.*; do
    [ -f "$spare/starting" ] && [ "$(cat "$spare/key" 2> /dev/null)" = "$key" ] || continue
    for _ in $(seq "${AULA_HUB_SPARE_WAIT:-300}"); do
      compgen -G "$own/pool/ready/$key.*" > /dev/null && break 2
      [ -f "$spare/starting" ] || break
      sleep 1
    done
  done
fi
exec "$AULA_HUB_PREFIX/src/kernel/launch.sh" "$own" "$2"
